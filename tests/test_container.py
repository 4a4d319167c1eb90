"""The image, built from the project's Dockerfile with podman and run as an edge gateway runs it.

Marked ``container``; needs podman run as root (``.ci/run`` installs podman, slirp4netns and
debootstrap from Debian's packages) and is skipped with the reason when it cannot run here.

The base image: ``$JOBS_AGENT_TEST_PYTHON_IMAGE`` when set (a site's own registry or base), else
``python:3.11-slim`` when podman's store has it or can pull it, else a stand-in built here:
Debian bookworm by ``debootstrap`` (``python3``, ``python3-venv``, ``python3-dev``: Python 3.11
with its venv module and headers, as ``python:3.11-slim`` has them), imported with ``podman
import``. Only packages are downloaded, from Debian's mirror. The stand-in is kept in podman's own
store (``/var/lib/containers/storage``, outside the checkout) under a tag naming its recipe, and
so are the build's layers: a second run reuses both and rebuilds only what the change touched.
A lock file serialises two runs that would build the stand-in at once.

The image is built as a user would build it (``--format docker``, keeping ``HEALTHCHECK``) with
the host's CA bundle as the ``pip-cert`` secret when pip is told to trust one here (a
TLS-intercepting proxy), then run with its default command, the embedded run, exactly as the
docs show: a read-only root filesystem (no tmpfs either) with only ``/app/data`` writable,
ports published on 127.0.0.1. The checks: ``/healthz`` 200 within 30 s, the image's health
check passing, a twin job and a method job through the stand-in's REST convention, the process
running as uid 10001, the emulator's state written to the mounted ``/app/data`` and nothing
anywhere else, SIGTERM stopping it with exit 0 within 10 s; the image's size is printed.
A second build, from a base without the Python headers, must stop with a message naming
``python3-dev``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.test_readme_run import SET_INTERVAL_JOB, Rest, free_port

ROOT = Path(__file__).resolve().parents[1]
PODMAN = shutil.which("podman")
OFFICIAL_BASE = "docker.io/library/python:3.11-slim"
# The stand-in's tag names its recipe: change the tag when the recipe changes.
STAND_IN = "localhost/jobs-agent-test-base:bookworm-python3-venv-dev"
STAND_IN_PACKAGES = "python3,python3-venv,python3-dev"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
IMAGE = "localhost/jobs-agent-test:latest"
APP_KEY = "container-test-key"
AGENT_UID = 10001


def _skip_reason() -> str | None:
    if PODMAN is None:
        return "podman is not installed (apt-get install podman slirp4netns; .ci/run does)"
    if os.geteuid() != 0:
        return "podman must run as root here (rootless podman is not covered by this test)"
    if shutil.which("slirp4netns") is None:
        return "slirp4netns is not installed (apt-get install slirp4netns; .ci/run does)"
    return None


pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason())),
    # A cold run builds the stand-in base (~4 min) and the image (~4 min) on a loaded machine.
    pytest.mark.timeout(1800),
]


def podman(
    *args: str, timeout: float = 120, check: bool = True, stdin: Any = None
) -> subprocess.CompletedProcess[str]:
    """Run ``podman ARGS``; on failure (with ``check``) the assertion shows its output."""
    assert PODMAN is not None
    done = subprocess.run(
        [PODMAN, *args], capture_output=True, text=True, timeout=timeout, stdin=stdin
    )
    if check:
        assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr[-3000:]}"
    return done


def image_exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False).returncode == 0


def say(config: pytest.Config, line: str) -> None:
    """Print ``line`` on the terminal, past pytest's capture (the figures this test reports)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.ensure_newline()
        reporter.write_line(line)


