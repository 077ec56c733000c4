"""Every file the documents name exists: a renamed module or test fails here, not for a reader.

Checked: README.md, docs/*.md (except docs/history.md, which names files as they were then) and
bench/README.md. A path is `medfit/...`, `bench/...` or `tests/...` as written (not the tail of a
longer path such as `~/.cache/medfit/...`); a placeholder (`<case>`, `*`, `{a,b}`, `…`) ends it and
the part before it is checked. A test named as `test_x.py` or `test_x.py::test_name` (and a
`::test_other` after it on the same line, which means the same file) must exist in tests/.
bench/LOG.md is the dated log of the benchmarks and is not checked: it keeps what was written.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted(
    [ROOT / "README.md", ROOT / "bench" / "README.md"]
    + [p for p in (ROOT / "docs").glob("*.md") if p.name != "history.md"]
)
# Named on purpose although a clean clone does not have them (git-ignored, made locally).
NOT_IN_A_CLONE = {"bench/diagnose_wild/.cache"}

PATH = re.compile(r"(?<![\w./~-])((?:medfit|bench|tests)/[\w./-]*)")
TEST_FILE = re.compile(r"(?<![\w./-])(?:tests/)?(test_\w+\.py)")
NODE = re.compile(r"::(\w+)")


def _paths(line: str) -> list[str]:
    found = []
    for match in PATH.finditer(line):
        path = match.group(1).rstrip(".-")
        if line[match.end() : match.end() + 1] in "<*{…" and match.end() < len(line):
            path = path.rsplit("/", 1)[0]  # a placeholder follows: check the folder before it
        found.append(path.rstrip("/"))
    return found


def _tests(line: str) -> list[tuple[str, str | None]]:
    """(test file, test or class name or None) for every test the line names, in order."""
    events = sorted(
        [(m.start(), "file", m.group(1)) for m in TEST_FILE.finditer(line)]
        + [(m.start(), "node", m.group(1)) for m in NODE.finditer(line)]
    )
    named: list[tuple[str, str | None]] = []
    current = None
    for _, kind, value in events:
        if kind == "file":
            current = value
            named.append((value, None))
        elif current is not None:
            named.append((current, value))
    return named


def _references() -> list[tuple[str, int, str, str | None]]:
    refs = []
    for doc in DOCS:
        rel = str(doc.relative_to(ROOT))
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            refs += [(rel, number, path, None) for path in _paths(line)]
            refs += [(rel, number, "tests/" + name, node) for name, node in _tests(line)]
    return refs


def test_the_documents_name_something() -> None:
    refs = _references()
    assert len(DOCS) >= 3
    assert any(path.startswith("medfit/") for _, _, path, _ in refs)
    assert any(node for _, _, _, node in refs)


@pytest.mark.parametrize(
    "line, expected",
    [
        ("see `medfit/rundir/layout.py`.", ["medfit/rundir/layout.py"]),
        ("`~/.cache/medfit/demo/x.png` and /tmp/bench/y", []),
        ("`bench/results/<name>.json` in bench/", ["bench/results", "bench"]),
        ("`bench/diagnose_wild/cases/*/key.yaml`", ["bench/diagnose_wild/cases"]),
    ],
)
def test_paths_are_read_as_written(line: str, expected: list[str]) -> None:
    assert _paths(line) == expected


def test_test_names_are_read_with_their_file() -> None:
    line = "| `test_a.py::test_one[*]`, `::test_two` (end to end); `tests/test_b.py` |"
    assert _tests(line) == [
        ("test_a.py", None),
        ("test_a.py", "test_one"),
        ("test_a.py", "test_two"),
        ("test_b.py", None),
    ]


def test_every_named_path_and_test_exists() -> None:
    missing = []
    for doc, line, path, node in _references():
        where = f"{doc}:{line}: {path}"
        if path in NOT_IN_A_CLONE:
            continue
        if not (ROOT / path).exists():
            missing.append(f"{where} (no such file)")
        elif node is not None:
            source = (ROOT / path).read_text(encoding="utf-8")
            if not re.search(rf"^\s*(?:async )?(?:def|class) {node}\b", source, re.MULTILINE):
                missing.append(f"{where}::{node} (no such test)")
    assert missing == [], "documents name what is not there:\n" + "\n".join(missing)
