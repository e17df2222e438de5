"""A key-value service keeping its state only in memory (a target).

Requests are files inbox/<id> holding "set KEY VALUE" or "get KEY"; the reply goes to
outbox/<id> (written to a temporary name, then renamed) and the request is removed.
After a crash and restore, requests answered after the checkpoint are answered again
(their files came back with the checkpoint), so each `set` is applied exactly once."""
import os
import time

state = {}
os.makedirs("inbox", exist_ok=True)
os.makedirs("outbox", exist_ok=True)
while True:
    for name in sorted(os.listdir("inbox")):
        with open(f"inbox/{name}") as f:
            words = f.read().split()
        if words[:1] == ["set"] and len(words) == 3:
            state[words[1]] = words[2]
            reply = "ok"
        elif words[:1] == ["get"] and len(words) == 2:
            reply = state.get(words[1], "(missing)")
        else:
            reply = "error: bad request"
        with open(f"outbox/.{name}", "w") as f:
            f.write(reply)
        os.rename(f"outbox/.{name}", f"outbox/{name}")
        os.unlink(f"inbox/{name}")
    time.sleep(0.005)
