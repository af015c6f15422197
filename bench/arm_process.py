"""Each benchmark arm in a fresh process, so one arm's allocations, threads and caches cannot
change another's time or peak memory."""

from __future__ import annotations

import multiprocessing as mp
from queue import Empty


def in_own_process(target, *args) -> dict:
    """`target(*args, queue)` in a spawned process; its one answer on `queue`."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    while True:  # a child that dies never answers: do not wait for it forever
        try:
            result = queue.get(timeout=5)
            break
        except Empty:
            if not process.is_alive():
                raise SystemExit(f"{target.__name__}{args[:1]}: exit code {process.exitcode}") from None
    process.join()
    return result
