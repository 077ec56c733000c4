"""An ordered, memory-bounded parallel map over files (decode, hash, ...)."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from typing import TypeVar

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent() -> None:
    """In a pool worker: ask Linux to SIGKILL this process when its parent dies.

    A kill -9 of medfit during a parallel decode otherwise leaves the idle workers orphaned,
    blocked forever on their task queue (and holding the parent's stdout open). The pool's
    initializer, so every worker asks once, even one that never gets a task; a no-op off Linux.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


# Workers start from a clean server process, never forked from medfit itself: a fork taken while
# one of medfit's threads (torch's pools, prefetch threads, tqdm) holds a lock leaves the child
# waiting on it forever. Seen once in CI: a pool worker asleep on a futex, pytest waiting on it.
_START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def no_fork_by_default() -> None:
    """Make the default multiprocessing context a forkserver for this process (the CLI calls it
    first thing), so that a library starting a pool with the default context (cleanlab,
    joblib's multiprocessing backend) never forks medfit either. A start method someone already
    chose is kept."""
    if multiprocessing.get_start_method(allow_none=True) is None:
        multiprocessing.set_start_method(_START_METHOD)


T = TypeVar("T")
R = TypeVar("R")


def bounded_map(
    work: Callable[[list[T]], list[R]],
    items: Iterable[T],
    workers: int,
    chunk: int = 16,
    depth: int = 4,
) -> Iterator[R]:
    """`work` over chunks of `items` in `workers` processes; results in input order.

    Only `depth` chunks per worker are in flight, so memory stays bounded even when the consumer
    is slower than the pool (`Executor.map` submits everything at once and keeps every finished
    result until it is read). `work` must be a picklable module-level function.
    """
    source = iter(items)
    chunks = iter(lambda: list(islice(source, chunk)), [])
    context = multiprocessing.get_context(_START_METHOD)
    with ProcessPoolExecutor(workers, context, initializer=die_with_parent) as pool:
        pending: deque[Future[list[R]]] = deque(
            pool.submit(work, c) for c in islice(chunks, depth * workers)
        )
        while pending:
            results = pending.popleft().result()
            for c in islice(chunks, 1):
                pending.append(pool.submit(work, c))
            yield from results
