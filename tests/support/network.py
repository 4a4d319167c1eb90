"""Loopback addresses for tests that need a fixed port (the device endpoint's 8883).

Rules: only 127.0.0.0/8; an address is checked free by binding it, not assumed.
"""

from __future__ import annotations

import random
import socket

__all__ = ["free_port", "fresh_loopback"]


def fresh_loopback() -> str:
    """A 127.x.y.z address where nothing listens on 8883 (the device endpoint's fixed port)."""
    rng = random.Random()
    for _ in range(100):
        host = f"127.{rng.randint(100, 250)}.{rng.randint(0, 255)}.{rng.randint(2, 254)}"
        with socket.socket() as probe:
            try:
                probe.bind((host, 8883))
            except OSError:
                continue
        return host
    raise RuntimeError("no free loopback address for port 8883")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port of ``host`` that nothing listens on now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
