"""The package as the Dockerfile installs it (``pip install .``, not the editable dev install).

An editable install reads files from the checkout, so it cannot show that the wheel carries the
data files the code loads at run time (the query grammar, the console's page). This test builds
the wheel the way the image does and looks inside; it also keeps the Dockerfile in step with the
project (packages copied, the command, the health check's address).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from agent.settings import HealthSettings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    # Build isolation fetches setuptools from the package registry, like the image build does.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_wheel_carries_the_run_time_data_files(wheel_names: set[str]) -> None:
    for data in (
        "emulator/iothub/query/grammar.lark",
        "emulator/thingworx/static/console.html",
        "emulator/thingworx/static/console.js",
        "emulator/thingworx/static/console.css",
    ):
        assert data in wheel_names, data


def test_wheel_has_every_package_and_the_console_script(wheel_names: set[str]) -> None:
    for package in (
        "agent",
        "agent/alwayson",
        "agent/channel",
        "agent/iothub",
        "services",
        "wrappers",
        "emulator/iothub",
        "emulator/thingworx",
    ):
        assert f"{package}/__init__.py" in wheel_names, package
    assert not any(name.startswith("tests/") for name in wheel_names)
    entry_points = next(n for n in wheel_names if n.endswith("entry_points.txt"))
    assert entry_points


def test_dockerfile_copies_every_package_the_project_ships() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = set(re.findall(r"^COPY (\w+) \./\1$", DOCKERFILE, re.MULTILINE))
    assert shipped <= copied
    assert "COPY config ./config" in DOCKERFILE
    assert re.search(r"^RUN .*pip install \.$", DOCKERFILE, re.MULTILINE)


def test_dockerfile_runs_the_agent_and_checks_its_health_endpoint() -> None:
    assert 'CMD ["jobs-agent", "run"]' in DOCKERFILE
    port = HealthSettings().port
    assert f"127.0.0.1:{port}/healthz" in DOCKERFILE
    assert "JOBS_AGENT_HEALTH__HOST=0.0.0.0" in DOCKERFILE
    assert re.search(rf"^EXPOSE .*\b{port}\b", DOCKERFILE, re.MULTILINE)
    assert re.search(r"^USER (?!root)\w+", DOCKERFILE, re.MULTILINE)
