"""A network partition (or a slow link) on loopback: a TCP relay that a test cuts and heals.

Put between a client (an agent's store connections, or its hub client) and a server, it relays
bytes both ways while healed; with ``delay`` it hands on what the server sends that many seconds
late, in order (what the client sends goes at once), so every call through it takes at least
``delay`` and is reliably in flight when a test acts.

:meth:`Partition.cut` stops all forwarding silently: no FIN, no RST, bytes already sent stay
where they are and new connections are accepted but not carried on, so neither end is told
anything (the relay's own kernel still acknowledges what arrives, as a middlebox would).
:meth:`Partition.heal` delivers what was held, in order, and carries on: late bytes, as TCP
delivers them after a partition ends. TLS passes through untouched.

Rules: only 127.0.0.0/8; the relay owns its tasks and ends them on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

__all__ = ["Partition"]


class Partition:
    """A relay ``host:<port>`` → ``target_host:target_port`` that can be cut and healed.

    Args:
        target_host: the server's address (loopback).
        target_port: the server's port.
        host: where the relay listens (default: the server's address, so a TLS server's
            certificate still matches).
        delay: seconds the server's bytes are held before they are handed on.
    """

    def __init__(
        self, target_host: str, target_port: int, host: str | None = None, *, delay: float = 0.0
    ) -> None:
        self.target = (target_host, target_port)
        self.host = host or target_host
        self.delay = delay
        self.port = 0
        self.held = 0
        """Chunks read while cut and not yet delivered (a test waits for traffic in flight)."""
        self._open = asyncio.Event()
        self._open.set()
        self._armed: tuple[bytes, ...] = ()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def is_cut(self) -> bool:
        """True between :meth:`cut` and :meth:`heal`."""
        return not self._open.is_set()

    def cut(self) -> None:
        """Stop forwarding, silently."""
        self._open.clear()

    def cut_at_next_request(self, *containing: bytes) -> None:
        """Cut when a client next sends bytes (holding one of ``containing``, for a protocol in
        clear such as PostgreSQL's on loopback): that request is held, its client waits in it."""
        self._armed = containing or (b"",)

    def heal(self) -> None:
        """Deliver what was held and forward again."""
        self._open.set()

    def replace_port(self, url: str) -> str:
        """``url`` with the server's ``host:port`` replaced by the relay's."""
        return url.replace(f"{self.target[0]}:{self.target[1]}", f"{self.host}:{self.port}")

    async def __aenter__(self) -> Partition:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.heal()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        await self._open.wait()  # a connection made while cut goes nowhere until healed
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        self._spawn(self._pipe(client_r, server_w, upstream=True))
        self._spawn(self._pipe(server_r, client_w, upstream=False))

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.0 if upstream else self.delay
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            while True:
                await self._open.wait()
                data = await reader.read(65536)
                if upstream and data and any(marker in data for marker in self._armed):
                    self._armed = ()
                    self.cut()
                if self.is_cut:  # arrived while cut (an end of stream too): held until healed
                    self.held += 1
                    await self._open.wait()
                    self.held -= 1
                await queue.put((loop.time() + delay, data))
                if not data:
                    return

        reading = asyncio.create_task(read())
        try:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                await self._open.wait()
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
