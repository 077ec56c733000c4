"""The expected time and the log-file progress lines of a long epoch (a fake clock, no training)."""

from __future__ import annotations

import pytest

from medfit.progress import (
    ESTIMATE_AFTER_STEPS,
    Progress,
    StepClock,
    duration,
    ticking,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _run(clock: StepClock, fake: FakeClock, steps: int, step_s: float, first_s: float) -> None:
    for i in range(steps):
        fake.now += first_s if i == 0 else step_s
        clock.step()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "0 s"), (59, "59 s"), (61, "1 min 01 s"), (3600 + 5 * 60, "1 h 05 min")],
)
def test_duration_reads_as_a_person_would(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_estimate_is_stated_once_and_ignores_the_slow_first_step() -> None:
    lines: list[str] = []
    fake = FakeClock()
    clock = StepClock(lines.append, bar_shown=True, clock=fake)
    clock.start_epoch("epoch 1/3 head", steps=100, epochs_left=2)
    # The first step takes 50 s (warm-up); the others 2 s: 200 s per epoch, not 690.
    _run(clock, fake, ESTIMATE_AFTER_STEPS + 5, step_s=2.0, first_s=50.0)
    estimates = [line for line in lines if "expected" in line]
    assert len(estimates) == 1
    assert "3 min 20 s per epoch" in estimates[0]
    # 90 steps of this epoch and 2 whole epochs: 180 + 400 s.
    assert "9 min 40 s to the end" in estimates[0]
    clock.start_epoch("epoch 2/3 full", steps=100, epochs_left=1)
    _run(clock, fake, 20, step_s=2.0, first_s=2.0)
    assert len([line for line in lines if "expected" in line]) == 1


def test_a_log_file_gets_a_line_every_interval_and_a_terminal_none() -> None:
    for bar_shown, expected in ((False, 3), (True, 0)):
        lines: list[str] = []
        fake = FakeClock()
        clock = StepClock(lines.append, bar_shown=bar_shown, every_s=30.0, clock=fake)
        clock.start_epoch("epoch 1/1 full", steps=50, epochs_left=0)
        _run(clock, fake, 50, step_s=2.0, first_s=2.0)  # 100 s: lines at 30, 60, 90 s
        progress = [line for line in lines if "step " in line]
        assert len(progress) == expected
        if progress:
            assert progress[0].startswith("  epoch 1/1 full: step 15/50, 30 s so far")
            assert "about 1 min 10 s left" in progress[0]


def test_ticking_logs_the_time_left_every_interval_and_yields_everything() -> None:
    lines: list[str] = []
    fake = FakeClock()
    seen = []
    for item in ticking(range(10), 10, "eval test", lines.append, bar=False, every_s=5, clock=fake):
        fake.now += 2.0  # each item takes 2 s
        seen.append(item)
    assert seen == list(range(10))
    # Lines after items 3, 6 and 9 (6, 12, 18 s); none after the last one.
    assert lines == [
        "  eval test: 3/10, 6 s so far, about 14 s left",
        "  eval test: 6/10, 12 s so far, about 8 s left",
        "  eval test: 9/10, 18 s so far, about 2 s left",
    ]


def test_ticking_in_a_terminal_leaves_the_log_alone() -> None:
    lines: list[str] = []
    assert list(ticking(range(5), 5, "x", lines.append, bar=True, every_s=0)) == list(range(5))
    assert lines == []


def test_progress_counts_uneven_updates_and_is_silent_without_a_log() -> None:
    lines: list[str] = []
    fake = FakeClock()
    with Progress(100, "decode", lines.append, bar=False, every_s=10, clock=fake) as p:
        for n in (40, 20, 30, 10):  # one update per 10 s
            fake.now += 10
            p.update(n)
    assert lines == [
        "  decode: 40/100, 10 s so far, about 15 s left",
        "  decode: 60/100, 20 s so far, about 13 s left",
        "  decode: 90/100, 30 s so far, about 3 s left",
    ]
    quiet = Progress(5, "x", None, bar=False, every_s=0, clock=fake)
    quiet.update(1)  # no log: nothing to say, nothing raised


def test_each_stage_is_estimated_from_its_own_steps() -> None:
    """A head step (frozen backbone) costs a fraction of a full one: the head's estimate covers
    the head stage only, and the full stage states its own when it starts."""
    lines: list[str] = []
    fake = FakeClock()
    clock = StepClock(lines.append, bar_shown=True, clock=fake)
    clock.start_epoch("epoch 1/3 head", steps=20, epochs_left=0, stage="head", final=False)
    _run(clock, fake, 20, step_s=0.5, first_s=0.5)
    clock.start_epoch("epoch 2/3 full", steps=20, epochs_left=1, stage="full", final=True)
    _run(clock, fake, 20, step_s=2.0, first_s=2.0)
    estimates = [line for line in lines if "expected" in line]
    assert len(estimates) == 2
    assert "10 s per head epoch" in estimates[0] and "to the end of the head stage" in estimates[0]
    # 10 steps left of this epoch and one more epoch of 20, at 2 s a step.
    assert "40 s per full epoch" in estimates[1] and "1 min 00 s to the end (" in estimates[1]
