"""One edge connection, server side: AUTH, BIND, synchronisation, and service calls to the edge.

The protocol's bookkeeping (session id, restrict-before-AUTH, request and pending ids, answers,
the malformed-message policy) is :class:`agent.alwayson.Connection` on its server side; this
module is the I/O around it: the link, one future per call, the timers, the Things, the logs.

Rules (reference §2.3, §5 to §9, §12):

- nothing but AUTH is read before a successful AUTH: the body of anything else is never decoded
  (the assembler refuses it on its header), a BIND or request gets UNAUTHORIZED
  (``REQUEST_BEFORE_AUTH_CLOSES`` says whether the link is then closed), a multipart chunk or a
  split body is refused the same way; no AUTH within ``auth_timeout`` closes the link (1008); a
  bad key gets UNAUTHORIZED ``0x81`` and the link is closed (``AUTH_FAILURE_CLOSES``);
- what a connection holds is bounded (:class:`~emulator.thingworx.limits.StandInLimits`):
  incomplete multipart sets in bytes per connection and for the whole stand-in (a request over
  it is answered ENTITY_TOO_LARGE, an answer over it fails its call), expired on a timer and
  freed when the connection closes; Things bound per connection (a BIND past it is refused
  BAD_REQUEST, whole); its Things are unbound when it closes;
- each connection yields to the event loop after every message, so a flood on one delays the
  others by at most one message's handling;
- refused and dropped frames are logged as counts every ``refusal_log_interval`` (the first of
  each kind in full), not one line per frame;
- AUTH success carries a fresh session id in the header and the body ``00 FF``; BIND/UNBIND
  success is ``00 FF`` too; a BIND naming a Thing another connection holds is refused whole
  under first-in-wins (``BIND_REFUSED_STATUS``, the reason naming the Thing and the holder's
  connection id); after a BIND the stand-in calls ``NotifyPropertyUpdate`` on each
  bound Thing, then learns its services through ``GetMetadata`` (``GET_METADATA_AFTER_BIND``);
- ``GetPropertySubscriptions`` is answered with the properties the Thing's metadata declares
  (``SUBSCRIBE_DECLARED_PROPERTIES``); ``UpdateSubscribedPropertyValues`` and events are stored
  in the Thing's entry (values by name, the last 1,000 events) only from the connection that
  holds the Thing, else NOT_FOUND; an event the Thing's metadata does not declare is NOT_FOUND;
- requests to the edge: POST (``SERVICE_CALL_METHOD``), entity THING, characteristic SERVICES,
  params a one-row InfoTable or NOTHING, request ids from the stand-in's counter, the endpoint id a
  per-connection constant; the answer is matched by request id alone, with a deadline;
- decoding is by structure (the codec's assembler ignores trailing bytes, joins a body split
  over two plain messages and reassembles multipart, BIND included); unknown codes and
  KEEP_ALIVE are dropped; a malformed request is answered BAD_REQUEST, a malformed answer fails
  the call it answers; the link survives both;
- every message over the chunk size (or the client's Max-Frame-Size, if smaller) goes out as
  multipart, so no frame exceeds the client's Max-Frame-Size.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import Any

import structlog

from agent.alwayson import (
    AlwaysOnError,
    Auth,
    AuthReceived,
    Bind,
    BindReceived,
    Characteristic,
    Connection,
    DataShape,
    InfoTable,
    MalformedMessage,
    MessageTooLarge,
    OversizedMessage,
    PendingBudget,
    PendingLimitRefused,
    RefusedBeforeAuth,
    Request,
    RequestReceived,
    Response,
    ResponseReceived,
    Side,
    Status,
    ThingMetadata,
    UnmatchedResponse,
    UnsupportedMessage,
    parse_metadata_json,
    read_property_values,
    subscriptions_from_aspects,
    subscriptions_table,
)
from emulator.thingworx.errors import CallError, EdgeFailed, EdgeTimeout, LinkClosed
from emulator.thingworx.limits import RefusalCounter, StandInLimits
from emulator.thingworx.things import ThingRegistry
from emulator.thingworx.unconfirmed import (
    APP_KEY_CLAIM,
    AUTH_FAILURE_CLOSES,
    BIND_REFUSED_STATUS,
    GET_METADATA_AFTER_BIND,
    GET_METADATA_METHOD,
    GET_METADATA_SERVICE,
    GET_PROPERTY_SUBSCRIPTIONS_SERVICE,
    NOTIFY_PROPERTY_UPDATE_METHOD,
    NOTIFY_PROPERTY_UPDATE_SERVICE,
    REASON_COLUMN,
    REQUEST_BEFORE_AUTH_CLOSES,
    SERVICE_CALL_METHOD,
    SUBSCRIBE_DECLARED_PROPERTIES,
    UPDATE_SUBSCRIBED_PROPERTY_VALUES_SERVICE,
)
from emulator.thingworx.websocket_link import EdgeLink

__all__ = ["EdgeSession", "SessionSettings", "check_app_key", "edge_reason"]

_NO_FIELDS = DataShape(())


class SessionSettings:
    """The knobs every session of one stand-in shares.

    Args:
        app_key: the application key clients must present.
        chunk_size: the largest AlwaysOn message sent before multipart splitting.
        max_message_size: the largest (reassembled) message accepted or sent.
        call_timeout: seconds to wait for the edge's answer to a call.
        next_request_id: the stand-in's request id counter.
        limits: what one connection may cost (default: :class:`StandInLimits`' defaults).
        budget: the bytes of incomplete multipart sets every connection together may hold
            (default: a budget of ``limits.multipart_pending_bytes_total``).
    """

    def __init__(
        self,
        *,
        app_key: str,
        chunk_size: int,
        max_message_size: int,
        call_timeout: float,
        next_request_id: Callable[[], int],
        limits: StandInLimits | None = None,
        budget: PendingBudget | None = None,
    ) -> None:
        self.app_key = app_key
        self.chunk_size = chunk_size
        self.max_message_size = max_message_size
        self.call_timeout = call_timeout
        self.next_request_id = next_request_id
        self.limits = limits or StandInLimits()
        self.budget = budget or PendingBudget(self.limits.multipart_pending_bytes_total)


def check_app_key(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of an application key (None never matches)."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def _content_reason(content: InfoTable | None) -> str | None:
    if content is None or REASON_COLUMN not in content.shape or not content.rows:
        return None
    value = content.rows[0].get(REASON_COLUMN)
    return value if isinstance(value, str) and value else None


def edge_reason(response: Response) -> str:
    """The edge's reason: the header's reason, else a ``reason`` column (§12), else the code."""
    return response.reason or _content_reason(response.content) or response.status.name


class EdgeSession:
    """The server side of one AlwaysOn connection.

    Args:
        link: the websocket.
        registry: the stand-in's Things.
        settings: shared settings.
        conn_id: an id for logs and listings.
        endpoint_id: this connection's endpoint id, sent in every request to the edge.
    """

    def __init__(
        self,
        link: EdgeLink,
        registry: ThingRegistry,
        settings: SessionSettings,
        *,
        conn_id: str,
        endpoint_id: int,
    ) -> None:
        self.link = link
        self._registry = registry
        self._settings = settings
        self._conn_id = conn_id
        limits = settings.limits
        self.conn = Connection(
            Side.SERVER,
            chunk_size=min(settings.chunk_size, link.max_frame_size),
            max_message_size=settings.max_message_size,
            stale_after=limits.stale_multipart_after,
            max_pending_bytes=limits.multipart_pending_bytes,
            budget=settings.budget,
            request_ids=settings.next_request_id,
            endpoint_id=endpoint_id,
        )
        self.refusals = RefusalCounter()
        self._futures: dict[int, asyncio.Future[Response]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._metadata_fetches: dict[str, asyncio.Task[None]] = {}
        self._log = structlog.get_logger("emulator.thingworx.session").bind(conn_id=conn_id)

    @property
    def conn_id(self) -> str:
        """The connection's id."""
        return self._conn_id

    @property
    def endpoint_id(self) -> int:
        """This connection's endpoint id, sent in every request to the edge."""
        return self.conn.endpoint_id

    @property
    def session_id(self) -> int | None:
        """The session id assigned at AUTH; None before."""
        return self.conn.session_id

    @property
    def authenticated(self) -> bool:
        """True after a successful AUTH."""
        return self.conn.authenticated

    @property
    def pending_multipart_bytes(self) -> int:
        """Bytes held for this connection's incomplete multipart sets and split bodies."""
        return self.conn.pending_bytes

    # lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes; then unbind its Things and fail its calls."""
        loop = asyncio.get_running_loop()
        self._log.info(
            "edge connected",
            max_frame_size=self.link.max_frame_size,
            deflate=self.link.handshake.deflate,
        )
        self._spawn(self._auth_deadline())
        self._spawn(self._housekeeping())
        try:
            while True:
                # recv() does not suspend while messages are queued: yield, so that one busy
                # connection cannot starve the others, the REST calls and the signal handlers.
                await asyncio.sleep(0)
                data = await self.link.recv()
                if data is None:
                    break
                event = self.conn.receive_data(data, loop.time())
                self._send_frames(self.conn.data_to_send())
                if event is not None:
                    await self._dispatch(event)
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        _, freed = self.conn.close()
        for future in self._futures.values():
            if not future.done():
                future.set_exception(LinkClosed("the edge's connection closed"))
        self._futures.clear()
        names = self._registry.drop(self)
        self._log_refusals()
        self._log.info(
            "edge disconnected",
            unbound=len(names),
            things=names[:20],
            multipart_bytes_freed=freed,
            close_code=self.link.close_code,
            close_reason=self.link.close_reason,
        )

    async def _auth_deadline(self) -> None:
        """Close the link when no AUTH succeeded within ``auth_timeout`` (ThingWorx: 15 s)."""
        timeout = self._settings.limits.auth_timeout
        await asyncio.sleep(timeout)
        if not self.authenticated and not self.link.closed:
            self._log.warning("no auth in time; closing", timeout=timeout)
            await self.link.close(1008, f"no AUTH within {timeout:g} s")

    async def _housekeeping(self) -> None:
        """Expire stale multipart sets on a timer; log refused frames as counts."""
        limits = self._settings.limits
        loop = asyncio.get_running_loop()
        period = min(limits.stale_multipart_after / 10, limits.refusal_log_interval)
        next_log = loop.time() + limits.refusal_log_interval
        while not self.link.closed:
            await asyncio.sleep(period)
            now = loop.time()
            dropped = self.conn.expire(now)
            if dropped:
                self._log.info("stale multipart sets dropped", count=dropped)
            if now >= next_log:
                self._log_refusals()
                next_log = now + limits.refusal_log_interval

    def _log_refusals(self) -> None:
        counts = self.refusals.take()
        if counts:
            self._log.warning("frames refused", counts=counts, total=sum(counts.values()))

    def _refused(self, reason: str, **details: Any) -> None:
        """Count one refused frame; the first of each reason is logged in full."""
        if self.refusals.add(reason):
            self._log.warning(reason, **details, note="later ones are logged as counts")

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # sending -----------------------------------------------------------------------------

    def _send_frames(self, frames: list[bytes]) -> None:
        for frame in frames:
            self.link.send(frame)

    def _answer(
        self,
        to: Request | Bind | Auth,
        status: Status | int,
        *,
        reason: str | None = None,
        content: InfoTable | None = None,
    ) -> None:
        """Answer ``to`` (its request id and endpoint id echoed by the connection)."""
        try:
            self._send_frames(self.conn.send_response(to, status, reason=reason, content=content))
        except (ConnectionError, AlwaysOnError) as exc:
            self._log.warning("answer not sent", request_id=to.request_id, error=str(exc))

    # calls to the edge -------------------------------------------------------------------

    async def call(
        self,
        thing: str,
        service: str,
        params: InfoTable | None,
        *,
        timeout: float | None = None,
        method: int = SERVICE_CALL_METHOD,
    ) -> Response:
        """Call a service of a Thing bound on this connection and wait for the edge's answer.

        Args:
            thing: the Thing's name.
            service: the service's name.
            params: the one-row input InfoTable, or None (NOTHING).
            timeout: seconds to wait (default: the stand-in's call timeout).
            method: the request code (POST unless a correction says otherwise).

        Returns:
            The edge's response, whatever its status.

        Raises:
            EdgeTimeout: no answer in time.
            LinkClosed: the connection closed before the answer.
            CallError: the request could not be encoded (413 for one over the max message size).
        """
        if self.link.closed:
            raise LinkClosed("the edge's connection is closed")
        wait = self._settings.call_timeout if timeout is None else timeout
        try:
            request_id, frames = self.conn.send_request(
                method, thing, Characteristic.SERVICES, service, params
            )
        except MessageTooLarge as exc:
            raise CallError(f"the call is too large for AlwaysOn: {exc}", http_status=413) from None
        except AlwaysOnError as exc:
            raise CallError(f"the call cannot be encoded: {exc}", http_status=400) from None
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._futures[request_id] = future
        # The call's log context, given per event rather than bound: binding costs on every call.
        context = {"thing": thing, "service": service, "request_id": request_id}
        try:
            try:
                self._send_frames(frames)
            except ConnectionError:
                raise LinkClosed("the edge's connection is closed") from None
            self._log.debug("call sent", **context)
            try:
                async with asyncio.timeout(wait):
                    response = await future
            except TimeoutError:
                self._log.warning("call timed out", **context, timeout=wait)
                raise EdgeTimeout(
                    f"Thing {thing!r} did not answer {service} within {wait:g} s"
                ) from None
        finally:
            self._futures.pop(request_id, None)
            self.conn.forget(request_id)
        self._log.debug("call answered", **context, status=response.status.name)
        return response

    # synchronisation after BIND ----------------------------------------------------------

    async def _synchronise(self, thing: str) -> None:
        try:
            answer = await self.call(
                thing, NOTIFY_PROPERTY_UPDATE_SERVICE, None, method=NOTIFY_PROPERTY_UPDATE_METHOD
            )
            self._log.debug("property update notified", thing=thing, status=answer.status.name)
        except (CallError, LinkClosed) as exc:
            self._log.warning("notify property update failed", thing=thing, error=str(exc))
        if GET_METADATA_AFTER_BIND:
            await self.fetch_metadata(thing)

    async def fetch_metadata(self, thing: str) -> None:
        """Learn ``thing``'s services through GetMetadata and record them (or the failure).

        Concurrent fetches of the same Thing share one call.
        """
        running = self._metadata_fetches.get(thing)
        if running is None or running.done():
            running = self._metadata_fetches[thing] = self._spawn(self._fetch_metadata(thing))
        await asyncio.shield(running)

    async def _fetch_metadata(self, thing: str) -> None:
        metadata: ThingMetadata | None = None
        error: str | None = None
        try:
            answer = await self.call(thing, GET_METADATA_SERVICE, None, method=GET_METADATA_METHOD)
            if not answer.ok:
                error = f"GetMetadata failed: {edge_reason(answer)}"
            elif answer.content is None or not answer.content.rows:
                error = "GetMetadata answered no content"
            else:
                row = answer.content.rows[0]
                document = row.get("result", next(iter(row.values()), None))
                if isinstance(document, dict | str | bytes):
                    metadata = parse_metadata_json(document)
                else:
                    error = "GetMetadata answered no JSON document"
        except (CallError, LinkClosed) as exc:
            error = f"GetMetadata failed: {exc}"
        except (AlwaysOnError, TypeError, ValueError) as exc:
            error = f"GetMetadata answered unreadable metadata: {exc}"
        if error is not None:
            self._log.warning("metadata unavailable", thing=thing, error=error)
        else:
            assert metadata is not None
            self._log.debug("metadata learned", thing=thing, services=sorted(metadata.services))
        self._registry.set_metadata(thing, self, metadata, error)

    # incoming ----------------------------------------------------------------------------

    async def _dispatch(self, event: Any) -> None:
        match event:
            case ResponseReceived(response):
                future = self._futures.get(response.request_id)
                if future is not None and not future.done():
                    future.set_result(response)
            case UnmatchedResponse(response):
                self._log.debug("unmatched response dropped", request_id=response.request_id)
            case AuthReceived(auth):
                await self._on_auth(auth)
            case BindReceived(bind):
                self._on_bind(bind)
            case RequestReceived(request):
                self._on_request(request)
            case RefusedBeforeAuth(code, request_id, answered):
                # A message other than AUTH before AUTH, its body unread; UNAUTHORIZED was
                # queued for a request or BIND.
                self._refused("refused before auth", code=code, request_id=request_id)
                if answered and REQUEST_BEFORE_AUTH_CLOSES:
                    await self.link.close(1008, "not authenticated")
            case MalformedMessage(exc, answered, failed):
                if failed is not None:
                    self._fail_call(failed, EdgeFailed(
                        f"the edge's answer does not parse: {exc}",
                        status=Status.BAD_GATEWAY,
                        http_status=502,
                    ))  # fmt: skip
                elif answered:  # BAD_REQUEST was queued
                    self._refused("malformed request", request_id=exc.request_id, error=str(exc))
                else:
                    self._refused(
                        "message dropped", code=exc.code, request_id=exc.request_id, error=str(exc)
                    )
            case PendingLimitRefused(exc, answered, failed):
                self._refused(
                    "multipart over the pending limit", request_id=exc.request_id, error=str(exc)
                )
                if failed is not None:
                    self._fail_call(failed, _too_large(exc.limit))
            case OversizedMessage(exc, failed):
                self._refused(
                    "message too large", request_id=exc.request_id, size=exc.size, limit=exc.limit
                )
                if failed is not None:
                    self._fail_call(failed, _too_large(exc.limit))
            case UnsupportedMessage():  # an edge-side event: a server never meets it
                pass

    async def _on_auth(self, auth: Auth) -> None:
        presented = next((value for name, value in auth.claims if name == APP_KEY_CLAIM), None)
        if not check_app_key(presented, self._settings.app_key):
            self._log.warning("auth refused", claims=[name for name, _ in auth.claims])
            try:
                self._send_frames(self.conn.refuse_auth(auth, "invalid application key"))
            except ConnectionError as exc:
                self._log.warning("answer not sent", request_id=auth.request_id, error=str(exc))
            if AUTH_FAILURE_CLOSES:
                await self.link.close(1008, "invalid application key")
            return
        frames = self.conn.accept_auth(auth)
        self._log.info("edge authenticated", session_id=self.session_id)
        try:
            self._send_frames(frames)
        except ConnectionError as exc:
            self._log.warning("answer not sent", request_id=auth.request_id, error=str(exc))

    def _on_bind(self, bind: Bind) -> None:
        if bind.unbind:
            for name in bind.names:
                self._registry.unbind(name, self)
            self._answer(bind, Status.SUCCESS)
            return
        limit = self._settings.limits.max_things_per_connection
        held = self._registry.count_owned(self)
        new = {name for name in bind.names if not self._registry.owns(name, self)}
        if held + len(new) > limit:
            self._refused("bind over the things limit", request_id=bind.request_id)
            self._answer(
                bind,
                Status.BAD_REQUEST,
                reason=f"BIND of {len(new)} Things refused: this connection would hold "
                f"{held + len(new)}, over the limit of {limit}; bind them over more connections",
            )
            return
        taken = self._registry.held_elsewhere(bind.names, self)
        if taken:
            self._answer(bind, BIND_REFUSED_STATUS, reason=_held_reason(taken))
            self._log.warning(
                "bind refused",
                policy=self._registry.bind_policy,
                things=sorted(taken)[:20],
                holders=sorted({owner.conn_id for owner in taken.values()}),
            )
            return
        bound = [name for name in bind.names if self._registry.bind(name, self)]
        self._answer(bind, Status.SUCCESS)
        for name in bound:
            self._spawn(self._synchronise(name))

    def _on_request(self, request: Request) -> None:
        log = self._log.bind(
            thing=request.entity_name, target=request.target, request_id=request.request_id
        )
        if request.characteristic is Characteristic.SERVICES:
            if request.target == GET_PROPERTY_SUBSCRIPTIONS_SERVICE:
                log.debug("property subscriptions asked")
                self._spawn(self._answer_subscriptions(request))
                return
            if request.target == UPDATE_SUBSCRIBED_PROPERTY_VALUES_SERVICE:
                self._store_property_values(request)
                return
        if request.characteristic is Characteristic.EVENTS:
            self._store_event(request)
            return
        log.info("edge request not served")
        self._answer(
            request, Status.NOT_FOUND, reason=f"{request.target} is not served by the stand-in"
        )

    async def _answer_subscriptions(self, request: Request) -> None:
        """GetPropertySubscriptions: every property the Thing's metadata declares with a
        ``pushType`` other than NEVER counts as remote-bound (``SUBSCRIBE_DECLARED_PROPERTIES``),
        so the metadata is learned first (§7.2)."""
        thing = request.entity_name
        entry = self._registry.get(thing)
        if entry is not None and entry.metadata is None and self._registry.owns(thing, self):
            await self.fetch_metadata(thing)
            entry = self._registry.get(thing)
        metadata = entry.metadata if entry is not None else None
        declared = {} if metadata is None or not SUBSCRIBE_DECLARED_PROPERTIES else {
            p.name: p.aspects for p in metadata.properties.values()
        }  # fmt: skip
        self._answer(
            request,
            Status.SUCCESS,
            content=subscriptions_table(subscriptions_from_aspects(declared)),
        )

    def _store_property_values(self, request: Request) -> None:
        """UpdateSubscribedPropertyValues (§7.3): keep each Thing's latest value per property."""
        entry = self._registry.get(request.entity_name)
        if entry is None or not self._registry.owns(request.entity_name, self):
            self._answer(
                request, Status.NOT_FOUND, reason=f"Thing {request.entity_name} is not bound here"
            )
            return
        try:
            values = read_property_values(request.params)
        except AlwaysOnError as exc:
            self._answer(request, Status.BAD_REQUEST, reason=str(exc))
            return
        for value in values:
            entry.properties[value.name] = value
        self._log.debug("property values stored", thing=entry.name, count=len(values))
        self._answer(request, Status.SUCCESS)

    def _store_event(self, request: Request) -> None:
        """An event (characteristic EVENTS, §7.6): kept with its data, handed to live viewers."""
        thing, event = request.entity_name, request.target
        if not self._registry.owns(thing, self):
            self._answer(request, Status.NOT_FOUND, reason=f"Thing {thing} is not bound here")
            return
        metadata = (entry := self._registry.get(thing)) and entry.metadata
        if metadata is not None and metadata.events and event not in metadata.events:
            self._answer(request, Status.NOT_FOUND, reason=f"Thing {thing} has no event {event}")
            return
        data = request.params if request.params is not None else InfoTable(_NO_FIELDS, [])
        self._registry.record_event(thing, event, data)
        self._log.info("event received", thing=thing, name=event)
        self._answer(request, Status.SUCCESS)

    def _fail_call(self, request_id: int, error: Exception) -> None:
        """Fail the call waiting for ``request_id`` (if not already answered) with ``error``."""
        future = self._futures.get(request_id)
        if future is not None and not future.done():
            future.set_exception(error)


def _held_reason(held: dict[str, Any]) -> str:
    """The reason of a BIND refused by first-in-wins: which Things, and which connection holds
    them (the refused agent logs it as the holder)."""
    name, owner = sorted(held.items())[0]
    more = f" (and {len(held) - 1} more Things)" if len(held) > 1 else ""
    return (
        f"Thing {name!r} is bound by connection {owner.conn_id}{more}; bind protection policy "
        "first-in-wins refuses a second bind until it disconnects or unbinds"
    )


def _too_large(limit: int) -> EdgeFailed:
    return EdgeFailed(
        f"the edge's answer exceeds {limit} bytes",
        status=Status.ENTITY_TOO_LARGE,
        http_status=502,
    )
