"""Hostile clients against the stand-in run as its own process (issue 15 "Shows it works").

Four hostile connections send in a loop: two endless multipart sets (chunk 1 of 4, 256 kB, a new
request id each time, never completed), one nested InfoTables with a broken leaf (depths 1..8,
after AUTH, so the decoder meets them) and one the same before AUTH. Meanwhile the agent's real
AlwaysOn channel, connected as a good edge, keeps answering REST calls. The stand-in's RSS stays
bounded, every call answers in time, its log counts refusals instead of printing one line per
frame, and SIGTERM stops it during the flood.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import struct
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from agent.alwayson import (
    FieldDefinition,
)
from agent.channel import AlwaysOnClient
from tests.emulator.thingworx.conftest import APP_KEY
from tests.emulator.thingworx.csdk_edge import CsdkEdge, RawSocket
from tests.support.channel import nested_broken, running
from tests.support.channel import standin_registry as make_registry
from tests.support.channel import standin_settings as make_settings

F = FieldDefinition
CHUNK = 256 * 1024
SETS_PER_FLOODER = 200  # 2 flooders x 200 x 256 kB = 100 MB offered, never completed
RSS_GROWTH_LIMIT = 48 * 1024 * 1024  # the old stand-in kept all 100 MB
CALL_BUDGET = 2.0  # seconds per REST call during the flood (normal: a few ms)
MIN_CALLS = 20  # REST calls made while the floods go on


def open_set(request_id: int, session_id: int) -> bytes:
    """Chunk 1 of 4 of an answer nobody asked for, that never completes."""
    head = struct.pack(">BBIIIBHHH", 1, 0x40, request_id, 0, session_id, 1, 1, 4, 65535)
    return head + b"h" * CHUNK


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@contextlib.asynccontextmanager
async def standin_process(log: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "emulator.thingworx", "--port", "0", "--app-key", APP_KEY,
            "--log-format", "json",
            stdout=asyncio.subprocess.PIPE, stderr=sink,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            while not (line := (await proc.stdout.readline()).decode()).startswith("ready "):
                assert line, "the stand-in exited before ready"
        port = int(line.split(":")[2].split("/")[0])
        yield proc, port
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def hostile(port: int, stop: asyncio.Event, send: str) -> int:
    """Connect, (maybe) AUTH, flood; reconnect when closed (rate limit, AUTH deadline)."""
    sent = 0
    rid = 1
    while not stop.is_set():
        try:
            sock = await RawSocket.connect(port, app_key=APP_KEY)
        except (OSError, asyncio.IncompleteReadError):
            return sent
        edge = CsdkEdge(sock)
        drain = asyncio.create_task(_drain(sock))
        try:
            session = 0
            if send != "nested-before-auth":
                await sock.send_message(
                    bytes.fromhex("01 14 00 00 00 01 00 00 00 00 FF FF FF FF 00 01 06")
                    + b"appKey"
                    + bytes([len(APP_KEY)])
                    + APP_KEY.encode()
                )
                await asyncio.sleep(0.05)
                session = edge.session_id
            while not stop.is_set() and not drain.done():
                rid += 1
                if send == "multipart":
                    if sent >= SETS_PER_FLOODER:
                        return sent
                    await sock.send_message(open_set(rid, session), fragment=0xFFFF)
                else:
                    await sock.send_message(nested_broken(1 + rid % 8, rid, session))
                    await asyncio.sleep(0)
                sent += 1
        except (ConnectionError, OSError):
            pass
        finally:
            drain.cancel()
            await sock.close()
    return sent


async def _drain(sock: RawSocket) -> None:
    with contextlib.suppress(Exception):
        while await sock.recv_message(timeout=3600) is not None:
            pass


async def test_hostile_clients_do_not_pin_memory_or_slow_a_good_edge() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "standin.log"
        async with standin_process(log) as (proc, port):
            url = f"ws://127.0.0.1:{port}/Thingworx/WS"
            client = AlwaysOnClient(make_settings(url), make_registry())
            headers = {"appKey": APP_KEY, "Accept": "application/json"}
            call_url = f"http://127.0.0.1:{port}/Thingworx/Things/Dev1/Services/Echo"
            async with running(client), aiohttp.ClientSession(headers=headers) as http:
                loop = asyncio.get_running_loop()

                async def call(text: str) -> float:
                    started = loop.time()
                    async with http.post(call_url, json={"text": text}) as r:
                        assert r.status == 200, await r.text()
                        assert (await r.json())["rows"][0]["result"] == text
                    return loop.time() - started

                async with asyncio.timeout(10):
                    while True:  # GetMetadata has answered once a call succeeds
                        with contextlib.suppress(AssertionError):
                            await call("warm-up")
                            break
                        await asyncio.sleep(0.1)
                before = rss(proc.pid)
                stop = asyncio.Event()
                floods = [
                    asyncio.create_task(hostile(port, stop, kind))
                    for kind in ("multipart", "multipart", "nested", "nested-before-auth")
                ]
                latencies: list[float] = []
                while len(latencies) < MIN_CALLS or not all(f.done() for f in floods[:2]):
                    latencies.append(await call(f"call-{len(latencies)}"))
                    await asyncio.sleep(0.05)
                growth = rss(proc.pid) - before
                sent = [f.result() for f in floods[:2]]
                # SIGTERM honoured while the nested floods go on.
                proc.send_signal(signal.SIGTERM)
                async with asyncio.timeout(15):
                    assert await proc.wait() == 0
                stop.set()
                await asyncio.gather(*floods, return_exceptions=True)
        log_lines = log.read_text().splitlines()
    assert sent == [SETS_PER_FLOODER] * 2
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew {growth / 2**20:.0f} MB"
    assert latencies and max(latencies) < CALL_BUDGET, latencies
    assert any('"frames refused"' in line for line in log_lines)
    assert len(log_lines) < 1000, f"{len(log_lines)} log lines: one per frame?"
