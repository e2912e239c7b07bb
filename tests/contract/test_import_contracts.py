"""Every module of the package lies under the import-linter layers (pyproject.toml), so none escapes them."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import spaceport

ROOT = Path(__file__).resolve().parents[2]


def test_every_module_is_in_a_layer() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    covered = {name.strip() for layer in layers for name in layer.split("|")}
    modules = [m.name for m in pkgutil.walk_packages(spaceport.__path__, "spaceport.")]
    assert len(modules) > 50
    outside = [m for m in modules if not any(m == c or m.startswith(c + ".") for c in covered)]
    assert outside == [], f"modules in no layer of [tool.importlinter]: {outside}"
