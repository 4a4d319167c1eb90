"""The agent's operations endpoint: ``/healthz`` (JSON) and ``/metrics`` (Prometheus text).

:class:`HealthServer` is a small aiohttp server on ``health.host:health.port``. It reads the
channel's state, last error and counters (:class:`~agent.channel.ChannelStats`) and the IoT
Hub's health as seen by a :class:`HubProbe`, which makes one cheap read on the hub (list at most
one job) every ``health.probe_interval`` seconds and keeps the time of the last success and the
last error. In the agent, :class:`~agent.app.AgentApp` makes the server, calls
:meth:`HealthServer.listen` and runs :meth:`HealthServer.run` (probe and sampler) in its TaskGroup.

Rules:
- The hub's reachability is the outcome of the newest of: the last probe, and the agent's own
  calls to the hub (:class:`HubActivity`, read from the IoT Hub client) that ended after it. The
  probe keeps running, so a hub nobody calls is still checked; a real call's success or failure
  between two probes counts as soon as it happens.
- ``/healthz`` says the agent's ``role``: ``active`` (READY, it holds its Things), ``standby``
  (another agent holds them: ThingWorx's first-in-wins refused the BIND; it retries) or ``none``.
  It answers 200 when the channel is READY, or a standby, and the hub was reached last time it
  was tried (a standby is waiting as designed, so a liveness probe must not restart it), 503
  otherwise (also before the first probe or call has answered), with the state of both
  ends as JSON. With several agents sharing a store it also says the agent's rollout role
  (``rollouts.role``: ``active`` while it holds the hub's rollout leadership, else ``standby``),
  which never makes it unhealthy. Secrets never appear in it: the hub is named by its host,
  ThingWorx by its URL, errors are the clients' one-line messages (which never carry keys).
- ``/metrics`` is Prometheus text exposition format 0.0.4, written here (no client library).
  The call-latency histogram is cumulative over the process: each scrape (and a one-second
  sampler) folds in the latencies recorded since the last look. The channel keeps only its
  last :data:`~agent.channel.stats.LATENCY_SAMPLES` latencies, so when more calls than that
  end between two looks, the excess is counted in ``jobs_agent_call_latency_unsampled_total``
  instead of the histogram.
- Load shedding is counted in ``/metrics``: calls refused at once for capacity
  (``jobs_agent_calls_refused_total``, by reason: the IoT Hub client's hub or device lane full,
  or the channel's cap on calls in flight), calls stopped by the per-call bound on what one call
  may read (``jobs_agent_calls_too_large_total``), and each lane's load now
  (``jobs_agent_lane_busy``).
- The rendering functions (:func:`render_metrics`, :func:`health_report`) are pure, so tests
  check them without a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from aiohttp import web

from agent.channel import ChannelState, ChannelStats, StatsSnapshot
from agent.errors import AgentError
from agent.iothub import IotHubClient, IotHubError, LoadCounters
from agent.settings import HealthSettings

__all__ = [
    "LATENCY_BUCKETS",
    "ChannelView",
    "HealthServer",
    "HealthUnavailable",
    "HubActivity",
    "HubHealth",
    "HubProbe",
    "LatencyHistogram",
    "LeadershipView",
    "health_report",
    "merge_activity",
    "render_metrics",
]

_log = structlog.get_logger("agent.health")

_DEFAULT_PROBE_INTERVAL = HealthSettings().probe_interval  # one source: the setting's default

LATENCY_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Upper bounds (seconds) of the call-latency histogram buckets; ``+Inf`` is implied."""

_SAMPLE_INTERVAL = 1.0  # how often the histogram folds in new latencies between scrapes
CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"


class HealthUnavailable(AgentError):
    """The health endpoint cannot listen: the message names the address and what to set."""


