"""Render the benchmark tables of README.md and docs/ from their data files.

A page never holds the only copy of a measured number: between

    <!-- table: data/accuracy.csv -->
    <!-- end table -->

this script writes the CSV (path relative to the page) as a Markdown table. Cells are Markdown
already; a relative link in a cell is relative to the CSV file, and is rewritten to stay
correct from the page it lands in.

    python scripts/render_docs.py            # rewrite the pages whose tables are stale
    python scripts/render_docs.py --check    # list them and exit 1, change nothing (tests do this)
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- table: (?P<source>[^ ]+) -->\n)(?P<body>.*?)(<!-- end table -->)", re.DOTALL)
LINK = re.compile(r"\]\((?P<target>[^)#\s]+)(?P<anchor>#[^)\s]*)?\)")


def pages(root: Path = REPO) -> list[Path]:
    """README.md and every Markdown page under docs/ except the data files' own reports."""
    data = root / "docs" / "benchmarks" / "data"
    found = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return [page for page in found if page.is_file() and data not in page.parents]


def markdown_table(csv_path: Path, page_dir: Path) -> str:
    """The CSV as a Markdown table; its relative links re-pointed from the CSV to the page."""
    rows = list(csv.reader(io.StringIO(csv_path.read_text(encoding="utf-8"))))
    if not rows:
        raise ValueError(f"{csv_path} is empty")
    width = len(rows[0])
    for number, row in enumerate(rows, start=1):
        if len(row) != width:
            raise ValueError(f"{csv_path}:{number} has {len(row)} cells, the header {width}")

    def rebased(cell: str) -> str:
        def move(match: re.Match) -> str:
            target = match["target"]
            if "://" in target or target.startswith(("/", "mailto:")):
                return match[0]
            moved = os.path.relpath(csv_path.parent / target, page_dir).replace(os.sep, "/")
            if target.endswith("/"):
                moved += "/"
            return f"]({moved}{match['anchor'] or ''})"

        return LINK.sub(move, cell).replace("|", "\\|")

    lines = ["| " + " | ".join(rebased(cell) for cell in row) + " |" for row in rows]
    lines.insert(1, "|" + "---|" * width)
    return "\n".join(lines) + "\n"


def render(text: str, page_dir: Path) -> str:
    """The page with every marked table re-rendered from its data file."""

    def fill(match: re.Match) -> str:
        source = page_dir / match["source"]
        if not source.is_file():
            raise FileNotFoundError(f"table source {match['source']} not found from {page_dir}")
        return match.group(1) + markdown_table(source, page_dir) + match.group(4)

    return BLOCK.sub(fill, text)


def stale_pages(root: Path = REPO) -> list[Path]:
    return [page for page in pages(root)
            if render(page.read_text(encoding="utf-8"), page.parent) != page.read_text(encoding="utf-8")]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = stale_pages()
    for page in stale:
        name = page.relative_to(REPO)
        if check:
            print(f"stale: {name} (run python scripts/render_docs.py)")
        else:
            page.write_text(render(page.read_text(encoding="utf-8"), page.parent), encoding="utf-8")
            print(f"rendered: {name}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
