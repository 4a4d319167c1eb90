"""The stand-in's web console driven in a real browser (Debian's Chromium through Playwright).

Every case runs the real stand-in on 127.0.0.1 port 0 with a real edge bound to it: the agent's
AlwaysOn client with a test Thing whose services cover the input types, and, for the full-stack
case, the whole agent (AgentApp) over the IoT Hub emulator and a simulated fleet. The browser
only ever talks to 127.0.0.1. Playwright never downloads a browser here: it launches
/usr/bin/chromium, which the session fixture installs with apt-get when it is missing (and skips
with the reason when that fails).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from agent.alwayson import (
    BaseType,
    DataShape,
    EventMetadata,
    FieldDefinition,
    InfoTable,
    Status,
)
from agent.channel import AlwaysOnClient
from agent.registry import RemoteService, ServiceCall, ServiceError, ThingRegistry
from agent.settings import JobSettings, ThingWorxSettings
from emulator.thingworx.console import (
    ASSET_PREFIX,
    CONSOLE_ASSETS,
    CONSOLE_PATHS,
    add_console_routes,
    console_asset,
)
from emulator.thingworx.server import ThingWorxStandIn
from services import JOB_RESULT_SHAPE, JOB_SHAPE
from services.rollout_events import (
    ROLLOUT_STATUS_CHANGED_EVENT,
    ROLLOUT_WAVE_ENDED_EVENT,
    WAVE_ENDED_SHAPE,
    rollout_events,
)
from services.rollouts import ROLLOUT_SHAPE, WAVE_SHAPE
from services.shapes import DEVICE_CONNECTION_SHAPE
from services.watch import ENDED_SHAPE, JOB_ENDED_EVENT, STATUS_CHANGED_EVENT
from tests.support.chain import APP_KEY as CHAIN_APP_KEY
from tests.support.chain import AgentChain
from tests.support.channel import running

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
APP_KEY = "console-test-key-42"
THING = "ConsoleDev"
GATEWAY = "ConsoleGw"
UI_TIMEOUT_MS = 10_000
F = FieldDefinition

# -- the browser ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium; installed with apt-get when absent, else the browser tests skip."""
    if not CHROMIUM.exists():
        if shutil.which("apt-get") is None:
            pytest.skip(f"{CHROMIUM} is missing and apt-get is not available to install it")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            done = subprocess.run(
                ["sh", "-c", "apt-get update && apt-get install -y chromium"],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"{CHROMIUM} is missing and installing it failed: {exc}")
        if done.returncode != 0 or not CHROMIUM.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            pytest.skip(
                f"{CHROMIUM} is missing and `apt-get install -y chromium` failed "
                f"(exit {done.returncode}): {' '.join(tail)}"
            )
    return CHROMIUM


@dataclass
class Tab:
    """One browser page and the JavaScript errors it raised."""

    page: Any
    errors: list[str] = field(default_factory=list)

    def on_console(self, message: Any) -> None:
        # Chromium logs every non-2xx fetch as "Failed to load resource"; the console shows
        # those answers on purpose. Anything else logged as an error is a fault of the page.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def assert_no_script_errors(self) -> None:
        assert self.errors == [], f"the page raised: {self.errors}"


@pytest.fixture
async def tab(chromium: Path) -> AsyncIterator[Tab]:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 1000})
            page = await context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            playwright_api.expect.set_options(timeout=UI_TIMEOUT_MS)
            opened = Tab(page)
            page.on("pageerror", lambda exc: opened.errors.append(str(exc)))
            page.on("console", opened.on_console)
            yield opened
        finally:
            await browser.close()


# -- a stand-in with a test Thing bound by the agent's AlwaysOn client ------------------------

EVERY_INPUTS = DataShape.of(
    F("text", BaseType.STRING, "any text", {"isRequired": True}),
    F("ratio", BaseType.NUMBER, "a number", {"defaultValue": 2.5}),
    F("count", BaseType.INTEGER, "an int32", {"defaultValue": 7}),
    F("big", BaseType.LONG, "an int64"),
    F("flag", BaseType.BOOLEAN, "a flag", {"defaultValue": True}),
    F("maybe", BaseType.BOOLEAN, "optional, no default"),
    F("when", BaseType.DATETIME, "a UTC time"),
    F("doc", BaseType.JSON, "a JSON document", {"isRequired": True}),
)
EVERY_RESULT = DataShape.of(
    F("text", BaseType.STRING),
    F("ratio", BaseType.NUMBER),
    F("count", BaseType.INTEGER),
    F("big", BaseType.LONG),
    F("flag", BaseType.BOOLEAN),
    F("maybe", BaseType.BOOLEAN),
    F("when", BaseType.DATETIME),
    F("doc", BaseType.JSON),
    name="EveryTypeEcho",
)
WRAPPERS = Path(__file__).resolve().parents[3] / "config" / "wrappers"
START_DELAY_S = 5
FAKE_JOB_ID = "console-job-1"
GET_JOB_NAME = "AzureIotDeviceJobGetJob"
FAILED_JOB_ID = "console-job-failed"
FAKE_DEVICES = ("dev-a", "dev-b", "dev-c")
FAKE_ROLLOUT_ID = "ro-live"
# Screenshots: under pytest's tmp_path, or in this folder when CONSOLE_SHOTS is set (how the
# checked-in tests/emulator/thingworx/screenshots/ were made: they show what the layout
# assertions expect; the tests compare bounding boxes, never pixels).
SHOTS = Path(__file__).resolve().parent / "screenshots"
LAYOUT_VIEWPORT = {"width": 1280, "height": 900}
RED = "rgb(179, 38, 30)"
GREEN = "rgb(29, 122, 61)"


def shot_path(tmp_path: Path, name: str) -> Path:
    """Where a screenshot goes: ``screenshots/`` with CONSOLE_SHOTS=1, else ``tmp_path``."""
    if os.environ.get("CONSOLE_SHOTS"):
        SHOTS.mkdir(exist_ok=True)
        return SHOTS / name
    return tmp_path / name


