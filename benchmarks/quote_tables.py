"""Copy each benchmark's written table into the pages that quote it.

A table directly under ``<!-- quoted from benchmarks/.../table.md -->`` in the README or a page of ``docs/`` is
that file's table, row for row (``tests/test_docs.py`` checks it). A benchmark measured a few rows per session
rewrites its ``table.md`` after every row; this script then puts the new table in every page that quotes it, so
that no row is typed in by hand. Tables quoted from a tutorial (``.ipynb``) are left alone: they quote its rows,
not a whole table.

    python benchmarks/quote_tables.py           # rewrite the stale quoted tables, name the pages changed
    python benchmarks/quote_tables.py --check   # only name them; exit status 1 if any
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!-- quoted from (\S+\.md) -->")


def pages(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def table_lines(path: Path) -> list[str]:
    """The lines of the one table ``path`` holds."""
    lines = [line for line in path.read_text().split("\n") if line.startswith("|")]
    if not lines:
        raise SystemExit(f"{path} holds no table")
    return lines


def requoted(text: str, root: Path, name: str = "the page") -> str:
    """``text`` with every table under a quote marker replaced by its source's table."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        out.append(lines[i])
        match = MARKER.fullmatch(lines[i].strip())
        i += 1
        if match:
            if i == len(lines) or not lines[i].startswith("|"):
                raise SystemExit(f"{name}: the quote of {match.group(1)} is not directly above a table")
            while i < len(lines) and lines[i].startswith("|"):
                i += 1
            out += table_lines(root / match.group(1))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only name the stale pages; exit status 1 if any")
    args = parser.parse_args(argv)
    stale = []
    for page in pages(ROOT):
        text = page.read_text()
        new = requoted(text, ROOT, str(page.relative_to(ROOT)))
        if new != text:
            stale.append(page.relative_to(ROOT))
            if not args.check:
                page.write_text(new)
    verb = "stale" if args.check else "updated"
    print(f"{verb}: {', '.join(map(str, stale))}" if stale else "every quoted table is its source's")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
