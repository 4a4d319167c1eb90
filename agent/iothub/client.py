"""The agent's one asynchronous IoT Hub client, over the synchronous azure-iot-hub SDK.

Rules:
- The SDK (``IoTHubJobManager``, ``IoTHubRegistryManager``) runs in worker threads, never on the
  event loop, in two lanes that never share a queue (:mod:`agent.iothub.lanes`): direct methods,
  which hold their thread while the hub waits on the device (up to connect + response timeout),
  in the device lane (``iothub.device_calls`` threads, no queue); everything else in the hub
  lane (``iothub.workers`` threads, ``iothub.hub_queue`` may wait). A call that finds its lane
  full is refused at once with :class:`~agent.iothub.lanes.LaneFull`, before anything is sent.
  So offline devices cannot stall GetJob or FindJobs. msrest keeps one requests session per thread,
  and with ``config.keep_alive`` set keeps its connection open between calls: msrest's default
  closes the session after every call, so each call would open a new TCP+TLS connection (on the
  emulator: 4.2 ms instead of 1.5 ms per get_job; more over a real network).
- Every call has a deadline: ``iothub.request_timeout`` per attempt (given to requests and held
  by asyncio around the worker), shortened to the caller's own deadline when one is given. A
  direct method holds ``connect + response + jobs.direct_call_margin`` instead, so a caller is
  answered even when the hub or the SDK misbehaves.
- The hub's CA is trusted per client (``protocol.config.connection.verify``), not through the
  environment (these machines preset ``REQUESTS_CA_BUNDLE``; reference/iothub.md §1.3).
- msrest's own retries are switched off; this class retries, with exponential backoff, only what
  is safe: reads (on timeouts, unreachable hub, 5xx and 429) and 429 throttling of writes. A
  write that timed out is never retried blindly (it may have been applied), and a 429004
  (too many active jobs) is never retried: the job was not created, and only the end of the
  other job helps.
- What one call reads is bounded while it reads: listing jobs and querying job results stop
  with :class:`~agent.iothub.lanes.CallTooLarge` as soon as the pages read hold more than
  ``iothub.max_rows_per_call`` rows or ``iothub.max_bytes_per_call`` bytes; pages are parsed in
  the worker, not on the event loop.
- Paged reads for callers that page (:meth:`IotHubClient.list_jobs_window`,
  :meth:`IotHubClient.query_job_results_page`) never raise ``CallTooLarge`` for a large result:
  they stop after the page that reaches the row or byte bound and hand back IoT Hub's
  continuation token, so what one call holds stays within the bound plus one hub page.
- Jobs are listed through the SDK's own authenticated msrest client on ``GET /jobs/v2/query``,
  following ``x-ms-continuation``: the SDK's ``query_scheduled_jobs`` cannot read the service's
  answer, a JSON array (reference §0.2).
- SDK and requests exceptions are translated into :mod:`agent.iothub.errors` here.
- Every attempt's outcome is recorded for the health endpoint: an answer from the hub (an error
  answer like 404 or 429 included: the hub was reached) sets :attr:`IotHubClient.last_success`;
  no answer, a timeout, a TLS failure, a 5xx or a 401 sets :attr:`IotHubClient.last_error` (one
  line, built from the translated exception, which never carries the key) and its time.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar
from urllib.parse import quote

import requests
import structlog
from azure.iot.hub import IoTHubJobManager, IoTHubRegistryManager
from azure.iot.hub.models import (
    CloudToDeviceMethod,
    JobRequest,
    Twin,
    TwinProperties,
)

from agent.iothub.errors import (
    HubRequestError,
    HubResponseError,
    HubTimeout,
    HubUnreachable,
    IotHubError,
    parse_error_response,
    translate,
)
from agent.iothub.lanes import CallBudget, CallTooLarge, Lane, LaneFull, LoadCounters
from agent.iothub.models import DeviceJobResult, Job, MethodResult
from agent.settings import IotHubSettings, JobSettings

__all__ = ["METHOD_JOB", "TWIN_JOB", "IotHubClient", "JobWindow", "ResultPage"]

TWIN_JOB = "scheduleUpdateTwin"
METHOD_JOB = "scheduleDeviceMethod"

_T = TypeVar("_T")
_log = structlog.get_logger("agent.iothub")

_ID_PAGE = 1000  # device ids per query page (a rollout resolves its target once)

# asyncio's guard around a worker fires this much after the requests timeout would have.
_GUARD_SLACK = 0.5
_RETRYABLE_5XX = frozenset({500, 502, 503, 504})


def _result_rows(items: list[Any]) -> list[DeviceJobResult]:
    """The ``devices.jobs`` rows of a query page; an unreadable item is logged and skipped."""
    page: list[DeviceJobResult] = []
    for item in items:
        try:
            page.append(DeviceJobResult.from_json(item))
        except (ValueError, TypeError, AttributeError):
            _log.warning("job result row skipped", item=str(item)[:200])
    return page


def _device_ids(items: list[Any]) -> list[str]:
    """The device ids of a ``SELECT deviceId FROM devices`` page."""
    return [
        item["deviceId"]
        for item in items
        if isinstance(item, dict) and isinstance(item.get("deviceId"), str)
    ]


def _no_retries(policy: Any) -> None:
    """Switch msrest's urllib3 retries off (this class retries what is safe, itself): no
    retry on any status or error, and a read timeout surfaces as a read timeout."""
    policy.total = 0
    policy.connect = 0
    policy.read = False
    policy.status_forcelist = frozenset()


def _environment_once(config: Any, host: str) -> None:
    """Read the environment settings requests would read on every request, once, for the one
    host this client talks to, and switch requests' per-request reading off (``trust_env``):
    it scans the whole environment twice a request, ≈0.13 ms of a ≈1.4 ms hub call.

    Kept: the proxy of ``HTTPS_PROXY``/``ALL_PROXY`` unless ``NO_PROXY`` exempts the hub
    (decided as requests decides it), and the CA bundle of ``REQUESTS_CA_BUNDLE`` /
    ``CURL_CA_BUNDLE`` when no ``iothub.ca_file`` is configured. Dropped: ``~/.netrc``
    credentials, which would replace the SAS token. The environment is read when the client is
    made (at start-up), not on each request.
    """
    url = f"https://{host}/"
    for scheme, proxy in requests.utils.get_environ_proxies(url).items():
        if scheme != "no":
            config.proxies.add(scheme, proxy)
    if config.connection.verify is True:
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            config.connection.verify = bundle
    config.proxies.use_env_settings = False


class _Kind(Enum):
    READ = "read"
    WRITE = "write"


def _hub_failure(exc: IotHubError) -> bool:
    """Whether ``exc`` says the hub is unwell or unusable (rather than refusing one request)."""
    if isinstance(exc, HubRequestError):
        return exc.http_status >= 500 or exc.http_status == 401
    return isinstance(exc, HubTimeout | HubUnreachable)


def _retryable(exc: IotHubError, kind: _Kind) -> bool:
    if isinstance(exc, HubRequestError):
        if exc.http_status == 429:
            return exc.code != 429004
        return kind is _Kind.READ and exc.http_status in _RETRYABLE_5XX
    return kind is _Kind.READ and isinstance(exc, HubTimeout | HubUnreachable)


@dataclass(frozen=True)
class _Reply:
    """A hub answer read by :meth:`IotHubClient._send`: its text and headers."""

    text: str
    headers: Mapping[str, str]


@dataclass(frozen=True)
class JobWindow:
    """Jobs read by :meth:`IotHubClient.list_jobs_window`: whole hub pages from ``start``.

    Attributes:
        jobs: the jobs of the window, in the hub's order.
        start: the hub continuation token the window was read from (None: the list's start).
        next: the hub token of the page after the window, None when the list ended in it.
    """

    jobs: list[Job]
    start: str | None
    next: str | None


@dataclass(frozen=True)
class ResultPage:
    """Rows read by :meth:`IotHubClient.query_job_results_page`.

    Attributes:
        rows: the rows, in the hub's order.
        next: the hub continuation token of the rows after these, None when there are none.
    """

    rows: list[DeviceJobResult]
    next: str | None


class IotHubClient:
    """Async IoT Hub service client: jobs, job results, direct methods, twins.

    Args:
        settings: the ``[iothub]`` settings (connection string, CA, workers, timeouts, retries).
        jobs: the ``[jobs]`` settings (direct-call margin, query page size).
        clock: Unix-time source of :attr:`last_success` and :attr:`last_error_time`.

    Raises:
        IotHubError: when the connection string is missing or malformed.
    """

    def __init__(
        self,
        settings: IotHubSettings,
        jobs: JobSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        connection_string = settings.connection_string.get_secret_value()
        if not connection_string:
            raise IotHubError("iothub.connection_string is not set")
        self._settings = settings
        self._jobs = jobs
        try:
            self._job_manager = IoTHubJobManager.from_connection_string(connection_string)
            self._registry = IoTHubRegistryManager.from_connection_string(connection_string)
        except Exception as exc:  # the SDK raises ValueError/KeyError on a bad string
            raise IotHubError(
                "iothub.connection_string is not a valid IoT Hub connection string"
            ) from exc
        self.host: str = str(self._job_manager.auth["HostName"])
        for manager in (self._job_manager, self._registry):
            config = manager.protocol.config
            config.connection.timeout = settings.request_timeout
            config.keep_alive = True
            if settings.ca_file:
                config.connection.verify = settings.ca_file
            _no_retries(config.retry_policy.policy)
            _environment_once(config, self.host)
        self._hub_lane = Lane(
            "hub",
            settings.workers,
            settings.hub_queue,
            lambda busy: (
                f"the agent's IoT Hub lane is full: {busy} calls are running or waiting "
                f"(iothub.workers = {settings.workers}, iothub.hub_queue = {settings.hub_queue}); "
                "nothing was sent, retry shortly"
            ),
        )
        self._device_lane = Lane(
            "device",
            settings.device_calls,
            0,
            lambda busy: (
                f"{busy} direct-method calls are already waiting on devices "
                f"(iothub.device_calls = {settings.device_calls}); nothing was sent, retry "
                "when one has ended"
            ),
        )
        self._too_large = 0
        self._closed = False
        self._clock = clock
        self._last_success: float | None = None
        self._last_error: str | None = None
        self._last_error_time: float | None = None

    @property
    def last_success(self) -> float | None:
        """Unix time of the last call the hub answered (an error answer like 404 included)."""
        return self._last_success

    @property
    def last_error(self) -> str | None:
        """The last failure that says the hub is unwell (unreachable, timeout, TLS, 5xx, 401),
        in one line; None when there was none."""
        return self._last_error

    @property
    def last_error_time(self) -> float | None:
        """Unix time of :attr:`last_error`, or None."""
        return self._last_error_time

    @property
    def load(self) -> LoadCounters:
        """The lanes' load now and the calls refused to protect the others (for /metrics)."""
        return LoadCounters(
            hub_busy=self._hub_lane.busy,
            device_busy=self._device_lane.busy,
            refused_hub=self._hub_lane.refused,
            refused_device=self._device_lane.refused,
            too_large=self._too_large,
        )

    def _record(self, error: IotHubError | None) -> None:
        if error is None or not _hub_failure(error):
            self._last_success = self._clock()
        else:
            self._last_error = error.one_line()
            self._last_error_time = self._clock()

    async def close(self) -> None:
        """Stop both lanes (calls in flight finish in their threads)."""
        if not self._closed:
            self._closed = True
            self._hub_lane.shutdown()
            self._device_lane.shutdown()

    # -- plumbing ------------------------------------------------------------------------

    def _budget(self, timeout: float, deadline: float | None, what: str) -> float:
        if deadline is None:
            return timeout
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise HubTimeout(f"no time left for {what}", timeout)
        return min(timeout, left)

    async def _once(self, what: str, call: Callable[[float], _T], timeout: float, lane: Lane) -> _T:
        if self._closed:
            raise IotHubError("the IoT Hub client is closed")

        def work() -> _T:
            try:
                return call(timeout)
            except Exception as exc:
                raise translate(exc, timeout=timeout, what=what) from exc

        try:
            future = asyncio.wrap_future(lane.submit(work))
        except LaneFull as exc:
            _log.warning("iothub call refused: lane full", lane=exc.lane, busy=exc.busy, what=what)
            raise
        try:
            async with asyncio.timeout(timeout + _GUARD_SLACK):
                result = await future
        except TimeoutError:
            error = HubTimeout(f"IoT Hub did not answer {what} within {timeout:g} s", timeout)
            self._record(error)
            raise error from None
        except IotHubError as exc:
            self._record(exc)
            raise
        self._record(None)
        return result

    async def _call(
        self,
        what: str,
        call: Callable[[float], _T],
        *,
        kind: _Kind,
        deadline: float | None,
        timeout: float | None = None,
        lane: Lane | None = None,
    ) -> _T:
        """Run ``call(timeout)`` in a worker of ``lane`` (default: the hub lane), with the retry
        policy of ``kind``."""
        base = self._settings.request_timeout if timeout is None else timeout
        delay = self._settings.retry_initial_delay
        attempt = 0
        while True:
            budget = self._budget(base, deadline, what)
            try:
                return await self._once(what, call, budget, lane or self._hub_lane)
            except IotHubError as exc:
                if attempt >= self._settings.read_retries or not _retryable(exc, kind):
                    raise
                pause = delay * (0.5 + random.random())
                if deadline is not None and asyncio.get_running_loop().time() + pause >= deadline:
                    raise
                _log.info("iothub retry", what=what, attempt=attempt + 1, error=str(exc))
                await asyncio.sleep(pause)
                attempt += 1
                delay *= 2

    def _budget_for(self, what: str) -> CallBudget:
        return CallBudget(what, self._settings.max_rows_per_call, self._settings.max_bytes_per_call)

    def _spend(self, budget: CallBudget, rows: int, size: int) -> None:
        """Count one page against the call's budget (on the event loop, before keeping it)."""
        try:
            budget.add(rows, size)
        except CallTooLarge as exc:
            self._too_large += 1
            _log.warning("iothub call stopped: too large", error=str(exc))
            raise

    @staticmethod
    def _job_from(text: str, what: str) -> Job:
        """The job in a hub answer's text; an empty or unreadable one is a HubResponseError."""
        try:
            return Job.from_json(json.loads(text) if text else {})
        except ValueError as exc:
            raise HubResponseError(f"IoT Hub answered {what} with an unreadable job") from exc

    @staticmethod
    def _path(collection: str, ident: str) -> str:
        """``/{collection}/{id}`` (``/jobs/v2/{id}``, ``/twins/{id}``), the id quoted as the SDK's
        serializer quotes a path part (``quote(id, safe="")``, without its per-call validation
        machinery)."""
        return f"/{collection}/{quote(ident, safe='')}"

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        headers: Mapping[str, str],
        timeout: float,
        *,
        body: Mapping[str, Any] | None = None,
    ) -> _Reply:
        """Send one request through the SDK's authenticated msrest client (reference §0.2),
        in the calling worker thread; a 200 answer's text and headers, else the hub's error.

        The SDK's generated operations do the same, and then build msrest models of the answer
        (≈170 µs for a job) that this client does not use: reads of jobs and job lists come
        here and are parsed once, as JSON.
        """
        client = self._job_manager.protocol._client
        query = {"api-version": self._job_manager.protocol.jobs.api_version, **params}
        all_headers = {"Accept": "application/json", **headers}
        url = client.format_url(path)
        if method == "GET":
            request = client.get(url, query, all_headers)
        else:
            if body is not None:
                all_headers["Content-Type"] = "application/json; charset=utf-8"
            request = client.post(url, query, all_headers, body)
        response = client.send(request, stream=False, timeout=timeout)
        text = response.text() if callable(response.text) else response.text
        if response.status_code != 200:
            raise parse_error_response(response.status_code, response.headers, text)
        return _Reply(text, response.headers)

    # -- jobs ----------------------------------------------------------------------------

    async def create_twin_job(
        self,
        job_id: str,
        query_condition: str,
        patch: Mapping[str, Any],
        start_time: datetime,
        max_execution_time: int,
        *,
        deadline: float | None = None,
    ) -> Job:
        """Create a twin-update job (sent with etag ``*``; reference §3.3).

        Args:
            job_id: the new job's id.
            query_condition: the WHERE part of a twin query selecting the devices.
            patch: ``{"tags": {...}, "properties": {"desired": {...}}}`` (either part).
            start_time: when the job starts (timezone-aware).
            max_execution_time: the job window, seconds.
            deadline: the caller's deadline (event-loop time), if any.

        Returns:
            The job as the hub answered the create (possibly minimal).

        Raises:
            IotHubError: the hub refused (``HubRequestError``), was unreachable or timed out.
        """
        properties = patch.get("properties")
        desired = properties.get("desired") if isinstance(properties, Mapping) else None
        twin = Twin(
            tags=patch.get("tags"),
            properties=TwinProperties(desired=desired) if desired is not None else None,
            etag="*",
        )
        request = JobRequest(
            job_id=job_id,
            type=TWIN_JOB,
            update_twin=twin,
            query_condition=query_condition,
            start_time=start_time,
            max_execution_time_in_seconds=max_execution_time,
        )
        return await self._create(job_id, request, deadline)

    async def create_method_job(
        self,
        job_id: str,
        query_condition: str,
        method_name: str,
        payload: Any,
        response_timeout: int,
        connect_timeout: int,
        start_time: datetime,
        max_execution_time: int,
        *,
        deadline: float | None = None,
    ) -> Job:
        """Create a device-method job.

        Args:
            job_id: the new job's id.
            query_condition: the WHERE part of a twin query selecting the devices.
            method_name: the direct method to call on each device.
            payload: the method's JSON payload (None for none).
            response_timeout: seconds the hub waits for each device's answer (5..300).
            connect_timeout: seconds the hub waits for an offline device to connect (0..300).
            start_time: when the job starts (timezone-aware).
            max_execution_time: the job window, seconds.
            deadline: the caller's deadline (event-loop time), if any.

        Returns:
            The job as the hub answered the create (possibly minimal).

        Raises:
            IotHubError: the hub refused (``HubRequestError``), was unreachable or timed out.
        """
        method = CloudToDeviceMethod(
            method_name=method_name,
            payload=payload,
            response_timeout_in_seconds=response_timeout,
            connect_timeout_in_seconds=connect_timeout,
        )
        request = JobRequest(
            job_id=job_id,
            type=METHOD_JOB,
            cloud_to_device_method=method,
            query_condition=query_condition,
            start_time=start_time,
            max_execution_time_in_seconds=max_execution_time,
        )
        return await self._create(job_id, request, deadline)

    async def _create(self, job_id: str, request: JobRequest, deadline: float | None) -> Job:
        what = f"create job '{job_id}'"
        operations = self._job_manager.protocol.jobs

        def call(timeout: float) -> Job:
            raw = operations.create_scheduled_job(job_id, request, raw=True, timeout=timeout)
            return self._job_from(raw.response.text, what)

        job = await self._call(what, call, kind=_Kind.WRITE, deadline=deadline)
        _log.info("job created", job_id=job_id, type=request.type, hub_status=job.status)
        return job

    async def get_job(self, job_id: str, *, deadline: float | None = None) -> Job:
        """Get a job by id.

        Raises:
            IotHubError: e.g. ``HubRequestError`` 404002 JobNotFound.
        """
        what = f"get job '{job_id}'"
        path = self._path("jobs/v2", job_id)

        def call(timeout: float) -> Job:
            return self._job_from(self._send("GET", path, {}, {}, timeout).text, what)

        return await self._call(what, call, kind=_Kind.READ, deadline=deadline)

    async def cancel_job(self, job_id: str, *, deadline: float | None = None) -> Job:
        """Cancel a job that has not started running.

        Raises:
            IotHubError: e.g. ``HubRequestError`` 405102 OperationNotAllowedInCurrentState.
        """
        what = f"cancel job '{job_id}'"
        path = self._path("jobs/v2", job_id) + "/cancel"

        def call(timeout: float) -> Job:
            return self._job_from(self._send("POST", path, {}, {}, timeout).text, what)

        job = await self._call(what, call, kind=_Kind.WRITE, deadline=deadline)
        _log.info("job cancelled", job_id=job_id, hub_status=job.status)
        return job

    def _jobs_page(
        self, params: Mapping[str, str], token: str | None
    ) -> Callable[[float], tuple[list[Job], int, int, str | None]]:
        """One ``GET /jobs/v2/query`` page from ``token``: (jobs, items, bytes, next token)."""
        page_size = self._jobs.query_page_size

        def call(timeout: float) -> tuple[list[Job], int, int, str | None]:
            headers = {"x-ms-max-item-count": str(page_size)}
            if token:
                headers["x-ms-continuation"] = token
            reply = self._send("GET", "/jobs/v2/query", params, headers, timeout)
            body = json.loads(reply.text) if reply.text.strip() else []
            if isinstance(body, dict):  # tolerate the object form the SDK models expect
                body = body.get("items") or []
            if not isinstance(body, list):
                raise HubResponseError("IoT Hub answered a job query with a non-list body")
            # Parsed here, in the worker, not on the event loop.
            page: list[Job] = []
            for item in body:
                try:
                    page.append(Job.from_json(item))
                except ValueError:
                    _log.warning("job query item skipped", item=str(item)[:200])
            continuation = reply.headers.get("x-ms-continuation") or None
            return page, len(body), len(reply.text), continuation

        return call

    @staticmethod
    def _job_filters(job_type: str | None, job_status: str | None) -> dict[str, str]:
        params: dict[str, str] = {}
        if job_type:
            params["jobType"] = job_type
        if job_status:
            params["jobStatus"] = job_status
        return params

    async def list_jobs(
        self,
        job_type: str | None = None,
        job_status: str | None = None,
        *,
        max_jobs: int | None = None,
        deadline: float | None = None,
    ) -> list[Job]:
        """List jobs (``GET /jobs/v2/query``), following the hub's continuation pages.

        Args:
            job_type: IoT Hub's job type to filter on (``scheduleUpdateTwin`` ...), or None.
            job_status: IoT Hub's job status to filter on (``queued`` ...), or None.
            max_jobs: stop after this many jobs, or None for all.
            deadline: the caller's deadline (event-loop time), if any.

        Returns:
            The jobs, in the hub's order.

        Raises:
            CallTooLarge: the pages read hold more than ``iothub.max_rows_per_call`` jobs (when
                ``max_jobs`` does not stop earlier) or ``iothub.max_bytes_per_call`` bytes.
            IotHubError: the hub refused, was unreachable, timed out or sent an unreadable page.
        """
        params = self._job_filters(job_type, job_status)
        what = "list jobs"
        budget = self._budget_for(what)
        jobs: list[Job] = []
        token: str | None = None
        while True:
            items, count, size, token = await self._call(
                what, self._jobs_page(params, token), kind=_Kind.READ, deadline=deadline
            )
            if max_jobs is not None and len(jobs) + len(items) >= max_jobs:
                return jobs + items[: max_jobs - len(jobs)]
            self._spend(budget, count, size)
            jobs.extend(items)
            if not token:
                return jobs

    async def list_jobs_window(
        self,
        job_type: str | None = None,
        job_status: str | None = None,
        *,
        start: str | None = None,
        max_bytes: int | None = None,
        deadline: float | None = None,
    ) -> JobWindow:
        """One window of the job list: whole hub pages from ``start`` until the list ends or
        the pages read reach ``iothub.max_rows_per_call`` jobs or the byte bound.

        The window is the same each time it is read from the same ``start`` (while the hub's
        list does not change), so a caller can page inside it and then go on with
        :attr:`JobWindow.next`. Never raises ``CallTooLarge``: it stops instead.

        Args:
            job_type: IoT Hub's job type to filter on, or None.
            job_status: IoT Hub's job status to filter on, or None.
            start: a hub continuation token to start from (None: the list's start).
            max_bytes: a byte bound below ``iothub.max_bytes_per_call`` (e.g. to fit an answer
                in one AlwaysOn message), or None.
            deadline: the caller's deadline (event-loop time), if any.

        Raises:
            IotHubError: the hub refused (e.g. an expired token), was unreachable, timed out or
                sent an unreadable page.
        """
        params = self._job_filters(job_type, job_status)
        max_rows, byte_bound = self._window_bounds(max_bytes)
        jobs: list[Job] = []
        token, read = start, 0
        while True:
            items, _count, size, token = await self._call(
                "list jobs", self._jobs_page(params, token), kind=_Kind.READ, deadline=deadline
            )
            jobs.extend(items)
            read += size
            if not token or len(jobs) >= max_rows or read >= byte_bound:
                return JobWindow(jobs, start, token)

    def _window_bounds(self, max_bytes: int | None) -> tuple[int, int]:
        byte_bound = self._settings.max_bytes_per_call
        if max_bytes is not None:
            byte_bound = min(byte_bound, max_bytes)
        return self._settings.max_rows_per_call, byte_bound

    def _query_page(
        self, query: str, size: int, token: str | None, read: Callable[[list[Any]], list[_T]]
    ) -> Callable[[float], tuple[list[_T], int, int, str | None]]:
        """One ``POST /devices/query`` page of ``size`` rows from ``token``: (what ``read``
        makes of its items, items, bytes, next token)."""

        def call(timeout: float) -> tuple[list[_T], int, int, str | None]:
            headers = {"x-ms-max-item-count": str(size)}
            if token:
                headers["x-ms-continuation"] = token
            body = {"query": query}
            reply = self._send("POST", "/devices/query", {}, headers, timeout, body=body)
            items = json.loads(reply.text) if reply.text.strip() else []
            if not isinstance(items, list):
                raise HubResponseError("IoT Hub answered a query with a non-list body")
            # Items are read here, in the worker, not on the event loop.
            continuation = reply.headers.get("x-ms-continuation") or None
            return read(items), len(items), len(reply.text), continuation

        return call

    def _results_page(
        self, query: str, size: int, token: str | None
    ) -> Callable[[float], tuple[list[DeviceJobResult], int, int, str | None]]:
        """One ``devices.jobs`` page of ``size`` rows from ``token``."""
        return self._query_page(query, size, token, _result_rows)

    async def _query_all(
        self,
        what: str,
        query: str,
        budget: CallBudget,
        max_rows: int,
        page_size: int,
        read: Callable[[list[Any]], list[_T]],
        deadline: float | None,
    ) -> list[_T]:
        """Every page of a query up to ``max_rows`` rows, each page counted against ``budget``."""
        rows: list[_T] = []
        token: str | None = None
        while len(rows) < max_rows:
            size = min(page_size, max_rows - len(rows))
            page, count, got, token = await self._call(
                what, self._query_page(query, size, token, read), kind=_Kind.READ, deadline=deadline
            )
            self._spend(budget, count, got)
            rows.extend(page[: max_rows - len(rows)])
            if not token or not count:
                break
        return rows

    async def query_job_results(
        self,
        query: str,
        max_rows: int,
        *,
        deadline: float | None = None,
        page_size: int | None = None,
    ) -> list[DeviceJobResult]:
        """Run a ``devices.jobs`` query page by page (``query_iot_hub``), up to ``max_rows``.

        Args:
            query: a ``SELECT * FROM devices.jobs ...`` query (validated by the caller).
            max_rows: the most rows to return.
            deadline: the caller's deadline (event-loop time), if any.
            page_size: rows per hub page (1..1000, as IoT Hub takes); None for
                ``jobs.query_page_size``.

        Returns:
            One result per row, in the hub's order.

        Raises:
            CallTooLarge: the pages read hold more than ``iothub.max_rows_per_call`` rows or
                ``iothub.max_bytes_per_call`` bytes.
            IotHubError: the hub refused the query (e.g. a syntax error), was unreachable...
        """
        what = "query job results"
        return await self._query_all(
            what,
            query,
            self._budget_for(what),
            max_rows,
            min(max(page_size or self._jobs.query_page_size, 1), 1000),
            _result_rows,
            deadline,
        )

    async def query_job_results_page(
        self,
        query: str,
        max_rows: int,
        *,
        continuation: str | None = None,
        max_bytes: int | None = None,
        deadline: float | None = None,
    ) -> ResultPage:
        """Read one page of a ``devices.jobs`` query for a caller that pages: up to ``max_rows``
        rows from ``continuation``, fewer when the pages read reach ``iothub.max_rows_per_call``
        rows or the byte bound (never ``CallTooLarge``).

        Each hub page asks for at most the rows still wanted, so :attr:`ResultPage.next` (IoT
        Hub's own token) points at the first row not returned.

        Args:
            query: a ``SELECT * FROM devices.jobs ...`` query (validated by the caller).
            max_rows: the most rows to return.
            continuation: the hub token of a previous page's :attr:`ResultPage.next`, or None.
            max_bytes: a byte bound below ``iothub.max_bytes_per_call``, or None.
            deadline: the caller's deadline (event-loop time), if any.

        Raises:
            IotHubError: the hub refused the query or the token, was unreachable, timed out...
        """
        bound_rows, byte_bound = self._window_bounds(max_bytes)
        want = min(max_rows, bound_rows)
        rows: list[DeviceJobResult] = []
        token, read = continuation, 0
        while True:
            size = min(self._jobs.query_page_size, want - len(rows))
            page, count, got, token = await self._call(
                "query job results",
                self._results_page(query, size, token),
                kind=_Kind.READ,
                deadline=deadline,
            )
            rows.extend(page)
            read += got
            if not token or not count or len(rows) >= want or read >= byte_bound:
                return ResultPage(rows, token)

    async def query_device_ids(
        self, condition: str, max_devices: int, *, deadline: float | None = None
    ) -> list[str]:
        """The ids of the devices a twin query's WHERE part selects (``SELECT deviceId FROM
        devices WHERE ...``).

        Pages through the answer like :meth:`query_job_results`; a rollout resolves its target
        with it once. Only ``iothub.max_bytes_per_call`` bounds it (ids are small), not the
        row budget: ``max_devices`` is the caller's bound.

        Args:
            condition: the WHERE part (checked by the caller).
            max_devices: stop with :class:`CallTooLarge` beyond this many devices.
            deadline: the caller's deadline (event-loop time), if any.

        Raises:
            CallTooLarge: more than ``max_devices`` devices, or too many bytes.
            IotHubError: the hub refused the query, was unreachable, timed out...
        """
        what = "query device ids"
        budget = CallBudget(what, max_devices, self._settings.max_bytes_per_call * 16)
        # One row past the bound is read, so that the budget sees it and refuses.
        return await self._query_all(
            what,
            f"SELECT deviceId FROM devices WHERE {condition}",  # ids only: 1/20 of whole twins
            budget,
            max_devices + 1,
            _ID_PAGE,
            _device_ids,
            deadline,
        )

    # -- devices -------------------------------------------------------------------------

    async def invoke_method(
        self,
        device_id: str,
        method: str,
        payload: Any,
        response_timeout: int,
        connect_timeout: int,
        *,
        deadline: float | None = None,
    ) -> MethodResult:
        """Call a direct method on one device now (never retried but for 429 throttling).

        Holds its own deadline: ``connect_timeout + response_timeout + jobs.direct_call_margin``,
        and a thread of the device lane meanwhile.

        Returns:
            The device's status code and payload.

        Raises:
            LaneFull: ``iothub.device_calls`` direct calls are in flight already; nothing sent.
            IotHubError: e.g. 404103 DeviceNotOnline, 504101 GatewayTimeout, or a
                :class:`HubTimeout` when the hub does not answer within the deadline.
        """
        what = f"call method '{method}' on device '{device_id}'"
        own = connect_timeout + response_timeout + self._jobs.direct_call_margin
        request = CloudToDeviceMethod(
            method_name=method,
            payload=payload,
            response_timeout_in_seconds=response_timeout,
            connect_timeout_in_seconds=connect_timeout,
        )
        devices = self._registry.protocol.devices

        def call(timeout: float) -> MethodResult:
            raw = devices.invoke_method(device_id, request, raw=True, timeout=timeout)
            text = raw.response.text
            doc = json.loads(text) if text else {}
            status = doc.get("status") if isinstance(doc, dict) else None
            if not isinstance(status, int) or isinstance(status, bool):
                raise HubResponseError(f"IoT Hub answered {what} without a status")
            return MethodResult(status=status, payload=doc.get("payload"))

        return await self._call(
            what, call, kind=_Kind.WRITE, deadline=deadline, timeout=own, lane=self._device_lane
        )

    async def get_twin(self, device_id: str, *, deadline: float | None = None) -> dict[str, Any]:
        """Get a device twin as IoT Hub's JSON (``deviceId``, ``tags``, ``properties``...).

        Raises:
            IotHubError: e.g. 404001 DeviceNotFound.
        """
        what = f"get twin of device '{device_id}'"
        path = self._path("twins", device_id)

        def call(timeout: float) -> dict[str, Any]:
            # Through the SDK's authenticated client, as get_job: the SDK's get_twin sends the
            # same request, then builds an msrest Twin model this method does not use.
            text = self._send("GET", path, {}, {}, timeout).text
            doc = json.loads(text) if text else {}
            if not isinstance(doc, dict):
                raise HubResponseError(f"IoT Hub answered {what} with a non-object")
            return doc

        return await self._call(what, call, kind=_Kind.READ, deadline=deadline)
