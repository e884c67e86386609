"""The wheel holds every package of core: pyproject lists them by hand (core/ is mapped to
``perpcarry``), so a new subpackage left out would import from a checkout and be missing
from an install."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_core_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    on_disk = {"perpcarry"} | {
        "perpcarry." + ".".join(path.parent.relative_to(ROOT / "core").parts)
        for path in (ROOT / "core").rglob("*.py")
        if path.parent != ROOT / "core" and "__pycache__" not in path.parts}
    assert on_disk - listed == set()
    assert all((ROOT / "core" / Path(*name.split(".")[1:]) / "__init__.py").is_file()
               for name in on_disk)
