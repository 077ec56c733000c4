"""Pull a training log and the training code out of a Jupyter notebook, unchanged.

    python bench/diagnose_wild/extract_notebook.py NB.ipynb --list
    python bench/diagnose_wild/extract_notebook.py NB.ipynb --log-cells 12 15 --out CASE/fit_log.txt
    python bench/diagnose_wild/extract_notebook.py NB.ipynb --code --out CACHE/script.py

Cells are numbered from 1 over all cells (markdown included), as `--list` shows them. The log is
the text of the chosen cells' `stream` outputs (and `text/plain` results), joined in order, byte for
byte: ANSI escapes, carriage returns and backspaces stay, as a user would paste them. The code is
every code cell in order with `# %% cell N` between cells; IPython magics are kept as written
(a reader of the script has to cope with them, as with any notebook export).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def cell_log(cell: dict[str, Any]) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(_text(out.get("text")))
        elif out.get("output_type") in ("execute_result", "display_data"):
            plain = out.get("data", {}).get("text/plain")
            if plain is not None:
                parts.append(_text(plain) + "\n")
    return "".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("notebook")
    ap.add_argument("--list", action="store_true", help="list cells with a one-line summary")
    ap.add_argument(
        "--log-cells", type=int, nargs="+", metavar="N", help="cells whose output is the log"
    )
    ap.add_argument("--code", action="store_true", help="write the code cells instead")
    ap.add_argument("--out", help="output file (default: stdout)")
    args = ap.parse_args()
    cells = json.loads(Path(args.notebook).read_text(encoding="utf-8"))["cells"]
    if args.list:
        for i, c in enumerate(cells, 1):
            first = _text(c.get("source")).strip().splitlines()[:1]
            log = cell_log(c) if c.get("cell_type") == "code" else ""
            print(
                f"{i:4d} {c.get('cell_type', '?'):8s} out={len(log):7d}  {(first or [''])[0][:90]}"
            )
        return
    if args.code:
        text = "".join(
            f"# %% cell {i}\n{_text(c.get('source'))}\n"
            for i, c in enumerate(cells, 1)
            if c.get("cell_type") == "code"
        )
    elif args.log_cells:
        text = "".join(cell_log(cells[n - 1]) for n in args.log_cells)
    else:
        ap.error("give --list, --log-cells N... or --code")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_bytes(text.encode("utf-8"))
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
