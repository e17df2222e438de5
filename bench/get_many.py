"""Micro-benchmark of the store's batched read (Store.get_many, restore's page reading);
prints one JSON object.

For 10 MiB of 4 KiB pages of three kinds, stored by put_many in a store that is then
reopened read-only (as restore finds it), it reads every page back in batches of 256
(checkpointer.image.BATCH_PAGES) and reports the CPU time per page (median of the
passes, microseconds; CPU time because wall time swings with the load of a shared
machine):

- us_per_page_sparse: an 8-byte counter then zeros (the checkpoint bench's heap: lz4
  shrinks each page to ~30 bytes);
- us_per_page_text: words and numbers (lz4 shrinks each page to ~70%);
- us_per_page_random: random bytes (stored uncompressed);
- us_per_page_sparse_first_pass: the first pass over the sparse pages (a fresh
  process's heap still grows: page faults included).

Usage: python bench/get_many.py [--quick]   (--quick: 5 passes instead of 15)
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from objectstore import Store  # noqa: E402

PAGE = 4096
PAGES = 2560  # 10 MiB
BATCH = 256


def pages_of(kind: str) -> list[bytes]:
    rng = random.Random(7)
    if kind == "sparse":
        return [(i + 1).to_bytes(8, "little") + bytes(PAGE - 8) for i in range(PAGES)]
    if kind == "random":
        return [rng.randbytes(PAGE) for _ in range(PAGES)]
    words = [b"key:%d" % i for i in range(500)] + [b"value", b"hello world", bytes(16)]
    out = []
    for _ in range(PAGES):
        page = bytearray()
        while len(page) < PAGE:
            page += rng.choice(words) + bytes([rng.randrange(256)])
        out.append(bytes(page[:PAGE]))
    return out


def read_all(store: Store, ids: list[bytes]) -> float:
    """CPU microseconds per page of one pass reading every page, a batch at a time."""
    started = time.process_time()
    for i in range(0, len(ids), BATCH):
        store.get_many(ids[i:i + BATCH])
    return (time.process_time() - started) / len(ids) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    passes = 5 if parser.parse_args().quick else 15
    result: dict[str, object] = {"benchmark": "get_many", "pages": PAGES, "batch": BATCH, "passes": passes}
    with tempfile.TemporaryDirectory(prefix="sls-bench-get-many-") as tmp:
        for kind in ("sparse", "text", "random"):
            pages = pages_of(kind)
            path = Path(tmp) / kind
            with Store.init(path) as store:
                ids = store.put_many(pages)
                store.commit("pages")
            with Store.open(path, readonly=True) as store:
                times = [read_all(store, ids) for _ in range(passes)]
                if store.get_many(ids[-BATCH:]) != pages[-BATCH:]:
                    raise SystemExit("get_many returned other bytes than were stored")
            if kind == "sparse":
                result["us_per_page_sparse_first_pass"] = round(times[0], 2)
            result[f"us_per_page_{kind}"] = round(statistics.median(times), 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
