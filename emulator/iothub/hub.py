"""The emulated IoT Hub, assembled: registry, certificates, MQTT endpoint, job engine, REST API.

:class:`IoTHubEmulator` owns one data directory::

    DIR/hub.sqlite    registry, twins, jobs and device-job rows (SQLite, WAL)
    DIR/ca.pem        the CA clients must trust (also ca.key, server.pem, server.key)
    DIR/hub.json      where things are: owner connection string, REST and MQTT addresses,
                      device connection strings

Rules: parts start in dependency order (database, registry, certificates, MQTT endpoint, job
engine, REST) and stop in reverse; everything that was answered before a stop or a SIGKILL is in
the database, and a new emulator on the same directory carries on (the job engine recovers
unfinished jobs). The service connection string names ``host:rest_port``; device connection
strings name the bare host, because the device SDK always connects to port 8883.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog

from emulator.iothub.certs import CertificatePaths, ensure_certificates, server_ssl_context
from emulator.iothub.clock import Clock, SystemClock
from emulator.iothub.database import Database
from emulator.iothub.errors import HubError
from emulator.iothub.fleet import Fleet
from emulator.iothub.jobs import TIERS, JobEngine, Tier
from emulator.iothub.mqtt import DeviceEndpoint
from emulator.iothub.ports import DeviceLink, JobService
from emulator.iothub.registry import OWNER_POLICY, Registry
from emulator.iothub.rest import QueryLanguage, RestApi
from iothub_query import (
    QueryError,
    exact_members,
    parse_query,
    pinned_value,
    run_query,
    top_level_names,
)

__all__ = ["IoTHubEmulator", "device_id_for", "query_language"]

_log = structlog.get_logger("emulator.iothub")


def device_id_for(n: int) -> str:
    """The id of the n-th generated device: ``device-0001``, ``device-0002``..."""
    return f"device-{n:04d}"


class IoTHubEmulator:
    """One emulated IoT Hub serving HTTPS (service API) and MQTT/TLS (devices).

    Args:
        data_dir: where the database, certificates and hub.json live (created if missing).
        host: the loopback address (or host name) to serve and to name in connection strings
            (and in the server certificate's subjectAltNames).
        rest_port: the HTTPS port (0 picks a free one).
        mqtt_port: the MQTT/TLS port; the device SDK only ever connects to 8883.
        tier: ``S1``, ``S2`` or ``S3`` job quotas; None uses the job engine's default.
        units: the hub's units (the tier's job device-operation pace scales with them).
        clock: time source (tests inject a manual clock).
        bind_host: listen (HTTPS and MQTT) on this address instead of ``host`` (e.g. ``0.0.0.0``
            in a container), while connection strings and the certificate still name ``host``;
            None listens on ``host``.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        rest_port: int = 8443,
        mqtt_port: int = 8883,
        tier: str | None = None,
        units: int = 1,
        clock: Clock | None = None,
        bind_host: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.bind_host = bind_host or host
        self._rest_port_wanted = rest_port
        self._mqtt_port_wanted = mqtt_port
        self.tier = tier
        self.units = units
        self.clock: Clock = clock or SystemClock()
        self._db: Database | None = None
        self._registry: Registry | None = None
        self._certs: CertificatePaths | None = None
        self._endpoint: DeviceEndpoint | None = None
        self._jobs: JobEngine | None = None
        self._rest: RestApi | None = None
        self.rest_port = 0
        self.mqtt_port = 0

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the database and start every part; then write hub.json."""
        if self._rest is not None:
            raise RuntimeError("the emulator is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tier = _load_tier(self.tier, self.units)
        try:
            self._db = Database(self.data_dir / "hub.sqlite")
            self._registry = Registry(self._db, self.clock, self.host)
            self._certs = await asyncio.to_thread(ensure_certificates, self.data_dir, self.host)
            context = server_ssl_context(self._certs)
            self._endpoint = DeviceEndpoint(self._registry, self.clock)
            self.mqtt_port = await self._endpoint.start(
                self.bind_host, self._mqtt_port_wanted, context
            )
            self._jobs = JobEngine(self._db, self._registry, self._endpoint, self.clock, tier)
            await self._jobs.start()
            self._rest = RestApi(
                self._registry,
                self._endpoint,
                self._jobs,
                query_language(),
                self.clock,
                self.host,
            )
            self.rest_port = await self._rest.start(self.bind_host, self._rest_port_wanted, context)
        except BaseException:
            await self.stop()
            raise
        self.write_hub_file()
        _log.info(
            "iot hub emulator started",
            rest=self.rest_url,
            mqtt=f"{self.host}:{self.mqtt_port}",
            devices=len(self._registry),
        )

    async def stop(self) -> None:
        """Stop every part that started, in reverse order, and close the database."""
        rest, self._rest = self._rest, None
        jobs, self._jobs = self._jobs, None
        endpoint, self._endpoint = self._endpoint, None
        if rest is not None:
            await rest.stop()
        if jobs is not None:
            await jobs.stop()
        if endpoint is not None:
            await endpoint.stop()
        db, self._db = self._db, None
        if db is not None:
            db.close()
        self._registry = None

    async def __aenter__(self) -> IoTHubEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- devices ---------------------------------------------------------------------------

    def ensure_devices(self, n: int) -> list[str]:
        """Make sure ``device-0001`` .. ``device-{n}`` exist (idempotent); return their ids."""
        ids = [device_id_for(i) for i in range(1, n + 1)]
        created = self.registry.create_devices(ids)
        if created:
            _log.info("devices created", created=created, total=len(self.registry))
            self.write_hub_file()
        return ids

    def device_connection_string(self, device_id: str) -> str:
        """``HostName=<host>;DeviceId=<id>;SharedAccessKey=<primary key>`` (no port: the device
        SDK always connects to 8883)."""
        keys = self.registry.device_keys(device_id)
        if keys is None:
            raise HubError.device_not_found(device_id)
        return f"HostName={self.host};DeviceId={device_id};SharedAccessKey={keys[0]}"

    def device_primary_keys(self, device_ids: Iterable[str]) -> list[tuple[str, str]]:
        """``(device_id, primary_key)`` pairs of the enabled devices among ``device_ids``."""
        pairs = []
        for device_id in device_ids:
            keys = self.registry.device_keys(device_id)
            if keys is not None:
                pairs.append((device_id, keys[0]))
        return pairs

    def fleet(
        self, device_ids: Iterable[str], *, offline_share: float = 0.0, answer_delay: float = 0.0
    ) -> Fleet:
        """A simulated fleet of the enabled devices among ``device_ids``, connecting to this hub's
        MQTT endpoint and trusting its CA (not started; see :class:`Fleet`)."""
        return Fleet(
            self.host,
            self.mqtt_port,
            self.ca_pem_path.read_text(),
            self.host,
            self.device_primary_keys(device_ids),
            offline_share=offline_share,
            answer_delay=answer_delay,
        )

    # --- where things are ------------------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        """The registry and twin store (only while running)."""
        if self._registry is None:
            raise RuntimeError("the emulator is not running")
        return self._registry

    @property
    def link(self) -> DeviceLink:
        """The device endpoint (only while running)."""
        if self._endpoint is None:
            raise RuntimeError("the emulator is not running")
        return self._endpoint

    @property
    def jobs(self) -> JobService:
        """The job engine (only while running)."""
        if self._jobs is None:
            raise RuntimeError("the emulator is not running")
        return self._jobs

    @property
    def owner_connection_string(self) -> str:
        """The service connection string of the ``iothubowner`` policy (``host:rest_port``)."""
        return (
            f"HostName={self.host}:{self.rest_port};SharedAccessKeyName={OWNER_POLICY};"
            f"SharedAccessKey={self.registry.owner_key()}"
        )

    @property
    def rest_url(self) -> str:
        """``https://host:rest_port``."""
        return f"https://{self.host}:{self.rest_port}"

    def requests(self, route: str) -> int:
        """How many REST requests ``route`` (e.g. ``"GET /jobs/v2/{id}"``) was asked, since
        start (0 when stopped)."""
        return self._rest.requests[route] if self._rest is not None else 0

    @property
    def ca_pem_path(self) -> Path:
        """The CA certificate clients must trust."""
        return self.data_dir / "ca.pem"

    @property
    def hub_file(self) -> Path:
        """DIR/hub.json."""
        return self.data_dir / "hub.json"

    def write_hub_file(self) -> None:
        """Write DIR/hub.json atomically (owner connection string, addresses, devices)."""
        info: dict[str, Any] = {
            "hostName": self.host,
            "ownerConnectionString": self.owner_connection_string,
            "restAddress": self.rest_url,
            "mqttAddress": f"{self.host}:{self.mqtt_port}",
            "caPem": str(self.ca_pem_path),
            "devices": {
                device_id: self.device_connection_string(device_id)
                for device_id in self.registry.device_ids()
                if self.registry.device_keys(device_id) is not None
            },
        }
        tmp = self.hub_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(info, indent=1))
        os.replace(tmp, self.hub_file)


# --- the parts that arrive from other modules ---------------------------------------------


def _load_tier(name: str | None, units: int = 1) -> Tier | None:
    if name is None:
        return None
    if name not in TIERS:
        raise ValueError(f"unknown tier {name!r}: choose one of {', '.join(sorted(TIERS))}")
    return TIERS[name].with_units(units)


def query_language() -> QueryLanguage:
    """The ``query`` package's functions as the REST layer takes them (the REST test harness
    wires its API with this too)."""
    return QueryLanguage(
        parse=parse_query,
        run=run_query,
        pinned=pinned_value,
        exact=exact_members,
        names=top_level_names,
        errors=(QueryError,),
    )
