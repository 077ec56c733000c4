"""An ordered, memory-bounded parallel map over files (decode, hash, ...)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from typing import TypeVar

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
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[list[R]]] = deque(
            pool.submit(work, c) for c in islice(chunks, depth * workers)
        )
        while pending:
            results = pending.popleft().result()
            for c in islice(chunks, 1):
                pending.append(pool.submit(work, c))
            yield from results
