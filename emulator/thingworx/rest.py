"""ThingWorx's REST convention on the stand-in's port.

Routes (all need the application key, in the ``appKey`` header or the ``appKey`` query
parameter, compared in constant time):

- ``POST /Thingworx/Things/{thing}/Services/{service}``: a JSON object of inputs in, the result
  InfoTable as ThingWorx JSON out (typing rules in :mod:`emulator.thingworx.json_typing`);
- ``GET /Thingworx/Things``: the known Things and their connection state, as InfoTable JSON;
- ``GET /Thingworx/Things/{thing}/ServiceDefinitions``: the services learned from GetMetadata;
- ``GET /Thingworx/Things/{thing}/Properties/{name}``: the value the edge last pushed, as an
  InfoTable of one row with one column named after the property (404 while none was pushed);
- ``GET /Thingworx/Things/{thing}/Properties``: every pushed property, one row, a column each;
- ``GET /standin/events?thing={thing}`` (the stand-in's own path, not ThingWorx's): the last
  1,000 events the Thing fired, oldest first, as JSON ``{"thing", "events": [{"seq", "event",
  "time", "data"}]}`` (``data`` as InfoTable JSON); ``&after={seq}`` gives only later ones;
- ``GET /standin/events/stream`` (the stand-in's own path): every event fired from now on, as
  server-sent events (``text/event-stream``, one JSON object per ``data:`` line), the console's
  live view.

Pushed values and events are served for a known Thing whether or not it is connected now.

Errors are a status and one plain-text line: 401 wrong or missing app key; 400 a body or input
that cannot be typed (a body nested past ``json_typing.MAX_JSON_DEPTH`` is refused before it is
parsed); 404 unknown Thing or service (or the edge's NOT_FOUND); 503 the Thing's
agent is not connected (or dropped during the call); 502 the Thing's metadata could not be learned
or the edge's answer does not parse; 500 any other AlwaysOn error status (400 for BAD_REQUEST),
with the edge's reason text, from the header or the ``reason`` column (§12); 504 the edge did not
answer in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from agent.alwayson import (
    BaseType,
    DataShape,
    FieldDefinition,
    InfoTable,
    Response,
    ServiceMetadata,
    Status,
    ThingMetadata,
)
from emulator.thingworx.errors import (
    CallError,
    EdgeFailed,
    InputError,
    LinkClosed,
    ThingNotFound,
    ThingUnavailable,
)
from emulator.thingworx.json_typing import (
    infotable_json_text,
    infotable_to_json,
    parse_json_text,
    shape_to_json,
    type_inputs,
)
from emulator.thingworx.session import EdgeSession, check_app_key, edge_reason
from emulator.thingworx.things import FiredEvent, ThingEntry, ThingRegistry

__all__ = ["HTTP_STATUS_OF_EDGE_STATUS", "RestApi"]

HTTP_STATUS_OF_EDGE_STATUS: dict[Status, int] = {
    Status.BAD_REQUEST: 400,
    Status.NOT_FOUND: 404,
}
"""AlwaysOn statuses answered with their HTTP analogue; every other error status is 500."""

_THINGS_SHAPE = DataShape(
    (
        FieldDefinition("name", BaseType.STRING),
        FieldDefinition("isConnected", BaseType.BOOLEAN),
        FieldDefinition("connectionId", BaseType.STRING),
        FieldDefinition("lastBind", BaseType.DATETIME),
        FieldDefinition("servicesKnown", BaseType.BOOLEAN),
        FieldDefinition("metadataError", BaseType.STRING),
    )
)

_SERVICES_SHAPE = DataShape(
    (
        FieldDefinition("name", BaseType.STRING),
        FieldDefinition("description", BaseType.STRING),
        FieldDefinition("parameterDefinitions", BaseType.JSON),
        FieldDefinition("resultType", BaseType.JSON),
    )
)

_NO_CONTENT = InfoTable(DataShape(()))  # the answer to a NOTHING result (never mutated)

_log = structlog.get_logger("emulator.thingworx.rest")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", content_type="text/plain")


def _json(doc: Any) -> web.Response:
    return web.Response(
        text=json.dumps(doc, separators=(",", ":"), allow_nan=False),
        content_type="application/json",
    )


class RestApi:
    """The REST routes, over the stand-in's registry of Things.

    Args:
        registry: the Things.
        app_key: the application key REST callers must present.
        call_timeout: seconds to wait for the edge (metadata, then the call itself).
    """

    def __init__(self, registry: ThingRegistry, app_key: str, call_timeout: float) -> None:
        self._registry = registry
        self._app_key = app_key
        self._call_timeout = call_timeout

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp route table."""
        return [
            web.get("/Thingworx/Things", self._guard(self.list_things)),
            web.get(
                "/Thingworx/Things/{thing}/ServiceDefinitions",
                self._guard(self.service_definitions),
            ),
            web.post("/Thingworx/Things/{thing}/Services/{service}", self._guard(self.call)),
            web.get("/Thingworx/Things/{thing}/Properties", self._guard(self.properties)),
            web.get("/Thingworx/Things/{thing}/Properties/{name}", self._guard(self.properties)),
            web.get("/standin/events", self._guard(self.events)),
            web.get("/standin/events/stream", self._guard(self.event_stream)),
        ]

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            key = request.headers.get("appKey", request.query.get("appKey"))
            if not check_app_key(key, self._app_key):
                return _text(401, "missing or wrong application key (send the appKey header)")
            try:
                return await handler(request)
            except CallError as exc:
                return _text(exc.http_status, exc.text)

        return guarded

    # listings ----------------------------------------------------------------------------

    async def list_things(self, request: web.Request) -> web.StreamResponse:
        """``GET /Thingworx/Things``: every known Thing and its connection state."""
        rows = [
            {
                "name": e.name,
                "isConnected": e.connected,
                "connectionId": e.owner.conn_id if e.owner is not None else None,
                "lastBind": _utc(e.bound_at),
                "servicesKnown": e.metadata is not None,
                "metadataError": e.metadata_error,
            }
            for e in self._registry.all()
        ]
        return _json(infotable_to_json(InfoTable(_THINGS_SHAPE, rows)))

    async def service_definitions(self, request: web.Request) -> web.StreamResponse:
        """``GET /Thingworx/Things/{thing}/ServiceDefinitions``: the services from GetMetadata."""
        name = request.match_info["thing"]
        metadata = await self._metadata(self._entry(name))
        rows = [
            {
                "name": svc.name,
                "description": svc.description,
                "parameterDefinitions": shape_to_json(svc.inputs),
                "resultType": _result_json(svc),
            }
            for svc in sorted(metadata.services.values(), key=lambda s: s.name)
        ]
        return _json(infotable_to_json(InfoTable(_SERVICES_SHAPE, rows)))

    # pushed values and events -------------------------------------------------------------

    def _known(self, thing: str) -> ThingEntry:
        entry = self._registry.get(thing)
        if entry is None:
            raise ThingNotFound(f"Thing {thing!r} not found (it has never been bound)")
        return entry

    async def properties(self, request: web.Request) -> web.StreamResponse:
        """``GET .../Properties[/{name}]``: the pushed values, one row, a column per property."""
        entry = self._known(request.match_info["thing"])
        name = request.match_info.get("name")
        if name is not None and name not in entry.properties:
            pushed = ", ".join(sorted(entry.properties)) or "none yet"
            raise ThingNotFound(
                f"Thing {entry.name!r} has pushed no value of property {name!r} (pushed: {pushed})"
            )
        values = [entry.properties[name]] if name is not None else list(entry.properties.values())
        shape = DataShape(tuple(FieldDefinition(v.name, _pushed_type(v.base_type)) for v in values))
        row = {v.name: v.value for v in values}
        return _json(infotable_to_json(InfoTable(shape, [row])))

    async def events(self, request: web.Request) -> web.StreamResponse:
        """``GET /standin/events?thing=...[&after=seq]``: the Thing's last events."""
        thing = request.query.get("thing")
        if not thing:
            return _text(400, "name the Thing: /standin/events?thing=<name>")
        after_text = request.query.get("after", "0")
        if not after_text.isdigit():
            return _text(400, f"after must be an event sequence number, not {after_text!r}")
        after = int(after_text)
        entry = self._known(thing)
        fired = [_event_json(e) for e in entry.events if e.seq > after]
        return _json({"thing": entry.name, "events": fired})

    async def event_stream(self, request: web.Request) -> web.StreamResponse:
        """``GET /standin/events/stream``: events as they are fired (server-sent events)."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        queue = self._registry.subscribe()
        try:
            await response.write(b": live events\n\n")
            while True:
                try:
                    async with asyncio.timeout(_STREAM_KEEPALIVE):
                        fired = await queue.get()
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                text = json.dumps(_event_json(fired), separators=(",", ":"), default=str)
                await response.write(f"data: {text}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._registry.unsubscribe(queue)
        return response

    # calls -------------------------------------------------------------------------------

    async def call(self, request: web.Request) -> web.StreamResponse:
        """``POST /Thingworx/Things/{thing}/Services/{service}``: call a remote service."""
        thing = request.match_info["thing"]
        service = request.match_info["service"]
        raw = await request.read()
        if raw.strip():
            try:
                body = parse_json_text(raw, where="the body")
            except InputError as exc:
                return _text(400, f"{exc.text} (send a JSON object of inputs)")
            if not isinstance(body, dict):
                return _text(400, "the body must be a JSON object of inputs")
        else:
            body = {}
        entry = self._entry(thing)
        metadata = await self._metadata(entry)
        svc = metadata.services.get(service)
        if svc is None:
            close = difflib.get_close_matches(service, metadata.services, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ThingNotFound(f"Thing {thing!r} has no service {service!r}{hint}")
        params = type_inputs(svc, body)
        session = self._session(entry)
        started = time.perf_counter()
        try:
            response = await session.call(thing, service, params, timeout=self._call_timeout)
        except LinkClosed:
            raise ThingUnavailable(
                f"the agent of Thing {thing!r} disconnected during the call; retry"
            ) from None
        if not response.ok:
            raise _edge_failure(response)
        _log.info(
            "service called",
            thing=thing,
            service=service,
            elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        content = response.content if response.content is not None else _NO_CONTENT
        return web.Response(text=infotable_json_text(content), content_type="application/json")

    # helpers -----------------------------------------------------------------------------

    def _entry(self, thing: str) -> ThingEntry:
        entry = self._registry.get(thing)
        if entry is None:
            raise ThingNotFound(f"Thing {thing!r} not found (it has never been bound)")
        if not entry.connected:
            raise ThingUnavailable(f"Thing {thing!r} is not connected: its agent is offline")
        return entry

    def _session(self, entry: ThingEntry) -> EdgeSession:
        owner = entry.owner
        if not isinstance(owner, EdgeSession):
            raise ThingUnavailable(f"Thing {entry.name!r} is not connected: its agent is offline")
        return owner

    async def _metadata(self, entry: ThingEntry) -> ThingMetadata:
        if entry.metadata is not None:
            return entry.metadata
        session = self._session(entry)
        with contextlib.suppress(TimeoutError):
            await self._registry.wait_metadata(entry.name, self._call_timeout)
        current = self._registry.get(entry.name)
        if current is None or not current.connected:
            raise ThingUnavailable(f"Thing {entry.name!r} disconnected")
        if current.metadata is None:
            # The fetch after bind failed (or never ran): try once more, now.
            await session.fetch_metadata(entry.name)
            current = self._registry.get(entry.name)
        if current is None or current.metadata is None:
            why = current.metadata_error if current is not None else "disconnected"
            raise CallError(
                f"the services of Thing {entry.name!r} are unknown: {why}", http_status=502
            )
        return current.metadata


def _edge_failure(response: Response) -> EdgeFailed:
    http = HTTP_STATUS_OF_EDGE_STATUS.get(response.status, 500)
    return EdgeFailed(edge_reason(response), status=response.status, http_status=http)


def _result_json(svc: ServiceMetadata) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": "result",
        "baseType": svc.result_type.type_name,
        "description": "",
        "aspects": {},
    }
    if svc.result_shape is not None:
        if svc.result_shape.name:
            out["aspects"] = {"dataShape": svc.result_shape.name}
        out["fieldDefinitions"] = shape_to_json(svc.result_shape)
    return out


_STREAM_KEEPALIVE = 15.0  # s: a comment line keeps proxies from closing an idle stream


def _pushed_type(base_type: BaseType) -> BaseType:
    # A value pushed without its VARIANT wrapper has no known type here: serve it as JSON-ish text.
    return BaseType.STRING if base_type in (BaseType.VARIANT, BaseType.NOTHING) else base_type


def _event_json(fired: FiredEvent) -> dict[str, Any]:
    return {
        "seq": fired.seq,
        "thing": fired.thing,
        "event": fired.event,
        "time": datetime.fromtimestamp(fired.received, UTC).isoformat().replace("+00:00", "Z"),
        "data": json.loads(infotable_json_text(fired.data)),
    }


def _utc(epoch_seconds: float) -> datetime | None:
    return datetime.fromtimestamp(epoch_seconds, UTC) if epoch_seconds else None
