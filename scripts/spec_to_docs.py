#!/usr/bin/env python3
"""Rewrites every "SPEC §N" citation in the code and README to the docs/ page that now states it.

The maths moved from shared/SPEC.md (outside the repository) to docs/ (issue 13, item 6); this
turns "SPEC §5" into "docs/steering.md", "SPEC §5–7" into "docs/steering.md, docs/resampling.md,
docs/schedules.md". Idempotent: a second run changes nothing. tests/docs_cited.rs checks that no
"SPEC §" is left and that every cited docs/ page exists.

Usage: python3 scripts/spec_to_docs.py [--check]   (--check: list what would change, exit 1 if any)
"""
import pathlib
import re
import sys

PAGES = {
    1: "model", 2: "samplers", 3: "random", 4: "rewards", 5: "steering",
    6: "resampling", 7: "schedules", 8: "search", 9: "outputs", 10: "quality",
}
TREES = ["src", "kernels", "tests", "benches", "bench", "examples", "scripts", ".ci"]
FILES = ["README.md"]
SUFFIXES = {".rs", ".cu", ".cuh", ".hpp", ".h", ".py", ".sh", ".md", ".toml"}
# "SPEC §5", "SPEC §5–7" (en dash or hyphen), "SPEC §5, §6" / "SPEC §5, 6".
CITATION = re.compile(r"SPEC §(\d+)(?:\s*[–-]\s*(\d+))?((?:\s*,\s*§?\d+\b)*)")


def pages_of(m: re.Match) -> str:
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) else first
    sections = list(range(first, last + 1))
    sections += [int(x) for x in re.findall(r"\d+", m.group(3) or "")]
    unknown = [s for s in sections if s not in PAGES]
    if unknown:
        raise SystemExit(f"{m.group(0)!r}: no docs page for section(s) {unknown}")
    return ", ".join(f"docs/{PAGES[s]}.md" for s in dict.fromkeys(sections))


def files(root: pathlib.Path):
    for tree in TREES:
        for p in sorted((root / tree).rglob("*")):
            if p.is_file() and p.suffix in SUFFIXES and p.name != pathlib.Path(__file__).name:
                yield p
    for f in FILES:
        if (root / f).is_file():
            yield root / f


def main() -> int:
    check = "--check" in sys.argv[1:]
    root = pathlib.Path(__file__).resolve().parent.parent
    changed = 0
    for p in files(root):
        text = p.read_text(encoding="utf-8")
        new = CITATION.sub(pages_of, text)
        if new != text:
            changed += 1
            n = len(CITATION.findall(text))
            print(f"{p.relative_to(root)}: {n} citation(s)")
            if not check:
                p.write_text(new, encoding="utf-8")
    print(f"{changed} file(s) {'to change' if check else 'changed'}")
    return 1 if check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
