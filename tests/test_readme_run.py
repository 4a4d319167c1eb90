"""The README's run command, `make run`, from a clean checkout of HEAD, as a user meets it.

The repository is cloned into tmp_path; the clone gets a `.venv` whose `bin` is the existing
virtualenv's and a fresh `.venv/.installed` stamp, so make does not reinstall, and PYTHONPATH puts
the clone's packages first (checked below: the clone's code is what runs). The embedded ends get
a fresh 127.x.y.z address and free ports through JOBS_AGENT_EMBEDDED__* and JOBS_AGENT_HEALTH__*
(the device endpoint always listens on 8883, hence the fresh address). The test waits for the
`ready` line, drives a twin job and a method job to their end through the stand-in's REST
convention (like curl), reads the per-device results, then runs the README's tour block for real
(bash, curl and jq, with only the address and the key replaced; one statement at a time, waiting
as a reader would for the jobs started so far to end before a statement that reads them) and
checks each answer against what the README says; then it stops the agent with SIGTERM and checks
that make exits 0 promptly, "stopped" was printed, and nothing is left running or listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.network import fresh_loopback

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
GATEWAY = "AzureIotHub"
# The tour's first line, whose address and key the test replaces with the run's own.
TOUR_ADDRESS = "TWX=http://127.0.0.1:8080/Thingworx/Things; KEY=demo-key"
# Services whose answer depends on the jobs started before: a reader waits for those to end.
TOUR_READS = ("AzureIotDeviceJobGetJob", "AzureIotDeviceJobQueryJobResults", "FindJobs")

pytestmark = pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("git") is None or not (VENV / "bin").is_dir(),
    reason="needs make, git and the project's virtualenv",
)


def free_port(host: str, below: int = 65536) -> int:
    """A port free on ``host`` now (under ``below``: the stand-in's must stay < 32768)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, below - 1)
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


def session_processes(sid: int) -> list[int]:
    """Pids of the live processes in session ``sid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) == sid and fields[0] != "Z":  # fields[3] is the session id
                pids.append(int(entry.name))
    return pids


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def prepare_clone(tmp_path: Path) -> Path:
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)],
        check=True,
        timeout=60,
    )
    venv = clone / ".venv"
    venv.mkdir()
    (venv / "bin").symlink_to(VENV / "bin")
    stamp = venv / ".installed"
    stamp.touch()
    later = (clone / "pyproject.toml").stat().st_mtime + 1
    os.utime(stamp, (later, later))
    return clone


def check_clone_runs_its_own_code(clone: Path, env: dict[str, str]) -> None:
    """make will not reinstall, and the clone's code is what Python imports."""
    dry = subprocess.run(
        ["make", "-n", "run"], cwd=clone, env=env, capture_output=True, text=True, check=True
    )
    assert "pip install" not in dry.stdout and ".venv/bin/jobs-agent run" in dry.stdout
    # The interpreter `make run` ends up in: the one named by the jobs-agent script's shebang.
    script = clone / ".venv" / "bin" / "jobs-agent"
    interpreter = script.read_text().splitlines()[0].removeprefix("#!").strip()
    where = subprocess.run(
        [interpreter, "-c", "import agent.cli; print(agent.cli.__file__)"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()) == clone / "agent" / "cli" / "__init__.py"


def cmdline(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


# A method job's inputs but its queryCondition: setTelemetryInterval, short timeouts (so an
# offline device fails fast with DeviceNotOnline).
SET_INTERVAL_JOB: dict[str, Any] = {
    "methodName": "setTelemetryInterval",
    "payload": {"intervalSeconds": 5},
    "connectTimeoutInSeconds": 1,
    "responseTimeoutInSeconds": 5,
}


class Rest:
    """The stand-in's REST convention, called the way curl would."""

    def __init__(self, http: aiohttp.ClientSession, root: str, app_key: str) -> None:
        self.http, self.root, self.app_key = http, root, app_key

    async def rows(self, service: str, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        url = f"{self.root}/Thingworx/Things/{GATEWAY}/Services/{service}"
        async with self.http.post(url, json=inputs, headers={"appKey": self.app_key}) as reply:
            body = await reply.text()
            assert reply.status == 200, f"{service}: {reply.status} {body}"
            return list((await reply.json())["rows"])

    async def finished(self, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            (job,) = await self.rows("AzureIotDeviceJobGetJob", {"jobId": job_id})
            if job["status"] in ("completed", "failed", "cancelled"):
                return job
            assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
            await asyncio.sleep(0.2)

    async def settled(self, timeout: float = 30.0) -> None:
        """Wait until no job is pending or running (scheduled-for-later ones may stay)."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = await self.rows("AzureIotDeviceJobFindJobs", {"maxRows": 1000})
            busy = [j["jobId"] for j in jobs if j["status"] in ("pending", "running")]
            if not busy:
                return
            assert time.monotonic() < deadline, f"jobs still running: {busy}"
            await asyncio.sleep(0.2)

    async def results(self, job_id: str) -> dict[str, dict[str, Any]]:
        query = f"SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '{job_id}'"
        rows = await self.rows("AzureIotDeviceJobQueryJobResults", {"query": query})
        return {row["deviceId"]: row for row in rows}


def tour_block() -> str:
    """The README's tour shell block."""
    readme = (REPO / "README.md").read_text()
    tour = readme.split("## A tour of the embedded run", 1)[1]
    return tour.split("```sh\n", 1)[1].split("```", 1)[0]


def tour_statements(block: str) -> tuple[str, list[str]]:
    """The block's prelude (address, key, the call function) and its statements: each starts
    with ``call`` and goes on over the lines that do not start a new one."""
    prelude, body = block.split("\n\n", 1)
    statements: list[str] = []
    for line in body.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("call "):
            statements.append(line)
        else:
            assert statements, f"a tour line outside a statement: {line!r}"
            statements[-1] += "\n" + line
    return prelude, statements


async def run_tour(rest: Rest, root: str, key: str) -> list[str]:
    """Run the tour, a statement at a time, in bash; the answers (stdout) in order."""
    for tool in ("bash", "curl", "jq"):
        assert shutil.which(tool), f"the README tour needs {tool} (.ci/run installs jq)"
    prelude, statements = tour_statements(tour_block())
    assert TOUR_ADDRESS in prelude, "the tour's address line changed: update TOUR_ADDRESS"
    prelude = prelude.replace(TOUR_ADDRESS, f"TWX={root}/Thingworx/Things; KEY={key}")
    answers = []
    for statement in statements:
        if any(name in statement for name in TOUR_READS):
            await rest.settled()
        done = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            f"{prelude}\n{statement}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await done.communicate()
        assert done.returncode == 0, f"{statement}\n{err.decode()}"
        answers.append(out.decode().strip())
    return answers


def rows_of(answer: str) -> list[dict[str, Any]]:
    doc = json.loads(answer)
    assert "rows" in doc, answer
    return list(doc["rows"])


async def check_tour(rest: Rest, root: str, key: str) -> None:
    """Each tour answer is what the README says it is."""
    answers = await run_tour(rest, root, key)
    assert len(answers) == 10, "the tour's statements changed: update check_tour"
    (twin,) = rows_of(answers[0])
    assert (twin["jobId"], twin["type"]) == ("tour-twin", "twinUpdate")
    assert json.loads(answers[1]) == "completed: 3 succeeded, 0 failed"
    (reboot,) = rows_of(answers[2])
    assert (reboot["jobId"], reboot["type"]) == ("tour-reboot", "deviceMethod")
    block = tour_block()
    rows = [json.loads(line) for line in answers[3].splitlines()]
    assert sorted(r["deviceId"] for r in rows) == ["device-0001", "device-0002", "device-0010"]
    said = re.search(r"# device-0010's row: (\{.*\})", block)
    assert said, "the tour no longer shows device-0010's row"
    assert json.loads(said.group(1)) in rows
    summary = re.search(r'its summary says "([^"]+)"', block)
    assert summary, "the tour no longer quotes the method job's summary"
    (ended,) = await rest.rows("AzureIotDeviceJobGetJob", {"jobId": "tour-reboot"})
    assert ended["summary"] == summary.group(1)
    found = rows_of(answers[4])
    assert "tour-reboot" in {j["jobId"] for j in found}
    assert {(j["type"], j["status"]) for j in found} == {("deviceMethod", "completed")}
    (later,) = rows_of(answers[5])
    assert (later["jobId"], later["status"]) == ("tour-later", "scheduled")
    (cancelled,) = rows_of(answers[6])
    assert (cancelled["jobId"], cancelled["status"]) == ("tour-later", "cancelled")
    (own,) = rows_of(answers[7])
    assert own["queryCondition"] == "deviceId = 'device-0005'"
    (method,) = rows_of(answers[8])
    assert (method["deviceId"], method["status"]) == ("device-0004", 200)
    assert method["payload"] == {"intervalSeconds": 15}
    (wrapper,) = rows_of(answers[9])
    assert wrapper["type"] == "deviceMethod"
    assert wrapper["queryCondition"] == 'deviceId IN ["device-0001"]'


@pytest.mark.timeout(240)
async def test_make_run_from_a_clean_checkout(tmp_path: Path) -> None:
    clone = prepare_clone(tmp_path)
    host = fresh_loopback()
    twx_port = free_port(host, below=32768)
    ports = {"twx": twx_port, "rest": free_port(host), "health": free_port(host)}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBS_AGENT_", "THINGWORX_"))}
    env.update(
        PYTHONPATH=str(clone),
        JOBS_AGENT_EMBEDDED__HOST=host,
        JOBS_AGENT_EMBEDDED__THINGWORX_PORT=str(ports["twx"]),
        JOBS_AGENT_EMBEDDED__IOTHUB_REST_PORT=str(ports["rest"]),
        JOBS_AGENT_HEALTH__HOST=host,
        JOBS_AGENT_HEALTH__PORT=str(ports["health"]),
        JOBS_AGENT_LOG__FORMAT="json",
    )
    check_clone_runs_its_own_code(clone, env)

    stderr = (tmp_path / "stderr.log").open("wb")
    make = await asyncio.create_subprocess_exec(
        "make",
        "run",
        cwd=clone,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        start_new_session=True,
    )
    lines: list[str] = []

    async def read_until(prefix: str, timeout: float) -> str:
        assert make.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await make.stdout.readline()
                if not raw:
                    log = (tmp_path / "stderr.log").read_text()[-3000:]
                    raise AssertionError(f"make run ended early: {lines}\n{log}")
                line = raw.decode().rstrip("\n")
                lines.append(line)
                if line.startswith(prefix):
                    return line

    try:
        ready = await read_until("ready", 90)
        root = f"http://{host}:{ports['twx']}"
        assert root in ready
        banner = "\n".join(lines)
        key_match = re.search(r"app key\s+(\S+)\s+\(generated", banner)
        assert key_match, banner
        assert "AzureIotHub + 50 device Things" in banner
        assert "curl -s -X POST" in banner

        agent_pids = children(make.pid)
        assert len(agent_pids) == 1
        command = cmdline(agent_pids[0])
        assert b".venv/bin/jobs-agent" in command[1] and command[2] == b"run"

        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            rest = Rest(http, root, key_match.group(1))
            async with http.get(f"http://{host}:{ports['health']}/healthz") as reply:
                assert reply.status in (200, 503)  # 503 only until the first hub probe
            # A twin job on three devices.
            (twin,) = await rest.rows(
                "AzureIotDeviceJobScheduleTwinUpdateJob",
                {
                    "patch": {"properties": {"desired": {"telemetryInterval": 42}}},
                    "queryCondition": "deviceId IN ['device-0001', 'device-0002', 'device-0003']",
                },
            )
            done = await rest.finished(twin["jobId"])
            assert (done["status"], done["deviceCount"], done["succeededCount"]) == (
                "completed",
                3,
                3,
            )
            results = await rest.results(twin["jobId"])
            assert sorted(results) == ["device-0001", "device-0002", "device-0003"]
            assert {r["status"] for r in results.values()} == {"completed"}
            # A method job on two online devices and one offline (every 10th is offline).
            (method,) = await rest.rows(
                "AzureIotDeviceJobScheduleDeviceMethodJob",
                {
                    **SET_INTERVAL_JOB,
                    "queryCondition": "deviceId IN ['device-0001', 'device-0002', 'device-0010']",
                },
            )
            done = await rest.finished(method["jobId"])
            assert (done["status"], done["succeededCount"], done["failedCount"]) == (
                "completed",
                2,
                1,
            )
            results = await rest.results(method["jobId"])
            for device in ("device-0001", "device-0002"):
                assert results[device]["status"] == "completed"
                assert results[device]["methodStatus"] == 200
                assert results[device]["methodPayload"] == {"intervalSeconds": 5}
            assert results["device-0010"]["status"] == "failed"
            assert results["device-0010"]["errorCode"] == "DeviceNotOnline"
            async with http.get(f"http://{host}:{ports['health']}/healthz") as reply:
                assert reply.status == 200, await reply.text()
            # The README's tour, for real.
            await check_tour(rest, root, key_match.group(1))

        started = time.monotonic()
        os.kill(agent_pids[0], signal.SIGTERM)
        async with asyncio.timeout(20):
            rest_of_output = (await make.stdout.read()).decode() if make.stdout else ""
            code = await make.wait()
        elapsed = time.monotonic() - started
        assert code == 0, (tmp_path / "stderr.log").read_text()[-3000:]
        assert "stopped" in rest_of_output
        assert elapsed < 15
        assert session_processes(make.pid) == []
        for port in (8883, *ports.values()):
            # SO_REUSEADDR: closed connections may linger in TIME_WAIT; a listener may not.
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, port))
                probe.listen()
        log = (tmp_path / "stderr.log").read_text()
        assert '"event": "unbound"' in log  # the agent unbound its Things on the way out
        assert "Traceback" not in log
    finally:
        if make.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(make.pid, signal.SIGKILL)
            await make.wait()
        stderr.close()
