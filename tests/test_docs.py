"""The README and docs/: short enough to read, every relative link resolves, and they describe
the product rather than the project's history."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
DOCS = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md")), PROJECT / "demos" / "README.md"]
HISTORY = re.compile(r"\bsession[- ]\d|\bthis session\b|\bissue #?\d+|\bprevious default\b|\bthe old default\b|"
                     r"\(#\d+\)", re.I)
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def test_the_readme_is_read_in_five_minutes():
    lines = (PROJECT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move the depth to docs/"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(PROJECT)))
def test_links_resolve_and_no_history_words(path):
    text = path.read_text(encoding="utf-8")
    for target, _ in LINK.findall(text):
        if "://" in target:
            continue
        assert (path.parent / target).exists(), f"{path.name}: link to {target} does not resolve"
    found = HISTORY.findall(text)
    assert not found, f"{path.name} speaks of the project's history: {found}"
    assert not re.search(r"\b[A-Z][A-Z_]*_(TABLE|FIGURES)\b|\bMEASURED\n", text), f"{path.name} holds a placeholder"


def test_code_help_and_tests_speak_of_the_product():
    """Docstrings, help texts, messages and test names say what the product does, not when."""
    found = []
    for folder in ("edgesqueeze", "tests", "benchmarks", "demos"):
        for path in sorted((PROJECT / folder).rglob("*.py")):
            if path.name == "test_docs.py":
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if HISTORY.search(line):
                    found.append(f"{path.relative_to(PROJECT)}:{n}: {line.strip()}")
    assert not found, "history words: " + "; ".join(found[:10])