class ChannelView(Protocol):
    """What the health server reads from the AlwaysOn channel (an AlwaysOnClient)."""

    @property
    def state(self) -> ChannelState: ...

    @property
    def bound_things(self) -> list[str]: ...

    @property
    def last_error(self) -> str | None: ...

    @property
    def role(self) -> str: ...

    @property
    def holder(self) -> str | None: ...

    stats: ChannelStats


# --- the hub ---------------------------------------------------------------------------------


class LeadershipView(Protocol):
    """What ``/healthz`` and ``/metrics`` read of the rollout leadership."""

    @property
    def role(self) -> str:
        """``active`` (this agent drives the hub's rollouts) or ``standby``."""
        ...

    @property
    def changes(self) -> int:
        """Times this agent became or stopped being the leader."""
        ...

    @property
    def epoch(self) -> int | None:
        """The fencing epoch this agent leads in (None: standby, or nothing shared)."""
        ...


class HubActivity(Protocol):
    """The outcome of the agent's own calls to the hub (an :class:`~agent.iothub.IotHubClient`)."""

    @property
    def last_success(self) -> float | None: ...

    @property
    def last_error(self) -> str | None: ...

    @property
    def last_error_time(self) -> float | None: ...


@dataclass(frozen=True)
class HubHealth:
    """The IoT Hub's health as last probed (and, through :class:`HubProbe`, as last called).

    Attributes:
        host: the hub's host name.
        reachable: the hub answered last time it was tried; None before anything answered.
        last_success: Unix time of the last success (probe or call), or None.
        last_error: the last error (probe or call; one line), or None.
        last_error_time: Unix time of that error, or None.
        probes: probes made.
        probe_errors: probes that failed.
    """

    host: str
    reachable: bool | None = None
    last_success: float | None = None
    last_error: str | None = None
    last_error_time: float | None = None
    probes: int = 0
    probe_errors: int = 0


class HubProbe:
    """Probes the hub with one cheap read and remembers the outcome.

    Args:
        host: the hub's host name (for reports).
        read: the read to make; it raises :class:`~agent.iothub.IotHubError` on failure.
        interval: seconds between probes in :meth:`run` (``health.probe_interval``).
        clock: Unix-time source (tests fix it); the same clock as ``activity``'s.
        activity: the outcome of the agent's own calls, merged into :attr:`health` when newer
            than the last probe; None for the probes alone.
    """

    def __init__(
        self,
        host: str,
        read: Callable[[], Awaitable[object]],
        *,
        interval: float = _DEFAULT_PROBE_INTERVAL,
        clock: Callable[[], float] = time.time,
        activity: HubActivity | None = None,
    ) -> None:
        if not interval > 0:
            raise ValueError("the probe interval must be > 0 seconds")
        self._read = read
        self._interval = interval
        self._clock = clock
        self._activity = activity
        self._health = HubHealth(host)

    @classmethod
    def for_client(
        cls, client: IotHubClient, *, interval: float = _DEFAULT_PROBE_INTERVAL
    ) -> HubProbe:
        """A probe that lists at most one job on ``client``'s hub (``GET /jobs/v2/query``) and
        counts the outcome of ``client``'s other calls too."""

        async def read() -> object:
            return await client.list_jobs(max_jobs=1)

        return cls(client.host, read, interval=interval, activity=client)

    @property
    def interval(self) -> float:
        """Seconds between two probes."""
        return self._interval

    @property
    def health(self) -> HubHealth:
        """The outcome of the probes, with the agent's own calls that ended after the last
        probe taking precedence (see :func:`merge_activity`)."""
        if self._activity is None:
            return self._health
        return merge_activity(self._health, self._activity)

    async def probe_once(self) -> HubHealth:
        """Make one read and record its outcome (never raises for the hub's failures)."""
        h = self._health
        try:
            await self._read()
        except IotHubError as exc:
            error = exc.one_line()
            if h.reachable is not False:
                _log.warning("iot hub probe failed", hub=h.host, error=error)
            self._health = HubHealth(
                h.host,
                False,
                h.last_success,
                error,
                self._clock(),
                h.probes + 1,
                h.probe_errors + 1,
            )
        else:
            if h.reachable is False:
                _log.info("iot hub reachable again", hub=h.host)
            self._health = HubHealth(
                h.host,
                True,
                self._clock(),
                h.last_error,
                h.last_error_time,
                h.probes + 1,
                h.probe_errors,
            )
        return self._health

    async def run(self) -> None:
        """Probe every ``interval`` seconds until cancelled."""
        while True:
            await self.probe_once()
            await asyncio.sleep(self._interval)


