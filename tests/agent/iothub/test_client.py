"""IotHubClient against a scripted HTTPS server on loopback (retry policy, error translation,
deadlines, CA trust) and against the real IoT Hub emulator (the SDK's own wire format)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
import trustme
from aiohttp import web
from pydantic import SecretStr

from agent.iothub import (
    CallTooLarge,
    HubRequestError,
    HubTimeout,
    HubUnreachable,
    IotHubClient,
    IotHubError,
)
from agent.settings import IotHubSettings, JobSettings
from tests.support.scripted_hub import JOB, KEY, Answer, Scripted, error_answer


async def test_read_retried_on_503_then_answered(scripted: Scripted) -> None:
    scripted.answers["GET /jobs/v2/j1"] = [
        error_answer(503, "ServiceUnavailable", "busy"),
        error_answer(503, "ServiceUnavailable", "busy"),
        web.json_response(JOB),
    ]
    client = scripted.client()
    job = await client.get_job("j1")
    assert job.job_id == "j1" and scripted.hits["GET /jobs/v2/j1"] == 3
    await client.close()


async def test_create_not_retried_on_429004_or_500(scripted: Scripted) -> None:
    scripted.answers["PUT /jobs/v2/j1"] = [
        error_answer(
            429, "ThrottlingMaxActiveJobCountExceeded", "Maximum number of active jobs (1)"
        )
    ]
    client = scripted.client()
    start = datetime.now(UTC)
    with pytest.raises(HubRequestError) as caught:
        await client.create_twin_job("j1", "deviceId = 'd'", {"tags": {"a": 1}}, start, 60)
    assert caught.value.code == 429004 and scripted.hits["PUT /jobs/v2/j1"] == 1
    scripted.answers["PUT /jobs/v2/j2"] = [error_answer(500, "ServerError", "boom")]
    with pytest.raises(HubRequestError):
        await client.create_twin_job("j2", "deviceId = 'd'", {"tags": {"a": 1}}, start, 60)
    assert scripted.hits["PUT /jobs/v2/j2"] == 1
    await client.close()


async def test_create_retried_on_plain_throttling(scripted: Scripted) -> None:
    scripted.answers["PUT /jobs/v2/j3"] = [
        error_answer(429, "ThrottlingException", "slow down"),
        web.json_response({**JOB, "jobId": "j3"}),
    ]
    client = scripted.client()
    job = await client.create_twin_job(
        "j3", "deviceId = 'd'", {"tags": {"a": 1}}, datetime.now(UTC), 60
    )
    assert job.job_id == "j3" and scripted.hits["PUT /jobs/v2/j3"] == 2
    await client.close()


async def test_create_timeout_is_not_retried(scripted: Scripted) -> None:
    scripted.answers["PUT /jobs/v2/slow"] = [3.0]
    client = scripted.client(request_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(HubTimeout):
        await client.create_twin_job(
            "slow", "deviceId = 'd'", {"tags": {"a": 1}}, datetime.now(UTC), 60
        )
    assert time.monotonic() - started < 2.5
    assert scripted.hits["PUT /jobs/v2/slow"] == 1
    await client.close()


async def test_caller_deadline_bounds_a_read(scripted: Scripted) -> None:
    scripted.answers["GET /jobs/v2/slow"] = [3.0]
    client = scripted.client(request_timeout=10.0)
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    with pytest.raises(HubTimeout):
        await client.get_job("slow", deadline=loop.time() + 0.5)
    assert time.monotonic() - started < 2.0
    await client.close()


async def test_job_query_follows_continuation_pages(scripted: Scripted) -> None:
    pages: list[Answer] = [
        web.json_response([{**JOB, "jobId": "a"}], headers={"x-ms-continuation": "next"}),
        web.json_response([{**JOB, "jobId": "b"}, {"bad": "item"}]),
    ]
    scripted.answers["GET /jobs/v2/query"] = pages
    client = scripted.client()
    jobs = await client.list_jobs("scheduleUpdateTwin", "queued")
    assert [j.job_id for j in jobs] == ["a", "b"]
    await client.close()


async def test_untrusted_ca_and_closed_port(scripted: Scripted, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    client = scripted.client(ca_file=str(other), read_retries=0)
    with pytest.raises(HubUnreachable, match="TLS"):
        await client.get_job("j1")
    await client.close()
    closed = Scripted(1, scripted.ca_file).client(read_retries=0)
    with pytest.raises(HubUnreachable):
        await closed.get_job("j1")
    await closed.close()


def test_missing_connection_string_is_refused() -> None:
    with pytest.raises(IotHubError, match="connection_string"):
        IotHubClient(IotHubSettings(), JobSettings())
    with pytest.raises(IotHubError, match="not a valid"):
        IotHubClient(IotHubSettings(connection_string=SecretStr("nonsense")), JobSettings())


async def test_method_errors_from_nested_body(scripted: Scripted) -> None:
    inner = {"errorCode": 504101, "message": "Timed out waiting for the response from device."}
    scripted.answers["POST /twins/d1/methods"] = [
        web.json_response({"Message": json.dumps(inner), "ExceptionMessage": ""}, status=504)
    ]
    client = scripted.client()
    with pytest.raises(HubRequestError) as caught:
        await client.invoke_method("d1", "reboot", None, 5, 0)
    assert caught.value.code == 504101 and scripted.hits["POST /twins/d1/methods"] == 1
    await client.close()


async def test_direct_method_holds_its_own_deadline(scripted: Scripted) -> None:
    scripted.answers["POST /twins/d1/methods"] = [3.0]  # the hub hangs
    settings = IotHubSettings(
        connection_string=SecretStr(
            f"HostName=127.0.0.1:{scripted.port};SharedAccessKeyName=iothubowner;"
            f"SharedAccessKey={KEY}"
        ),
        ca_file=scripted.ca_file,
        request_timeout=30.0,
    )
    client = IotHubClient(settings, JobSettings(direct_call_margin=0.3))
    started = time.monotonic()
    with pytest.raises(HubTimeout) as caught:
        await client.invoke_method("d1", "reboot", {"a": 1}, response_timeout=1, connect_timeout=0)
    # connect 0 + response 1 + margin 0.3, not the 30 s request timeout
    assert caught.value.timeout == pytest.approx(1.3)
    assert time.monotonic() - started < 2.5
    assert scripted.hits["POST /twins/d1/methods"] == 1  # never retried
    await client.close()


async def test_get_and_cancel_read_the_hub_answer_and_its_errors(scripted: Scripted) -> None:
    """get_job and cancel_job send through the SDK's authenticated client and parse the answer
    themselves: the path quoted as the SDK quotes it, a non-200 answer becoming the hub's typed
    error with its tracking id, an unreadable body a HubResponseError. (The SAS token and
    api-version are checked by the emulator tests: it refuses requests without them.)"""
    scripted.answers["GET /jobs/v2/a b"] = [web.json_response({**JOB, "jobId": "a b"})]
    scripted.answers["POST /jobs/v2/j1/cancel"] = [
        error_answer(405, "OperationNotAllowedInCurrentState", "running")
    ]
    scripted.answers["GET /jobs/v2/gone"] = [error_answer(404, "JobNotFound", "no such job")]
    scripted.answers["GET /jobs/v2/junk"] = [web.Response(text="{not json", status=200)]
    client = scripted.client()
    try:
        job = await client.get_job("a b")
        assert job.job_id == "a b" and scripted.hits["GET /jobs/v2/a b"] == 1
        with pytest.raises(HubRequestError) as refused:
            await client.cancel_job("j1")
        assert (refused.value.code, refused.value.name) == (
            405102,
            "OperationNotAllowedInCurrentState",
        )
        with pytest.raises(HubRequestError) as missing:
            await client.get_job("gone")
        assert (missing.value.code, missing.value.tracking_id) == (404002, "t1-G:0")
        with pytest.raises(IotHubError, match="unreadable job"):
            await client.get_job("junk")
    finally:
        await client.close()


@dataclass
class ConnectProxy:
    """An HTTP CONNECT proxy on loopback that counts the tunnels it opened."""

    port: int = 0
    tunnels: list[str] = field(default_factory=list)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest_asyncio.fixture
async def connect_proxy() -> AsyncIterator[ConnectProxy]:
    proxy = ConnectProxy()

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        target = head.split()[1]
        proxy.tunnels.append(target)
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(tunnel, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()


async def test_environment_proxy_and_ca_bundle_are_honoured(
    scripted: Scripted, connect_proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests' per-request reading of the environment is off (it costs ≈0.13 ms a call), so
    the client reads it once when it is made: HTTPS_PROXY (unless NO_PROXY exempts the hub) and
    REQUESTS_CA_BUNDLE when no ca_file is configured still apply."""
    scripted.answers["GET /jobs/v2/j1"] = [web.json_response(JOB) for _ in range(6)]
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{connect_proxy.port}")
    # One worker: each worker thread keeps its own session, so a second thread (the pool may
    # start one while the first is still marking itself idle) would open a second tunnel.
    proxied = scripted.client(workers=1)
    assert (await proxied.get_job("j1")).job_id == "j1"
    assert connect_proxy.tunnels == [f"127.0.0.1:{scripted.port}"]
    monkeypatch.delenv("HTTPS_PROXY")  # read once, when the client was made
    assert (await proxied.get_job("j1")).job_id == "j1"
    await proxied.close()

    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{connect_proxy.port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    exempt = scripted.client()
    assert (await exempt.get_job("j1")).job_id == "j1"
    await exempt.close()
    assert len(connect_proxy.tunnels) == 1  # the first client's one connection, kept alive

    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", scripted.ca_file)
    by_bundle = scripted.client(ca_file="", read_retries=0)
    assert (await by_bundle.get_job("j1")).job_id == "j1"
    await by_bundle.close()
    other = trustme.CA()
    other_file = Path(scripted.ca_file).with_name("other-bundle.pem")
    other.cert_pem.write_to_path(str(other_file))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other_file))
    untrusted = scripted.client(ca_file="", read_retries=0)
    with pytest.raises(HubUnreachable, match="TLS"):
        await untrusted.get_job("j1")
    await untrusted.close()


