"""What a long epoch says while it runs: the expected time, and a line now and then in a log file.

A progress bar (tqdm) shows in a terminal; redirected to a file it is off, and an epoch of a few
hundred seconds used to print nothing until it ended. `StepClock` fills that gap: after the first
few steps of a run it states the expected time per epoch and to the end of training, and when no
bar is shown it writes one line every `every_s` seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

Log = Callable[[str], None]
T = TypeVar("T")

# Steps timed before the estimate is stated: the very first steps include one-off costs
# (allocator warm-up, lazy init), so the estimate skips them and waits for a few more.
WARMUP_STEPS = 3
ESTIMATE_AFTER_STEPS = 10
# A log file gets a line this often during an epoch (a bar in a terminal updates continuously).
LINE_EVERY_S = 30.0


def duration(seconds: float) -> str:
    """3 s, 5 min 20 s, 2 h 05 min: rounded as a person would read it."""
    s = max(round(seconds), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class StepClock:
    """Times training steps across a run; says the expected time once, and logs progress.

    `steps_per_epoch` and `epochs_left` (after the current one) give the estimate; evaluation
    time is not included (it is shown per epoch in the epoch line).
    """

    def __init__(
        self,
        log: Log,
        bar_shown: bool,
        every_s: float = LINE_EVERY_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.log, self.bar_shown, self.every_s, self.clock = log, bar_shown, every_s, clock
        self.estimated = False
        self.stage, self.final = "", True  # set by start_epoch
        self._timed_steps = 0
        self._timed_s = 0.0
        self._epoch_start = 0.0
        self._last_line = 0.0

    def start_epoch(
        self, desc: str, steps: int, epochs_left: int, stage: str = "", final: bool = True
    ) -> None:
        """`epochs_left`: after this one, in this stage. A new `stage` is timed afresh (a head
        step costs a fraction of a full one); `final`: the last stage, whose end is the run's."""
        if stage != self.stage:
            self.estimated, self._timed_steps, self._timed_s = False, 0, 0.0
        self.desc, self.steps, self.epochs_left = desc, steps, epochs_left
        self.stage, self.final = stage, final
        self._epoch_start = self._last_line = self._last_step = self.clock()
        self._step = 0

    def step(self) -> None:
        """Call after each training step."""
        now = self.clock()
        self._step += 1
        if self._step > WARMUP_STEPS:
            self._timed_steps += 1
            self._timed_s += now - self._last_step
        self._last_step = now
        if not self.estimated and self._timed_steps >= ESTIMATE_AFTER_STEPS - WARMUP_STEPS:
            self.estimated = True
            self.log(self._estimate())
        if not self.bar_shown and now - self._last_line >= self.every_s:
            self._last_line = now
            left = self.per_step * (self.steps - self._step)
            self.log(
                f"  {self.desc}: step {self._step}/{self.steps}, "
                f"{duration(now - self._epoch_start)} so far, about {duration(left)} left"
            )

    @property
    def per_step(self) -> float:
        return self._timed_s / max(self._timed_steps, 1)

    def _estimate(self) -> str:
        epoch = self.per_step * self.steps
        left = epoch * self.epochs_left + self.per_step * (self.steps - self._step)
        end = "the end" if self.final else f"the end of the {self.stage} stage"
        return (
            f"  expected: about {duration(epoch)} per {f'{self.stage} ' if self.stage else ''}"
            f"epoch of training steps, {duration(left)} to {end} (from {self._step} steps; eval "
            "not included)"
        )


class Progress:
    """A count towards `total` outside training steps (cache build, eval, lr-find, probes): a tqdm
    bar in a terminal (`bar=None`: when stderr is one), else a line through `log` every
    `every_s` seconds with the time so far and the time left (no line when `log` is None)."""

    def __init__(
        self,
        total: int,
        desc: str,
        log: Log | None,
        bar: bool | None = None,
        every_s: float | None = None,  # None: LINE_EVERY_S
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total, self.desc, self.log, self.clock = total, desc, log, clock
        self.every_s = LINE_EVERY_S if every_s is None else every_s
        self.done = 0
        self._start = self._last = clock()
        self._bar = None
        if sys.stderr.isatty() if bar is None else bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, leave=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self.clock()
        if self.log is None or now - self._last < self.every_s or self.done >= self.total:
            return
        self._last = now
        so_far = now - self._start
        left = so_far / self.done * (self.total - self.done)
        self.log(
            f"  {self.desc}: {self.done}/{self.total}, {duration(so_far)} so far, "
            f"about {duration(left)} left"
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def ticking(
    items: Iterable[T],
    total: int,
    desc: str,
    log: Log,
    bar: bool | None = None,
    every_s: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Iterator[T]:
    """Yield `items` (`total` of them) while a `Progress` counts them."""
    with Progress(total, desc, log, bar, every_s, clock) as progress:
        for item in items:
            yield item
            progress.update()
