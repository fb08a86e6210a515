"""docs/architecture.md describes the code as it is: every path and module it names exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text()

PATH_RE = re.compile(r"`((?:shared|services|tests|benchmarks|deploy|examples|docs)/[^`\s]*)`")
NAME_RE = re.compile(r"\b(qubus(?:_services)?(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def _resolves(dotted: str) -> bool:
    """Whether ``dotted`` is a module, or a module's attribute (a class's attribute too)."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            if not hasattr(obj, attribute):
                return False
            obj = getattr(obj, attribute)
        return True
    return False


@pytest.mark.parametrize("path", sorted(set(PATH_RE.findall(DOC))))
def test_every_path_in_the_architecture_notes_exists(path: str) -> None:
    pattern = re.sub(r"<[^>]+>", "*", path.rstrip("/"))
    assert list(ROOT.glob(pattern)), path


# NATS subjects (``qubus.task.<id>...``) share the prefix; a module name is what follows it.
SUBJECT_TOKENS = {"task", "submit", "link", "svc", "log", "error", "qpu"}


@pytest.mark.parametrize(
    "name",
    sorted(n for n in set(NAME_RE.findall(DOC)) if n.split(".")[1] not in SUBJECT_TOKENS),
)
def test_every_module_named_in_the_architecture_notes_exists(name: str) -> None:
    assert _resolves(name), name
