"""IoT Hub's service REST API over HTTPS, as azure-iot-hub 2.7.0 calls it (reference/iothub.md §1).

Routes (all take ``api-version``, all need a service SAS token in ``Authorization``):

========  ===========================  =======================================================
PUT       /devices/{id}                create (no If-Match) or update (If-Match) an identity
GET       /devices/{id}                the identity
DELETE    /devices/{id}                delete (If-Match ``"*"`` or the etag) → 204
GET       /devices?top=n               up to n identities (1..1000)
POST      /devices/query               ``{"query": ...}`` over devices, devices.modules,
                                       devices.jobs; paged
GET/PATCH/PUT /twins/{id}              the twin; merge tags/desired; replace tags/desired
POST      /twins/{id}/methods          direct method → 200 ``{"status", "payload"}``
PUT       /jobs/v2/{id}                create a job
GET       /jobs/v2/{id}                a job
POST      /jobs/v2/{id}/cancel         cancel a job
GET       /jobs/v2/query               list jobs (jobType, jobStatus filters); paged
========  ===========================  =======================================================

Rules:

- Every error is IoT Hub's JSON body with an ``iothub-errorcode`` header (:class:`HubError`);
  unknown routes answer 404 GenericNotFound in the same format; no stack trace ever leaves.
- Success codes are exactly the ones the SDK accepts (§1.1): 200 everywhere, 204 for DELETE.
- Paged answers are bare JSON arrays with ``x-ms-item-type``; ``x-ms-continuation`` is present
  only while more pages exist. Requests page with the ``x-ms-continuation`` and
  ``x-ms-max-item-count`` headers (default 100, at most 1000 items a page). A token may be sent
  again (a retried page reads the same rows) until it expires (5 min, or when 256 newer tokens
  were made); IoT Hub's tokens are opaque positions, not consumed [inferred]. A devices query is
  evaluated once on its first page, 5,000 twins between two turns of the event loop, each twin
  built with only the top-level members the query reads; later pages read the stored result
  (twin documents are built again per page, so they show the twins as they are then, like IoT
  Hub's eventual consistency). A ``SELECT *`` on one job's rows whose whole condition is
  ``jobId = '<that job>'`` evaluates nothing per row.
  A ``SELECT *`` on ``devices.jobs`` is never evaluated ahead: each page reads the rows after
  the last one it returned, in (jobId, deviceId) order, until it holds a page and one more (to
  know whether a token is due), so a page of a 100,000-row job costs its page, not the job; a
  top-level ``jobId = '...'`` reads only that job's rows. Its later pages show the rows as they
  are then (eventual consistency, as above).
- The REST layer depends on the query language only through :class:`QueryLanguage`, which the
  assembly (``hub.py``) fills with the ``query`` package's functions.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import ssl
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol

import structlog
from aiohttp import web

from emulator.iothub import twin_limits
from emulator.iothub.clock import Clock
from emulator.iothub.errors import HubError
from emulator.iothub.ports import DeviceLink, JobService, Predicate
from emulator.iothub.registry import Registry
from emulator.iothub.sas import SasError, verify_token

__all__ = ["API_VERSION", "ParsedQuery", "QueryLanguage", "RestApi"]

API_VERSION = "2021-04-12"
_DEFAULT_PAGE = 100
_MAX_PAGE = 1000
_CURSOR_TTL = 300.0
_MAX_CURSORS = 256
_EVALUATION_SLICE = 5000  # twins evaluated between two turns of the event loop
_JSON = "application/json; charset=utf-8"
_COMPACT = (",", ":")

_log = structlog.get_logger("emulator.iothub.rest")


class ParsedQuery(Protocol):
    """A parsed IoT Hub query (``SELECT * | COUNT() AS x | name, ... FROM source [WHERE ...]``)."""

    @property
    def source(self) -> str:
        """``devices``, ``devices.modules`` or ``devices.jobs``."""
        ...

    @property
    def count_alias(self) -> str | None:
        """The alias of ``COUNT()`` for a counting query, else None."""
        ...

    @property
    def where(self) -> Predicate | None:
        """The WHERE condition, or None."""
        ...

    @property
    def fields(self) -> tuple[str, ...]:
        """``SELECT deviceId, ... FROM devices``: the names each result keeps; () otherwise."""
        ...


@dataclass(frozen=True, slots=True)
class QueryLanguage:
    """The query language as the REST layer uses it.

    Attributes:
        parse: text → parsed query; raises one of ``errors`` with a message for the caller.
        run: evaluates a parsed query over documents (used for COUNT, projections of top-level
            names and devices.jobs).
        pinned: (a parsed query, key) → the constant a top-level ``key = constant`` fixes, else
            None (a ``devices.jobs`` page then reads only that job's rows).
        exact: (a condition, key) → the constants when the whole condition is ``key IN [...]``
            or ``key = constant``, else None (such a condition on a job's own rows is true).
        names: a parsed query or condition → the lower-cased top-level names it reads (twins
            built to evaluate it hold only those members).
        errors: the exception types ``parse`` and ``run`` raise for bad queries.
    """

    parse: Callable[[str], ParsedQuery]
    run: Callable[[Any, Iterable[dict[str, Any]]], list[Any]]  # (a parsed query, documents)
    pinned: Callable[[Any, str], object]
    exact: Callable[[Any, str], frozenset[Any] | None]
    names: Callable[[Any], frozenset[str]]
    errors: tuple[type[Exception], ...]


@dataclass(frozen=True, slots=True)
class _Cursor:
    """A stored result whose later pages a continuation token reads."""

    item_type: str
    items: Sequence[Any]  # twin ids for "twin" results, ready JSON objects otherwise
    offset: int
    created: float


@dataclass(frozen=True, slots=True)
class _Scan:
    """A ``SELECT *`` on ``devices.jobs`` whose pages read the rows after ``after``."""

    where: Predicate | None
    job_id: str | None  # the one job a top-level ``jobId = '...'`` pins, else None
    after: tuple[str, str] | None  # (jobId, deviceId) of the last row returned
    created: float


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RestApi:
    """The HTTPS service API of the emulated hub.

    Args:
        registry: devices and twins.
        link: the device endpoint (direct methods, desired-property pushes).
        jobs: the job engine.
        query: the query language functions.
        clock: time for SAS expiry and error timestamps.
        sas_host: the host the service tokens' ``sr`` must name (port ignored).
    """

    def __init__(
        self,
        registry: Registry,
        link: DeviceLink,
        jobs: JobService,
        query: QueryLanguage,
        clock: Clock,
        sas_host: str,
    ) -> None:
        self._registry = registry
        self._link = link
        self._jobs = jobs
        self._query = query
        self._clock = clock
        self._sas_host = sas_host
        self._cursors: OrderedDict[str, _Cursor | _Scan] = OrderedDict()
        self.requests: Counter[str] = Counter()
        """Requests served, by route (``"GET /jobs/v2/{id}"``): what the hub was asked."""
        self._runner: web.AppRunner | None = None
        self.app = self._make_app()

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> int:
        """Listen on ``host:port`` (0 picks a free port); return the port bound."""
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        self._runner = runner
        bound = runner.addresses[0]
        return int(bound[1])

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await asyncio.wait_for(runner.cleanup(), timeout=10.0)

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=1024 * 1024)
        r = app.router
        r.add_post("/devices/query", self._query_devices)
        r.add_get("/devices", self._list_devices)
        r.add_put("/devices/{id}", self._put_device)
        r.add_get("/devices/{id}", self._get_device)
        r.add_delete("/devices/{id}", self._delete_device)
        r.add_get("/twins/{id}", self._get_twin)
        r.add_patch("/twins/{id}", self._patch_twin)
        r.add_put("/twins/{id}", self._replace_twin)
        r.add_post("/twins/{id}/methods", self._invoke_method)
        r.add_get("/jobs/v2/query", self._list_jobs)
        r.add_put("/jobs/v2/{id}", self._create_job)
        r.add_get("/jobs/v2/{id}", self._get_job)
        r.add_post("/jobs/v2/{id}/cancel", self._cancel_job)
        return app

    # --- middleware: auth, api-version, errors --------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        self.requests[f"{request.method} {route.canonical if route else request.path}"] += 1
        try:
            self._authorize(request)
            if "api-version" not in request.query:
                raise HubError(
                    400,
                    400001,
                    "InvalidProtocolVersion",
                    "The api-version query parameter is required",
                )
            return await handler(request)
        except HubError as exc:
            return self._error(exc)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            return self._error(
                HubError(
                    404,
                    404000,
                    "GenericNotFound",
                    f"No such resource: {request.method} {request.path}",
                )
            )
        except web.HTTPRequestEntityTooLarge:
            return self._error(HubError(413, 413001, "MessageTooLarge", "Request body too large"))
        except Exception:  # never a stack trace to the caller
            _log.exception("rest handler failed", method=request.method, path=request.path)
            return self._error(
                HubError(500, 500001, "ServerError", "Internal error in the IoT Hub emulator")
            )

    def _authorize(self, request: web.Request) -> None:
        header = request.headers.get("Authorization")
        if not header:
            raise HubError.unauthorized("The Authorization header is missing")
        try:
            verify_token(
                header,
                expected_resource=self._sas_host,
                key_lookup=self._registry.policy_keys,
                now=self._clock.now().timestamp(),
            )
        except SasError as exc:
            raise HubError.unauthorized(f"Unauthorized: {exc}") from None

    def _error(self, exc: HubError) -> web.Response:
        return web.Response(
            status=exc.status,
            text=json.dumps(exc.body(self._clock.now()), separators=_COMPACT),
            content_type="application/json",
            charset="utf-8",
            headers={"iothub-errorcode": exc.name},
        )

    # --- devices ---------------------------------------------------------------------------

    async def _put_device(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        device = self._registry.put_device(
            request.match_info["id"], body, request.headers.get("If-Match")
        )
        return _ok(device)

    async def _get_device(self, request: web.Request) -> web.Response:
        return _ok(self._registry.get_device(request.match_info["id"]))

    async def _delete_device(self, request: web.Request) -> web.Response:
        self._registry.delete_device(request.match_info["id"], request.headers.get("If-Match"))
        return web.Response(status=204)

    async def _list_devices(self, request: web.Request) -> web.Response:
        top_text = request.query.get("top")
        top: int | None = None
        if top_text is not None:
            try:
                top = int(top_text)
            except ValueError:
                raise HubError.argument_invalid(
                    f"top must be an integer, not {top_text!r}"
                ) from None
        return _ok(self._registry.list_devices(top))

    # --- twins -------------------------------------------------------------------------------

    async def _get_twin(self, request: web.Request) -> web.Response:
        return _ok(self._registry.get_twin(request.match_info["id"]))

    async def _patch_twin(self, request: web.Request) -> web.Response:
        return await self._write_twin(request, replace=False)

    async def _replace_twin(self, request: web.Request) -> web.Response:
        return await self._write_twin(request, replace=True)

    async def _write_twin(self, request: web.Request, *, replace: bool) -> web.Response:
        device_id = request.match_info["id"]
        body = await _json_object(request)
        update = self._registry.update_twin(
            device_id, body, request.headers.get("If-Match"), replace=replace
        )
        if update.push is not None:
            self._link.push_desired(device_id, update.push)
        return _ok(update.twin)

    async def _invoke_method(self, request: web.Request) -> web.Response:
        device_id = request.match_info["id"]
        body = await _json_object(request)
        name = body.get("methodName")
        if not isinstance(name, str) or not name:
            raise HubError.argument_invalid("methodName is required and must be a string")
        response_timeout = _seconds(body, "responseTimeoutInSeconds", 30, 5, 300)
        connect_timeout = _seconds(body, "connectTimeoutInSeconds", 0, 0, 300)
        payload = body.get("payload")
        if len(json.dumps(payload, separators=_COMPACT)) > 128 * 1024:
            raise HubError.argument_invalid("The method payload exceeds 128 KB")
        if device_id not in self._registry:
            raise HubError.device_not_found(device_id)
        reply = await self._link.invoke_method(
            device_id,
            name,
            payload,
            response_timeout=response_timeout,
            connect_timeout=connect_timeout,
        )
        return _ok({"status": reply.status, "payload": reply.payload})

    # --- jobs ----------------------------------------------------------------------------------

    async def _create_job(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        body = await _json_object(request)
        return _ok(await self._jobs.create_job(job_id, body))

    async def _get_job(self, request: web.Request) -> web.Response:
        return _ok(self._jobs.get_job(request.match_info["id"]))

    async def _cancel_job(self, request: web.Request) -> web.Response:
        return _ok(await self._jobs.cancel_job(request.match_info["id"]))

    async def _list_jobs(self, request: web.Request) -> web.Response:
        size = _page_size(request)
        cursor = self._take_cursor(request)
        if cursor is None:
            jobs = self._jobs.list_jobs(
                request.query.get("jobType") or None, request.query.get("jobStatus") or None
            )
            cursor = _Cursor("jobResponse", jobs, 0, time.monotonic())
        if isinstance(cursor, _Scan):
            raise HubError.argument_invalid(
                "The continuation token belongs to a devices.jobs query, not to the job list"
            )
        return self._page(cursor, size)

    # --- device queries ------------------------------------------------------------------------

    async def _query_devices(self, request: web.Request) -> web.Response:
        size = _page_size(request)
        cursor = self._take_cursor(request)
        if cursor is None:
            body = await _json_object(request)
            text = body.get("query")
            if not isinstance(text, str) or not text.strip():
                raise HubError.argument_invalid('The body must be {"query": "<query text>"}')
            cursor = await self._evaluate(text)
        if isinstance(cursor, _Scan):
            return await self._scan_page(cursor, size)
        return self._page(cursor, size)

    async def _evaluate(self, text: str) -> _Cursor | _Scan:
        try:
            query = self._query.parse(text)
            source = query.source.lower()
            now = time.monotonic()
            if source == "devices.modules":
                items: Sequence[Any] = (
                    self._query.run(query, []) if query.count_alias is not None else []
                )
                return _Cursor("raw" if query.count_alias else "twin", items, 0, now)
            if source == "devices.jobs":
                pinned = self._query.pinned(query, "jobId")
                job_id = pinned if isinstance(pinned, str) else None
                if query.count_alias is None:
                    where = query.where
                    the_job = None if job_id is None else frozenset((job_id,))
                    if the_job is not None and self._query.exact(where, "jobId") == the_job:
                        where = None  # `jobId = '<the job>'` alone: true on each of its rows
                    return _Scan(where, job_id, None, now)
                rows = self._query.run(query, self._jobs.device_job_rows(job_id))
                return _Cursor("raw", rows, 0, now)
            if query.count_alias is not None or query.fields:  # a count, or projected rows
                return _Cursor("raw", await self._run_over_twins(query), 0, now)
            return _Cursor("twin", await self._matching_twins(query.where), 0, now)
        except self._query.errors as exc:
            raise HubError.generic_bad_request(str(exc)) from None

    async def _run_over_twins(self, query: ParsedQuery) -> list[Any]:
        """A count or a projection over every twin, each built with only the members the query
        reads, evaluated :data:`_EVALUATION_SLICE` twins at a time (the loop runs between)."""
        docs = self._registry.iter_twin_docs(self._query.names(query))
        alias = query.count_alias
        count = 0
        rows: list[Any] = []
        while chunk := list(islice(docs, _EVALUATION_SLICE)):
            part = self._query.run(query, chunk)
            if alias is not None:
                count += part[0][alias]
            else:
                rows.extend(part)
            await asyncio.sleep(0)  # let devices and other requests through on big hubs
        return [{alias: count}] if alias is not None else rows

    async def _matching_twins(self, where: Predicate | None) -> list[str]:
        if where is None:
            return self._registry.device_ids()
        ids: list[str] = []
        registry = self._registry
        names = self._query.names(where)
        for n, device_id in enumerate(registry.device_ids(), 1):
            doc = registry.twin_doc(device_id, names)
            if doc is not None and where.matches(doc):
                ids.append(device_id)
            if n % _EVALUATION_SLICE == 0:
                await asyncio.sleep(0)  # let devices and other requests through on big hubs
        return ids

    # --- paging ----------------------------------------------------------------------------------

    def _take_cursor(self, request: web.Request) -> _Cursor | _Scan | None:
        token = request.headers.get("x-ms-continuation")
        if not token:
            return None
        self._expire_cursors()
        cursor = self._cursors.get(token)
        if cursor is not None:
            self._cursors.move_to_end(token)  # a token may be read again (a retried page)
        if cursor is None:
            raise HubError.argument_invalid(
                "The continuation token is unknown or expired; run the query again"
            )
        return cursor

    def _page(self, cursor: _Cursor, size: int) -> web.Response:
        end = cursor.offset + size
        chunk = cursor.items[cursor.offset : end]
        if cursor.item_type == "twin":
            items = [d for d in map(self._registry.twin_doc, chunk) if d is not None]
        else:
            items = list(chunk)
        headers = {"x-ms-item-type": cursor.item_type}
        if end < len(cursor.items):
            headers["x-ms-continuation"] = self._remember(
                _Cursor(cursor.item_type, cursor.items, end, cursor.created)
            )
        return _ok(items, headers)

    async def _scan_page(self, scan: _Scan, size: int) -> web.Response:
        found: list[dict[str, Any]] = []
        after, chunk = scan.after, size + 1
        while len(found) <= size:  # a page and one more: is a token due?
            rows = list(self._jobs.device_job_rows(scan.job_id, after, chunk))
            found.extend(r for r in rows if scan.where is None or scan.where.matches(r))
            if len(rows) < chunk:
                break
            after, chunk = (rows[-1]["jobId"], rows[-1]["deviceId"]), _MAX_PAGE
            await asyncio.sleep(0)  # a selective condition may scan far: let others through
        headers = {"x-ms-item-type": "deviceJob"}
        if len(found) > size:
            last = found[size - 1]
            headers["x-ms-continuation"] = self._remember(
                _Scan(scan.where, scan.job_id, (last["jobId"], last["deviceId"]), scan.created)
            )
        return _ok(found[:size], headers)

    def _remember(self, cursor: _Cursor | _Scan) -> str:
        """A new continuation token for ``cursor`` (the oldest dropped beyond the limit)."""
        token = secrets.token_urlsafe(18)
        self._cursors[token] = cursor
        while len(self._cursors) > _MAX_CURSORS:
            self._cursors.popitem(last=False)
        return token

    def _expire_cursors(self) -> None:
        deadline = time.monotonic() - _CURSOR_TTL
        for token in [t for t, c in self._cursors.items() if c.created < deadline]:
            del self._cursors[token]


def _ok(body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=200,
        text=json.dumps(body, separators=_COMPACT),
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = twin_limits.decode_json(raw)
    except twin_limits.JsonTooDeep as exc:
        raise HubError.argument_invalid(
            f"The request body nests {exc.depth} levels deep; the limit is {exc.limit}"
        ) from None
    except ValueError:
        raise HubError.argument_invalid("The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HubError.argument_invalid("The request body must be a JSON object")
    return body


def _page_size(request: web.Request) -> int:
    text = request.headers.get("x-ms-max-item-count")
    if not text:
        return _DEFAULT_PAGE
    try:
        size = int(text)
    except ValueError:
        raise HubError.argument_invalid(
            f"x-ms-max-item-count must be an integer: {text!r}"
        ) from None
    if size < 1:
        raise HubError.argument_invalid("x-ms-max-item-count must be at least 1")
    return min(size, _MAX_PAGE)


def _seconds(body: dict[str, Any], name: str, default: int, low: int, high: int) -> float:
    value = body.get(name)
    if value is None:
        return float(default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value != int(value)
        or not low <= value <= high
    ):
        raise HubError.argument_invalid(f"{name} must be an integer from {low} to {high}")
    return float(value)
