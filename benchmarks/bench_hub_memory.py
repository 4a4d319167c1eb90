"""Resident memory of an emulator process holding 100,000 twins (goal: at most 1 GB).

Method: start ``python -m emulator.iothub --devices N --no-fleet`` as a subprocess (REST and MQTT
on free ports of 127.0.0.1, a fresh data directory), wait for its ``ready`` line, and read
``VmRSS`` from ``/proc/<pid>/status``. Then run ``SELECT * FROM devices`` over all N twins
through the REST API (the SDK, pages of 1000), read ``VmRSS`` and the peak ``VmHWM`` again,
restart the process on the same data directory (the registry is loaded back from SQLite) and read
``VmRSS`` once more. The database file size is reported too.

Run: ``python -m benchmarks.bench_hub_memory [--devices N]``
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import QuerySpecification

_GOAL_MB = 1024


def _status(pid: int) -> dict[str, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024
    return values


def _start(data_dir: Path, devices: int) -> tuple[subprocess.Popen[str], float]:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulator.iothub",
            "--data-dir",
            str(data_dir),
            "--rest-port",
            "0",
            "--mqtt-port",
            "0",
            "--devices",
            str(devices),
            "--no-fleet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("the emulator exited before it was ready")
        if line.startswith("ready"):
            return proc, time.perf_counter() - started
    proc.kill()
    raise SystemExit("the emulator was not ready within 300 s")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _query_all(data_dir: Path) -> int:
    info = json.loads((data_dir / "hub.json").read_text())
    rm = IoTHubRegistryManager.from_connection_string(info["ownerConnectionString"])
    rm.protocol.config.connection.verify = info["caPem"]
    token, items = None, 0
    while True:
        result = rm.query_iot_hub(QuerySpecification(query="SELECT * FROM devices"), token, 1000)
        items += len(result.items)
        token = result.continuation_token
        if not token:
            return items


def main(devices: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        proc, took = _start(data_dir, devices)
        try:
            first = _status(proc.pid)
            items = _query_all(data_dir)
            after = _status(proc.pid)
        finally:
            _stop(proc)
        proc, reload_took = _start(data_dir, devices)
        try:
            reloaded = _status(proc.pid)
        finally:
            _stop(proc)
        db_mb = (data_dir / "hub.sqlite").stat().st_size / 2**20
        print(f"method: python -m emulator.iothub --devices {devices} --no-fleet; /proc VmRSS")
        print(f"created {devices} devices and started in {took:.1f} s")
        print(f"RSS idle with {devices} twins           : {first['VmRSS']:.0f} MB")
        print(f"RSS after querying all {items} twins   : {after['VmRSS']:.0f} MB")
        print(f"peak RSS (VmHWM) during that query       : {after['VmHWM']:.0f} MB")
        print(f"RSS after restart (loaded from SQLite)   : {reloaded['VmRSS']:.0f} MB")
        print(f"restart to ready                         : {reload_took:.1f} s")
        print(f"database size                            : {db_mb:.0f} MB")
        verdict = "within" if max(after["VmHWM"], reloaded["VmRSS"]) <= _GOAL_MB else "OVER"
        print(f"goal <= {_GOAL_MB} MB: {verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=100_000)
    main(parser.parse_args().devices)
