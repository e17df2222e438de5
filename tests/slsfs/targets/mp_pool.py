"""Python's multiprocessing at work: a Pool of two workers (fork), a shared Value under a
Lock (POSIX semaphores: /dev/shm files mapped and unlinked) and a Queue. Each round maps
a function over the pool, checks the results, bumps the shared counter, sends the round
through the queue and back, then writes "<rounds>" to `count` (atomically: a rename).
Anything wrong is written to `bad` and the program exits."""
import multiprocessing
import os
import sys
import time


def square(x: int) -> int:
    return x * x


def main() -> None:
    multiprocessing.set_start_method("fork")
    lock, shared, queue = multiprocessing.Lock(), multiprocessing.Value("q", 0), multiprocessing.Queue()
    rounds = 0
    with multiprocessing.Pool(2) as pool:
        while True:
            results = pool.map(square, range(40))
            with lock:
                shared.value += 1
            queue.put(rounds)
            echoed = queue.get(timeout=60)
            rounds += 1
            if results != [x * x for x in range(40)] or echoed != rounds - 1 or shared.value != rounds:
                with open("bad", "w") as f:
                    f.write(f"round {rounds}: results {results[:3]}..., echoed {echoed}, shared {shared.value}\n")
                sys.exit(1)
            with open("count.tmp", "w") as f:
                f.write(f"{rounds}\n")
            os.rename("count.tmp", "count")
            time.sleep(0.01)


if __name__ == "__main__":
    main()
