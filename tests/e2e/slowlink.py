"""A slow link for the end-to-end tests: a real TCP relay on loopback that hands on what the
server sends ``delay`` seconds late (in order), and what the client sends at once.

Put between the agent and the IoT Hub emulator (same address, another port: the emulator's TLS
certificate still matches), it makes every hub call take at least ``delay`` seconds, so calls
are reliably in flight when a test acts. TLS passes through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["slow_link"]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        while data := await reader.read(65536):
            await queue.put((loop.time() + delay, data))
        await queue.put((loop.time() + delay, b""))

    reading = asyncio.create_task(read())
    try:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        reading.cancel()
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.asynccontextmanager
async def slow_link(host: str, port: int, delay: float) -> AsyncIterator[int]:
    """Relay ``host:<new port>`` → ``host:port``, the server's bytes ``delay`` s late.

    Yields:
        The relay's port (on ``host``).
    """
    pipes: set[asyncio.Task[None]] = set()

    async def accept(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(host, port)
        for task in (
            asyncio.create_task(_pipe(client_r, server_w, 0.0)),
            asyncio.create_task(_pipe(server_r, client_w, delay)),
        ):
            pipes.add(task)
            task.add_done_callback(pipes.discard)

    server = await asyncio.start_server(accept, host, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(pipes):
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        await server.wait_closed()
