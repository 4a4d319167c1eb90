"""A scripted HTTPS server standing in for IoT Hub's service API, for the IoT Hub client's tests:
each answer is scripted per ``METHOD /path`` (a response, or a float: sleep that long, then
answer ``{}``). Register :func:`scripted` as a fixture in the conftest that needs it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest_asyncio
import trustme
from aiohttp import web
from pydantic import SecretStr

from agent.iothub import IotHubClient
from agent.settings import IotHubSettings, JobSettings

__all__ = ["JOB", "KEY", "Answer", "Scripted", "error_answer", "scripted"]

KEY = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ=="

Handler = Callable[[web.Request], web.StreamResponse]
Answer = web.Response | float  # a response, or seconds to sleep before answering ``{}``


@dataclass
class Scripted:
    """An HTTPS server whose answers a test scripts per path."""

    port: int
    ca_file: str
    hits: dict[str, int] = field(default_factory=dict)
    seen: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    answers: dict[str, list[Answer]] = field(default_factory=dict)

    def client(self, **overrides: object) -> IotHubClient:
        """An IotHubClient for this server (2 s timeout, two read retries), with ``overrides``."""
        values: dict[str, object] = {
            "connection_string": SecretStr(
                f"HostName=127.0.0.1:{self.port};SharedAccessKeyName=iothubowner;"
                f"SharedAccessKey={KEY}"
            ),
            "ca_file": self.ca_file,
            "request_timeout": 2.0,
            "retry_initial_delay": 0.05,
            "read_retries": 2,
        }
        values.update(overrides)
        return IotHubClient(IotHubSettings(**values), JobSettings())


def error_answer(status: int, name: str, text: str) -> web.Response:
    """An IoT Hub error answer in the plain format (reference/iothub.md §1.8)."""
    body = {"Message": f"ErrorCode:{name};{text}", "ExceptionMessage": "Tracking ID:t1-G:0"}
    return web.json_response(body, status=status, headers={"iothub-errorcode": name})


@pytest_asyncio.fixture
async def scripted(tmp_path: Path) -> AsyncIterator[Scripted]:
    """The scripted HTTPS server on 127.0.0.1 port 0, with its own CA (trustme)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    state = Scripted(0, str(ca_file))

    async def handle(request: web.Request) -> web.StreamResponse:
        key = f"{request.method} {request.path}"
        state.hits[key] = state.hits.get(key, 0) + 1
        state.seen.append((key, dict(request.headers), await request.read()))
        queue = state.answers.get(key, [])
        answer = queue.pop(0) if len(queue) > 1 else (queue[0] if queue else None)
        if answer is None:
            return web.json_response(
                {"Message": "ErrorCode:GenericBadRequest;no script"}, status=400
            )
        if isinstance(answer, float):
            await asyncio.sleep(answer)
            return web.json_response({})
        return answer

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()

    ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ssl_ctx)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_ctx)
    await site.start()
    state.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield state
    finally:
        await runner.cleanup()


JOB = {"jobId": "j1", "type": "scheduleUpdateTwin", "status": "queued"}
