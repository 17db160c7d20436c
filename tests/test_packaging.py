"""The wheel carries every package: a folder with an `__init__.py` that pyproject.toml does not
list is left out of `uv build --wheel` (it happened to `foreman.cf_adapter`)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for name, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *relative.parts]))
    mapped = set(config["package-dir"])
    missing = {p for p in found if p not in listed and not any(p == m for m in mapped - listed)}
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"
