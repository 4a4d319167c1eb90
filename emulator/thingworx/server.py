"""The ThingWorx stand-in: AlwaysOn at ``/Thingworx/WS`` and the REST convention, on one port.

:class:`ThingWorxStandIn` owns the aiohttp application, the registry of Things and one
:class:`~emulator.thingworx.session.EdgeSession` per websocket. The upgrade is answered here:
a wrong ``appKey`` upgrade header is refused early with 401 (a missing one is accepted: the AUTH
message decides), a missing ``Max-Frame-Size`` defaults to 8192 (reference §1.1). What one
connection may cost is bounded by :class:`~emulator.thingworx.limits.StandInLimits`; the bytes
of incomplete multipart sets are also bounded for every connection together (one
:class:`~agent.alwayson.PendingBudget` per stand-in).
"""

from __future__ import annotations

import asyncio
import itertools

import structlog
from aiohttp import web

from agent.alwayson import PendingBudget, RequestIds
from emulator.thingworx.console import add_console_routes
from emulator.thingworx.errors import HandshakeRefused
from emulator.thingworx.limits import StandInLimits
from emulator.thingworx.rest import RestApi
from emulator.thingworx.session import EdgeSession, SessionSettings, check_app_key
from emulator.thingworx.things import ThingEntry, ThingRegistry
from emulator.thingworx.unconfirmed import (
    COMPRESS_SERVER_FRAMES,
    DEFAULT_BIND_POLICY,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_REQUEST_TIMEOUT,
)
from emulator.thingworx.websocket_link import negotiate, upgrade

__all__ = ["WS_PATH", "ThingWorxStandIn"]

WS_PATH = "/Thingworx/WS"
_log = structlog.get_logger("emulator.thingworx")


class ThingWorxStandIn:
    """A ThingWorx server stand-in for AlwaysOn edge clients and REST callers.

    Args:
        app_key: the application key edge clients and REST callers must present.
        host: the address to listen on, and the one named in :attr:`rest_url` and :attr:`ws_url`.
        port: the port (0 picks a free one; keep it under 32768 for a C SDK 2.2.1 edge, §12).
        chunk_size: the largest AlwaysOn message sent before multipart splitting (never more
            than the client's Max-Frame-Size is used).
        max_message_size: the largest complete message accepted or sent.
        call_timeout: seconds a REST call waits for the edge (504 after): the platform's
            request timeout, 30 s like ThingWorx's ("Amount of time a request will wait for the
            response message before timing out").
        compress: deflate the stand-in's own frames when permessage-deflate is negotiated.
        bind_host: listen on this address instead of ``host`` (e.g. ``0.0.0.0`` in a
            container), while the URLs still name ``host``; None listens on ``host``.
        limits: what one connection may cost (AUTH deadline, multipart bytes, Things bound,
            frame rate...); default :class:`StandInLimits`' defaults.
        bind_policy: ``first-in-wins`` (ThingWorx's default: a second connection's BIND of a
            bound Thing is refused) or ``last-in-wins``.
    """

    def __init__(
        self,
        app_key: str,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        chunk_size: int = 8192,
        max_message_size: int = 1_048_576,
        call_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        compress: bool = COMPRESS_SERVER_FRAMES,
        bind_host: str | None = None,
        limits: StandInLimits | None = None,
        bind_policy: str = DEFAULT_BIND_POLICY,
    ) -> None:
        if not app_key:
            raise ValueError("an application key is required")
        self._app_key = app_key
        self._host = host
        self._bind_host = bind_host or host
        self._port = port
        self._compress = compress
        self._max_message_size = max_message_size
        self.limits = limits or StandInLimits()
        self.registry = ThingRegistry(
            keep_unbound=self.limits.unbound_things_kept, bind_policy=bind_policy
        )
        self._budget = PendingBudget(self.limits.multipart_pending_bytes_total)
        self._conn_ids = itertools.count(1)
        self._settings = SessionSettings(
            app_key=app_key,
            chunk_size=chunk_size,
            max_message_size=max_message_size,
            call_timeout=call_timeout,
            next_request_id=RequestIds(),
            limits=self.limits,
            budget=self._budget,
        )
        self._sessions: set[EdgeSession] = set()
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self._rest = RestApi(self.registry, app_key, call_timeout)

    # lifecycle ---------------------------------------------------------------------------

    async def start(self) -> int:
        """Start listening.

        Returns:
            The bound port.

        Raises:
            OSError: the port cannot be bound.
        """
        app = web.Application(client_max_size=self._max_message_size * 2)
        app.add_routes([web.get(WS_PATH, self._websocket), *self._rest.routes()])
        add_console_routes(app)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._bind_host, self._port)
        await site.start()
        self._bound_port = int(self._runner.addresses[0][1])
        _log.info("thingworx stand-in listening", url=self.rest_url, ws_url=self.ws_url)
        return self._bound_port

    async def stop(self) -> None:
        """Close every edge connection (1001) and stop listening."""
        if self._runner is None:
            return
        links = [s.link for s in self._sessions]
        if links:
            await asyncio.gather(
                *(link.close(1001, "server shutting down") for link in links),
                return_exceptions=True,
            )
        await self._runner.cleanup()
        self._runner = None
        _log.info("thingworx stand-in stopped")

    # properties --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._bound_port is None:
            raise RuntimeError("the stand-in is not started")
        return self._bound_port

    @property
    def rest_url(self) -> str:
        """``http://host:port/Thingworx``: the root of the REST convention."""
        return f"http://{self._host}:{self.port}/Thingworx"

    @property
    def ws_url(self) -> str:
        """``ws://host:port/Thingworx/WS``: where edge clients connect."""
        return f"ws://{self._host}:{self.port}{WS_PATH}"

    @property
    def pending_multipart_bytes(self) -> int:
        """Bytes every connection together holds now for incomplete multipart sets."""
        return self._budget.used

    def bound_things(self) -> list[str]:
        """Names of the Things bound now, sorted."""
        return self.registry.bound_names()

    async def wait_bound(self, thing: str, timeout: float) -> ThingEntry:
        """Wait until ``thing`` is bound.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        return await self.registry.wait_bound(thing, timeout)

    async def wait_metadata(self, thing: str, timeout: float) -> ThingEntry:
        """Wait until ``thing`` is bound and GetMetadata has answered (or failed).

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        return await self.registry.wait_metadata(thing, timeout)

    def sessions(self) -> list[EdgeSession]:
        """The open edge connections."""
        return sorted(self._sessions, key=lambda s: s.endpoint_id)

    # handlers ----------------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        headers = {
            name.lower(): ", ".join(request.headers.getall(name)) for name in request.headers
        }
        try:
            handshake = negotiate(headers, default_max_frame_size=DEFAULT_MAX_FRAME_SIZE)
        except HandshakeRefused as exc:
            return web.Response(status=400, text=f"{exc}\n", content_type="text/plain")
        if handshake.app_key is not None and not check_app_key(handshake.app_key, self._app_key):
            _log.warning("upgrade refused: wrong app key", peer=request.remote)
            return web.Response(
                status=401, text="wrong application key\n", content_type="text/plain"
            )
        try:
            response, link = await upgrade(
                request,
                handshake,
                max_message_size=self._max_message_size + 64,
                compress_outgoing=self._compress,
                frame_rate=self.limits.frame_rate,
                frame_burst=self.limits.frame_burst,
            )
        except ConnectionError:
            return web.Response(status=400)
        number = next(self._conn_ids)
        session = EdgeSession(
            link, self.registry, self._settings, conn_id=f"conn-{number}", endpoint_id=number
        )
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
        return response