@dataclass
class FakeThing:
    """The services of the test Thing, and what they were called with."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    get_job_calls: int = 0
    connection_state: str = "Disconnected"
    # The fake rollout: wave 1 of 2 (2 devices each); the test moves it and fires its events.
    rollout_status: str = "running"
    wave1_succeeded: int = 0

    def echoed(self) -> list[tuple[str, dict[str, Any]]]:
        """The calls of EchoEveryType (the console also reads the device's state on its own)."""
        return [c for c in self.calls if c[0] == "EchoEveryType"]

    def registry(self) -> ThingRegistry:
        registry = ThingRegistry(JobSettings(call_deadline=10.0))
        registry.add_thing(THING)
        # The gateway's job events (services/watch.py), fired by the live-view test by hand.
        registry.add_event(THING, EventMetadata(STATUS_CHANGED_EVENT, JOB_SHAPE, "changed"))
        registry.add_event(THING, EventMetadata(JOB_ENDED_EVENT, ENDED_SHAPE, "ended"))
        # The gateway's rollout events (services/rollout_events.py), fired by hand too.
        for event in rollout_events():
            registry.add_event(THING, event)
        add = registry.add_service
        rollout_id = DataShape.of(F("rolloutId", BaseType.STRING, "", {"isRequired": True}))
        for name, inputs, shape, handler in (
            ("AzureIotDeviceJobFindRollouts", DataShape.of(
                F("status", BaseType.STRING, "a rollout status"),
                F("maxRows", BaseType.INTEGER, "the most rollouts", {"defaultValue": 50}),
            ), ROLLOUT_SHAPE, self.find_rollouts),
            ("AzureIotDeviceJobGetRollout", rollout_id, ROLLOUT_SHAPE, self.get_rollout),
            ("AzureIotDeviceJobGetRolloutWaves", DataShape.of(
                F("rolloutId", BaseType.STRING, "", {"isRequired": True}),
                F("maxRows", BaseType.INTEGER, "the most rows", {"defaultValue": 500}),
            ), WAVE_SHAPE, self.get_rollout_waves),
        ):  # fmt: skip
            add(THING, RemoteService(name, "the fake rollout", inputs, BaseType.INFOTABLE, shape,
                                     handler))  # fmt: skip
        add(
            THING,
            RemoteService(
                "EchoEveryType",
                "returns its inputs as one row",
                EVERY_INPUTS,
                BaseType.INFOTABLE,
                EVERY_RESULT,
                self.every,
            ),
        )
        add(
            THING,
            RemoteService("Jam", "always fails", DataShape(()), BaseType.STRING, None, self.jam),
        )
        add(
            THING,
            RemoteService(
                "StartFakeJob",
                "a job-shaped answer",
                DataShape(()),
                BaseType.INFOTABLE,
                JOB_SHAPE,
                self.start_job,
            ),
        )
        add(
            THING,
            RemoteService(
                "AzureIotDeviceJobGetJob",
                "the fake job, one step further at each call",
                DataShape.of(F("jobId", BaseType.STRING, "", {"isRequired": True})),
                BaseType.INFOTABLE,
                JOB_SHAPE,
                self.get_job,
            ),
        )
        add(
            THING,
            RemoteService(
                "StartFailedJob",
                "a job that fails before any device",
                DataShape(()),
                BaseType.INFOTABLE,
                JOB_SHAPE,
                self.start_failed_job,
            ),
        )
        add(
            THING,
            RemoteService(
                "AzureIotDeviceJobFindJobs",
                "jobs, newest first, at most maxRows",
                DataShape.of(
                    F("type", BaseType.STRING, "twinUpdate or deviceMethod (default: any)"),
                    F("status", BaseType.STRING, "a job status"),
                    F("maxRows", BaseType.INTEGER, "the most jobs", {"defaultValue": 50}),
                ),
                BaseType.INFOTABLE,
                JOB_SHAPE,
                self.find_jobs,
            ),
        )
        add(
            THING,
            RemoteService(
                "AzureIotDeviceGetConnectionState",
                "the twin's connectionState",
                DataShape(()),
                BaseType.INFOTABLE,
                DEVICE_CONNECTION_SHAPE,
                self.connection,
            ),
        )
        add(
            THING,
            RemoteService(
                "AzureIotDeviceJobQueryJobResults",
                "per-device rows of the fake job",
                DataShape.of(F("query", BaseType.STRING, "", {"isRequired": True})),
                BaseType.INFOTABLE,
                JOB_RESULT_SHAPE,
                self.job_results,
            ),
        )
        return registry

    async def every(self, call: ServiceCall) -> InfoTable:
        self.calls.append((call.service, dict(call.inputs)))
        return InfoTable(EVERY_RESULT, [dict(call.inputs)])

    async def jam(self, call: ServiceCall) -> str:
        self.calls.append((call.service, dict(call.inputs)))
        raise ServiceError("the gizmo is jammed: clear it and retry", Status.BAD_REQUEST)

    def _job_row(self, step: int) -> dict[str, Any]:
        total = len(FAKE_DEVICES)
        succeeded = min(step, total - 1)
        failed = 1 if step >= total else 0
        done = succeeded + failed
        return {
            "jobId": FAKE_JOB_ID,
            "type": "twinUpdate",
            "status": "completed" if done == total else ("running" if step else "pending"),
            "hubStatus": "completed" if done == total else "running",
            "queryCondition": "deviceId IN ['dev-a', 'dev-b', 'dev-c']",
            "createdTime": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
            "startTime": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
            "maxExecutionTimeInSeconds": 3600,
            "patch": {"properties": {"desired": {"rate": 5}}},
            "deviceCount": total,
            "succeededCount": succeeded,
            "failedCount": failed,
            "runningCount": 0 if done == total else 1,
            "pendingCount": total - done - (0 if done == total else 1),
            "summary": f"{'completed' if done == total else 'running'}: "
            f"{succeeded} succeeded, {failed} failed",
        }

    def _failed_row(self) -> dict[str, Any]:
        return {
            "jobId": FAILED_JOB_ID,
            "type": "deviceMethod",
            "status": "failed",
            "hubStatus": "failed",
            "queryCondition": "deviceId = 'nobody'",
            "deviceCount": 0,
            "succeededCount": 0,
            "failedCount": 0,
            "runningCount": 0,
            "pendingCount": 0,
            "failureReason": "the hub stopped the job",
            "summary": "failed: no device",
        }

    def rollout_row(self) -> dict[str, Any]:
        """The fake rollout as GetRollout (and its StatusChanged event) says it."""
        succeeded = self.wave1_succeeded + (2 if self.rollout_status == "completed" else 0)
        return {
            "rolloutId": FAKE_ROLLOUT_ID,
            "status": self.rollout_status,
            "type": "twinUpdate",
            "deviceCount": 4,
            "succeededCount": succeeded,
            "failedCount": 0,
            "pendingCount": 4 - succeeded,
            "retriedCount": 0,
            "wave": 2 if self.rollout_status == "completed" else 1,
            "waveCount": 2,
            "createdTime": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
        }

    async def find_rollouts(self, call: ServiceCall) -> InfoTable:
        self.calls.append((call.service, dict(call.inputs)))
        return InfoTable(ROLLOUT_SHAPE, [self.rollout_row()])

    async def get_rollout(self, call: ServiceCall) -> InfoTable:
        self.calls.append((call.service, dict(call.inputs)))
        if call.inputs["rolloutId"] != FAKE_ROLLOUT_ID:
            raise ServiceError(f"no rollout {call.inputs['rolloutId']}", Status.NOT_FOUND)
        return InfoTable(ROLLOUT_SHAPE, [self.rollout_row()])

    async def get_rollout_waves(self, call: ServiceCall) -> InfoTable:
        self.calls.append((call.service, dict(call.inputs)))
        ended = self.rollout_status == "completed"
        judged = ended or self.wave1_succeeded == 2
        waves = [
            (1, self.wave1_succeeded, "judged" if judged else "running"),
            (2, 2 if ended else 0, "judged" if ended else "waiting"),
        ]
        return InfoTable(WAVE_SHAPE, [
            {"wave": wave, "attempt": 1, "deviceCount": 2, "succeeded": succeeded, "failed": 0,
             "pending": 2 - succeeded, "status": status,
             "jobIds": [f"{FAKE_ROLLOUT_ID}-w{wave}-a1-p1"] if status != "waiting" else []}
            for wave, succeeded, status in waves
        ])  # fmt: skip

    def rollout_calls(self, service: str) -> int:
        """How many times the page called one of the rollout services."""
        return sum(1 for name, _ in self.calls if name == f"AzureIotDeviceJob{service}")

    async def start_failed_job(self, call: ServiceCall) -> InfoTable:
        self.calls.append((call.service, {}))
        return InfoTable(JOB_SHAPE, [self._failed_row()])

    async def find_jobs(self, call: ServiceCall) -> InfoTable:
        self.calls.append((call.service, dict(call.inputs)))
        rows = [
            {
                **self._job_row(3),
                "jobId": f"job-{n:02d}-{'x' * 30}",
                "createdTime": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC) - timedelta(minutes=n),
                "methodName": "reboot",
                "payload": {"delaySeconds": 5, "reason": "a long enough reason to be wide"},
                "statusMessage": "a status message that is long enough to widen its column",
                "warnings": "startTime was in the past and was sent as now",
            }
            for n in range(5)
        ]
        return InfoTable(JOB_SHAPE, rows[: call.inputs["maxRows"]])

    async def connection(self, call: ServiceCall) -> InfoTable:
        self.calls.append((call.service, {}))
        row = {"deviceId": THING, "connectionState": self.connection_state, "status": "enabled"}
        return InfoTable(DEVICE_CONNECTION_SHAPE, [row])

    async def start_job(self, call: ServiceCall) -> InfoTable:
        self.calls.append((call.service, {}))
        return InfoTable(JOB_SHAPE, [self._job_row(0)])

    async def get_job(self, call: ServiceCall) -> InfoTable:
        self.calls.append((call.service, dict(call.inputs)))
        if call.inputs["jobId"].startswith("job-"):  # one of FindJobs' jobs: ended
            return InfoTable(JOB_SHAPE, [{**self._job_row(3), "jobId": call.inputs["jobId"]}])
        if call.inputs["jobId"] == FAILED_JOB_ID:
            self.get_job_calls += 1
            return InfoTable(JOB_SHAPE, [self._failed_row()])
        if call.inputs["jobId"] != FAKE_JOB_ID:
            raise ServiceError(f"no job {call.inputs['jobId']}", Status.NOT_FOUND)
        self.get_job_calls += 1
        return InfoTable(JOB_SHAPE, [self._job_row(self.get_job_calls)])

    async def job_results(self, call: ServiceCall) -> InfoTable:
        self.calls.append((call.service, dict(call.inputs)))
        at = datetime(2030, 1, 2, 3, 4, 6, tzinfo=UTC)
        return InfoTable(
            JOB_RESULT_SHAPE,
            [
                {
                    "deviceId": device,
                    "jobId": FAKE_JOB_ID,
                    "type": "twinUpdate",
                    "status": "failed" if device == "dev-c" else "completed",
                    "lastUpdatedTime": at,
                    "errorCode": "DeviceNotFound" if device == "dev-c" else None,
                    "errorDescription": "not registered" if device == "dev-c" else None,
                }
                for device in FAKE_DEVICES
            ],
        )