async def test_job_results_query_pages_through_the_sdk_client(scripted: Scripted) -> None:
    """query_job_results POSTs the query to /devices/query through the SDK's authenticated
    client, page by page (x-ms-max-item-count, x-ms-continuation), and reads the rows itself."""
    row = {
        "deviceId": "d1",
        "jobId": "j1",
        "jobType": "scheduleDeviceMethod",
        "status": "completed",
        "outcome": {"deviceMethodResponse": {"status": 200, "payload": {"ok": True}}},
    }
    scripted.answers["POST /devices/query"] = [
        web.json_response([row, {**row, "deviceId": "d2"}], headers={"x-ms-continuation": "c1"}),
        web.json_response([{**row, "deviceId": "d3", "status": "failed",
                            "error": {"code": "404103", "description": "offline"}}]),
    ]  # fmt: skip
    client = scripted.client()
    query = "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'j1'"
    try:
        rows = await client.query_job_results(query, 10)
    finally:
        await client.close()
    assert [r.device_id for r in rows] == ["d1", "d2", "d3"]
    assert (rows[0].method_status, rows[0].method_payload) == (200, {"ok": True})
    assert (rows[2].status, rows[2].error_code, rows[2].error_description) == (
        "failed",
        "404103",
        "offline",
    )
    pages = [(h, b) for key, h, b in scripted.seen if key == "POST /devices/query"]
    assert len(pages) == 2
    for headers, body in pages:
        assert json.loads(body) == {"query": query}
        assert headers["Content-Type"].startswith("application/json")
        assert headers["Authorization"].startswith("SharedAccessSignature ")
    assert "x-ms-continuation" not in pages[0][0]
    assert pages[1][0]["x-ms-continuation"] == "c1"
    # at most the rows still wanted: 10, then 10 - 2
    assert [h["x-ms-max-item-count"] for h, _ in pages] == ["10", "8"]