def _newest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def merge_activity(probed: HubHealth, activity: HubActivity) -> HubHealth:
    """The hub's health from the probes and the agent's own calls.

    The last success and the last error are the newest of either source. Reachability is the
    last probe's, unless a call ended after that probe: then it is that call's outcome (the
    newest call's, an error winning a tie). Probe counters stay the probes'.

    Args:
        probed: the outcome of the probes.
        activity: the outcome of the agent's own calls (same clock as the probe's).

    Returns:
        The merged health.
    """
    call_ok, call_error = activity.last_success, activity.last_error_time
    last_probe = _newest(probed.last_success, probed.last_error_time)
    reachable = probed.reachable
    newest_call = _newest(call_ok, call_error)
    if newest_call is not None and (last_probe is None or newest_call > last_probe):
        reachable = call_error is None or (call_ok is not None and call_ok > call_error)
    last_error, last_error_time = probed.last_error, probed.last_error_time
    if call_error is not None and (last_error_time is None or call_error > last_error_time):
        last_error, last_error_time = activity.last_error, call_error
    return HubHealth(
        probed.host,
        reachable,
        _newest(probed.last_success, call_ok),
        last_error,
        last_error_time,
        probed.probes,
        probed.probe_errors,
    )


# --- latency histogram -------------------------------------------------------------------------


@dataclass
class LatencyHistogram:
    """A cumulative histogram fed from the channel's ring buffer of recent latencies.

    Args:
        bounds: bucket upper bounds in seconds, increasing.
    """

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    observed: int = 0
    unsampled: int = 0
    _seen_calls: int = 0

    def __post_init__(self) -> None:
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError("histogram bounds must be increasing")
        self.counts = [0] * len(self.bounds)

    def observe(self, seconds: float) -> None:
        """Count one latency."""
        self.observed += 1
        self.total += seconds
        for i, bound in enumerate(self.bounds):
            if seconds <= bound:
                self.counts[i] += 1
                break

    def fold(self, snapshot: StatsSnapshot) -> None:
        """Fold in the latencies recorded since the last fold (one latency per answered call)."""
        calls = sum(snapshot.calls.values())
        new = calls - self._seen_calls
        self._seen_calls = calls
        if new <= 0:
            return
        kept = snapshot.latencies
        samples = kept[len(kept) - new :] if new <= len(kept) else kept
        for seconds in samples:
            self.observe(seconds)
        self.unsampled += new - len(samples)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, count of latencies <= bound)`` per bucket, ``+Inf`` last."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            running += count
            out.append((bound, running))
        out.append((math.inf, self.observed))
        return out


