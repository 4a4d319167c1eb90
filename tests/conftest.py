"""Suite-wide test settings.

Hypothesis: no per-example deadline (the CI machine has 2 shared cores) and a modest example count,
raised with ``HYPOTHESIS_PROFILE=thorough`` for a longer local run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from hypothesis import HealthCheck, settings

from tests.support.postgres import PostgresCluster, running_cluster

settings.register_profile(
    "default", deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", deadline=None, max_examples=2000, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _no_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI sizes its tables from ``COLUMNS`` when set (else wide, for pipes): a width the
    runner's terminal or pytest-xdist's workers export must not change what the tests read."""
    monkeypatch.delenv("COLUMNS", raising=False)


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """Undo any ``configure_logging`` a test (or the CLI under test) did: its stream may be a
    capture that pytest closes after the test."""
    yield
    structlog.reset_defaults()


_HERE = Path(__file__).resolve().parent
_BY_PATH = {
    _HERE / "e2e": "e2e",
    _HERE / "emulator" / "thingworx" / "test_console_browser.py": "browser",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the end-to-end tests ``e2e`` and the console's browser tests ``browser`` by where
    they live, so ``-m 'not e2e'`` and ``-m 'not browser'`` select without a marker per test."""
    for item in items:
        path = Path(str(item.path)).resolve()
        for where, marker in _BY_PATH.items():
            if path == where or where in path.parents:
                item.add_marker(marker)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL server for the session (tests/support/postgres.py); skips, saying
    why, where Debian's PostgreSQL binaries are missing."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    return postgres_cluster.new_database()