@dataclass
class Console:
    """A stand-in with the test Thing bound, and the console's address."""

    standin: ThingWorxStandIn
    thing: FakeThing
    client: AlwaysOnClient

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.standin.port}/Thingworx/Console"


@pytest.fixture
async def console() -> AsyncIterator[Console]:
    standin = ThingWorxStandIn(APP_KEY, port=0, call_timeout=5.0)
    await standin.start()
    thing = FakeThing()
    settings = ThingWorxSettings(
        url=standin.ws_url,
        app_key=SecretStr(APP_KEY),
        gateway_thing=GATEWAY,
        connect_timeout=2.0,
        auth_timeout=2.0,
        reconnect_initial_delay=0.05,
        reconnect_max_delay=0.2,
    )
    client = AlwaysOnClient(settings, thing.registry())
    try:
        async with running(client):
            await standin.wait_metadata(THING, 5)
            yield Console(standin, thing, client)
    finally:
        await standin.stop()


async def enter_key(page: Any, key: str) -> None:
    field = page.get_by_test_id("app-key-input")
    await expect(field).to_have_accessible_name("Application key")
    await field.fill(key)
    await page.get_by_test_id("app-key-submit").click()


async def open_service(page: Any, thing: str, service: str) -> Any:
    await page.get_by_test_id(f"thing-{thing}").click()
    await page.get_by_test_id(f"service-{service}").click()
    form = page.get_by_test_id("service-form")
    await playwright_api.expect(form).to_have_attribute("data-service", service)
    return form


async def open_console(console: Console, tab: Tab, *, layout: bool = False) -> Any:
    """The console opened with the key in the URL (at the layout viewport if ``layout``)."""
    page = tab.page
    if layout:
        await page.set_viewport_size(LAYOUT_VIEWPORT)
    await page.goto(f"{console.url}#appKey={APP_KEY}")
    return page


async def run_service(page: Any, thing: str, service: str) -> Any:
    """Open a service's form and run it with its defaults; the form."""
    form = await open_service(page, thing, service)
    await form.get_by_test_id("run").click()
    return form


async def without_event_stream(page: Any) -> None:
    """Make the stand-in's event stream unavailable to the page (answered 503), so the job view
    must fall back to polling GetJob."""

    async def refuse(route: Any) -> None:
        await route.fulfill(status=503, body="no event stream in this test")

    await page.route(re.compile(r".*/standin/events/stream.*"), refuse)


def count_get_job_requests(page: Any) -> list[str]:
    """The GetJob requests the page makes from now on (the list grows as they are sent)."""
    sent: list[str] = []
    page.on(
        "request",
        lambda request: (
            sent.append(request.url) if request.url.endswith(f"/{GET_JOB_NAME}") else None
        ),
    )
    return sent


def cell(page: Any, grid: str, column: str, row: int = 0) -> Any:
    return page.get_by_test_id(f"{grid}-row").nth(row).locator(f'td[data-col="{column}"]')


# -- the tests -------------------------------------------------------------------------------

expect = playwright_api.expect


