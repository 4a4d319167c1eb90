"""A minimal AlwaysOn server for the channel tests: the real websockets server on 127.0.0.1
port 0, the project's codec, and just enough server behaviour (AUTH, BIND/UNBIND, calls).

It records what it sees (upgrade headers, every payload's size, binds, unbinds, close codes) so
tests can check the wire, and it lets a test call services and send arbitrary bytes.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from ssl import SSLContext
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed

from agent.alwayson import (
    Auth,
    Bind,
    Characteristic,
    EntityType,
    InfoTable,
    Message,
    MessageAssembler,
    Method,
    Request,
    Response,
    Status,
    encode_message,
)

SERVER_CHUNK = 8192


@dataclass
class Link:
    """One accepted websocket connection, as the server sees it."""

    ws: ServerConnection
    headers: Headers
    session_id: int = 0
    authenticated: bool = False
    bound: list[str] = field(default_factory=list)
    binds: list[Bind] = field(default_factory=list)
    unbinds: list[Bind] = field(default_factory=list)
    payload_sizes: list[int] = field(default_factory=list)
    sessions_seen: list[int] = field(default_factory=list)
    pending: dict[int, asyncio.Future[Response]] = field(default_factory=dict)
    close_code: int | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class MiniServer:
    """An AlwaysOn server stand-in small enough to read in one sitting.

    Args:
        app_key: the key AUTH must carry.
        refuse_auth: how many AUTHs to refuse (UNAUTHORIZED) before accepting.
        ssl: a server TLS context: serve wss:// instead of ws://.
    """

    def __init__(
        self, app_key: str = "test-key", refuse_auth: int = 0, ssl: SSLContext | None = None
    ) -> None:
        self.app_key = app_key
        self.ssl = ssl
        self.refuse_auth = refuse_auth
        self.links: list[Link] = []
        self.auth_attempts = 0
        self.new_link = asyncio.Event()
        self._server: Server | None = None
        self._sessions = itertools.count(0x2A)
        self._ids: Iterator[int] = itertools.count(0x100)

    async def __aenter__(self) -> MiniServer:
        # ping_interval=None: like the real server, never require the edge's pongs (§8).
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            ping_interval=None,
            compression=None,
            max_size=None,
            ssl=self.ssl,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        scheme = "wss" if self.ssl is not None else "ws"
        return f"{scheme}://127.0.0.1:{port}/Thingworx/WS"

    @property
    def link(self) -> Link:
        """The most recent connection."""
        return self.links[-1]

    async def wait_link(self, count: int, timeout: float = 5.0) -> Link:
        """Wait until ``count`` connections were accepted and the last is bound."""
        async with asyncio.timeout(timeout):
            while len(self.links) < count or not self.links[count - 1].bound:
                self.new_link.clear()
                await asyncio.sleep(0.01)
        return self.links[count - 1]

    # -- the server's side of the protocol -----------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        link = Link(ws, ws.request.headers)
        self.links.append(link)
        self.new_link.set()
        assembler = MessageAssembler(1_048_576, 50.0)
        loop = asyncio.get_running_loop()
        try:
            async for data in ws:
                assert isinstance(data, bytes)
                link.payload_sizes.append(len(data))
                message = assembler.feed(data, loop.time())
                if message is not None:
                    await self._on_message(link, message)
        except ConnectionClosed:
            pass
        finally:
            link.close_code = ws.close_code
            link.closed.set()
            for future in link.pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("link closed"))

    async def send(self, link: Link, message: Message, chunk_size: int = SERVER_CHUNK) -> None:
        for part in encode_message(message, chunk_size=chunk_size):
            await link.ws.send(part)

    async def _on_message(self, link: Link, message: Message) -> None:
        if isinstance(message, Auth):
            self.auth_attempts += 1
            ok = dict(message.claims).get("appKey") == self.app_key and self.refuse_auth <= 0
            self.refuse_auth -= 1
            assert message.session_id == 0xFFFFFFFF
            if not ok:
                await self.send(
                    link, Response(Status.UNAUTHORIZED, message.request_id, 0, 0, "bad app key")
                )
                await link.ws.close(1008, "unauthorized")
                return
            link.session_id = next(self._sessions)
            link.authenticated = True
            await self.send(link, Response(Status.SUCCESS, message.request_id, 0, link.session_id))
            return
        link.sessions_seen.append(message.session_id)
        if isinstance(message, Bind):
            (link.unbinds if message.unbind else link.binds).append(message)
            if message.unbind:
                link.bound = [n for n in link.bound if n not in message.names]
            else:
                link.bound.extend(message.names)
            await self.send(link, Response(Status.SUCCESS, message.request_id, 0, link.session_id))
        elif isinstance(message, Response):
            future = link.pending.pop(message.request_id, None)
            if future is not None and not future.done():
                future.set_result(message)

    async def call(
        self,
        thing: str,
        service: str,
        params: InfoTable | None = None,
        *,
        link: Link | None = None,
        endpoint_id: int = 5,
        characteristic: Characteristic = Characteristic.SERVICES,
        timeout: float = 10.0,
        chunk_size: int = SERVER_CHUNK,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Response:
        """Call a service on the agent and wait for the answer (``headers``: the request's)."""
        link = link or self.link
        request_id = next(self._ids)
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        link.pending[request_id] = future
        request = Request(
            Method.POST,
            request_id,
            endpoint_id,
            link.session_id,
            EntityType.THING,
            thing,
            characteristic,
            service,
            headers,
            params,
        )
        await self.send(link, request, chunk_size)
        async with asyncio.timeout(timeout):
            response = await future
        assert response.request_id == request_id
        assert response.endpoint_id == endpoint_id
        assert response.session_id == link.session_id
        return response

    async def request_raw(
        self, link: Link, payload: bytes, request_id: int, timeout: float = 5.0
    ) -> Response:
        """Send raw bytes and wait for the answer to ``request_id``."""
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        link.pending[request_id] = future
        await link.ws.send(payload)
        async with asyncio.timeout(timeout):
            return await future


def reason_of(response: Response) -> str:
    """The error text of an answer: the reason field."""
    return response.reason or ""


def result_of(response: Response) -> Any:
    """The value of a primitive result (column ``result``)."""
    assert response.content is not None
    return response.content.first_row()["result"]