async def test_device_id_query_pages_and_stops_past_its_bound(scripted: Scripted) -> None:
    """query_device_ids reads every page of SELECT deviceId FROM devices (ids only, other items
    skipped) and refuses with CallTooLarge once the pages hold more than max_devices."""

    def answers() -> list[Answer]:
        return [
            web.json_response([{"deviceId": "a"}, {"deviceId": "b"}, {"etag": "x"}],
                              headers={"x-ms-continuation": "c1"}),
            web.json_response([{"deviceId": "c"}]),
        ]  # fmt: skip

    scripted.answers["POST /devices/query"] = answers()
    client = scripted.client()
    try:
        assert await client.query_device_ids("tags.site = 'a'", 4) == ["a", "b", "c"]
        pages = [(h, b) for key, h, b in scripted.seen if key == "POST /devices/query"]
        assert [json.loads(b) for _, b in pages] == [
            {"query": "SELECT deviceId FROM devices WHERE tags.site = 'a'"}
        ] * 2
        assert pages[1][0]["x-ms-continuation"] == "c1"
        scripted.answers["POST /devices/query"] = answers()
        with pytest.raises(CallTooLarge, match="more than 2 rows"):
            await client.query_device_ids("tags.site = 'a'", 2)
    finally:
        await client.close()


async def test_job_results_query_error_is_the_hubs(scripted: Scripted) -> None:
    scripted.answers["POST /devices/query"] = [error_answer(400, "BadRequest", "syntax error")]
    client = scripted.client()
    try:
        with pytest.raises(HubRequestError) as refused:
            await client.query_job_results("SELEKT", 5)
    finally:
        await client.close()
    assert (refused.value.http_status, refused.value.name) == (400, "BadRequest")


async def test_get_twin_reads_the_hubs_json_and_its_errors(scripted: Scripted) -> None:
    twin = {"deviceId": "d 1", "tags": {"site": "a"}, "properties": {"desired": {"x": 1}}}
    scripted.answers["GET /twins/d 1"] = [web.json_response(twin)]
    scripted.answers["GET /twins/gone"] = [error_answer(404, "DeviceNotFound", "no such device")]
    client = scripted.client()
    try:
        assert await client.get_twin("d 1") == twin
        with pytest.raises(HubRequestError) as missing:
            await client.get_twin("gone")
    finally:
        await client.close()
    assert (missing.value.code, missing.value.name) == (404001, "DeviceNotFound")
    # the id travels quoted in the path (the server reads it back decoded)
    assert [key for key, _, _ in scripted.seen] == ["GET /twins/d 1", "GET /twins/gone"]
    assert all(h["Authorization"].startswith("SharedAccessSignature ") for _, h, _ in scripted.seen)
