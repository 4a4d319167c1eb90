"""The REST API judged by the unmodified azure-iot-hub SDK over real TLS on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from azure.iot.hub.models import CloudToDeviceMethod, JobRequest, QuerySpecification, Twin
from azure.iot.hub.models import TwinProperties as Props
from msrest.exceptions import HttpOperationError

from emulator.iothub.sas import make_token
from iothub_query import parse_query, run_query
from tests.emulator.iothub.rest_harness import Harness, running_api

KEY = base64.b64encode(b"k" * 32).decode()


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_api(tmp_path) as harness:
        yield harness


def _error(exc: HttpOperationError) -> tuple[int, str, dict[str, Any]]:
    response = exc.response
    return response.status_code, response.headers.get("iothub-errorcode", ""), response.json()


async def test_device_registry_round_trip(hub: Harness) -> None:
    rm = hub.registry_manager()
    created = await asyncio.to_thread(rm.create_device_with_sas, "dev-1", KEY, KEY, "enabled")
    assert created.device_id == "dev-1"
    assert created.authentication.symmetric_key.primary_key == KEY
    assert created.authentication.type == "sas"
    got = await asyncio.to_thread(rm.get_device, "dev-1")
    assert got.etag == created.etag and got.status == "enabled"
    assert got.connection_state == "Disconnected"
    devices = await asyncio.to_thread(rm.get_devices, 10)
    assert [d.device_id for d in devices] == ["dev-1"]
    # a second create of the same id is refused with IoT Hub's code
    with pytest.raises(HttpOperationError) as info:
        await asyncio.to_thread(rm.create_device_with_sas, "dev-1", KEY, KEY, "enabled")
    assert _error(info.value)[:2] == (409, "DeviceAlreadyExists")
    # update with the etag, then disable: the device's keys stop working for the MQTT side
    updated = await asyncio.to_thread(
        rm.update_device_with_sas, "dev-1", got.etag, KEY, KEY, "disabled"
    )
    assert updated.status == "disabled" and updated.etag != got.etag
    assert hub.registry.device_keys("dev-1") is None
    with pytest.raises(HttpOperationError) as info:
        await asyncio.to_thread(rm.update_device_with_sas, "dev-1", got.etag, KEY, KEY, "enabled")
    assert _error(info.value)[:2] == (412, "PreconditionFailed")
    await asyncio.to_thread(rm.delete_device, "dev-1")
    with pytest.raises(HttpOperationError) as info:
        await asyncio.to_thread(rm.get_device, "dev-1")
    status, code, body = _error(info.value)
    assert (status, code) == (404, "DeviceNotFound")
    assert body["Message"].startswith("ErrorCode:DeviceNotFound;")
    assert body["ExceptionMessage"].startswith("Tracking ID:")


async def test_keys_are_generated_when_absent(hub: Harness) -> None:
    rm = hub.registry_manager()
    created = await asyncio.to_thread(rm.create_device_with_sas, "gen", None, None, "enabled")
    primary = created.authentication.symmetric_key.primary_key
    assert len(base64.b64decode(primary)) == 32
    assert hub.registry.device_keys("gen") == (
        primary,
        created.authentication.symmetric_key.secondary_key,
    )


async def test_twin_get_patch_replace_and_etags(hub: Harness) -> None:
    rm = hub.registry_manager()
    await asyncio.to_thread(rm.create_device_with_sas, "tw", KEY, KEY, "enabled")
    twin = await asyncio.to_thread(rm.get_twin, "tw")
    assert twin.device_id == "tw" and twin.authentication_type == "sas"
    assert twin.properties.desired == {"$version": 1}
    assert twin.properties.reported == {"$version": 1}
    patch = Twin(tags={"site": "a", "floor": {"n": 1}}, properties=Props(desired={"rate": 5}))
    patched = await asyncio.to_thread(rm.update_twin, "tw", patch, twin.etag)
    assert patched.tags == {"site": "a", "floor": {"n": 1}}
    assert patched.properties.desired == {"rate": 5, "$version": 2}
    assert patched.etag != twin.etag and patched.version == twin.version + 1
    assert hub.link.pushes == [("tw", {"rate": 5, "$version": 2})]
    # a stale etag is refused; "*" always passes
    with pytest.raises(HttpOperationError) as info:
        await asyncio.to_thread(rm.update_twin, "tw", Twin(tags={"x": 1}), twin.etag)
    status, code, body = _error(info.value)
    assert (status, code) == (412, "PreconditionFailed")
    assert body["Message"].startswith("ErrorCode:PreconditionFailed;")
    merged = await asyncio.to_thread(
        rm.update_twin, "tw", Twin(tags={"floor": {"n": None, "m": 2}}), "*"
    )
    assert merged.tags == {"site": "a", "floor": {"m": 2}}
    # reported properties come from the device, through the TwinStore side
    assert hub.registry.patch_reported("tw", {"fw": "1.0"}) == 2
    current = await asyncio.to_thread(rm.get_twin, "tw")
    assert current.etag != merged.etag  # a reported change moves the etag too
    # replace: tags and desired set wholesale, reported untouched
    replaced = await asyncio.to_thread(
        rm.replace_twin,
        "tw",
        Twin(tags={"only": True}, properties=Props(desired={"mode": "eco"})),
        current.etag,
    )
    assert replaced.tags == {"only": True}
    assert replaced.properties.desired == {"mode": "eco", "$version": 3}
    assert replaced.properties.reported == {"fw": "1.0", "$version": 2}
    assert hub.link.pushes[-1] == ("tw", {"rate": None, "mode": "eco", "$version": 3})
    with pytest.raises(HttpOperationError) as info:
        await asyncio.to_thread(rm.get_twin, "nope")
    assert _error(info.value)[:2] == (404, "DeviceNotFound")


async def test_direct_method_answers_and_errors(hub: Harness) -> None:
    rm = hub.registry_manager()
    for name in ("on", "off", "mute"):
        await asyncio.to_thread(rm.create_device_with_sas, name, KEY, KEY, "enabled")
    hub.link.ready.add("on")
    hub.link.silent.add("mute")
    result = await asyncio.to_thread(
        rm.invoke_device_method,
        "on",
        CloudToDeviceMethod(
            method_name="reboot", payload={"delay": 1}, response_timeout_in_seconds=7
        ),
    )
    assert result.status == 201
    assert result.payload == {"method": "reboot", "echo": {"delay": 1}}
    assert hub.link.invocations[-1] == ("on", "reboot", {"delay": 1}, 7.0, 0.0)

    with pytest.raises(HttpOperationError) as info:
        await asyncio.to_thread(
            rm.invoke_device_method,
            "off",
            CloudToDeviceMethod(method_name="reboot", connect_timeout_in_seconds=10),
        )
    status, code, body = _error(info.value)
    assert (status, code) == (404, "DeviceNotOnline")
    inner = json.loads(body["Message"])
    assert inner["errorCode"] == 404103 and inner["info"] == {"timeout": "00:00:10"}

    with pytest.raises(HttpOperationError) as info:
        await asyncio.to_thread(
            rm.invoke_device_method, "mute", CloudToDeviceMethod(method_name="reboot")
        )
    status, code, body = _error(info.value)
    assert (status, code) == (504, "GatewayTimeout")
    assert json.loads(body["Message"])["errorCode"] == 504101

    for bad in (
        CloudToDeviceMethod(method_name="x", response_timeout_in_seconds=4),
        CloudToDeviceMethod(method_name="x", response_timeout_in_seconds=301),
        CloudToDeviceMethod(method_name="x", connect_timeout_in_seconds=-1),
        CloudToDeviceMethod(method_name="x", connect_timeout_in_seconds=301),
    ):
        with pytest.raises(HttpOperationError) as info:
            await asyncio.to_thread(rm.invoke_device_method, "on", bad)
        assert _error(info.value)[:2] == (400, "ArgumentInvalid")

    with pytest.raises(HttpOperationError) as info:
        await asyncio.to_thread(
            rm.invoke_device_method, "ghost", CloudToDeviceMethod(method_name="x")
        )
    assert _error(info.value)[:2] == (404, "DeviceNotFound")


@pytest.mark.parametrize("failure", ["bad key", "unknown policy", "expired", "other host"])
async def test_sas_failures_answer_401(hub: Harness, failure: str) -> None:
    good_key = hub.registry.owner_key()
    if failure == "bad key":
        cs = f"HostName={hub.host}:{hub.port};SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}"
        rm = hub.registry_manager(cs)
        call = lambda: rm.get_devices(1)  # noqa: E731
    elif failure == "unknown policy":
        cs = (
            f"HostName={hub.host}:{hub.port};SharedAccessKeyName=service;SharedAccessKey={good_key}"
        )
        rm = hub.registry_manager(cs)
        call = lambda: rm.get_devices(1)  # noqa: E731
    else:
        rm = hub.registry_manager()
        resource = hub.host if failure == "expired" else "elsewhere.example"
        expiry = int(time.time()) - 10 if failure == "expired" else int(time.time()) + 600
        token = make_token(resource, good_key, expiry, "iothubowner")
        client = rm.protocol._client
        url = client.format_url("/devices") + "?api-version=2021-04-12"

        def call() -> Any:
            request = client.get(url, headers={"Authorization": token})
            return client.send(request)

        response = await asyncio.to_thread(call)
        assert response.status_code == 401
        assert response.headers["iothub-errorcode"] == "IotHubUnauthorizedAccess"
        assert response.json()["Message"].startswith("ErrorCode:IotHubUnauthorizedAccess;")
        return
    with pytest.raises(HttpOperationError) as info:
        await asyncio.to_thread(call)
    status, code, body = _error(info.value)
    assert (status, code) == (401, "IotHubUnauthorizedAccess")
    assert body["Message"].startswith("ErrorCode:IotHubUnauthorizedAccess;")


async def test_unknown_route_and_bad_json(hub: Harness) -> None:
    rm = hub.registry_manager()
    client = rm.protocol._client

    def raw(method: str, path: str, body: bytes | None = None) -> Any:
        url = client.format_url(path) + "?api-version=2021-04-12"
        request = getattr(client, method)(url, headers={"Content-Type": "application/json"})
        if body is not None:
            request.data = body
        return client.send(request)

    response = await asyncio.to_thread(raw, "get", "/nowhere/at/all")
    assert response.status_code == 404
    assert response.headers["iothub-errorcode"] == "GenericNotFound"
    assert response.json()["Message"].startswith("ErrorCode:GenericNotFound;")
    response = await asyncio.to_thread(raw, "post", "/devices/query", b"{not json")
    assert response.status_code == 400
    assert response.json()["Message"].startswith("ErrorCode:ArgumentInvalid;")
    response = await asyncio.to_thread(raw, "put", "/devices/x", b"[1, 2]")
    assert response.status_code == 400


async def test_jobs_create_get_cancel_and_list_paging(hub: Harness) -> None:
    jm = hub.job_manager()
    for n in range(7):
        request = JobRequest(
            job_id=f"job-{n}",
            type="scheduleDeviceMethod" if n % 2 == 0 else "scheduleUpdateTwin",
            cloud_to_device_method=CloudToDeviceMethod(method_name="ping"),
            query_condition="deviceId = 'a'",
            max_execution_time_in_seconds=60,
        )
        created = await asyncio.to_thread(jm.create_scheduled_job, f"job-{n}", request)
        assert created.job_id == f"job-{n}" and created.status == "queued"
    got = await asyncio.to_thread(jm.get_scheduled_job, "job-3")
    assert got.type == "scheduleUpdateTwin"
    cancelled = await asyncio.to_thread(jm.cancel_scheduled_job, "job-0")
    assert cancelled.status == "cancelled"
    with pytest.raises(HttpOperationError) as info:
        await asyncio.to_thread(jm.cancel_scheduled_job, "job-0")
    assert _error(info.value)[:2] == (405, "OperationNotAllowedInCurrentState")
    with pytest.raises(HttpOperationError) as info:
        await asyncio.to_thread(jm.get_scheduled_job, "missing")
    assert _error(info.value)[:2] == (404, "JobNotFound")

    client = jm.protocol._client

    def list_page(params: dict[str, str], token: str | None) -> tuple[list[Any], Any]:
        headers = {"x-ms-max-item-count": "3"}
        if token:
            headers["x-ms-continuation"] = token
        url = client.format_url("/jobs/v2/query")
        request = client.get(url, {"api-version": "2021-04-12", **params}, headers)
        response = client.send(request)
        assert response.status_code == 200
        return response.json(), response.headers

    async def list_all(params: dict[str, str]) -> tuple[list[str], int]:
        ids: list[str] = []
        pages = 0
        token = None
        while True:
            items, headers = await asyncio.to_thread(list_page, params, token)
            assert headers["x-ms-item-type"] == "jobResponse"
            pages += 1
            ids += [item["jobId"] for item in items]
            token = headers.get("x-ms-continuation")
            if not token:
                return ids, pages

    assert await list_all({}) == ([f"job-{n}" for n in range(7)], 3)
    assert await list_all({"jobType": "scheduleUpdateTwin"}) == (["job-1", "job-3", "job-5"], 1)
    assert await list_all({"jobStatus": "cancelled"}) == (["job-0"], 1)
    assert await list_all({"jobType": "scheduleDeviceMethod", "jobStatus": "queued"}) == (
        ["job-2", "job-4", "job-6"],
        1,
    )


async def test_device_query_pages_and_device_job_rows(hub: Harness) -> None:
    rm = hub.registry_manager()
    for n in range(25):
        hub.registry.create_device(f"d-{n:02d}")
    hub.registry.apply_job_patch([f"d-{n:02d}" for n in range(0, 25, 5)], {"site": "x"}, None)
    hub.jobs.rows = [
        {
            "deviceId": f"d-{n:02d}",
            "jobId": "j1",
            "jobType": "scheduleDeviceMethod",
            "status": "completed",
            "startTimeUtc": "2030-01-01T00:00:00Z",
            "endTimeUtc": "2030-01-01T00:00:01Z",
            "createdDateTimeUtc": "2030-01-01T00:00:00Z",
            "lastUpdatedDateTimeUtc": "2030-01-01T00:00:01Z",
            "outcome": {"deviceMethodResponse": {"status": 200, "payload": {"n": n}}},
        }
        for n in range(12)
    ]

    async def run(query: str, size: int) -> tuple[list[Any], list[str | None], int]:
        items: list[Any] = []
        types: list[str | None] = []
        token = None
        pages = 0
        while True:
            result = await asyncio.to_thread(
                rm.query_iot_hub, QuerySpecification(query=query), token, size
            )
            pages += 1
            items += result.items
            types.append(result.type)
            token = result.continuation_token
            if not token:
                return items, types, pages

    twins, types, pages = await run("SELECT * FROM devices", 10)
    assert [t.device_id for t in twins] == [f"d-{n:02d}" for n in range(25)]
    assert pages == 3 and set(types) == {"twin"}
    tagged, _, pages = await run("SELECT * FROM devices WHERE tags.site = 'x'", 2)
    assert [t.device_id for t in tagged] == ["d-00", "d-05", "d-10", "d-15", "d-20"]
    assert pages == 3
    rows, types, pages = await run("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'j1'", 5)
    assert pages == 3 and set(types) == {"deviceJob"}
    assert [r.device_id for r in rows] == [f"d-{n:02d}" for n in range(12)]
    assert rows[3].status == "completed"
    extra = rows[3].additional_properties
    assert extra["jobId"] == "j1" and extra["jobType"] == "scheduleDeviceMethod"
    assert extra["outcome"] == {"deviceMethodResponse": {"status": 200, "payload": {"n": 3}}}
    counted, types, _ = await run("SELECT COUNT() AS n FROM devices", 100)
    assert types == ["raw"]
    assert counted[0].additional_properties == {"n": 25}
    modules, _, _ = await run("SELECT * FROM devices.modules", 100)
    assert modules == []
    with pytest.raises(HttpOperationError) as info:
        await asyncio.to_thread(rm.query_iot_hub, QuerySpecification(query="SELEKT nothing"))
    status, _, body = _error(info.value)
    assert status == 400 and body["Message"].startswith("ErrorCode:")


def _job_row(job_id: str, n: int, status: str) -> dict[str, Any]:
    return {
        "deviceId": f"d-{n:05d}",
        "jobId": job_id,
        "jobType": "scheduleUpdateTwin",
        "status": status,
        "startTimeUtc": "2030-01-01T00:00:00Z",
        "endTimeUtc": "2030-01-01T00:00:01Z",
        "createdDateTimeUtc": "2030-01-01T00:00:00Z",
        "lastUpdatedDateTimeUtc": "2030-01-01T00:00:01Z",
        "outcome": {},
    }


async def test_device_job_pages_cost_their_page_not_the_table(hub: Harness) -> None:
    # Issue 12: the first page of a 100,000-row job's results was evaluated over every row of
    # devices.jobs before it answered (beyond the platform's 30 s on a loaded machine). A page
    # reads the rows after the last one returned, a page and one more, of the pinned job only.
    rm = hub.registry_manager()
    hub.jobs.rows = [
        _job_row(job, n, "failed" if n % 7 == 0 else "completed")
        for job in ("j0", "j1", "j2")
        for n in range(4000)
    ]

    async def page(query: str, token: str | None, size: int) -> tuple[list[Any], str | None]:
        result = await asyncio.to_thread(
            rm.query_iot_hub, QuerySpecification(query=query), token, size
        )
        return result.items, result.continuation_token

    query = "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'j1'"
    items, token = await page(query, None, 100)
    assert len(items) == 100 and token
    assert hub.jobs.rows_read <= 101  # was 12,000: the whole table for one page
    hub.jobs.rows_read = 0
    ids = [r.device_id for r in items]
    while token:
        items, token = await page(query, token, 1000)
        ids += [r.device_id for r in items]
        assert {r.additional_properties["jobId"] for r in items} <= {"j1"}
    assert ids == [f"d-{n:05d}" for n in range(4000)]  # each row once, in order, no token after
    assert hub.jobs.rows_read <= 4000 + 4  # every page read its page and one more, no more

    failed = (
        "SELECT * FROM devices.jobs WHERE devices.jobs.status = 'failed' AND "
        "devices.jobs.jobId = 'j2'"
    )
    ids, token = [], None
    while True:
        items, token = await page(failed, token, 100)
        ids += [r.device_id for r in items]
        if not token:
            break
    assert ids == [f"d-{n:05d}" for n in range(0, 4000, 7)]
    everything, token = await page("SELECT * FROM devices.jobs", None, 1000)
    assert [r.additional_properties["jobId"] for r in everything] == ["j0"] * 1000 and token


async def test_unknown_continuation_token_is_refused(hub: Harness) -> None:
    rm = hub.registry_manager()
    with pytest.raises(HttpOperationError) as info:
        await asyncio.to_thread(
            rm.query_iot_hub, QuerySpecification(query="SELECT * FROM devices"), "bogus", 5
        )
    assert _error(info.value)[:2] == (400, "ArgumentInvalid")


async def test_counts_and_projections_read_what_whole_twins_give(hub: Harness) -> None:
    """Counts and projections build only the twin members the query reads, 5,000 twins between
    turns of the loop: through the SDK they must answer what the query gives over whole twins."""
    ids = [f"d-{n:05d}" for n in range(11_000)]
    hub.registry.create_devices(ids)
    hub.registry.apply_job_patch(ids[::7], {"site": "x", "deep": {"n": 1}}, {"rate": 5})
    hub.registry.patch_reported("d-00003", {"fw": "2"})
    rm = hub.registry_manager()

    def run(text: str) -> list[Any]:
        items: list[Any] = []
        token = None
        while True:
            result = rm.query_iot_hub(QuerySpecification(query=text), token, 1000)
            items += [
                {**item.additional_properties, **item.serialize(keep_readonly=True)}
                for item in result.items
            ]
            token = result.continuation_token
            if not token:
                return items

    for text in (
        "SELECT deviceId FROM devices WHERE IS_DEFINED(deviceId)",
        "SELECT deviceId, tags FROM devices WHERE tags.deep.n = 1 AND properties.desired.rate = 5",
        "SELECT COUNT() AS n FROM devices",
        "SELECT COUNT() FROM devices WHERE tags.site = 'x' OR IS_DEFINED(properties.reported.fw)",
        "SELECT deviceId, version FROM devices WHERE NOT (STATUS = 'enabled')",
    ):
        expected = run_query(parse_query(text), hub.registry.iter_twin_docs())
        assert await asyncio.to_thread(run, text) == expected, text
    assert await asyncio.to_thread(run, "SELECT COUNT() AS n FROM devices") == [{"n": 11_000}]
