"""The AlwaysOn websocket client: connect, authenticate, bind, serve calls, keep alive, reconnect.

All byte work and the protocol's bookkeeping are in :mod:`agent.alwayson`: each link is a
:class:`~agent.alwayson.Connection` (edge side), which owns the request ids, the pending ids, the
session id, the answers' ids and the malformed-message policy. This module moves its payloads
over a ``websockets`` connection (asyncio implementation), keeps the futures of the pending
requests, runs the timers, serves the calls and logs.

Rules (reference sections in brackets):
- The upgrade sends ``Max-Frame-Size`` (the chunk size) and ``appKey``, no subprotocol, no
  compression offer [§1.1]. ``wss://`` verifies the server certificate unless ``verify_tls`` is
  off; ``ca_file`` adds a CA to the system store.
- AUTH carries session id 0xFFFFFFFF; the SUCCESS answer's session id is stored and every later
  message carries it [§2.3, §5.3]. Then BIND lists the gateway Thing and every registered Thing,
  each BIND kept under the chunk size [§5.4, §6.4].
- Each service request runs as its own task under its own deadline (the registry's); the answer
  echoes the request id and endpoint id [§2.3, §7.5] and is split into multipart chunks by the
  codec when it is over the chunk size [§6]. NotifyPropertyUpdate is answered at once [§7.2].
- Unknown Thing, service, property or event: NOT_FOUND. AUTH/BIND sent to us: BAD_REQUEST
  "Message Type not supported" [§7.5]. A message that does not parse: BAD_REQUEST when its
  request id could be read, else it is dropped and logged; the link stays up [§10].
- Incomplete multipart sets hold at most ``multipart_pending_bytes`` (the agent has one link at
  a time, so that is the process's bound too); a chunk over it drops its set and is answered
  ENTITY_TOO_LARGE when it belongs to a request. A timer expires sets older than
  ``stale_multipart_after``; the sets are freed when the link ends [§6.5].
- Keep-alive is the websocket ping of the ``websockets`` library every ``ping_interval``; the
  link is dropped when a pong does not come within ``pong_timeout`` [§8], at once: a link that
  failed (pong timeout, a close by the server, a reader error) is closed without waiting for the
  close handshake (``close_timeout`` 0), so a dead link is detected within ``ping_interval +
  pong_timeout`` of its last pong. Only :meth:`AlwaysOnClient.stop` waits for the server's
  close (up to ``connect_timeout``).
- A lost or failed link is retried with exponential backoff and full jitter; each new link
  authenticates again and re-binds every Thing [§9]. Every failure (refused key, TLS, refused
  connection, pong timeout, close by the server...) goes through one method, which logs it and
  keeps it, in one line, as :attr:`AlwaysOnClient.last_error` (kept after a later success, so
  the reason of the last reconnect stays visible). Calls in flight on a lost link finish
  (their own deadline bounds them) but their answers cannot be delivered: they are logged and
  counted as abandoned.
- A BIND refused with ``BIND_REFUSED_STATUS`` (ThingWorx's first-in-wins bind protection:
  another connection holds a Thing) makes the agent a standby (:attr:`AlwaysOnClient.role`): it
  logs who holds the Things (the refusal's reason) once and when that changes, closes the link
  and tries again every ``standby_retry`` seconds (no backoff), so it takes over within about
  that long after the active agent disconnects or dies.
- Pushes (property values and events, :meth:`AlwaysOnClient.push_properties`,
  :meth:`AlwaysOnClient.fire_event`) go through one bounded queue (:mod:`agent.channel.push`)
  and one sender per link. A Thing's pushes wait for its synchronisation on the current link:
  the server's ``NotifyPropertyUpdate`` is answered at once, then the edge asks
  ``GetPropertySubscriptions`` and pushes the Thing's current values of the subscribed
  properties before anything queued [§7.2]; values of properties the server did not subscribe to
  are not sent. A push the link lost is put back at the front and sent after the next bind.
- ``stop()`` drains, then sends one UNBIND of every bound Thing, then closes with 1000 [§9].
  Draining: new requests are refused at once (SERVICE_UNAVAILABLE, nothing done), the calls in
  flight get up to ``drain_timeout`` to finish and are answered with their real result; a call
  still running then is cancelled and answered GATEWAY_TIMEOUT saying it may have taken effect
  (never a plain "retry": a Schedule call's job may exist).
- Every wait has a deadline from :class:`~agent.settings.ThingWorxSettings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

import structlog
from structlog.typing import FilteringBoundLogger
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from agent.alwayson import (
    BIND_REFUSED_STATUS,
    UNSUPPORTED_MESSAGE_REASON,
    AlwaysOnError,
    Characteristic,
    Connection,
    EntityType,
    InfoTable,
    MalformedMessage,
    MessageTooLarge,
    OversizedMessage,
    PendingLimitRefused,
    PropertySubscription,
    PropertyValue,
    Request,
    RequestIds,
    RequestReceived,
    Response,
    ResponseReceived,
    Side,
    Status,
    UnmatchedResponse,
    UnsupportedMessage,
    read_subscriptions,
)
from agent.alwayson.unconfirmed import SERVICE_CALL_USER_HEADER
from agent.channel.backoff import Backoff
from agent.channel.errors import (
    AuthRefused,
    BindRefused,
    ChannelConfigError,
    ChannelNotReady,
    LinkFailed,
    LinkFailure,
    LinkLost,
)
from agent.channel.push import EventPush, PropertyPush, Push, PushQueue
from agent.channel.state import ChannelState, StateMachine
from agent.channel.stats import ChannelStats
from agent.registry import NOTIFY_PROPERTY_UPDATE, ServiceError, ThingRegistry
from agent.settings import ThingWorxSettings

__all__ = ["MAX_CALLS_IN_FLIGHT", "UNSUPPORTED_MESSAGE_REASON", "USER_AGENT", "AlwaysOnClient"]

USER_AGENT = "jobs-agent AlwaysOn edge"
APP_KEY_CLAIM = "appKey"
MAX_CALLS_IN_FLIGHT = 500
"""Calls served at once; more are answered SERVICE_UNAVAILABLE (the C SDK queues 500, §1.5)."""


class _Link:
    """One websocket connection: I/O around its sans-I/O :class:`~agent.alwayson.Connection`
    (which holds the session, the pending request ids and the answers' policy), plus the
    futures of the pending requests and the send lock."""

    def __init__(
        self,
        ws: ClientConnection,
        settings: ThingWorxSettings,
        ids: RequestIds,
        log: FilteringBoundLogger,
    ) -> None:
        self.ws = ws
        self.log = log
        self.closed = asyncio.Event()
        self._settings = settings
        self.conn = Connection(
            Side.EDGE,
            chunk_size=settings.chunk_size,
            max_message_size=settings.max_message_size,
            stale_after=settings.stale_multipart_after,
            max_pending_bytes=settings.multipart_pending_bytes,
            request_ids=ids,
        )
        self._futures: dict[int, asyncio.Future[Response]] = {}
        self._send_lock = asyncio.Lock()
        self.refused = 0  # incoming messages refused for the pending limit, not yet logged

    @property
    def session_id(self) -> int:
        """The session id the server assigned at AUTH (0 before)."""
        return self.conn.session_id or 0

    async def send(self, parts: list[bytes]) -> None:
        """Send the payloads of one message (all its chunks back to back).

        Raises:
            LinkLost: the websocket is closed.
        """
        async with self._send_lock:
            try:
                for part in parts:
                    await self.ws.send(part)
            except ConnectionClosed as exc:
                raise LinkLost(f"websocket closed ({exc})") from None

    async def request(self, sent: tuple[int, list[bytes]], what: str) -> Response:
        """Send the AUTH or BIND the connection built and wait for its answer.

        Raises:
            LinkLost: the link closed, or no answer within ``auth_timeout``.
        """
        request_id, parts = sent
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._futures[request_id] = future
        try:
            await self.send(parts)
            async with asyncio.timeout(self._settings.auth_timeout):
                return await future
        except TimeoutError:
            raise LinkLost(
                f"no answer to {what} within {self._settings.auth_timeout:g} s", kind="timeout"
            ) from None
        finally:
            self._futures.pop(request_id, None)
            self.conn.forget(request_id)

    @property
    def pending_bytes(self) -> int:
        """Bytes held for incomplete multipart sets and split bodies."""
        return self.conn.pending_bytes

    def answer_pending(self, response: Response) -> None:
        """Complete the pending request ``response`` answers."""
        future = self._futures.get(response.request_id)
        if future is not None and not future.done():
            future.set_result(response)

    def fail_pending(self, request_id: int, error: Exception) -> None:
        """Fail the pending request ``request_id`` with ``error``."""
        future = self._futures.get(request_id)
        if future is not None and not future.done():
            future.set_exception(error)

    def lost(self, reason: str) -> None:
        """Fail every pending request and free the incomplete multipart sets: the link is gone."""
        self.conn.close()
        for future in self._futures.values():
            if not future.done():
                future.set_exception(LinkLost(reason))
        self.closed.set()


class AlwaysOnClient:
    """The agent's AlwaysOn connection to ThingWorx.

    Args:
        settings: the ``[thingworx]`` settings (URL, app key, chunk size, every timeout).
        registry: the Things to bind and the services to serve.
        ssl_context: the TLS context for ``wss://`` (default: built from ``ca_file`` and
            ``verify_tls``).
        rng: the random source of the reconnect jitter (tests fix it).
        logger: the channel's logger (default: structlog's ``agent.channel``); ``jobs-agent
            check`` passes a quiet one, as it prints each failure (:attr:`last_error`) itself.
        bind: False to authenticate only and bind no Thing (``jobs-agent check`` next to a
            running agent: binding its Things would take them from it, since ThingWorx keeps
            the last bind); READY then means authenticated.

    Raises:
        ChannelConfigError: the URL is not ``ws://`` or ``wss://``.
    """

    def __init__(
        self,
        settings: ThingWorxSettings,
        registry: ThingRegistry,
        *,
        ssl_context: ssl.SSLContext | None = None,
        rng: random.Random | None = None,
        logger: FilteringBoundLogger | None = None,
        bind: bool = True,
    ) -> None:
        scheme = urlsplit(settings.url).scheme
        if scheme not in ("ws", "wss"):
            raise ChannelConfigError(
                f"thingworx.url {settings.url!r} must start with ws:// or wss://"
            )
        self._settings = settings
        self._registry = registry
        self._tls = self._tls_context(scheme, ssl_context)
        self._backoff = Backoff(settings.reconnect_initial_delay, settings.reconnect_max_delay, rng)
        self._machine = StateMachine(self._state_changed)
        self._ready = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._ids = RequestIds()
        self._conn_ids = itertools.count(1)
        self._link: _Link | None = None
        self._bound: list[str] = []
        self._bind = bind
        self._calls: set[asyncio.Task[None]] = set()
        self._drain_expired = False
        self._task_group: asyncio.TaskGroup | None = None
        self._running = False
        self._last_error: str | None = None
        self._last_failure: LinkFailure | None = None
        self._failure = asyncio.Event()
        self._standby_since: float | None = None
        self._holder: str | None = None
        self._pushes = PushQueue(settings.push_queue_size)
        self._push_refused = 0
        self._synced: dict[str, dict[str, PropertySubscription]] = {}
        self.stats = ChannelStats()
        base: FilteringBoundLogger = logger or structlog.get_logger("agent.channel")
        self._log: FilteringBoundLogger = base.bind(url=settings.url)

    # -- public -----------------------------------------------------------------------------

    @property
    def state(self) -> ChannelState:
        """The current state (see :mod:`agent.channel.state`)."""
        return self._machine.state

    @property
    def session_id(self) -> int | None:
        """The session id of the current link, None before AUTH succeeds."""
        link = self._link
        return link.session_id if link is not None and self.state in _AUTHENTICATED else None

    @property
    def bound_things(self) -> list[str]:
        """The Things bound on the current link (empty when not ready)."""
        return list(self._bound)

    @property
    def last_error(self) -> str | None:
        """Why the last connection attempt or link failed, in one line (``authentication
        refused: ...``, ``cannot connect: ...``, ``link lost: ...``); None while none has. It is
        not cleared by a later success."""
        return self._last_error

    @property
    def role(self) -> str:
        """``active`` while READY (this agent holds its Things), ``standby`` while another
        connection holds them (BIND refused by first-in-wins; retried every
        ``thingworx.standby_retry`` s), else ``none``."""
        if self.state is ChannelState.READY:
            return "active"
        return "standby" if self._standby_since is not None else "none"

    @property
    def holder(self) -> str | None:
        """While a standby: the server's word on who holds the Things (the BIND's refusal)."""
        return self._holder if self._standby_since is not None else None

    @property
    def last_failure(self) -> LinkFailure | None:
        """:attr:`last_error` as a value: its kind, the same one-line text, and what to do
        (see :class:`~agent.channel.errors.LinkFailure`); None while nothing has failed."""
        return self._last_failure

    async def wait_error(self, timeout: float) -> str:
        """Wait until a connection attempt or link has failed (at once when one has already).

        Returns:
            :attr:`last_error`.

        Raises:
            TimeoutError: nothing failed within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            await self._failure.wait()
        return self._last_error or ""

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the channel is READY.

        Raises:
            ChannelNotReady: not ready within ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            raise ChannelNotReady(
                f"not connected to ThingWorx within {timeout:g} s (state {self.state.value})"
            ) from None

    async def run(self) -> None:
        """Connect, authenticate, bind and serve until :meth:`stop`; reconnect on failure.

        Returns when stopped. Never raises for network or server trouble (it retries); raises
        ChannelConfigError for a configuration that cannot work.
        """
        if not self._settings.app_key.get_secret_value():
            raise ChannelConfigError(
                "thingworx.app_key is empty: set JOBS_AGENT_THINGWORX__APP_KEY"
            )
        gateway = self._settings.gateway_thing
        self._registry.add_thing(gateway)
        self._stopped.clear()
        self._running = True
        try:
            async with asyncio.TaskGroup() as group:
                self._task_group = group
                while not self._stop_requested.is_set():
                    await self._one_link()
                    if self._stop_requested.is_set():
                        break
                    if self._standby_since is not None:  # a steady retry, not a backoff
                        self._backoff.reset()
                        delay = self._settings.standby_retry
                        self._log.debug("standby retry", delay=delay)
                    else:
                        delay = self._backoff.next_delay()
                        self._log.info("reconnecting", delay=round(delay, 3))
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._stop_requested.wait()
                self._abandon_calls("agent stopping")
        finally:
            self._task_group = None
            self._running = False
            if self.state is not ChannelState.DISCONNECTED:
                self._machine.transition(ChannelState.DISCONNECTED)
            self._stopped.set()

    async def stop(self) -> None:
        """Drain the calls in flight, UNBIND every bound Thing, close the websocket with 1000,
        and end :meth:`run`.

        From the moment it is called, new requests are refused (SERVICE_UNAVAILABLE). The calls
        in flight get up to ``drain_timeout`` to finish and are answered; those still running
        are then answered GATEWAY_TIMEOUT (their effect is unknown). Then it waits at most
        ``auth_timeout`` for the UNBIND answer and ``connect_timeout`` for the close handshake.
        """
        if self._stop_requested.is_set():
            await self._wait_stopped()
            return
        self._stop_requested.set()
        link = self._link
        if self._machine.can(ChannelState.CLOSING):
            self._machine.transition(ChannelState.CLOSING)
        if link is not None:
            await self._drain(link)
            if self._bound:
                names = tuple(self._bound)
                try:
                    for batch in self._batches(link, names, unbind=True):
                        answer = await link.request(
                            link.conn.send_bind(batch, unbind=True), "UNBIND"
                        )
                        if not answer.ok:
                            link.log.warning("unbind refused", status=answer.status.name)
                    link.log.info("unbound", things=len(names))
                except (LinkFailed, AlwaysOnError) as exc:
                    link.log.warning("unbind failed", error=str(exc))
            self._bound = []
            await self._close(link, "agent stopping")
        await self._wait_stopped()

    async def bind_new_things(self) -> list[str]:
        """BIND the registry's Things that the current link has not bound yet (Things added
        after the channel became ready); on a new link every Thing is bound anyway.

        Returns:
            The names bound now (empty when there were none, or the channel is not READY).

        Raises:
            BindRefused: the server refused the BIND.
            LinkLost: the link closed, or no answer within ``auth_timeout``.
        """
        link = self._link
        if link is None or self.state is not ChannelState.READY:
            return []
        bound = set(self._bound)
        new = tuple(name for name in self._thing_names() if name not in bound)
        for batch in self._batches(link, new, unbind=False):
            await self._bind_batch(link, batch)
        if new:
            link.log.info("bound new things", things=len(new))
        return list(new)

    def push_properties(self, thing: str, values: list[PropertyValue]) -> None:
        """Queue property values of ``thing`` for ``UpdateSubscribedPropertyValues`` (§7.3);
        they go once the Thing is synchronised on a link, the oldest queued push dropped first
        when the queue is full."""
        if values:
            self._pushes.put(PropertyPush(thing, tuple(values)))
            self._count_pushes()

    def fire_event(self, thing: str, event: str, data: InfoTable) -> None:
        """Queue ``event`` of ``thing`` with its event data (characteristic EVENTS, §7.6)."""
        self._pushes.put(EventPush(thing, event, data))
        self._count_pushes()

    @property
    def synchronised_things(self) -> list[str]:
        """The Things synchronised on the current link (their pushes go out)."""
        return list(self._synced)

    def _count_pushes(self) -> None:
        self.stats.push_queue = len(self._pushes)
        self.stats.pushes_dropped = self._pushes.dropped + self._push_refused

    async def _synchronise(self, link: _Link, thing: str) -> None:
        """After ``NotifyPropertyUpdate``: read the Thing's property subscriptions, then let its
        current values and queued pushes go (§7.2)."""
        try:
            answer = await link.request(
                link.conn.send_subscriptions_request(thing), "GetPropertySubscriptions"
            )
        except (LinkFailed, AlwaysOnError) as exc:
            link.log.warning("property subscriptions unread", thing=thing, error=str(exc))
            return
        subscriptions: dict[str, PropertySubscription] = {}
        if answer.ok:
            subscriptions = read_subscriptions(answer.content)
        else:
            link.log.warning(
                "property subscriptions refused", thing=thing, status=answer.status.name
            )
        if link is not self._link or link.closed.is_set():
            return
        self._synced[thing] = subscriptions
        self._pushes.put_current(thing)
        link.log.debug("thing synchronised", thing=thing, subscribed=sorted(subscriptions))

    async def _push_loop(self, link: _Link) -> None:
        """Send the queued pushes of synchronised Things, in order, one at a time."""
        while not link.closed.is_set():
            push = self._pushes.take(self._synced.keys())
            self._count_pushes()
            if push is None:
                await self._pushes.wait(_PUSH_IDLE_CHECK)
                continue
            try:
                await self._send_push(link, push)
            except LinkFailed:
                self._pushes.put_back(push)
                self._count_pushes()
                return

    async def _send_push(self, link: _Link, push: Push) -> None:
        if isinstance(push, PropertyPush):
            subscribed = self._synced.get(push.thing, {})
            values = [v for v in push.values if v.name in subscribed]
            if not values:
                return
            sent = link.conn.send_property_values(push.thing, values)
            what = "UpdateSubscribedPropertyValues"
        else:
            sent = link.conn.send_event(push.thing, push.event, push.data)
            what = f"event {push.event}"
        try:
            answer = await link.request(sent, what)
        except AlwaysOnError as exc:  # cannot be encoded: never sendable
            self._push_refused += 1
            link.log.error("push cannot be sent", thing=push.thing, what=what, error=str(exc))
            return
        if answer.ok:
            self.stats.pushes_sent += 1
        else:
            self._push_refused += 1
            link.log.warning(
                "push refused", thing=push.thing, what=what, status=answer.status.name,
                reason=answer.reason,
            )  # fmt: skip

    @property
    def calls_in_flight(self) -> int:
        """Service calls being served now."""
        return sum(1 for task in self._calls if not task.done())

    async def _drain(self, link: _Link) -> None:
        """Let the calls in flight finish and answer, up to ``drain_timeout``; cancel those
        still running then, which answers them as unfinished (see :meth:`_serve_call`)."""
        running = {task for task in self._calls if not task.done()}
        if not running:
            return
        timeout = self._settings.drain_timeout
        link.log.info("draining calls", count=len(running), timeout=timeout)
        _, pending = await asyncio.wait(running, timeout=timeout)
        if not pending:
            link.log.info("calls drained", count=len(running))
            return
        self._drain_expired = True
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=self._settings.auth_timeout)
        link.log.warning("calls unfinished at the drain deadline", count=len(pending))

    # -- connection lifecycle -----------------------------------------------------------------

    async def _wait_stopped(self) -> None:
        if not self._running:
            return
        try:
            async with asyncio.timeout(self._settings.connect_timeout):
                await self._stopped.wait()
        except TimeoutError:
            self._log.warning("run() did not end in time after stop")

    async def _one_link(self) -> None:
        """One connection: connect, AUTH, BIND, serve until the link ends. Never raises
        LinkFailed (logs it)."""
        settings = self._settings
        log = self._log.bind(conn_id=next(self._conn_ids))
        self._machine.transition(ChannelState.CONNECTING)
        self.stats.connection_attempts += 1
        link: _Link | None = None
        reader: asyncio.Task[None] | None = None
        try:
            ws = await self._connect(log)
            link = _Link(ws, settings, self._ids, log)
            self._link = link
            self._synced = {}
            if self._stop_requested.is_set():
                return
            assert self._task_group is not None
            reader = self._task_group.create_task(self._read_loop(link))
            self._task_group.create_task(self._sweep(link))
            self._task_group.create_task(self._push_loop(link))
            self._machine.transition(ChannelState.AUTHENTICATING)
            await self._authenticate(link)
            if self._stop_requested.is_set():
                return
            self._machine.transition(ChannelState.BINDING)
            await self._bind_all(link)
            if self._stop_requested.is_set():
                return
            self._machine.transition(ChannelState.READY)
            self.stats.connects += 1
            self._backoff.reset()
            log.info("ready", session_id=link.session_id, things=len(self._bound))
            if self._standby_since is not None:
                waited = time.monotonic() - self._standby_since
                self._standby_since = self._holder = None
                log.warning("active: took over the Things", standby_seconds=round(waited, 3))
            await link.closed.wait()
            if not self._stop_requested.is_set():
                self.stats.links_lost += 1
                kind, cause = self._close_cause(ws)
                self._failed(
                    log, "link lost", cause, kind, code=ws.close_code, reason=ws.close_reason
                )
        except AuthRefused as exc:
            self._failed(
                log, "authentication refused", str(exc), exc.kind, hint="check thingworx.app_key"
            )
        except LinkFailed as exc:
            if exc.kind == "standby":
                self._standby(log, str(exc))
            else:
                self._failed(log, "link failed", str(exc), exc.kind)
        finally:
            self._bound = []
            self._synced = {}
            if link is not None:
                await self._close(
                    link, "agent stopping" if self._stop_requested.is_set() else "link failed"
                )
                if reader is not None:
                    await asyncio.wait({reader}, timeout=settings.connect_timeout)
                    reader.cancel()
                self._link = None
                self._abandon_calls("link lost", link)
            if not self._stop_requested.is_set() and self._machine.can(ChannelState.DISCONNECTED):
                self._machine.transition(ChannelState.DISCONNECTED)

    def _standby(self, log: FilteringBoundLogger, error: str) -> None:
        """Another connection holds the Things: record it as the last failure (kind
        ``standby``); log who holds them when this agent becomes a standby and whenever the
        holder changes, not on every retry."""
        self._last_error = " ".join(f"standby: {error}".split())
        self._last_failure = LinkFailure.of("standby", self._last_error)
        self._failure.set()
        if self._standby_since is None:
            self._standby_since = time.monotonic()
        if error != self._holder:
            self._holder = error
            log.warning(
                "standby: another agent holds the Things",
                holder=error,
                retry=self._settings.standby_retry,
            )

    def _failed(
        self, log: FilteringBoundLogger, event: str, error: str, kind: str, **context: Any
    ) -> None:
        """Record and log one failed connection attempt or lost link (the one place)."""
        self._last_error = " ".join(f"{event}: {error}".split())
        self._last_failure = LinkFailure.of(kind, self._last_error)
        self._failure.set()
        if event == "authentication refused":
            log.error(event, error=error, **context)
        else:
            log.warning(event, error=error, **context)

    def _close_cause(self, ws: ClientConnection) -> tuple[str, str]:
        """Why an established link ended: its :class:`LinkFailure` kind and a few words."""
        sent, received = ws.protocol.close_sent, ws.protocol.close_rcvd
        if sent is not None and sent.reason == _KEEPALIVE_TIMEOUT and received is None:
            return "timeout", f"pong timeout (no pong within {self._settings.pong_timeout:g} s)"
        if sent is not None and received is not None and ws.protocol.close_rcvd_then_sent is False:
            return "closed", f"closed by the agent ({sent.code} {sent.reason})".replace(" )", ")")
        if received is not None:
            cause = f"closed by the server ({received.code} {received.reason})"
            return "closed", cause.replace(" )", ")")
        return "closed", f"connection dropped without a close frame ({ws.close_code})"

    async def _connect(self, log: FilteringBoundLogger) -> ClientConnection:
        settings = self._settings
        headers = [
            ("Max-Frame-Size", str(settings.chunk_size)),
            (APP_KEY_CLAIM, settings.app_key.get_secret_value()),
        ]
        try:
            ws = await connect(
                settings.url,
                additional_headers=headers,
                user_agent_header=USER_AGENT,
                compression=None,
                ssl=self._tls,
                open_timeout=settings.connect_timeout,
                ping_interval=settings.ping_interval,
                ping_timeout=settings.pong_timeout,
                # A failed link closes at once; stop() alone waits for the server's close.
                close_timeout=0,
                max_size=settings.max_message_size,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise AuthRefused(f"the server refused the upgrade with HTTP {status}") from None
            raise LinkLost(
                f"the server refused the upgrade with HTTP {status}",
                kind="endpoint" if status == 404 else "protocol",
            ) from None
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise LinkLost(
                f"cannot connect: {type(exc).__name__}: {exc}", kind=_connect_failure_kind(exc)
            ) from None
        log.info("connected")
        return ws

    async def _authenticate(self, link: _Link) -> None:
        key = self._settings.app_key.get_secret_value()
        answer = await link.request(link.conn.send_auth(((APP_KEY_CLAIM, key),)), "AUTH")
        if not answer.ok:
            reason = f": {answer.reason}" if answer.reason else ""
            raise AuthRefused(f"AUTH answered {answer.status.name}{reason}")
        link.log = link.log.bind(session_id=answer.session_id)
        link.log.info("authenticated")

    def _thing_names(self) -> tuple[str, ...]:
        if not self._bind:
            return ()
        gateway = self._settings.gateway_thing
        return (gateway, *(t for t in self._registry.things() if t != gateway))

    def _batches(
        self, link: _Link, names: tuple[str, ...], *, unbind: bool
    ) -> list[tuple[str, ...]]:
        """Split ``names`` into BINDs that each fit one chunk (reference §6.4).

        The codec decides the size: the longest prefix that encodes as one plain message is found
        by bisection.
        """

        def fits(batch: tuple[str, ...]) -> bool:
            return link.conn.bind_fits(batch, unbind=unbind)

        batches: list[tuple[str, ...]] = []
        rest = names
        while rest:
            low, high = 1, len(rest)
            if not fits(rest[:1]):
                raise BindRefused(f"Thing name {rest[0][:40]!r} does not fit one BIND message")
            while low < high:
                mid = (low + high + 1) // 2
                if fits(rest[:mid]):
                    low = mid
                else:
                    high = mid - 1
            batches.append(rest[:low])
            rest = rest[low:]
        return batches

    async def _bind_all(self, link: _Link) -> None:
        names = self._thing_names()
        for batch in self._batches(link, names, unbind=False):
            await self._bind_batch(link, batch)
        link.log.info("bound", things=len(names))

    async def _bind_batch(self, link: _Link, batch: tuple[str, ...]) -> None:
        answer = await link.request(link.conn.send_bind(batch), "BIND")
        if answer.status == BIND_REFUSED_STATUS:
            raise BindRefused(
                answer.reason or f"BIND answered {answer.status.name}: a Thing is bound elsewhere",
                kind="standby",
            )
        if not answer.ok:
            reason = f": {answer.reason}" if answer.reason else ""
            raise BindRefused(f"BIND of {len(batch)} Things answered {answer.status.name}{reason}")
        self._bound.extend(batch)

    async def _close(self, link: _Link, reason: str) -> None:
        if self._stop_requested.is_set():  # a clean stop: wait for the server's close frame
            link.ws.close_timeout = self._settings.connect_timeout
        with contextlib.suppress(Exception):
            await link.ws.close(code=1000, reason=reason)
        link.lost(reason)

    # -- reading and answering ----------------------------------------------------------------

    async def _read_loop(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for data in link.ws:
                if isinstance(data, str):
                    link.log.warning("text frame dropped", length=len(data))
                    continue
                await self._on_frame(link, data, loop.time())
        except ConnectionClosed:
            pass
        except Exception:  # a bug here must not take run() down: drop the link and reconnect
            link.log.exception("reader failed; dropping the link")
            with contextlib.suppress(Exception):
                await link.ws.close(code=1011, reason="agent error")
        finally:
            link.lost("websocket closed")

    async def _sweep(self, link: _Link) -> None:
        """Expire stale multipart sets on a timer (not only when the next message comes) and
        log how many messages were refused for the pending limit since the last sweep."""
        loop = asyncio.get_running_loop()
        period = self._settings.stale_multipart_after / _SWEEPS_PER_STALE_PERIOD
        while not link.closed.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await link.closed.wait()
            dropped = link.conn.expire(loop.time())
            if dropped:
                link.log.info("stale multipart sets dropped", count=dropped)
            if link.refused:
                link.log.warning("incoming multipart messages refused", count=link.refused)
                link.refused = 0

    async def _on_frame(self, link: _Link, data: bytes, now: float) -> None:
        """Hand one payload to the connection, send what it answered itself, act on its event."""
        event = link.conn.receive_data(data, now)
        answers = link.conn.data_to_send()
        if answers:
            await self._send_answers(link, answers)
        match event:
            case None:
                pass
            case RequestReceived(request):
                await self._on_request(link, request)
            case ResponseReceived(response):
                link.answer_pending(response)
            case UnmatchedResponse(response):
                link.log.debug(
                    "response to no pending request ignored", request_id=response.request_id
                )
            case PendingLimitRefused(exc, _, failed):
                # One log line per sweep, not per frame (see _sweep).
                if link.refused == 0:
                    link.log.warning("incoming multipart message refused", error=str(exc))
                link.refused += 1
                if failed is not None:
                    link.fail_pending(failed, LinkLost(f"answer refused: {exc}", kind="protocol"))
            case OversizedMessage(exc, failed):
                link.log.warning("oversized message dropped", error=str(exc))
                if failed is not None:
                    link.fail_pending(failed, LinkLost(f"answer refused: {exc}", kind="protocol"))
            case MalformedMessage(exc, answered, failed):
                if answered:
                    link.log.warning(
                        "malformed request answered", request_id=exc.request_id, error=str(exc)
                    )
                elif failed is not None:
                    link.fail_pending(failed, LinkLost(f"malformed answer: {exc}", kind="protocol"))
                    link.log.warning("malformed answer", request_id=failed, error=str(exc))
                else:
                    link.log.warning("malformed message dropped", error=str(exc))
            case UnsupportedMessage(message, _):
                link.log.warning("unsupported message type", kind=type(message).__name__)
            case _:  # AUTH/BIND received, refused before AUTH: server-side events only
                link.log.warning("message dropped", kind=type(event).__name__)

    async def _send_answers(self, link: _Link, parts: list[bytes]) -> None:
        try:
            await link.send(parts)
        except LinkLost:
            self.stats.abandoned_calls += 1
            link.log.warning("answer undeliverable: link lost")

    async def _on_request(self, link: _Link, request: Request) -> None:
        thing, target = request.entity_name, request.target
        if (
            request.entity_type is not EntityType.THING
            or request.characteristic is not Characteristic.SERVICES
            or self._registry.lookup(thing, target) is None
        ):
            what = request.characteristic.name.lower().rstrip("s")
            link.log.info("not found", thing=thing, target=target, kind=what)
            await self._reply(
                link,
                link.conn.response(
                    request.request_id,
                    request.endpoint_id,
                    Status.NOT_FOUND,
                    f"{request.entity_type.name.capitalize()} {thing} has no {what} {target}",
                ),
            )
            return
        if target == NOTIFY_PROPERTY_UPDATE:
            # Answered at once, before any later request is read (reference §7.2); then the
            # Thing's subscriptions are read and its pushes may go.
            await self._reply(
                link,
                link.conn.response(request.request_id, request.endpoint_id, Status.SUCCESS),
            )
            self._synced.pop(thing, None)
            assert self._task_group is not None
            self._task_group.create_task(self._synchronise(link, thing))
            return
        refusal: str | None = None
        if self._stop_requested.is_set():
            link.log.info("call refused: agent stopping", service=target)
            refusal = (
                f"the agent of Thing {thing} is stopping and takes no new calls; nothing was "
                "done, retry once it (or another agent) is back"
            )
        elif len(self._calls) >= MAX_CALLS_IN_FLIGHT:
            link.log.warning("call refused: too many in flight", service=target)
            self.stats.refused_busy += 1
            refusal = f"the agent is serving {MAX_CALLS_IN_FLIGHT} calls already; retry shortly"
        if refusal is not None:  # refused at once: nothing was done
            self.stats.record_call(target, 0.0, ok=False)
            await self._reply(
                link,
                link.conn.response(
                    request.request_id,
                    request.endpoint_id,
                    Status.SERVICE_UNAVAILABLE,
                    refusal,
                ),
            )
            return
        group = self._task_group
        assert group is not None
        task = group.create_task(self._serve_call(link, request))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        # Let the new call start before the next frame is read, so quick calls finish during a
        # burst instead of all counting against the in-flight cap.
        await asyncio.sleep(0)

    async def _serve_call(self, link: _Link, request: Request) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        service = request.target
        log = link.log.bind(request_id=request.request_id)
        try:
            content = await self._registry.dispatch(
                request.entity_name, service, request.params, log=log, user=_caller(request)
            )
            response = link.conn.response(
                request.request_id,
                request.endpoint_id,
                Status.SUCCESS,
                None,
                content,
            )
        except ServiceError as err:
            log.info(
                "call failed",
                thing=request.entity_name,
                service=service,
                status=err.status.name,
                reason=err.message,
            )
            response = link.conn.response(
                request.request_id, request.endpoint_id, err.status, err.message
            )
        except asyncio.CancelledError:
            if not self._drain_expired:
                raise
            # Cancelled by stop() at the drain deadline: answer, and say the effect is unknown.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            log.warning("call unfinished at the drain deadline", service=service)
            response = link.conn.response(
                request.request_id,
                request.endpoint_id,
                Status.GATEWAY_TIMEOUT,
                f"the agent stopped before service {service} finished (thingworx.drain_timeout "
                f"= {self._settings.drain_timeout:g} s); it may have taken effect: check "
                "(GetJob, FindJobs) before calling it again",
            )
        except Exception:  # the registry never raises anything else; belt and braces
            log.exception("call crashed", thing=request.entity_name, service=service)
            response = link.conn.response(
                request.request_id,
                request.endpoint_id,
                Status.INTERNAL_SERVER_ERROR,
                f"internal error in service {service}",
            )
        self.stats.record_call(service, loop.time() - started, ok=response.ok)
        if link.closed.is_set() or link is not self._link:
            self.stats.abandoned_calls += 1
            log.warning(
                "call answer undeliverable: link lost", service=service, status=response.status.name
            )
            return
        await self._reply(link, response)

    async def _reply(self, link: _Link, response: Response) -> None:
        """Send an answer; an answer too large for the codec becomes ENTITY_TOO_LARGE."""
        try:
            await link.send(link.conn.encode(response))
        except MessageTooLarge as exc:
            link.log.error("answer too large", request_id=response.request_id, error=str(exc))
            await self._reply(
                link,
                link.conn.response(
                    response.request_id,
                    response.endpoint_id,
                    Status.ENTITY_TOO_LARGE,
                    f"the result is too large ({exc.size} bytes, limit {exc.limit}); "
                    "ask for fewer rows",
                ),
            )
        except AlwaysOnError as exc:
            link.log.error(
                "answer cannot be encoded", request_id=response.request_id, error=str(exc)
            )
            if response.ok:
                await self._reply(
                    link,
                    link.conn.response(
                        response.request_id,
                        response.endpoint_id,
                        Status.INTERNAL_SERVER_ERROR,
                        f"the result cannot be encoded: {exc}",
                    ),
                )
        except LinkLost:
            self.stats.abandoned_calls += 1
            link.log.warning("answer undeliverable: link lost", request_id=response.request_id)

    def _abandon_calls(self, reason: str, link: _Link | None = None) -> None:
        running = [t for t in self._calls if not t.done()]
        if not running:
            return
        if link is None:  # stopping: nobody can receive the answers any more
            for task in running:
                task.cancel()
            self.stats.abandoned_calls += len(running)
            self._log.warning("calls cancelled", reason=reason, count=len(running))
        else:
            link.log.warning("calls in flight on a lost link", reason=reason, count=len(running))

    # -- helpers ------------------------------------------------------------------------------

    def _tls_context(self, scheme: str, given: ssl.SSLContext | None) -> ssl.SSLContext | None:
        if scheme != "wss":
            return None
        if given is not None:
            return given
        context = ssl.create_default_context()
        if self._settings.ca_file:
            context.load_verify_locations(cafile=self._settings.ca_file)
        if not self._settings.verify_tls:
            structlog.get_logger("agent.channel").warning(
                "TLS certificate verification is OFF (thingworx.verify_tls = false)"
            )
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _state_changed(self, old: ChannelState, new: ChannelState) -> None:
        if new is ChannelState.READY:
            self._ready.set()
        else:
            self._ready.clear()
        self._log.debug("state", old=old.value, new=new.value)


def _connect_failure_kind(exc: BaseException) -> str:
    """The :class:`LinkFailure` kind of an exception raised while connecting."""
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return "tls"
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError):
        return "unreachable"
    return "protocol"


_PUSH_IDLE_CHECK = 1.0  # s: an idle sender looks at its link this often
_SWEEPS_PER_STALE_PERIOD = 10  # a stale set is gone at most 10% after stale_multipart_after
_KEEPALIVE_TIMEOUT = "keepalive ping timeout"  # the close reason websockets sends on pong timeout
_AUTHENTICATED = frozenset({ChannelState.BINDING, ChannelState.READY, ChannelState.CLOSING})


def _caller(request: Request) -> str:
    """The calling user a service request names (unconfirmed: platforms send no headers)."""
    for name, value in request.headers:
        if name == SERVICE_CALL_USER_HEADER:
            return value
    return ""
