"""What the labels are: unordered classes, or ordinal grades (disease severity).

Ordinal labels (Kellgren-Lawrence 0-4, diabetic-retinopathy grades, tumour grades) make some
mistakes worse than others: a grade-0 knee called grade 4 is worse than one called grade 1. For
them `eval`, the report and the suite add quadratic weighted kappa and the mean absolute grade
error next to accuracy.

`auto` calls a task ordinal when every class name is the same text around a distinct whole number
(`grade0`…`grade4`, `KL_1`, `0`…`4`, `stage_II` is not matched): the grade of each class is
that number, so `grade10` ranks above `grade2` although it sorts before it.
"""

from __future__ import annotations

import re

from medfit.config import TASKS
from medfit.errors import ConfigError

_GRADE = re.compile(r"^(?P<prefix>\D*?)(?P<number>\d+)(?P<suffix>\D*)$")


def grade_values(classes: list[str]) -> list[int] | None:
    """The grade number of each class, or None when the names are not one pattern of grades."""
    matches = [_GRADE.match(name.strip()) for name in classes]
    if len(classes) < 3 or not all(matches):
        return None
    shapes = {(m["prefix"].lower(), m["suffix"].lower()) for m in matches if m}
    values = [int(m["number"]) for m in matches if m]
    if len(shapes) != 1 or len(set(values)) != len(values):
        return None
    return values


def resolve_task(task: str, classes: list[str], multilabel: bool = False) -> str:
    """Turn `auto` into multiclass, ordinal or multilabel (the data index says whether its
    images carry several labels); `ordinal` needs grade numbers in the names."""
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    if multilabel:
        if task not in ("auto", "multilabel"):
            raise ConfigError(
                f"--task {task} needs one label per image, and this data has several; "
                "use --task multilabel (or auto)"
            )
        return "multilabel"
    if task == "multilabel":
        raise ConfigError(
            "--task multilabel needs a manifest with several labels per image (a label cell "
            "'A|B', or one 0/1 column per label); class folders hold one label per image"
        )
    if task == "auto":
        return "ordinal" if grade_values(classes) is not None else "multiclass"
    return task


def grade_ranks(classes: list[str]) -> list[int]:
    """Each class's rank on the ordinal scale: by its grade number, else by its position."""
    values = grade_values(classes)
    if values is None:
        return list(range(len(classes)))
    order = sorted(range(len(classes)), key=lambda c: values[c])
    ranks = [0] * len(classes)
    for rank, c in enumerate(order):
        ranks[c] = rank
    return ranks


def describe_task(task: str, classes: list[str]) -> str:
    """One line for the run's header."""
    if task == "multilabel":
        return (
            f"multi-label: {len(classes)} labels, any number per image (sigmoid outputs, "
            "macro ROC-AUC reported)"
        )
    if task != "ordinal":
        return "multiclass (unordered classes)"
    ranks = grade_ranks(classes)
    ordered = [name for _, name in sorted(zip(ranks, classes, strict=True))]
    return "ordinal grades " + " < ".join(ordered) + " (quadratic kappa and grade error reported)"
