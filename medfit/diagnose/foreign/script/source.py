"""A training script as text -> the Python statements in it, with the file's line numbers.

Notebook exports are read cell by cell: `# %% cell N` / `# %%` / `# In[3]:` markers and cell
magics at column 0 (`%%writefile config.yaml`, `%%bash`, `%%time`) start a cell. A cell whose
body is not Python is skipped with a note; a `%%writefile` of a non-Python file (YAML, JSON, a
shell script) is remembered as that file's text, so that `yaml.safe_load(open("config.yaml"))`
later reads it. Line magics and shell escapes (`%cd`, `!pip install`) become `pass`. A cell that
does not parse is read in top-level chunks; a chunk that still does not parse has its offending
lines blanked (a few at most) or is skipped, and every skip is a note. Nothing here raises on
content: `ast.parse` errors of every kind (SyntaxError, ValueError for NUL bytes, RecursionError
and MemoryError on absurd nesting) are a skip.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

MARKER = re.compile(r"^#\s*(%%|In\s*\[[\d ]*\]\s*:)")
CELL_MAGIC = re.compile(r"^%%(\w+)[ \t]*(.*)$")
COMMENTED_WRITEFILE = re.compile(r"^#\s*%%writefile\s+(?:-a\s+)?(\S+)\s*$")
LINE_MAGIC = re.compile(r"^(\s*)(?:%{1,2}[A-Za-z]|![A-Za-z{$/.~\"']|\?{1,2}[A-Za-z])")
HELP_LINE = re.compile(r"^\s*[\w.]+\?{1,2}\s*$")  # `model.fit?`
ASSIGNED_MAGIC = re.compile(r"^(\s*)([A-Za-z_][\w.]*(?:\s*,\s*[A-Za-z_]\w*)*)\s*=\s*[%!]")
PY_LINE = re.compile(r"^(import |from \S+ import |def |class |@|async def |if |for |while |with )")
PY_ASSIGN = re.compile(r"^[A-Za-z_][\w.\[\]'\"]*\s*(=[^=]|\()")
# Cell magics whose body is Python.
PYTHON_MAGICS = {"time", "timeit", "capture", "prun", "debug", "tensorflow_version", "memit"}
MAX_REPAIRS = 6
MAX_MERGE = 6
MAX_PARSES = 1500  # parse attempts for the whole file (a huge cell that does not parse)
MAX_CHARS = 2_000_000  # longer scripts are read up to here


@dataclass
class Source:
    body: list[ast.stmt]
    lines: list[str]
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # written by %%writefile: path -> text
    skipped_lines: list[tuple[int, int, str]] = field(default_factory=list)  # first, last, why
    comments: list[str] = field(default_factory=list)

    def segment(self, node: ast.AST, limit: int = 90) -> str:
        """The source text of `node` (first line only when long), never more than `limit`."""
        line = getattr(node, "lineno", 0)
        if not 1 <= line <= len(self.lines):
            return "?"
        raw = self.lines[line - 1].encode("utf-8", "surrogateescape")
        start = getattr(node, "col_offset", 0) or 0
        end = getattr(node, "end_col_offset", None)
        same = getattr(node, "end_lineno", line) == line
        text = raw[start : end if same and end is not None else None].decode("utf-8", "replace")
        text = " ".join(text.split())
        return text if len(text) <= limit else text[: limit - 3] + "..."


def _try_parse(text: str, budget: list[int]) -> tuple[ast.Module | None, SyntaxError | None]:
    """`ast.parse`, counting attempts in `budget` (one list per read)."""
    budget[0] += 1
    if budget[0] > MAX_PARSES:
        return None, SyntaxError("parse budget spent")
    try:
        return ast.parse(text), None
    except SyntaxError as exc:
        return None, exc
    except (ValueError, RecursionError, MemoryError, OverflowError):
        return None, SyntaxError("too deeply nested or not text")


def _shift(tree: ast.Module, offset: int) -> list[ast.stmt]:
    if offset:
        ast.increment_lineno(tree, offset)
    return list(tree.body)


def _chunks(lines: list[str]) -> list[tuple[int, int]]:
    """[start, end) index ranges of top-level statements (a new one at each column-0 line that
    does not continue the previous one)."""
    starts = []
    prev = ""
    for i, line in enumerate(lines):
        s = line.rstrip()
        if not s or s.startswith("#"):
            continue
        continues = prev.endswith(("\\", ",", "(", "[", "{")) or prev.startswith("@")
        if (
            not line[0].isspace()
            and not continues
            and not re.match(r"(else|elif|except|finally)\b|[)\]}]", s)
        ):
            starts.append(i)
        prev = s
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    return [(a, b) for a, b in zip(starts, [*starts[1:], len(lines)], strict=True)]


def _repair(lines: list[str], budget: list[int]) -> tuple[ast.Module | None, list[int]]:
    """Blank the lines the parser stops at (a few at most); the tree and the blanked indices."""
    work = list(lines)
    blanked: list[int] = []
    for _ in range(MAX_REPAIRS):
        tree, exc = _try_parse("\n".join(work), budget)
        if tree is not None:
            return tree, blanked
        n = (exc.lineno or 0) - 1 if exc else -1
        if not 0 <= n < len(work) or not work[n].strip():
            return None, blanked
        indent = work[n][: len(work[n]) - len(work[n].lstrip())]
        again = n in blanked
        msg = exc.msg if exc else ""
        work[n] = "" if again or "indent" in msg else f"{indent}pass"
        blanked.append(n)
    return None, blanked


class _Reader:
    def __init__(self, text: str) -> None:
        self.src = Source([], text.split("\n"))
        self.budget = [0]

    def note_skip(self, first: int, last: int, why: str) -> None:
        self.src.skipped_lines.append((first, last, why))
        where = f"line {first}" if first == last else f"lines {first}-{last}"
        self.src.notes.append(f"{where} skipped: {why}")

    def python(self, lines: list[str], first: int) -> None:
        """Parse the cell starting at file line `first` (1-based)."""
        tree, _ = _try_parse("\n".join(lines), self.budget)
        if tree is not None:
            self.src.body += _shift(tree, first - 1)
            return
        chunks = _chunks(lines)
        i = 0
        while i < len(chunks):
            a, b = chunks[i]
            tree, _ = _try_parse("\n".join(lines[a:b]), self.budget)
            if tree is not None:
                self.src.body += _shift(tree, first - 1 + a)
                i += 1
                continue
            for j in range(i + 1, min(i + 1 + MAX_MERGE, len(chunks))):
                tree, _ = _try_parse("\n".join(lines[a : chunks[j][1]]), self.budget)
                if tree is not None:
                    self.src.body += _shift(tree, first - 1 + a)
                    i = j + 1
                    break
            else:
                tree, blanked = _repair(lines[a:b], self.budget)
                if tree is not None:
                    self.src.body += _shift(tree, first - 1 + a)
                    for n in sorted(set(blanked)):
                        self.note_skip(first + a + n, first + a + n, "does not parse as Python")
                else:
                    self.note_skip(first + a, first + b - 1, "does not parse as Python")
                i += 1

    def cell(self, lines: list[str], first: int) -> None:
        body_at = next((i for i, s in enumerate(lines) if s.strip()), None)
        if body_at is None:
            return
        m = CELL_MAGIC.match(lines[body_at])
        if m is None:
            self.python(_unmagic(lines), first)
            return
        name, arg = m[1], m[2].strip()
        body = lines[body_at + 1 :]
        start, last = first + body_at, first + len(lines) - 1
        if name == "writefile":
            parts = arg.split()
            append = "-a" in parts or "--append" in parts
            path = next((p for p in parts if not p.startswith("-")), "")
            if path.endswith(".py"):
                self.python(_unmagic(body), start + 1)
                return
            text = "\n".join(body) + "\n"
            self.src.files[path] = self.src.files.get(path, "") + text if append else text
            self.note_skip(start, last, f"%%writefile {path} (not Python; kept as that file)")
        elif name in PYTHON_MAGICS:
            self.python(_unmagic(body), start + 1)
        else:
            tree, _ = _try_parse("\n".join(_unmagic(body)), self.budget)
            if name in ("bash", "sh", "script", "html", "javascript", "js", "latex", "markdown"):
                tree = None
            if tree is not None:
                self.src.body += _shift(tree, start)
            else:
                self.note_skip(start, last, f"%%{name} cell (not Python)")


def _unmagic(lines: list[str]) -> list[str]:
    """Line magics and shell escapes as `pass` (`x = !ls` as `x = None`), line count kept."""
    out = []
    for line in lines:
        m = ASSIGNED_MAGIC.match(line)
        if m:
            out.append(f"{m[1]}{m[2]} = None")
        elif LINE_MAGIC.match(line) or HELP_LINE.match(line):
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}pass")
        else:
            out.append(line)
    return out


def _looks_python(line: str) -> bool:
    return bool(PY_LINE.match(line) or PY_ASSIGN.match(line)) and not re.match(
        r"^[\w.-]+\s*:(\s|$)", line
    )


def _cells(lines: list[str]) -> list[tuple[int, int]]:
    """[start, end) of each cell: at markers, and at column-0 cell magics. Without markers, a
    non-Python cell body (YAML after %%writefile) ends at the first line that looks like Python."""
    marked = any(MARKER.match(s) for s in lines)
    starts = [0]
    i = 0
    while i < len(lines):
        s = lines[i]
        if MARKER.match(s) and i not in starts:
            starts.append(i)
        elif CELL_MAGIC.match(s):
            if i not in starts:
                starts.append(i)
            m = CELL_MAGIC.match(s)
            assert m is not None
            py_body = m[1] in PYTHON_MAGICS or m[2].strip().endswith(".py")
            if not marked and not py_body:
                j = i + 1
                while j < len(lines) and not (
                    _looks_python(lines[j]) or CELL_MAGIC.match(lines[j])
                ):
                    j += 1
                if j < len(lines) and not CELL_MAGIC.match(lines[j]):
                    starts.append(j)
                i = j
                continue
        i += 1
    starts = sorted(set(starts))
    return [(a, b) for a, b in zip(starts, [*starts[1:], len(lines)], strict=True) if a < b]


def _commented_files(lines: list[str], files: dict[str, str]) -> None:
    """`# %%writefile config.yaml` followed by commented-out lines: that file's text."""
    for i, line in enumerate(lines):
        m = COMMENTED_WRITEFILE.match(line.strip())
        if m is None or m[1].endswith(".py") or m[1] in files:
            continue
        body = []
        for nxt in lines[i + 1 :]:
            if not nxt.lstrip().startswith("#") or (MARKER.match(nxt) and "%%writefile" in nxt):
                break
            text = nxt.lstrip()[1:]
            body.append(text[1:] if text.startswith(" ") else text)
        if any(b.strip() for b in body):
            files[m[1]] = "\n".join(body) + "\n"


def load(text: str) -> Source:
    """The statements of `text`, cell by cell; what was skipped in `notes`."""
    cut = ""
    if len(text) > MAX_CHARS:
        end = text.rfind("\n", 0, MAX_CHARS)
        text, cut = text[: end if end > 0 else MAX_CHARS], f"read the first {MAX_CHARS} characters"
    reader = _Reader(text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", " "))
    if cut:
        reader.src.notes.append(f"the script is long: {cut}")
    lines = reader.src.lines
    for a, b in _cells(lines):
        reader.cell(lines[a:b], a + 1)
    _commented_files(lines, reader.src.files)
    reader.src.comments = [
        s.split("#", 1)[1] for s in lines if "#" in s and not MARKER.match(s.strip())
    ]
    return reader.src