def build_stand_in(workdir: Path) -> None:
    """Debootstrap Debian bookworm with Python 3.11, its venv module and headers into
    ``workdir`` and import it as :data:`STAND_IN`."""
    if shutil.which("debootstrap") is None:
        pytest.skip(
            "no base image: python:3.11-slim cannot be pulled and debootstrap, which builds the "
            "stand-in, is not installed (apt-get install debootstrap; .ci/run does)"
        )
    rootfs = workdir / "rootfs"
    try:
        done = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={STAND_IN_PACKAGES}",
                "bookworm",
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert done.returncode == 0, f"debootstrap failed: {(done.stdout + done.stderr)[-3000:]}"
        # The downloaded packages and lists: not part of an image (the Dockerfile runs apt-get
        # update itself).
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        podman(
            "import",
            "--change",
            "ENV LANG=C.UTF-8",
            "--change",
            'CMD ["python3"]',
            "-",
            STAND_IN,
            stdin=tar.stdout,
            timeout=600,
        )
        assert tar.wait(timeout=60) == 0
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def choose_base(workdir: Path) -> tuple[str, str]:
    """The base image for ``PYTHON_IMAGE`` and how it was had (for the printed report)."""
    chosen = os.environ.get("JOBS_AGENT_TEST_PYTHON_IMAGE")
    if chosen:
        return chosen, "from $JOBS_AGENT_TEST_PYTHON_IMAGE"
    with (Path(tempfile.gettempdir()) / "jobs-agent-test-base.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one run builds the stand-in, another waits for it
        for ref in (OFFICIAL_BASE, STAND_IN):
            if image_exists(ref):
                return ref, "cached in podman's store"
        if podman("pull", "--quiet", OFFICIAL_BASE, check=False, timeout=600).returncode == 0:
            return OFFICIAL_BASE, "pulled"
        started = time.monotonic()
        build_stand_in(workdir)
        return STAND_IN, f"stand-in built by debootstrap in {time.monotonic() - started:.0f} s"


def host_ca_bundle() -> Path | None:
    """The CA bundle pip is told to trust on this host, if any: ``$PIP_CERT``, pip's configured
    ``cert``, ``$REQUESTS_CA_BUNDLE``, ``$SSL_CERT_FILE`` (first that names a file)."""
    configured = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.cert"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    for candidate in (
        os.environ.get("PIP_CERT"),
        configured,
        os.environ.get("REQUESTS_CA_BUNDLE"),
        os.environ.get("SSL_CERT_FILE"),
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def build(base: str, *more: str, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    """``podman build`` of the project as the docs show it, on ``base``.

    ``--network host``: the RUN steps reach the package registries as the host does, with no
    bridge or NAT set up for them.
    """
    args = ["build", "--format", "docker", "--network", "host"]
    args += ["--build-arg", f"PYTHON_IMAGE={base}", "--file", str(ROOT / "Dockerfile")]
    ca = host_ca_bundle()
    if ca is not None:
        args += ["--secret", f"id=pip-cert,src={ca}"]
    return podman(*args, *more, str(ROOT), timeout=timeout, check=False)


@dataclass(frozen=True)
class Image:
    ref: str
    base: str
    config: dict[str, Any]


@pytest.fixture(scope="module")
def base_image(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> str:
    base, how = choose_base(tmp_path_factory.mktemp("base"))
    say(pytestconfig, f"container base image: {base} ({how})")
    return base


@pytest.fixture(scope="module")
def image(
    base_image: str, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Image:
    iidfile = tmp_path_factory.mktemp("image") / "iid"
    started = time.monotonic()
    done = build(base_image, "--iidfile", str(iidfile), "--tag", IMAGE)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, f"the image did not build: {(done.stdout + done.stderr)[-4000:]}"
    ref = iidfile.read_text().strip()
    (config,) = json.loads(podman("image", "inspect", ref).stdout)
    say(pytestconfig, f"container image built in {elapsed:.0f} s")
    return Image(ref=ref, base=base_image, config=config)


@dataclass(frozen=True)
class Running:
    name: str
    twx: str
    health: str
    data: Path
    healthy_after: float | None


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def run_limits() -> list[str]:
    """Open files and processes at most this process's own hard limits (and 16384).

    podman as root asks for far more than most hosts' hard limits by default, which needs
    CAP_SYS_RESOURCE; a container or sandbox without it refuses to start the container.
    """
    args = []
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(which)[1]
        value = 16384 if hard == resource.RLIM_INFINITY else min(hard, 16384)
        args += ["--ulimit", f"{name}={value}:{value}"]
    return args


@pytest.fixture(scope="module")
def running(image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The image's default run (the embedded run) with a read-only root filesystem, only the
    mounted ``/app/data`` writable, the stand-in's and the health ports published on
    127.0.0.1."""
    data = tmp_path_factory.mktemp("data")
    os.chown(data, AGENT_UID, AGENT_UID)
    twx, health = free_port("127.0.0.1", below=32768), free_port("127.0.0.1")
    name = f"jobs-agent-test-{os.getpid()}-{twx}"
    started = time.monotonic()
    podman(
        "run",
        "--detach",
        "--name",
        name,
        "--read-only",
        "--read-only-tmpfs=false",
        "--volume",
        f"{data}:/app/data",
        "--network",
        "slirp4netns:port_handler=slirp4netns",
        "--publish",
        f"127.0.0.1:{twx}:8080",
        "--publish",
        f"127.0.0.1:{health}:9102",
        "--env",
        f"THINGWORX_APP_KEY={APP_KEY}",
        *run_limits(),
        image.ref,
    )
    try:
        healthy_after = None
        while time.monotonic() - started < 60:
            if http_status(f"http://127.0.0.1:{health}/healthz") == 200:
                healthy_after = time.monotonic() - started
                break
            time.sleep(0.5)
        yield Running(
            name=name,
            twx=f"http://127.0.0.1:{twx}",
            health=f"http://127.0.0.1:{health}",
            data=data,
            healthy_after=healthy_after,
        )
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def logs(running: Running) -> str:
    """The container's output: its stdout, then the end of its stderr (the JSON log lines)."""
    done = podman("logs", running.name, check=False)
    return f"{done.stdout}\n--- stderr:\n{done.stderr[-4000:]}"


def test_image_keeps_its_health_check_and_user_and_prints_its_size(
    image: Image, pytestconfig: pytest.Config
) -> None:
    # The Docker image format keeps HEALTHCHECK (podman's default, OCI, would drop it).
    assert image.config["ManifestType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert image.config["Healthcheck"]["Test"][-1].endswith(
        "urlopen('http://127.0.0.1:9102/healthz', timeout=4).status == 200 else 1)\""
    ), image.config.get("Healthcheck")
    config = image.config["Config"]
    assert config["User"] == "agent"
    assert config["Cmd"] == ["jobs-agent", "run"]
    (base,) = json.loads(podman("image", "inspect", image.base).stdout)
    size, base_size = image.config["Size"], base["Size"]
    assert size > base_size
    say(
        pytestconfig,
        f"container image size: {size / 1e6:.0f} MB (base {image.base}: {base_size / 1e6:.0f} MB,"
        f" agent and dependencies {(size - base_size) / 1e6:.0f} MB)",
    )


def test_healthz_answers_200_within_30_s(running: Running) -> None:
    assert running.healthy_after is not None, f"no 200 from /healthz in 60 s:\n{logs(running)}"
    assert running.healthy_after < 30, f"/healthz took {running.healthy_after:.1f} s"
    # The image's own HEALTHCHECK, as podman runs it.
    check = podman("healthcheck", "run", running.name, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


async def test_jobs_through_the_rest_convention(running: Running) -> None:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        rest = Rest(http, running.twx, APP_KEY)
        (twin,) = await rest.rows(
            "AzureIotDeviceJobScheduleTwinUpdateJob",
            {
                "patch": {"properties": {"desired": {"telemetryInterval": 42}}},
                "queryCondition": "deviceId IN ['device-0001', 'device-0002']",
            },
        )
        done = await rest.finished(twin["jobId"])
        assert (done["status"], done["deviceCount"], done["succeededCount"]) == (
            "completed",
            2,
            2,
        )
        (method,) = await rest.rows(
            "AzureIotDeviceJobScheduleDeviceMethodJob",
            {**SET_INTERVAL_JOB, "queryCondition": "deviceId IN ['device-0001', 'device-0010']"},
        )
        done = await rest.finished(method["jobId"])
        assert (done["status"], done["succeededCount"], done["failedCount"]) == ("completed", 1, 1)
        results = await rest.results(method["jobId"])
        assert results["device-0001"]["methodPayload"] == {"intervalSeconds": 5}
        assert results["device-0010"]["errorCode"] == "DeviceNotOnline"  # every 10th is offline


def test_runs_as_uid_10001_on_a_read_only_root_filesystem(running: Running) -> None:
    (state,) = json.loads(podman("container", "inspect", running.name).stdout)
    assert state["HostConfig"]["ReadonlyRootfs"] is True
    pid = state["State"]["Pid"]
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == [str(AGENT_UID)] * 4, status
    # The emulator's state went to the mounted /app/data, written by the agent's user.
    hub = running.data / "hub.json"
    assert hub.is_file() and hub.stat().st_uid == AGENT_UID
    # Even root cannot write anywhere else: the root filesystem is read-only, /tmp included.
    for path in ("/app/probe", "/tmp/probe", "/home/agent/probe"):
        done = podman("exec", "--user", "root", running.name, "touch", path, check=False)
        assert done.returncode != 0 and "Read-only file system" in done.stderr, (path, done)


def test_sigterm_stops_it_cleanly_within_10_s(running: Running) -> None:
    started = time.monotonic()
    podman("kill", "--signal", "TERM", running.name)
    waited = podman("wait", running.name, timeout=60)
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"stopping took {elapsed:.1f} s:\n{logs(running)}"
    assert waited.stdout.strip() == "0", logs(running)
    output = podman("logs", running.name).stdout
    assert output.rstrip().endswith("stopped"), logs(running)
    assert "Traceback" not in logs(running)


def test_build_without_python_headers_names_the_package(base_image: str, tmp_path: Path) -> None:
    """The build stage refuses a base without ``Python.h`` with the package that provides it."""
    headless = "localhost/jobs-agent-test-base:no-python-headers"
    (tmp_path / "Containerfile").write_text(
        f"FROM {base_image}\n"
        'RUN rm "$(python3 -c \'import sysconfig; print(sysconfig.get_paths()["include"])\')'
        '/Python.h"\n'
    )
    # Kept, like the stand-in: a later run finds it and its requirements stage cached.
    podman("build", "--network", "none", "--tag", headless, str(tmp_path), timeout=300)
    done = build(headless, "--target", "build", timeout=600)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "the Python headers" in output and "python3-dev" in output, output[-3000:]