# --- rendering ---------------------------------------------------------------------------------


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[str, Mapping[str, str], float]],
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in samples:
            self.lines.append(f"{name}{suffix}{_labels(labels)} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_metrics(
    stats: StatsSnapshot,
    histogram: LatencyHistogram,
    state: ChannelState,
    hub: HubHealth,
    load: LoadCounters | None = None,
    leadership: LeadershipView | None = None,
) -> str:
    """The Prometheus text exposition (format 0.0.4) of the agent's figures.

    Args:
        stats: the channel's counters.
        histogram: the call-latency histogram (already folded with ``stats``).
        state: the channel's state now.
        hub: the IoT Hub's health as last probed or called.
        load: the IoT Hub client's lanes and refusals; None when there is no client (zeros).
        leadership: the rollout leadership; None leaves its two families out.

    Returns:
        The text, ending with a newline.
    """
    out = _Exposition()
    services = sorted(set(stats.calls) | set(stats.errors))
    out.family(
        "jobs_agent_service_calls_total",
        "counter",
        "Remote-service calls answered (success or error), per service.",
        [("", {"service": s}, stats.calls.get(s, 0)) for s in services],
    )
    out.family(
        "jobs_agent_service_errors_total",
        "counter",
        "Remote-service calls answered with an error status, per service.",
        [("", {"service": s}, stats.errors.get(s, 0)) for s in services],
    )
    buckets: list[tuple[str, Mapping[str, str], float]] = [
        ("_bucket", {"le": _number(bound)}, count) for bound, count in histogram.cumulative()
    ]
    buckets.append(("_sum", {}, histogram.total))
    buckets.append(("_count", {}, histogram.observed))
    out.family(
        "jobs_agent_call_latency_seconds",
        "histogram",
        "Time from a service request to its answer, in seconds.",
        buckets,
    )
    out.family(
        "jobs_agent_call_latency_unsampled_total",
        "counter",
        "Answered calls whose latency fell out of the channel's ring buffer before it was read.",
        [("", {}, histogram.unsampled)],
    )
    for name, help_text, value in (
        ("connection_attempts", "Websocket connections tried.", stats.connection_attempts),
        ("connects", "Times the channel reached READY.", stats.connects),
        ("reconnects", "Times the channel reached READY again after the first.", stats.reconnects),
        ("links_lost", "Established links that ended without stop().", stats.links_lost),
        ("abandoned_calls", "Calls whose answer could not be delivered.", stats.abandoned_calls),
        ("pushes_sent", "Property pushes and events ThingWorx accepted.", stats.pushes_sent),
        (
            "pushes_dropped",
            "Pushes dropped: the queue was full (oldest first) or the server refused them.",
            stats.pushes_dropped,
        ),
    ):
        out.family(f"jobs_agent_{name}_total", "counter", help_text, [("", {}, value)])
    out.family(
        "jobs_agent_push_queue",
        "gauge",
        "Property pushes and events waiting for a synchronised link.",
        [("", {}, stats.push_queue)],
    )
    lanes = load or LoadCounters()
    out.family(
        "jobs_agent_calls_refused_total",
        "counter",
        "Calls refused at once for capacity (nothing was done), by reason.",
        [
            ("", {"reason": "hub_lane_full"}, lanes.refused_hub),
            ("", {"reason": "device_lane_full"}, lanes.refused_device),
            ("", {"reason": "channel_full"}, stats.refused_busy),
        ],
    )
    out.family(
        "jobs_agent_calls_too_large_total",
        "counter",
        "Calls stopped because they read more than one call may (iothub.max_*_per_call).",
        [("", {}, lanes.too_large)],
    )
    out.family(
        "jobs_agent_lane_busy",
        "gauge",
        "IoT Hub calls each lane holds now (running or waiting for a thread).",
        [("", {"lane": "hub"}, lanes.hub_busy), ("", {"lane": "device"}, lanes.device_busy)],
    )
    out.family(
        "jobs_agent_channel_state",
        "gauge",
        "The AlwaysOn channel's state (1 for the current one).",
        [("", {"state": s.value}, int(s is state)) for s in ChannelState],
    )
    out.family(
        "jobs_agent_channel_ready",
        "gauge",
        "1 when the channel is connected, authenticated and bound.",
        [("", {}, int(state is ChannelState.READY))],
    )
    out.family(
        "jobs_agent_hub_reachable",
        "gauge",
        "1 when the IoT Hub answered last time it was tried (probe or call).",
        [("", {"hub": hub.host}, int(bool(hub.reachable)))],
    )
    if hub.last_success is not None:
        out.family(
            "jobs_agent_hub_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last IoT Hub answer (probe or call).",
            [("", {"hub": hub.host}, hub.last_success)],
        )
    out.family(
        "jobs_agent_hub_probes_total",
        "counter",
        "IoT Hub probes made.",
        [("", {"hub": hub.host}, hub.probes)],
    )
    out.family(
        "jobs_agent_hub_probe_errors_total",
        "counter",
        "IoT Hub probes that failed.",
        [("", {"hub": hub.host}, hub.probe_errors)],
    )
    if leadership is not None:
        out.family(
            "jobs_agent_rollout_leader",
            "gauge",
            "1 while this agent holds the hub's rollout leadership (it drives the rollouts).",
            [("", {"hub": hub.host}, int(leadership.role == "active"))],
        )
        out.family(
            "jobs_agent_rollout_leadership_changes_total",
            "counter",
            "Times this agent became or stopped being the hub's rollout leader.",
            [("", {"hub": hub.host}, leadership.changes)],
        )
    return out.text()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def health_report(
    state: ChannelState,
    bound_things: Sequence[str],
    thingworx_url: str,
    hub: HubHealth,
    *,
    channel_error: str | None = None,
    role: str | None = None,
    holder: str | None = None,
    rollouts: Mapping[str, Any] | None = None,
) -> tuple[int, dict[str, Any]]:
    """The ``/healthz`` answer.

    Args:
        state: the channel's state.
        bound_things: the Things bound on the current link.
        thingworx_url: the ThingWorx URL the channel uses.
        hub: the IoT Hub's health as last probed or called.
        channel_error: why the channel's last connection attempt or link failed, if one did;
            shown as ``thingworx.lastError`` (the key is left out when there was none).
        role: ``active``, ``standby`` (another agent holds the Things: first-in-wins) or
            ``none``; shown as ``role`` (default: ``active`` when READY, else ``none``).
        holder: while a standby, the server's word on who holds the Things.
        rollouts: the rollout leadership (``role``, ``store``), shown as ``rollouts``; it never
            makes the answer unhealthy (a standby waits as designed).

    Returns:
        ``(HTTP status, JSON document)``: 200 when the channel is READY, or a standby, and the
        hub was reached last time it was tried (status ``ok`` or ``standby``), 503 otherwise.
    """
    channel_ok = state is ChannelState.READY
    role = role or ("active" if channel_ok else "none")
    standby = role == "standby" and not channel_ok
    hub_ok = hub.reachable is True
    healthy = (channel_ok or standby) and hub_ok
    problems: list[str] = []
    if standby:
        pass  # waiting as designed: not a problem (holder below says who is active)
    elif not channel_ok:
        why = f" (last error: {channel_error})" if channel_error else ""
        problems.append(f"ThingWorx channel is {state.value}, not ready{why}")
    if hub.reachable is None:
        problems.append("IoT Hub not probed yet")
    elif not hub_ok:
        problems.append(f"IoT Hub unreachable: {hub.last_error}")
    thingworx: dict[str, Any] = {
        "url": thingworx_url,
        "state": state.value,
        "ready": channel_ok,
        "boundThings": len(bound_things),
    }
    if channel_error is not None:
        thingworx["lastError"] = channel_error
    if standby and holder is not None:
        thingworx["holder"] = holder
    doc: dict[str, Any] = {
        "status": ("standby" if standby else "ok") if healthy else "unavailable",
        "role": role,
        "problems": problems,
        "thingworx": thingworx,
        "iothub": {
            "host": hub.host,
            "reachable": hub.reachable,
            "lastSuccess": _iso(hub.last_success),
            "lastError": hub.last_error,
            "lastErrorTime": _iso(hub.last_error_time),
            "probes": hub.probes,
            "probeErrors": hub.probe_errors,
        },
    }
    if rollouts is not None:
        doc["rollouts"] = dict(rollouts)
    return (200 if healthy else 503), doc


