"""A hostile server against the agent's channel (issue 15 §3, "Shows it works").

The miniserver (real websockets on loopback) sends, on the agent's one link, endless multipart
sets (chunk 1 of 4, 256 kB, a new request id each time, never completed) and requests whose
params nest InfoTables with a broken leaf (depths 1..8), while it keeps calling a service. The
memory the process holds stays bounded (tracemalloc), every call answers in time, and the link
stays up.
"""

from __future__ import annotations

import asyncio
import struct
import tracemalloc

from agent.alwayson import Response, Status
from agent.channel import AlwaysOnClient, ChannelState
from tests.agent.channel.miniserver import MiniServer, result_of
from tests.support.channel import make_registry, nested_broken, running, settings, text_params

CHUNK = 256 * 1024
SETS = 400  # 100 MB offered, never completed: the old channel kept it all
GROWTH_LIMIT = 40 * 1024 * 1024
CALL_BUDGET = 2.0


def open_set(code: int, request_id: int, session_id: int) -> bytes:
    head = struct.pack(">BBIIIBHHH", 1, code, request_id, 5, session_id, 1, 1, 4, 65535)
    prefix = b"\x0a\x04Dev1" if code < 0x40 else b""
    return head + prefix + b"h" * CHUNK


async def test_endless_multipart_and_nested_tables_from_the_server() -> None:
    async with MiniServer() as server:
        client = AlwaysOnClient(settings(server.url), make_registry("Dev1"))
        async with running(client):
            link = await server.wait_link(1)
            loop = asyncio.get_running_loop()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]

                async def flood() -> None:
                    for n in range(SETS):
                        code = 0x40 if n % 2 else 0x03  # answers nobody awaits, and requests
                        await link.ws.send(open_set(code, 10_000 + n, link.session_id))
                        if n % 4 == 0:
                            await link.ws.send(
                                nested_broken(1 + n % 8, 20_000 + n, link.session_id)
                            )

                flooding = asyncio.create_task(flood())
                latencies: list[float] = []
                while not flooding.done() or len(latencies) < 20:
                    started = loop.time()
                    answer = await server.call("Dev1", "Echo", text_params(f"c{len(latencies)}"))
                    latencies.append(loop.time() - started)
                    assert answer.status is Status.SUCCESS
                    assert result_of(answer) == f"Dev1:c{len(latencies) - 1}"
                await flooding
                growth = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            assert client.state is ChannelState.READY and len(server.links) == 1
            # A refused multipart request was answered ENTITY_TOO_LARGE, naming the limit.
            refusal = await server.request_raw(
                link, open_set(0x03, 30_000, link.session_id), 30_000
            )
    assert growth < GROWTH_LIMIT, f"traced memory grew {growth / 2**20:.0f} MB"
    assert max(latencies) < CALL_BUDGET, latencies
    assert isinstance(refusal, Response) and refusal.status is Status.ENTITY_TOO_LARGE
    assert "over the connection limit of 4194304" in (refusal.reason or "")
