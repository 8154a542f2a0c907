"""Docs promise only what a test proves: every test a document names (`test_...`, as a file or a
function) exists under tests/, so a renamed or deleted test cannot leave a control in the docs
pointing at nothing."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "README.md",
    ROOT / "clients" / "python" / "README.md",
    ROOT / "clients" / "node" / "README.md",
]
# A test's name as the docs write it: alone, or after `::` or a path (not inside a longer word).
NAMED = re.compile(r"(?<![\w-])(test_\w+)")


def _defined() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("*.py"):
        names.add(path.stem)
        names |= set(re.findall(r"^\s*(?:async\s+)?def (test_\w+)", path.read_text(encoding="utf-8"), re.MULTILINE))
    return names


def test_every_test_the_docs_name_exists() -> None:
    defined = _defined()
    missing = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in DOCUMENTS
        for name in NAMED.findall(path.read_text(encoding="utf-8"))
        if name not in defined
    }
    assert not missing, sorted(missing)


def test_the_check_finds_a_name_that_is_not_a_test() -> None:
    """The control: a made-up name is reported, a real one is not."""
    defined = _defined()
    assert "test_every_test_the_docs_name_exists" in defined
    assert "test_a_control_nobody_wrote" not in defined
    assert NAMED.findall("see `tests/unit/test_x.py::test_y` and test_z") == ["test_x", "test_y", "test_z"]