async def test_key_things_typed_form_and_result_grid(
    console: Console, tab: Tab, tmp_path: Path
) -> None:
    page = tab.page
    await page.goto(console.url)

    # The key is asked once; a wrong one is refused with the HTTP status, a right one kept.
    await expect(page.get_by_test_id("key-section")).to_be_visible()
    await enter_key(page, "not-the-key")
    await expect(page.get_by_test_id("key-error")).to_contain_text("HTTP 401")
    await expect(page.get_by_test_id("workspace")).to_be_hidden()
    await enter_key(page, APP_KEY)
    # The key is stored once the server has accepted it (an asynchronous check): wait for that.
    await expect(page.get_by_test_id("workspace")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('thingworx-console.appKey')") == APP_KEY

    # Things with their connection state.
    thing = page.get_by_test_id(f"thing-{THING}")
    await expect(thing).to_have_attribute("data-connected", "true")
    await expect(thing.get_by_test_id("thing-state")).to_have_text("bound")
    await expect(page.get_by_test_id(f"thing-{GATEWAY}")).to_be_visible()

    # Services from ServiceDefinitions, and a form typed per input.
    form = await open_service(page, THING, "EchoEveryType")
    services = page.get_by_test_id("services-list")
    await expect(services.get_by_test_id("service-Jam")).to_be_visible()
    await expect(services.get_by_test_id("service-GetMetadata")).to_be_visible()
    kinds = {
        "text": ("input", "text"),
        "ratio": ("input", "number"),
        "count": ("input", "number"),
        "big": ("input", "number"),
        "flag": ("input", "checkbox"),
        "maybe": ("input", "checkbox"),
        "when": ("input", "datetime-local"),
        "doc": ("textarea", None),
    }
    for name, (tag, kind) in kinds.items():
        control = form.get_by_test_id(f"input-{name}")
        assert await control.evaluate("e => e.tagName.toLowerCase()") == tag, name
        if kind is not None:
            await expect(control).to_have_attribute("type", kind)
    await expect(form.get_by_test_id("input-ratio")).to_have_attribute("step", "any")
    await expect(form.get_by_test_id("input-count")).to_have_attribute("step", "1")
    await expect(form.get_by_test_id("input-big")).to_have_attribute("step", "1")
    # Required marked (visibly and for assistive technology), defaults pre-filled.
    for name in ("text", "doc"):
        await expect(form.get_by_test_id(f"field-{name}")).to_have_attribute(
            "data-required", "true"
        )
        await expect(form.get_by_test_id(f"input-{name}")).to_have_attribute(
            "aria-required", "true"
        )
    await expect(form.get_by_test_id("field-ratio")).to_have_attribute("data-required", "false")
    await expect(form.get_by_label(re.compile(r"^text\b.*required"))).to_be_visible()
    await expect(form.get_by_test_id("input-ratio")).to_have_value("2.5")
    await expect(form.get_by_test_id("input-count")).to_have_value("7")
    await expect(form.get_by_test_id("input-flag")).to_be_checked()
    assert await form.get_by_test_id("input-maybe").evaluate("e => e.indeterminate") is True

    # Invalid JSON and a missing required input are caught in the page: nothing is sent.
    await form.get_by_test_id("input-doc").fill("{not json")
    await form.get_by_test_id("run").click()
    await expect(form.get_by_test_id("input-error-doc")).to_contain_text("not valid JSON")
    await expect(form.get_by_test_id("input-error-text")).to_contain_text("required")
    await expect(form.get_by_test_id("input-doc")).to_have_attribute("aria-invalid", "true")
    await expect(form.get_by_test_id("form-error")).to_contain_text("Nothing was sent")
    assert console.thing.echoed() == []

    # Valid inputs are sent typed and the result InfoTable shows as a grid.
    await form.get_by_test_id("input-text").fill("héllo <b>")
    await form.get_by_test_id("input-count").fill("-12")
    await form.get_by_test_id("input-big").fill("9007199254740993")
    await form.get_by_test_id("input-flag").uncheck()
    await form.get_by_test_id("input-when").fill("2030-01-02T03:04:05")
    await form.get_by_test_id("input-doc").fill('{"list": [1, "two", null], "nested": {"k": true}}')
    await form.get_by_test_id("run").click()
    await expect(page.get_by_test_id("result-status")).to_contain_text("HTTP 200")
    await expect(form.get_by_test_id("input-error-doc")).to_be_hidden()
    assert console.thing.echoed() == [
        (
            "EchoEveryType",
            {
                "text": "héllo <b>",
                "ratio": 2.5,
                "count": -12,
                "big": 9007199254740993,
                "flag": False,
                "when": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
                "doc": {"list": [1, "two", None], "nested": {"k": True}},
            },
        )
    ], "the optional BOOLEAN without a default was not touched, so it must not be sent"
    grid = page.get_by_test_id("result-grid")
    headers = await grid.locator("thead th .col-name").all_inner_texts()
    assert headers == ["text", "ratio", "count", "big", "flag", "maybe", "when", "doc"]
    await expect(cell(page, "result-grid", "text")).to_have_text("héllo <b>")
    await expect(cell(page, "result-grid", "big")).to_have_text("9007199254740993")
    await expect(cell(page, "result-grid", "when")).to_have_text("2030-01-02T03:04:05.000Z")
    await expect(cell(page, "result-grid", "flag")).to_have_text("false")
    await expect(cell(page, "result-grid", "maybe")).to_have_text("—")
    doc_text = await cell(page, "result-grid", "doc").locator("pre").inner_text()
    assert doc_text == (
        '{\n  "list": [\n    1,\n    "two",\n    null\n  ],\n  "nested": {\n    "k": true\n  }\n}'
    )
    assert await page.get_by_test_id("watch-job").count() == 0
    await page.screenshot(path=str(tmp_path / "console-result.png"), full_page=True)
    tab.assert_no_script_errors()


async def test_service_error_is_shown_with_http_status(
    console: Console, tab: Tab, tmp_path: Path
) -> None:
    page = tab.page
    await page.goto(console.url)
    await page.screenshot(path=str(tmp_path / "console-key.png"))
    await enter_key(page, APP_KEY)
    form = await open_service(page, THING, "Jam")
    await form.get_by_test_id("run").click()
    error = page.get_by_test_id("error")
    await expect(error).to_have_attribute("role", "alert")
    await expect(error.get_by_test_id("error-status")).to_have_text("HTTP 400 Bad Request")
    await expect(error.get_by_test_id("error-message")).to_have_text(
        "the gizmo is jammed: clear it and retry"
    )
    await page.screenshot(path=str(tmp_path / "console-error.png"))
    tab.assert_no_script_errors()


async def test_app_key_in_url_fragment_and_offline_thing(console: Console, tab: Tab) -> None:
    page = tab.page
    await page.goto(f"{console.url}#appKey={APP_KEY}")
    await expect(page.get_by_test_id(f"thing-{THING}")).to_have_attribute("data-connected", "true")
    assert "appKey" not in page.url, "the key must leave the address bar"
    assert await page.evaluate("sessionStorage.getItem('thingworx-console.appKey')") == APP_KEY
    await expect(page.get_by_test_id("key-section")).to_be_hidden()

    # The Thing's agent goes away: the list shows it offline, its services answer 503.
    await console.client.stop()
    await page.get_by_test_id("refresh-things").click()
    thing = page.get_by_test_id(f"thing-{THING}")
    await expect(thing).to_have_attribute("data-connected", "false")
    await expect(thing.get_by_test_id("thing-state")).to_have_text("offline")
    await thing.click()
    await expect(page.get_by_test_id("services-error")).to_contain_text("HTTP 503")
    tab.assert_no_script_errors()


async def test_job_watch_polls_until_done_then_loads_device_results(
    console: Console, tab: Tab, tmp_path: Path
) -> None:
    page = await open_console(console, tab)
    await without_event_stream(page)
    await run_service(page, THING, "StartFakeJob")
    await expect(cell(page, "result-grid", "status")).to_have_text("pending")
    await page.get_by_test_id("watch-job").click()

    panel = page.get_by_test_id("job-panel")
    # No event stream: the panel says it polls instead.
    await expect(panel.get_by_test_id("job-source")).to_have_attribute("data-source", "polling")
    await expect(panel.get_by_test_id("job-source")).to_contain_text(
        "Live events unavailable (the stand-in refused the event stream): polling GetJob"
    )
    await expect(panel.get_by_test_id("job-id")).to_have_text(FAKE_JOB_ID)
    # Counters refresh from one poll to the next (GetJob advances the fake job by one step).
    await expect(panel.get_by_test_id("job-succeededCount")).to_have_text("1")
    await expect(panel.get_by_test_id("job-status")).to_have_text("running")
    await expect(panel.get_by_test_id("job-progress-text")).to_contain_text("1 of 3 devices")
    await expect(panel.get_by_test_id("job-succeededCount")).to_have_text("2")
    await expect(panel.get_by_test_id("job-status")).to_have_text("completed", timeout=15_000)
    await expect(panel).to_have_attribute("data-state", "finished")
    counters = {
        name: await panel.get_by_test_id(f"job-{name}").inner_text()
        for name in ("deviceCount", "succeededCount", "failedCount", "runningCount", "pendingCount")
    }
    assert counters == {
        "deviceCount": "3",
        "succeededCount": "2",
        "failedCount": "1",
        "runningCount": "0",
        "pendingCount": "0",
    }
    progress = panel.get_by_test_id("job-progress")
    await expect(progress).to_have_attribute("aria-valuenow", "3")
    await expect(progress).to_have_attribute("aria-valuemax", "3")
    polls_at_end = console.thing.get_job_calls
    assert polls_at_end == 3

    await panel.get_by_test_id("load-results").click()
    results = panel.get_by_test_id("job-results")
    await expect(results.get_by_test_id("job-results-row")).to_have_count(3)
    await expect(cell(panel, "job-results", "deviceId", 2)).to_have_text("dev-c")
    await expect(cell(panel, "job-results", "errorCode", 2)).to_have_text("DeviceNotFound")
    await expect(cell(panel, "job-results", "lastUpdatedTime", 0)).to_have_text(
        "2030-01-02T03:04:06.000Z"
    )
    queries = [inputs for name, inputs in console.thing.calls if name.endswith("QueryJobResults")]
    assert queries == [
        {"query": f"SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '{FAKE_JOB_ID}'"}
    ]
    await asyncio.sleep(1.5)
    assert console.thing.get_job_calls == polls_at_end, "polling must stop once the job ended"
    await page.screenshot(path=str(tmp_path / "console-job.png"), full_page=True)
    tab.assert_no_script_errors()


# -- layout and outcomes (issue 13) ------------------------------------------------------------


async def test_job_view_follows_pushed_events_without_polling(console: Console, tab: Tab) -> None:
    """Issue 12: one GetJob read, then the job's progress from the gateway's pushed events."""
    page = await open_console(console, tab)
    get_jobs = count_get_job_requests(page)
    await run_service(page, THING, "StartFakeJob")
    await page.get_by_test_id("watch-job").click()
    panel = page.get_by_test_id("job-panel")
    source = panel.get_by_test_id("job-source")
    await expect(source).to_have_attribute("data-source", "events")
    await expect(source).to_contain_text("Live: following the job from pushed events")
    # The first read (the fake's GetJob: step 1), then nothing moves without an event.
    await expect(panel.get_by_test_id("job-succeededCount")).to_have_text("1")
    await asyncio.sleep(2.5)
    assert len(get_jobs) == 1, f"the page polled GetJob: {get_jobs}"
    await expect(panel.get_by_test_id("job-succeededCount")).to_have_text("1")

    def status_changed(step: int, job_id: str = FAKE_JOB_ID) -> None:
        row = {**console.thing._job_row(step), "jobId": job_id}
        console.client.fire_event(THING, STATUS_CHANGED_EVENT, InfoTable(JOB_SHAPE, [row]))

    status_changed(2, "another-job")  # someone else's job: ignored
    status_changed(2)
    await expect(panel.get_by_test_id("job-succeededCount")).to_have_text("2")
    await expect(panel.get_by_test_id("job-status")).to_have_text("running")
    await expect(panel.get_by_test_id("job-progress-text")).to_contain_text("2 of 3 devices")
    status_changed(3)
    ended = {
        "jobId": FAKE_JOB_ID,
        "status": "completed",
        "hubStatus": "completed",
        "deviceCount": 3,
        "succeededCount": 2,
        "failedCount": 1,
        "failedDevices": True,
        "summary": "completed, but 1 of 3 devices failed",
    }
    console.client.fire_event(THING, JOB_ENDED_EVENT, InfoTable(ENDED_SHAPE, [ended]))
    await expect(panel.get_by_test_id("job-summary")).to_have_text(
        "completed, but 1 of 3 devices failed"
    )
    await expect(panel).to_have_attribute("data-state", "finished")
    await expect(panel.get_by_test_id("job-status")).to_have_text("completed")
    await expect(panel.get_by_test_id("job-failedCount")).to_have_text("1")
    await expect(panel.get_by_test_id("job-runningCount")).to_have_text("0")
    await expect(panel.get_by_test_id("job-progress")).to_have_attribute("aria-valuenow", "3")
    updated = panel.get_by_test_id("job-updated")
    await expect(updated).to_have_attribute("data-events", "3")
    await expect(updated).to_have_attribute("data-polls", "1")
    await asyncio.sleep(1.5)
    assert len(get_jobs) == 1, f"the page polled GetJob: {get_jobs}"
    assert console.thing.get_job_calls == 1
    tab.assert_no_script_errors()


def count_stream_requests(page: Any) -> list[str]:
    """The event-stream requests the page makes from now on."""
    sent: list[str] = []
    page.on(
        "request",
        lambda request: (
            sent.append(request.url) if "/standin/events/stream" in request.url else None
        ),
    )
    return sent


async def open_fake_rollout(console: Console, page: Any) -> Any:
    """Open the rollouts view of the test Thing and view the fake rollout; its detail."""
    await page.get_by_test_id(f"thing-{THING}").click()
    await page.get_by_test_id("open-rollouts").click()
    panel = page.get_by_test_id("rollouts-panel")
    await expect(panel.get_by_test_id("rollouts-grid-row")).to_have_count(1)
    return panel


async def test_rollouts_view_follows_pushed_events_without_polling(
    console: Console, tab: Tab
) -> None:
    """Issue 11 live: the rollouts view shares the job view's one event stream, reads the shown
    rollout once, then again only at an event of it; the list at each StatusChanged."""
    page = await open_console(console, tab)
    streams = count_stream_requests(page)
    # A job followed live first: the rollouts view joins its stream rather than opening one.
    await run_service(page, THING, "StartFakeJob")
    await page.get_by_test_id("watch-job").click()
    job_source = page.get_by_test_id("job-source")
    await expect(job_source).to_have_attribute("data-source", "events")
    panel = await open_fake_rollout(console, page)
    await expect(panel.get_by_test_id("rollouts-source")).to_have_attribute("data-source", "events")
    await expect(job_source).to_have_attribute("data-source", "events")
    detail = panel.get_by_test_id("rollout-detail")
    await panel.get_by_test_id("view-rollout").click()
    waves = detail.get_by_test_id("rollout-waves-row")
    await expect(waves).to_have_count(2)
    wave1 = waves.nth(0)
    await expect(wave1.locator('td[data-col="succeeded"]')).to_have_text("0")
    await expect(wave1.get_by_test_id("wave-status")).to_have_text("running")
    await expect(detail.get_by_test_id("rollout-source")).to_have_attribute("data-source", "events")
    thing = console.thing
    # Nothing moves without an event: the 2 s poll would have read again by now.
    await asyncio.sleep(2.5)
    assert (thing.rollout_calls("GetRollout"), thing.rollout_calls("GetRolloutWaves")) == (1, 1)
    assert thing.rollout_calls("FindRollouts") == 1

    def wave_ended(rollout_id: str, succeeded: int) -> None:
        row = {"rolloutId": rollout_id, "wave": 1, "attempt": 1, "succeeded": succeeded,
               "failed": 0, "jobIds": [f"{rollout_id}-w1-a1-p1"]}  # fmt: skip
        console.client.fire_event(
            THING, ROLLOUT_WAVE_ENDED_EVENT, InfoTable(WAVE_ENDED_SHAPE, [row])
        )

    # Wave 1 judged: the event of another rollout is ignored, this one's brings one read.
    thing.wave1_succeeded = 2
    wave_ended("ro-someone-else", 1)
    wave_ended(FAKE_ROLLOUT_ID, 2)
    await expect(wave1.locator('td[data-col="succeeded"]')).to_have_text("2")
    await expect(wave1.locator('td[data-col="pending"]')).to_have_text("0")
    await expect(wave1.get_by_test_id("wave-status")).to_have_text("judged")
    await expect(detail.get_by_test_id("rollout-succeededCount")).to_have_text("2")
    await expect(detail.get_by_test_id("rollout-updated")).to_have_attribute("data-events", "1")
    assert (thing.rollout_calls("GetRollout"), thing.rollout_calls("GetRolloutWaves")) == (2, 2)
    assert thing.rollout_calls("FindRollouts") == 1  # a wave's end is not a status change

    # The rollout completes: StatusChanged reloads the list and the shown rollout, once each.
    thing.rollout_status = "completed"
    console.client.fire_event(
        THING, ROLLOUT_STATUS_CHANGED_EVENT, InfoTable(ROLLOUT_SHAPE, [thing.rollout_row()])
    )
    await expect(detail.get_by_test_id("rollout-status")).to_have_text("completed")
    await expect(waves.nth(1).locator('td[data-col="succeeded"]')).to_have_text("2")
    await expect(detail.get_by_test_id("rollout-source")).to_have_attribute("data-source", "ended")
    row_status = panel.get_by_test_id("rollouts-grid-row").get_by_test_id("rollouts-grid-status")
    await expect(row_status).to_have_text("completed")
    await asyncio.sleep(1.0)
    assert (thing.rollout_calls("GetRollout"), thing.rollout_calls("GetRolloutWaves")) == (3, 3)
    assert thing.rollout_calls("FindRollouts") == 2
    # One stream for both views, still serving the job view.
    assert len(streams) == 1, f"one event stream per view: {streams}"
    await expect(job_source).to_have_attribute("data-source", "events")
    tab.assert_no_script_errors()


async def test_rollouts_view_polls_only_while_the_stream_is_down(
    console: Console, tab: Tab
) -> None:
    """Without the event stream the shown rollout is read every 2 s while it is active."""
    page = await open_console(console, tab)
    await without_event_stream(page)
    panel = await open_fake_rollout(console, page)
    source = panel.get_by_test_id("rollouts-source")
    await expect(source).to_have_attribute("data-source", "polling")
    await expect(source).to_contain_text("Live events unavailable")
    detail = panel.get_by_test_id("rollout-detail")
    await panel.get_by_test_id("view-rollout").click()
    await expect(detail.get_by_test_id("rollout-source")).to_have_attribute(
        "data-source", "polling"
    )
    await expect(detail.get_by_test_id("rollout-updated")).to_have_attribute(
        "data-polls", "2", timeout=5_000
    )
    console.thing.wave1_succeeded = 1  # no event: the next poll shows it
    wave1 = detail.get_by_test_id("rollout-waves-row").nth(0)
    await expect(wave1.locator('td[data-col="succeeded"]')).to_have_text("1", timeout=5_000)
    tab.assert_no_script_errors()


async def box(locator: Any) -> dict[str, float]:
    """The bounding box of a visible element (x, y, width, height in CSS pixels)."""
    await expect(locator).to_be_visible()
    found = await locator.bounding_box()
    assert found is not None, "the element has no box"
    return dict(found)


def inside(inner: dict[str, float], outer: dict[str, float], what: str) -> None:
    """``inner`` lies within ``outer`` (1 px of rounding allowed)."""
    assert inner["x"] >= outer["x"] - 1, f"{what} starts left of its panel: {inner} {outer}"
    assert inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 1, (
        f"{what} is wider than its panel: {inner} {outer}"
    )


async def visible_headers(grid: Any) -> list[str]:
    names: list[str] = await grid.locator("thead th").evaluate_all(
        "ths => ths.filter(th => th.offsetParent !== null).map(th => "
        "(th.querySelector('.col-name') || th).textContent.trim())"
    )
    return names


async def test_result_grids_keep_what_matters_in_view(
    console: Console, tab: Tab, tmp_path: Path
) -> None:
    page = await open_console(console, tab, layout=True)
    await run_service(page, THING, "AzureIotDeviceJobFindJobs")
    grid = page.get_by_test_id("result-grid")
    await expect(grid.get_by_test_id("result-grid-row")).to_have_count(5)

    # The row action comes first, then the columns that matter; the other 19 wait.
    assert await visible_headers(grid) == ["Job", "status", "jobId", "summary", "type"]
    first_cell = page.get_by_test_id("result-grid-row").nth(0).locator("td").first
    await expect(first_cell.get_by_test_id("watch-job")).to_be_visible()
    panel = await box(page.locator("#call-panel"))
    table = await box(grid)
    inside(table, panel, "the folded job grid")
    inside(await box(page.get_by_test_id("watch-job").first), panel, "the Watch button")
    scroll = await page.get_by_test_id("result-grid-wrap").evaluate(
        "w => [w.scrollWidth, w.clientWidth]"
    )
    assert scroll[0] <= scroll[1], f"the folded grid scrolls sideways: {scroll}"
    await page.screenshot(path=str(shot_path(tmp_path, "console-grid-folded.png")))

    # "More columns" shows every column, in the wrap, which stays inside the panel.
    toggle = page.get_by_test_id("result-grid-more-columns")
    await expect(toggle).to_have_attribute("aria-expanded", "false")
    await toggle.click()
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    shown = await visible_headers(grid)
    assert len(shown) == 1 + len(JOB_SHAPE.fields), shown
    assert shown[:4] == ["Job", "status", "jobId", "summary"]
    inside(await box(page.get_by_test_id("result-grid-wrap")), panel, "the unfolded grid's frame")
    await page.screenshot(path=str(shot_path(tmp_path, "console-grid-more.png")))

    # Per-device results: deviceId, status, errorCode, errorDescription first.
    await page.get_by_test_id("watch-job").first.click()
    job = page.get_by_test_id("job-panel")
    await page.get_by_test_id(f"service-{GET_JOB_NAME}").click()  # the panel stays
    await expect(job).to_be_visible()
    await expect(job.get_by_test_id("job-status")).to_have_text("completed", timeout=15_000)
    await job.get_by_test_id("load-results").click()
    results = job.get_by_test_id("job-results")
    await expect(results.get_by_test_id("job-results-row")).to_have_count(3)
    assert (await visible_headers(results))[:4] == [
        "deviceId",
        "status",
        "errorCode",
        "errorDescription",
    ]
    inside(await box(results), await box(job), "the per-device grid")
    inside(await box(job), panel, "the job panel")
    await page.screenshot(path=str(shot_path(tmp_path, "console-grid-results.png")), full_page=True)
    tab.assert_no_script_errors()


async def test_job_panel_closes_when_another_thing_is_picked(console: Console, tab: Tab) -> None:
    page = await open_console(console, tab)
    await without_event_stream(page)
    await run_service(page, THING, "StartFakeJob")
    await page.get_by_test_id("watch-job").click()
    panel = page.get_by_test_id("job-panel")
    await expect(panel.get_by_test_id("job-id")).to_have_text(FAKE_JOB_ID)
    await expect(panel.get_by_test_id("job-succeededCount")).to_have_text("1")

    await page.get_by_test_id(f"thing-{GATEWAY}").click()
    await expect(panel).to_be_hidden()
    await expect(page.get_by_test_id("job-id")).to_have_count(0)
    polls = console.thing.get_job_calls
    await asyncio.sleep(1.5)
    assert console.thing.get_job_calls == polls, "the closed panel must stop polling GetJob"
    # Back on the Thing: no stale job panel.
    await page.get_by_test_id(f"thing-{THING}").click()
    await expect(panel).to_be_hidden()
    tab.assert_no_script_errors()


async def test_badges_tell_bound_from_device_online(
    console: Console, tab: Tab, tmp_path: Path
) -> None:
    page = await open_console(console, tab, layout=True)
    await page.get_by_test_id(f"thing-{THING}").click()
    bound = page.get_by_test_id("bound-state")
    device = page.get_by_test_id("device-state")
    await expect(bound).to_have_text("bound")
    await expect(device).to_have_text("device offline")
    await expect(device).to_have_attribute("data-connection-state", "Disconnected")
    services_panel = await box(page.locator(".services-panel"))
    inside(await box(device), services_panel, "the device badge")
    await page.screenshot(path=str(shot_path(tmp_path, "console-badges.png")))

    console.thing.connection_state = "Connected"
    await page.get_by_test_id("refresh-things").click()
    await expect(device).to_have_text("device online")
    await expect(bound).to_have_text("bound")

    # A Thing without the service (the gateway) has no device badge: only "bound".
    await page.get_by_test_id(f"thing-{GATEWAY}").click()
    await expect(bound).to_have_text("bound")
    await expect(device).to_be_hidden()

    # The agent goes away: the Thing is no longer bound.
    await console.client.stop()
    await page.get_by_test_id("refresh-things").click()
    await expect(bound).to_have_text("not bound")
    tab.assert_no_script_errors()


async def test_find_jobs_filters_as_inputs_newest_first_limited(console: Console, tab: Tab) -> None:
    page = await open_console(console, tab)
    form = await open_service(page, THING, "AzureIotDeviceJobFindJobs")
    status = form.get_by_test_id("input-status")
    assert await status.evaluate("e => e.tagName.toLowerCase()") == "select"
    options = await status.locator("option").evaluate_all("os => os.map(o => o.value)")
    assert options == ["", "scheduled", "pending", "running", "completed", "failed", "cancelled"]
    kinds = (
        await form.get_by_test_id("input-type")
        .locator("option")
        .evaluate_all("os => os.map(o => o.value)")
    )
    assert kinds == ["", "twinUpdate", "deviceMethod"]
    await expect(form.get_by_test_id("input-maxRows")).to_have_value("50")
    await status.select_option("failed")
    await form.get_by_test_id("input-maxRows").fill("3")
    await form.get_by_test_id("run").click()
    await expect(page.get_by_test_id("result-status")).to_contain_text("newest first")
    await expect(page.get_by_test_id("result-grid-row")).to_have_count(3)
    await expect(page.get_by_test_id("result-limited")).to_contain_text("maxRows 3")
    found = [inputs for name, inputs in console.thing.calls if name.endswith("FindJobs")]
    assert found == [{"status": "failed", "maxRows": 3}], "'any' type must not be sent"

    await status.select_option("")
    await form.get_by_test_id("input-maxRows").fill("10")
    await form.get_by_test_id("run").click()
    await expect(page.get_by_test_id("result-grid-row")).to_have_count(5)
    await expect(page.get_by_test_id("result-limited")).to_have_count(0)
    tab.assert_no_script_errors()


async def fill_colour(locator: Any) -> str:
    colour: str = await locator.evaluate("e => getComputedStyle(e).backgroundColor")
    return colour


async def test_failed_part_of_the_progress_bar_is_red(
    console: Console, tab: Tab, tmp_path: Path
) -> None:
    page = await open_console(console, tab, layout=True)
    await without_event_stream(page)  # the fake job advances one step per GetJob poll

    # A failed job with 0 devices: a red bar, never a green one.
    await run_service(page, THING, "StartFailedJob")
    await page.get_by_test_id("watch-job").click()
    panel = page.get_by_test_id("job-panel")
    await expect(panel.get_by_test_id("job-status")).to_have_text("failed")
    bar = panel.get_by_test_id("job-progress")
    await expect(bar).to_have_attribute("data-outcome", "failed")
    whole = await box(bar)
    assert (await panel.get_by_test_id("job-bar-ok").bounding_box() or {"width": 0})[
        "width"
    ] == 0, "no green part"
    red = await box(panel.get_by_test_id("job-bar-fail"))
    assert red["width"] >= whole["width"] - 3, (red, whole)
    assert await fill_colour(panel.get_by_test_id("job-bar-fail")) == RED
    await expect(panel.get_by_test_id("job-summary")).to_have_text("failed: no device")
    await expect(panel.get_by_test_id("job-summary")).to_have_class(re.compile(r"\bbad\b"))
    await page.screenshot(path=str(shot_path(tmp_path, "console-job-failed.png")))

    # Completed with 1 of 3 devices failed: a third of the bar red, two thirds green.
    await run_service(page, THING, "StartFakeJob")
    await page.get_by_test_id("watch-job").click()
    await expect(panel.get_by_test_id("job-status")).to_have_text("completed", timeout=15_000)
    await expect(bar).to_have_attribute("data-outcome", "partial")
    await expect(panel.get_by_test_id("job-summary")).to_have_text(
        "completed: 2 succeeded, 1 failed"
    )
    whole = await box(bar)
    green = await box(panel.get_by_test_id("job-bar-ok"))
    red = await box(panel.get_by_test_id("job-bar-fail"))
    assert abs(red["width"] - whole["width"] / 3) <= 3, (red, whole)
    assert abs(green["width"] - 2 * whole["width"] / 3) <= 3, (green, whole)
    assert red["x"] >= green["x"] + green["width"] - 1, "red follows green"
    assert await fill_colour(panel.get_by_test_id("job-bar-fail")) == RED
    assert await fill_colour(panel.get_by_test_id("job-bar-ok")) == GREEN
    await page.screenshot(path=str(shot_path(tmp_path, "console-job-partial.png")))
    tab.assert_no_script_errors()


# -- the full stack: console → stand-in → agent → IoT Hub emulator → fleet ------------------


async def test_full_stack_twin_job_watched_to_completion(tab: Tab, tmp_path: Path) -> None:
    devices = 12
    targeted = ["device-0002", "device-0003", "device-0005", "device-0007", "device-0011"]
    async with AgentChain(
        tmp_path, devices=devices, mqtt_port=0, tier="S1", bind=["device-0001"], call_timeout=30.0
    ) as chain:
        hub, standin = chain.hub, chain.standin
        page = tab.page
        await page.goto(f"http://127.0.0.1:{standin.port}/#appKey={CHAIN_APP_KEY}")
        await expect(page.get_by_test_id("thing-device-0001")).to_have_attribute(
            "data-connected", "true"
        )
        form = await open_service(page, "AzureIotHub", "AzureIotDeviceJobScheduleTwinUpdateJob")
        await expect(form.get_by_test_id("input-startTime")).to_have_attribute(
            "type", "datetime-local"
        )
        await expect(form.get_by_test_id("input-maxExecutionTimeInSeconds")).to_have_attribute(
            "step", "1"
        )
        await expect(form.get_by_test_id("field-patch")).to_have_attribute("data-required", "true")
        patch = '{"properties": {"desired": {"telemetryInterval": 30}}, "tags": {"site": "north"}}'
        await form.get_by_test_id("input-patch").fill(patch)
        in_list = ", ".join(f"'{d}'" for d in targeted)
        await form.get_by_test_id("input-queryCondition").fill(f"deviceId IN [{in_list}]")
        # Start a few seconds from now (the DATETIME input is UTC), so the watch sees the job
        # move: scheduled with no device yet, then completed with its counters.
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=START_DELAY_S)
        await form.get_by_test_id("input-startTime").fill(start.strftime("%Y-%m-%dT%H:%M:%S"))
        await form.get_by_test_id("run").click()
        await expect(page.get_by_test_id("result-status")).to_contain_text("HTTP 200")
        await expect(cell(page, "result-grid", "status")).to_have_text("scheduled")
        await expect(cell(page, "result-grid", "startTime")).to_have_text(
            start.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        )
        job_id = await page.get_by_test_id("watch-job").get_attribute("data-job-id")
        assert job_id
        get_jobs = count_get_job_requests(page)
        await page.get_by_test_id("watch-job").click()

        panel = page.get_by_test_id("job-panel")
        await expect(panel.get_by_test_id("job-source")).to_have_attribute("data-source", "events")
        await expect(panel.get_by_test_id("job-status")).to_have_text("scheduled")
        await expect(panel.get_by_test_id("job-progress-text")).to_have_text(
            "Waiting for the job to start…"
        )
        await expect(panel.get_by_test_id("job-status")).to_have_text("completed", timeout=30_000)
        # Progress came from the agent's pushed events: one GetJob read, then events only.
        updated = panel.get_by_test_id("job-updated")
        events = int(await updated.get_attribute("data-events") or 0)
        assert events >= 1, "the job view never took an event: the counters were not pushed"
        assert await updated.get_attribute("data-polls") == "1"
        assert len(get_jobs) == 1, f"the page polled GetJob: {get_jobs}"
        await expect(panel.get_by_test_id("job-deviceCount")).to_have_text(str(len(targeted)))
        await expect(panel.get_by_test_id("job-succeededCount")).to_have_text(str(len(targeted)))
        await expect(panel.get_by_test_id("job-failedCount")).to_have_text("0")
        await expect(panel.get_by_test_id("job-progress-text")).to_contain_text(
            f"{len(targeted)} of {len(targeted)} devices processed (100 %)"
        )

        await panel.get_by_test_id("load-results").click()
        rows = panel.get_by_test_id("job-results").get_by_test_id("job-results-row")
        await expect(rows).to_have_count(len(targeted))
        shown = sorted(
            await panel.get_by_test_id("job-results")
            .locator('td[data-col="deviceId"]')
            .all_inner_texts()
        )
        assert shown == targeted
        statuses = set(
            await panel.get_by_test_id("job-results")
            .locator('td[data-col="status"]')
            .all_inner_texts()
        )
        assert statuses == {"completed"}
        # The patch reached the hub: targeted twins changed, the others did not.
        assert hub.registry.get_twin("device-0005")["tags"] == {"site": "north"}
        desired = hub.registry.get_twin("device-0005")["properties"]["desired"]
        assert desired["telemetryInterval"] == 30
        assert hub.registry.get_twin("device-0004").get("tags", {}) == {}
        # The real AzureIotDeviceGetConnectionState: device-0001 is bound and online. Another
        # Thing closes the job panel.
        await page.get_by_test_id("thing-device-0001").click()
        await expect(page.get_by_test_id("bound-state")).to_have_text("bound")
        await expect(page.get_by_test_id("device-state")).to_have_text("device online")
        await expect(panel).to_be_hidden()
        await page.screenshot(path=str(tmp_path / "console-full-stack.png"), full_page=True)
        tab.assert_no_script_errors()


