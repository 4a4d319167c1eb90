"""The package as the Dockerfile installs it (``pip install .``, not the editable dev install).

An editable install reads files from the checkout, so it cannot show that the wheel carries the
data files the code loads at run time (the query grammar, the console's page). This test builds
the wheel the way the image does and looks inside; it also keeps the Dockerfile in step with the
project (packages copied, the command, the health check's address).

The wheel is built from a copy of what the Dockerfile copies into its build stage (no ``build/``
directory, no extension built in place), so that it shows what a fresh build holds: with a C
compiler, the optional C row reader ``agent.alwayson._rowreader``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from agent.settings import HealthSettings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def _build_stage_copies() -> list[str]:
    """What the Dockerfile's build stage copies from the project (``COPY a b ./`` or
    ``COPY a ./a``), up to the ``pip wheel`` step."""
    stage = DOCKERFILE.split(" AS build", 1)[1].split("pip wheel --no-deps", 1)[0]
    copied: list[str] = []
    for line in re.findall(r"^COPY (?!--from)(.+) \./\S*$", stage, re.MULTILINE):
        copied += line.split()
    return copied


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src")
    for name in _build_stage_copies():
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info")
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    # Build isolation fetches setuptools from the package registry, like the image build does.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(src), "-w", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_wheel_carries_the_run_time_data_files(wheel_names: set[str]) -> None:
    for data in (
        "iothub_query/grammar.lark",
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
        "iothub_query",
        "logsetup",
        "emulator/thingworx",
    ):
        assert f"{package}/__init__.py" in wheel_names, package
    assert not any(name.startswith("tests/") for name in wheel_names)
    entry_points = next(n for n in wheel_names if n.endswith("entry_points.txt"))
    assert entry_points


def test_wheel_carries_the_c_row_reader_where_a_compiler_is(wheel_names: set[str]) -> None:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler: the wheel is pure Python, as setuptools' optional build allows")
    built = [n for n in wheel_names if re.fullmatch(r"agent/alwayson/_rowreader\..*\.so", n)]
    assert len(built) == 1, sorted(n for n in wheel_names if "_rowreader" in n)


def test_dockerfile_copies_every_package_the_project_ships() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = set(re.findall(r"^COPY (\w+) \./\1$", DOCKERFILE, re.MULTILINE))
    assert shipped <= copied
    assert {"pyproject.toml", "README.md"} <= set(_build_stage_copies())
    assert "COPY config ./config" in DOCKERFILE


def test_dockerfile_builds_the_wheel_with_a_compiler_and_installs_it_in_the_slim_image() -> None:
    # Both stages start from the PYTHON_IMAGE argument, python:3.11-slim unless told otherwise.
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", DOCKERFILE, re.MULTILINE)
    assert re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE) == ["${PYTHON_IMAGE}"] * 3
    build, image = DOCKERFILE.split(" AS build", 1)[1].split("\nFROM ", 1)
    # The build stage: the Python headers (or a message naming their package), a C compiler,
    # the dependencies' wheels (pip trusting the pip-cert secret when given), then the
    # project's wheel, refused without the extension.
    headers, rest = build.split("apt-get update", 1)
    assert "Python.h" in headers and "python3-dev" in headers
    assert re.search(r"apt-get install .*\bgcc\b.*\blibc6-dev\b", rest)
    assert "--mount=type=secret,id=pip-cert" in rest
    assert "PIP_CERT=/run/secrets/pip-cert" in rest
    assert re.search(r"pip wheel -r /requirements/deps\.txt -w /deps", rest)
    assert re.search(r"^RUN .*pip wheel --no-deps --no-build-isolation \. -w /wheels", rest, re.M)
    assert "_rowreader." in rest.split("pip wheel --no-deps", 1)[1]
    # The image: the slim base (no compiler) installs those wheels, from them alone, and checks
    # the accelerator.
    assert image.startswith("${PYTHON_IMAGE}\n")
    assert "gcc" not in image
    assert "COPY --from=build /deps /deps" in image
    assert re.search(r"^RUN .*pip install --no-index /deps/\*\.whl", image, re.MULTILINE)
    assert "COPY --from=build /wheels /wheels" in image
    assert re.search(r"^RUN .*pip install --no-index /wheels/\*\.whl", image, re.MULTILINE)
    assert "a.ACCELERATED" in image


def test_dockerfile_reads_its_requirements_from_pyproject() -> None:
    """The requirements stage writes build-system.requires and project.dependencies: run its
    one-liner here on the real pyproject.toml."""
    stage = DOCKERFILE.split(" AS requirements", 1)[1].split("\nFROM ", 1)[0]
    (one_liner,) = re.findall(r'python3 -c "(.+)"$', stage, re.MULTILINE)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as out:
        code = one_liner.replace("/src/pyproject.toml", str(ROOT / "pyproject.toml"))
        code = code.replace("/requirements/", out + "/")
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        deps = Path(out, "deps.txt").read_text(encoding="utf-8").splitlines()
        build = Path(out, "build.txt").read_text(encoding="utf-8").splitlines()
    assert deps == pyproject["project"]["dependencies"]
    assert build == pyproject["build-system"]["requires"]


def test_dockerfile_runs_the_agent_and_checks_its_health_endpoint() -> None:
    assert 'CMD ["jobs-agent", "run"]' in DOCKERFILE
    port = HealthSettings().port
    assert f"127.0.0.1:{port}/healthz" in DOCKERFILE
    assert "JOBS_AGENT_HEALTH__HOST=0.0.0.0" in DOCKERFILE
    assert re.search(rf"^EXPOSE .*\b{port}\b", DOCKERFILE, re.MULTILINE)
    assert re.search(r"^USER (?!root)\w+", DOCKERFILE, re.MULTILINE)
