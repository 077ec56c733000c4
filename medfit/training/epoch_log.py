"""Where a finished epoch is written: the console line, RUN/metrics.jsonl|csv and TensorBoard."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from medfit.files import tensorboard_without_tensorflow
from medfit.rundir import EpochRow, RunDir


class EpochLog:
    """Every sink of the epoch rows behind one `write` (rank 0 only: it owns the run directory)."""

    def __init__(self, run: RunDir, total_epochs: int, log: Callable[[str], None]) -> None:
        self.run, self.total, self.log = run, total_epochs, log
        self.tensorboard = _tensorboard(run)

    def write(self, history: Sequence[EpochRow]) -> None:
        """Rewrite the metrics files with the whole history; the last row to TensorBoard and the
        console."""
        row = history[-1]
        self.run.write_history(history)
        if self.tensorboard is not None:
            for key, value in row.to_dict().items():
                if isinstance(value, float):
                    self.tensorboard.add_scalar(key, value, row.epoch)
            self.tensorboard.flush()
        self.log(epoch_line(row, self.total))

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def _tensorboard(run: RunDir) -> Any:
    tensorboard_without_tensorflow()
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but never fail a run over logging
        return None
    return SummaryWriter(str(run.tensorboard))


def epoch_line(row: EpochRow, total: int) -> str:
    if row.val_macro_auc is None:
        val = (
            f"val loss {row.val_loss:.3f} acc {row.val_acc:.3f} "
            f"bal {row.val_balanced_accuracy:.3f} f1 {row.val_macro_f1:.3f}"
        )
    else:  # multi-label: accuracies are label-wise at p = 0.5, the AUC is what selects
        val = f"val loss {row.val_loss:.4f} macro AUC {row.val_macro_auc:.3f}"
    return (
        f"epoch {row.epoch:>2}/{total} {row.stage:<4} "
        f"train loss {row.train_loss:.3f} acc {row.train_acc:.3f} | {val} | "
        f"lr {row.lr:.1e} | {row.epoch_s:.0f}s "
        f"(data wait {row.data_s:.1f}s, augment {row.augment_s:.1f}s, "
        f"compute {row.compute_s:.1f}s, eval {row.eval_s:.1f}s)"
    )