# -- the rollouts view (issue 11) -----------------------------------------------------------

ROLLOUT_SERVICES = "AzureIotDeviceJob{}Rollout"


def count_requests(page: Any, service: str) -> list[str]:
    """The requests of one service the page makes from now on."""
    sent: list[str] = []
    page.on(
        "request",
        lambda request: sent.append(request.url) if request.url.endswith(f"/{service}") else None,
    )
    return sent


async def start_rollout(chain: AgentChain, rollout_id: str, devices: int, **plan: Any) -> None:
    ids = [f"device-{n:04d}" for n in range(1, devices + 1)]
    await chain.rows(
        "AzureIotHub",
        ROLLOUT_SERVICES.format("Start"),
        {"rolloutId": rollout_id, "type": "twinUpdate", "devices": ids,
         "patch": {"tags": {"ring": rollout_id}}, "waveSize": 2, **plan},
    )  # fmt: skip


async def wait_rollout(chain: AgentChain, rollout_id: str, done: Any, timeout: float = 30) -> None:
    """Until ``done(rollout row, wave rows)``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        (row,) = await chain.rows(
            "AzureIotHub", ROLLOUT_SERVICES.format("Get"), {"rolloutId": rollout_id}
        )
        waves = await chain.rows(
            "AzureIotHub", "AzureIotDeviceJobGetRolloutWaves", {"rolloutId": rollout_id}
        )
        if done(row, waves):
            return
        assert loop.time() < deadline, f"rollout {rollout_id}: {row} {waves}"
        await asyncio.sleep(0.2)


async def test_rollouts_view_lists_shows_waves_and_pauses_resumes_cancels(
    tab: Tab, tmp_path: Path
) -> None:
    async with AgentChain(
        tmp_path, devices=6, mqtt_port=0, tier="S1", bind=["device-0001"], call_timeout=30.0
    ) as chain:
        await start_rollout(chain, "ro-done", 4)
        await wait_rollout(chain, "ro-done", lambda row, _: row["status"] == "completed")
        # Held between waves 1 and 2 by a long pause: active, with one wave judged.
        await start_rollout(chain, "ro-held", 6, pauseBetweenWavesSeconds=600)
        await wait_rollout(
            chain, "ro-held", lambda _, waves: waves and waves[0]["status"] == "judged"
        )
        page = tab.page
        await page.set_viewport_size(LAYOUT_VIEWPORT)
        await page.goto(f"http://127.0.0.1:{chain.standin.port}/#appKey={CHAIN_APP_KEY}")
        await page.get_by_test_id("thing-AzureIotHub").click()
        opener = page.get_by_test_id("open-rollouts")
        await opener.click()
        panel = page.get_by_test_id("rollouts-panel")
        rows = panel.get_by_test_id("rollouts-grid-row")
        await expect(rows).to_have_count(2)
        # The list (FindRollouts): newest first, status, devices done and wave.
        assert await rows.evaluate_all("rs => rs.map(r => r.dataset.rolloutId)") == [
            "ro-held",
            "ro-done",
        ]
        await expect(rows.nth(1).get_by_test_id("rollouts-grid-status")).to_have_text("completed")
        await expect(rows.nth(1).locator('td[data-col="devices"]')).to_contain_text(
            "4 ok · 0 failed · 0 pending of 4"
        )
        await expect(rows.nth(0).locator('td[data-col="wave"]')).to_have_text("1 of 3")
        call_panel = await box(page.locator("#call-panel"))
        inside(await box(panel.get_by_test_id("rollouts-grid")), call_panel, "the rollouts grid")
        scroll = await panel.get_by_test_id("rollouts-grid-wrap").evaluate(
            "w => [w.scrollWidth, w.clientWidth]"
        )
        assert scroll[0] <= scroll[1], f"the rollouts grid scrolls sideways: {scroll}"

        # A finished rollout: its waves with their hub jobs, no buttons, no more reading.
        detail = panel.get_by_test_id("rollout-detail")
        await rows.nth(1).get_by_test_id("view-rollout").click()
        await expect(detail.get_by_test_id("rollout-status")).to_have_text("completed")
        await expect(detail.get_by_test_id("rollout-succeededCount")).to_have_text("4")
        waves = detail.get_by_test_id("rollout-waves-row")
        await expect(waves).to_have_count(2)
        jobs = await detail.locator('td[data-col="jobIds"]').all_inner_texts()
        assert jobs == ["ro-done-w1-a1-p1", "ro-done-w2-a1-p1"]
        assert await detail.locator('td[data-col="succeeded"]').all_inner_texts() == ["2", "2"]
        await expect(detail.get_by_test_id("rollout-source")).to_have_attribute(
            "data-source", "ended"
        )
        for action in ("pause", "resume", "cancel"):
            await expect(detail.get_by_test_id(f"rollout-{action}")).to_be_disabled()
        await expect(waves.nth(0).get_by_test_id("wave-bar")).to_have_attribute(
            "data-outcome", "ok"
        )

        # The held rollout: wave 1 judged, waves 2 and 3 waiting; read again only at its events
        # (the agent's AzureIotDeviceRollout* events through the live stream), never polled.
        reads = count_requests(page, "AzureIotDeviceJobGetRolloutWaves")
        await rows.nth(0).get_by_test_id("view-rollout").click()
        await expect(detail.get_by_test_id("rollout-id")).to_have_text("ro-held")
        # Between waves it waits for its next slot: queued (running while a wave runs).
        await expect(detail.get_by_test_id("rollout-status")).to_have_text(
            re.compile(r"^(queued|running)$")
        )
        await expect(waves).to_have_count(3)
        statuses = await detail.get_by_test_id("wave-status").all_inner_texts()
        assert statuses == ["judged", "waiting", "waiting"]
        assert await detail.locator('td[data-col="pending"]').all_inner_texts() == ["0", "2", "2"]
        await expect(detail.get_by_test_id("rollout-source")).to_have_attribute(
            "data-source", "events"
        )
        held_reads = len(reads)
        await asyncio.sleep(2.5)  # held by its pause: no event, so no read
        assert len(reads) == held_reads, "the view polled a rollout that sends its events"
        inside(await box(detail.get_by_test_id("rollout-waves")), call_panel, "the waves grid")
        await page.screenshot(path=str(shot_path(tmp_path, "console-rollout.png")), full_page=True)

        # Pause, resume, cancel: each calls its service and shows the status it answered.
        pause = detail.get_by_test_id("rollout-pause")
        await expect(pause).to_be_enabled()
        await expect(detail.get_by_test_id("rollout-resume")).to_be_disabled()
        await pause.click()
        message = detail.get_by_test_id("rollout-action-message")
        await expect(message).to_contain_text("Pause: the rollout is now")
        await expect(detail.get_by_test_id("rollout-status")).to_have_text("paused")
        await wait_rollout(chain, "ro-held", lambda row, _: row["status"] == "paused")
        await expect(pause).to_be_disabled()
        resume = detail.get_by_test_id("rollout-resume")
        await expect(resume).to_be_enabled()
        await resume.click()
        await expect(message).to_contain_text("Resume: the rollout is now")
        await expect(detail.get_by_test_id("rollout-status")).not_to_have_text("paused")
        (row,) = await chain.rows("AzureIotHub", ROLLOUT_SERVICES.format("Get"),
                                  {"rolloutId": "ro-held"})  # fmt: skip
        assert row["status"] in ("running", "queued"), row
        await detail.get_by_test_id("rollout-cancel").click()
        await expect(message).to_contain_text("Cancel: the rollout is now")
        await expect(detail.get_by_test_id("rollout-status")).to_have_text("cancelled")
        await wait_rollout(chain, "ro-held", lambda row, _: row["status"] == "cancelled")
        await expect(rows.nth(0).get_by_test_id("rollouts-grid-status")).to_have_text("cancelled")
        await expect(detail.get_by_test_id("rollout-source")).to_have_attribute(
            "data-source", "ended"
        )
        # Ended: the view stops reading.
        settled = len(reads)
        await asyncio.sleep(2.5)
        assert len(reads) == settled, "the view kept reading an ended rollout"

        # Another Thing (no rollout services): the view closes and its button goes.
        await page.get_by_test_id("thing-device-0001").click()
        await expect(panel).to_be_hidden()
        await expect(opener).to_be_hidden()
        tab.assert_no_script_errors()


# -- the routes alone ----------------------------------------------------------------------


async def test_add_console_routes_serves_page_and_assets_only() -> None:
    app = web.Application()
    add_console_routes(app)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            page = console_asset("console.html")
            for path in CONSOLE_PATHS:
                async with http.get(path) as reply:
                    assert reply.status == 200, path
                    assert reply.content_type == "text/html"
                    assert await reply.read() == page
                    assert "default-src 'self'" in reply.headers["Content-Security-Policy"]
            for name, content_type in CONSOLE_ASSETS.items():
                async with http.get(f"{ASSET_PREFIX}/{name}") as reply:
                    assert reply.status == 200, name
                    assert reply.content_type == content_type
                    assert await reply.read() == console_asset(name)
            for path in ("/Thingworx/static/console.py", "/Thingworx/static/..%2Fconsole.py"):
                async with http.get(path) as reply:
                    assert reply.status == 404, path
    finally:
        await runner.cleanup()
    with pytest.raises(KeyError):
        console_asset("../console.py")


def test_page_references_only_same_origin_files() -> None:
    html = console_asset("console.html").decode()
    for ref in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert ref.startswith(("/Thingworx/static/", "#", "data:")), ref
    assert "http://" not in html and "https://" not in html
    script = console_asset("console.js").decode()
    assert "http://" not in script and "https://" not in script
    assert "innerHTML" not in script
