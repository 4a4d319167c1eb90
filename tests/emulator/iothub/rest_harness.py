"""A running REST API over real TLS on loopback, with small fakes for the other parts.

The fakes stand in for the device endpoint (:class:`tests.support.fakes.FakeLink`: devices in
``ready`` answer 201 echoing the payload, ``silent`` ones time out, others are offline) and the
job engine, so that the REST layer and the registry (with the real query language) are judged by
the real azure-iot-hub SDK alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.iot.hub import IoTHubJobManager, IoTHubRegistryManager

from emulator.iothub.certs import ensure_certificates, server_ssl_context
from emulator.iothub.clock import SystemClock
from emulator.iothub.database import Database
from emulator.iothub.errors import HubError
from emulator.iothub.hub import query_language
from emulator.iothub.registry import OWNER_POLICY, Registry
from emulator.iothub.rest import RestApi
from tests.support.fakes import FakeLink, echo_answer


@dataclass
class FakeJobs:
    """JobService keeping jobs in a dict; cancels only queued jobs."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    rows_read: int = 0  # rows handed out by device_job_rows (what a query page cost)

    async def create_job(self, job_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        if job_id in self.jobs:
            raise HubError.job_already_exists(job_id)
        job = {
            "jobId": job_id,
            "type": request.get("type"),
            "status": "queued",
            "queryCondition": request.get("queryCondition"),
            "createdTime": "2030-01-01T00:00:00.0000000Z",
            "maxExecutionTimeInSeconds": request.get("maxExecutionTimeInSeconds"),
        }
        self.jobs[job_id] = job
        return dict(job)

    def get_job(self, job_id: str) -> dict[str, Any]:
        if job_id not in self.jobs:
            raise HubError.job_not_found(job_id)
        return dict(self.jobs[job_id])

    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        if job is None:
            raise HubError.job_not_found(job_id)
        if job["status"] != "queued":
            raise HubError.operation_not_allowed(
                f"Job cannot be cancelled in '{job['status']}' status"
            )
        job["status"] = "cancelled"
        return dict(job)

    def list_jobs(self, job_type: str | None, job_status: str | None) -> list[dict[str, Any]]:
        return [
            dict(j)
            for j in self.jobs.values()
            if (job_type is None or j["type"] == job_type)
            and (job_status is None or j["status"] == job_status)
        ]

    def device_job_rows(
        self,
        job_id: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int | None = None,
    ) -> Iterable[dict[str, Any]]:
        rows = sorted(self.rows, key=lambda r: (r["jobId"], r["deviceId"]))
        rows = [r for r in rows if job_id is None or r["jobId"] == job_id]
        rows = [r for r in rows if after is None or (r["jobId"], r["deviceId"]) > after]
        rows = rows if limit is None else rows[:limit]
        self.rows_read += len(rows)
        return rows


# --- the harness --------------------------------------------------------------------------


@dataclass
class Harness:
    registry: Registry
    link: FakeLink
    jobs: FakeJobs
    api: RestApi
    host: str
    port: int
    ca_path: Path
    db: Database

    @property
    def connection_string(self) -> str:
        return (
            f"HostName={self.host}:{self.port};SharedAccessKeyName={OWNER_POLICY};"
            f"SharedAccessKey={self.registry.owner_key()}"
        )

    def registry_manager(self, connection_string: str | None = None) -> IoTHubRegistryManager:
        rm = IoTHubRegistryManager.from_connection_string(
            connection_string or self.connection_string
        )
        rm.protocol.config.connection.verify = str(self.ca_path)
        return rm

    def job_manager(self, connection_string: str | None = None) -> IoTHubJobManager:
        jm = IoTHubJobManager.from_connection_string(connection_string or self.connection_string)
        jm.protocol.config.connection.verify = str(self.ca_path)
        return jm


@asynccontextmanager
async def running_api(data_dir: Path, host: str = "127.0.0.1") -> AsyncIterator[Harness]:
    """Start the REST API on ``host`` port 0 with TLS from certs.py and fake neighbours."""
    paths = await asyncio.to_thread(ensure_certificates, data_dir, host)
    db = Database(data_dir / "hub.sqlite")
    clock = SystemClock()
    registry = Registry(db, clock, host)
    link = FakeLink(answer=echo_answer, wait_for_ready=False)
    jobs = FakeJobs()
    api = RestApi(registry, link, jobs, query_language(), clock, host)
    port = await api.start(host, 0, server_ssl_context(paths))
    try:
        yield Harness(registry, link, jobs, api, host, port, paths.ca_pem, db)
    finally:
        await api.stop()
        db.close()
