"""Each package's ``__all__`` both ways: every name listed exists, and every public top-level name
of the package's ``__init__`` (a class, function or constant it defines or imports) is listed."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types
from pathlib import Path

import pytest

ROOTS = ("agent", "services", "wrappers", "emulator")
ROOT_DIR = Path(__file__).resolve().parents[1]


def _packages() -> list[str]:
    found: list[str] = []
    for root in ROOTS:
        found.append(root)
        package = importlib.import_module(root)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{root}."):
            if info.ispkg and not info.name.rsplit(".", 1)[-1].startswith("_"):
                found.append(info.name)
    return found


def _public_names(module: types.ModuleType) -> set[str]:
    """Top-level names a reader would take for the package's API: not private, not a module,
    not ``from __future__ import annotations``."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or name == "annotations" or inspect.ismodule(value):
            continue
        names.add(name)
    return names


PACKAGES = _packages()


def test_every_package_is_found() -> None:
    assert {"agent", "agent.cli", "agent.channel", "agent.iothub", "services"} <= set(PACKAGES)


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_exact(name: str) -> None:
    module = importlib.import_module(name)
    listed = getattr(module, "__all__", None)
    public = _public_names(module)
    if listed is None:
        assert not public, f"{name} has public names {sorted(public)} but no __all__"
        return
    assert len(listed) == len(set(listed)), f"{name}.__all__ lists a name twice"
    missing = [n for n in listed if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists names it does not have: {missing}"
    unlisted = sorted(public - set(listed))
    assert not unlisted, f"{name} has public names missing from __all__: {unlisted}"


def test_version_is_the_distribution_s() -> None:
    import tomllib

    import agent

    project = tomllib.loads((ROOT_DIR / "pyproject.toml").read_text("utf-8"))["project"]
    assert agent.__version__ == project["version"]


def test_packages_are_typed() -> None:
    for root in ROOTS:
        assert (ROOT_DIR / root / "py.typed").is_file(), f"{root}/py.typed is missing"
