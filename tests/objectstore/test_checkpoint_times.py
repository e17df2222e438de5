"""A checkpoint named by a time (`sls restore --at TIME`, `.sls/at/<time>/`) is the newest
taken at or before it, also when a received checkpoint (dated when it was taken, in the
store that sent it) came after local checkpoints that are younger than it."""
from __future__ import annotations

import io
from datetime import datetime

from objectstore import Store
from objectstore.stream import recv, send


def test_a_time_names_the_newest_checkpoint_taken_by_then_not_the_last_received(tmp_path):
    with Store.init(tmp_path / "a") as sender:
        sender.create_volume("main")
        taken = sender.commit("taken over there")
        out = io.BytesIO()
        send(sender, taken, out)
    with Store.init(tmp_path / "b", seed=sender.seed) as receiver:
        receiver.create_volume("main")
        local = receiver.commit("local, after the other was taken")
        got = recv(receiver, io.BytesIO(out.getvalue()))
        assert got.id > local.id and got.time < local.time
        assert receiver.resolve(datetime.fromtimestamp(local.time).isoformat()).id == local.id
        assert receiver.resolve(datetime.fromtimestamp(got.time).isoformat()).id == got.id
