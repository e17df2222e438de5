"""A process that replaces itself by exec once asked: `exec_once.py OUTFILE TRIGGER [N]`.

Every 5 ms it appends "<n> <pid> <stage> ok" to OUTFILE (n counts on across the exec;
stage is "before" or "after"). Once the file TRIGGER exists it exec()s a new interpreter
running this script, which carries on from n in the new memory. Write tracking set up
before the exec belongs to the old memory (incremental checkpoints must notice).
"""
import os
import sys
import time

out_path, trigger = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 0
stage = "after" if len(sys.argv) > 3 else "before"
heap = []
# not O_APPEND: a restored process writes on from its own position, over what the
# original wrote after the checkpoint
with open(out_path, "r+" if os.path.exists(out_path) else "w") as out:
    out.seek(0, os.SEEK_END)
    while True:
        n += 1
        heap.append(bytes([n % 256]) * 4096)     # memory written between checkpoints
        del heap[:-256]
        out.write(f"{n} {os.getpid()} {stage} ok\n")
        out.flush()
        if stage == "before" and os.path.exists(trigger):
            os.execv(sys.executable, [sys.executable, __file__, out_path, trigger, str(n)])
        time.sleep(0.005)