# --- the server --------------------------------------------------------------------------------


class HealthServer:
    """The ``/healthz`` and ``/metrics`` HTTP server.

    Args:
        settings: the ``[health]`` settings (host, port; port 0 picks a free one).
        channel: the AlwaysOn channel (state, bound Things, stats).
        thingworx_url: the URL the channel connects to (shown in ``/healthz``).
        probe: the IoT Hub probe; :meth:`start` runs it in the background.
        load: reads the IoT Hub client's lanes and refusals (``lambda: client.load``), or None.
        leadership: the rollout leadership (its role in ``/healthz``, a gauge in ``/metrics``).
        store: ``sqlite`` or ``postgresql``: where the rollouts are kept (shown beside the role).
    """

    def __init__(
        self,
        settings: HealthSettings,
        channel: ChannelView,
        thingworx_url: str,
        probe: HubProbe,
        *,
        load: Callable[[], LoadCounters] | None = None,
        leadership: LeadershipView | None = None,
        store: str = "sqlite",
    ) -> None:
        self._settings = settings
        self._load = load
        self._leadership = leadership
        self._store = store
        self._channel = channel
        self._url = thingworx_url
        self.probe = probe
        self.histogram = LatencyHistogram()
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("the health server is not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self._settings.host}:{self.port}"

    async def listen(self) -> int:
        """Listen on ``health.host:health.port`` (the probe is not started: see :meth:`run`).

        Returns:
            The bound port.

        Raises:
            OSError: the address cannot be bound.
        """
        app = web.Application()
        app.add_routes([web.get("/healthz", self._healthz), web.get("/metrics", self._metrics)])
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._settings.host, self._settings.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        _log.info("health endpoint listening", url=self.url)
        return self._port

    async def run(self) -> None:
        """Probe the hub and sample latencies until cancelled (the agent's TaskGroup owns it)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.probe.run(), name="hub-probe")
            group.create_task(self._sample(), name="latency-sampler")

    async def start(self) -> int:
        """:meth:`listen`, and :meth:`run` in a task of its own until :meth:`stop` (for a server
        used without :class:`~agent.app.AgentApp`).

        Returns:
            The bound port.

        Raises:
            OSError: the address cannot be bound.
        """
        port = await self.listen()
        self._tasks = [asyncio.create_task(self.run(), name="health")]
        return port

    async def stop(self) -> None:
        """Stop the background task :meth:`start` started, and the server."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(_SAMPLE_INTERVAL)
            self.histogram.fold(self._channel.stats.snapshot())

    def report(self) -> tuple[int, dict[str, Any]]:
        """What ``/healthz`` answers now."""
        return health_report(
            self._channel.state,
            self._channel.bound_things,
            self._url,
            self.probe.health,
            channel_error=self._channel.last_error,
            role=self._channel.role,
            holder=self._channel.holder,
            rollouts=self._rollouts(),
        )

    def _rollouts(self) -> dict[str, Any] | None:
        """``/healthz``'s ``rollouts``: this agent's rollout role and store, and, while it leads
        a shared store's hub, the epoch it leads in (the fencing token its writes carry: each
        takeover moves it on)."""
        if self._leadership is None:
            return None
        doc: dict[str, Any] = {"role": self._leadership.role, "store": self._store}
        epoch = self._leadership.epoch
        if epoch is not None:
            doc["epoch"] = epoch
        return doc

    def metrics(self) -> str:
        """What ``/metrics`` answers now."""
        snapshot = self._channel.stats.snapshot()
        self.histogram.fold(snapshot)
        load = self._load() if self._load is not None else None
        return render_metrics(
            snapshot, self.histogram, self._channel.state, self.probe.health, load, self._leadership
        )

    async def _healthz(self, _request: web.Request) -> web.Response:
        status, doc = self.report()
        return web.Response(
            status=status, text=json.dumps(doc, indent=1), content_type="application/json"
        )

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(text=self.metrics(), headers={"Content-Type": CONTENT_TYPE_METRICS})
