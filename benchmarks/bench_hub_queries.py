"""A ``devices`` query over 100,000 twins through the REST API, read with the azure-iot-hub SDK.

Method: an in-process emulator (REST on 127.0.0.1, TLS, MQTT on a free port, no devices
connected) holding N twins (default 100,000; a quarter tagged ``site = 'a'``). The unmodified
SDK's ``IoTHubRegistryManager.query_iot_hub`` pages through the result with
``x-ms-max-item-count`` = page size (default 1000, the emulator's maximum), each page a real HTTPS
request with a fresh SAS token, until no continuation token is returned. Reported: wall time,
items/s and pages, for ``SELECT * FROM devices``, a filtered query, and ``SELECT COUNT()``.

Run: ``python -m benchmarks.bench_hub_queries [--devices N] [--page-size P]``
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import QuerySpecification

from emulator.iothub import IoTHubEmulator


def _page_through(rm: IoTHubRegistryManager, query: str, page: int) -> tuple[int, int, float]:
    started = time.perf_counter()
    items = pages = 0
    token = None
    while True:
        result = rm.query_iot_hub(QuerySpecification(query=query), token, page)
        pages += 1
        items += len(result.items)
        token = result.continuation_token
        if not token:
            return items, pages, time.perf_counter() - started


async def main(devices: int, page: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with IoTHubEmulator(Path(tmp), rest_port=0, mqtt_port=0) as hub:
            started = time.perf_counter()
            ids = hub.ensure_devices(devices)
            made = time.perf_counter() - started
            started = time.perf_counter()
            hub.registry.apply_job_patch(ids[::4], {"site": "a"}, {"rate": 5})
            patched = time.perf_counter() - started
            rm = IoTHubRegistryManager.from_connection_string(hub.owner_connection_string)
            rm.protocol.config.connection.verify = str(hub.ca_pem_path)
            print(f"method: in-process emulator, {devices} twins, SDK query_iot_hub over HTTPS,")
            print(f"        page size {page} (x-ms-max-item-count), one SAS token per request")
            print(f"setup : {devices} devices created in {made:.2f} s; twin job patch of ")
            print(f"        {len(ids[::4])} twins (one transaction) in {patched:.2f} s")
            for query in (
                "SELECT * FROM devices",
                "SELECT * FROM devices WHERE tags.site = 'a'",
                "SELECT COUNT() AS n FROM devices WHERE properties.desired.rate = 5",
            ):
                items, pages, took = await asyncio.to_thread(_page_through, rm, query, page)
                print(
                    f"{query!r}: {items} items, {pages} pages, {took:.2f} s, "
                    f"{items / took:,.0f} items/s"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(main(args.devices, args.page_size))
