"""The throwaway PostgreSQL server of tests/support/postgres.py: it runs, isolates, restarts."""

from __future__ import annotations

import pytest

from tests.support.postgres import PostgresCluster


def test_each_test_gets_an_empty_database(postgres_cluster: PostgresCluster) -> None:
    first = postgres_cluster.new_database()
    second = postgres_cluster.new_database()
    assert first != second
    db = first.rsplit("/", 1)[1]
    postgres_cluster.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (41), (1)", db)
    assert postgres_cluster.psql("SELECT sum(x) FROM t", db).strip() == "42"
    with pytest.raises(RuntimeError, match="does not exist"):
        postgres_cluster.psql("SELECT * FROM t", second.rsplit("/", 1)[1])


def test_the_server_survives_a_kill_and_keeps_committed_rows(
    postgres_cluster: PostgresCluster,
) -> None:
    db = postgres_cluster.new_database().rsplit("/", 1)[1]
    postgres_cluster.psql("CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)", db)
    postgres_cluster.kill()
    with pytest.raises(RuntimeError):
        postgres_cluster.psql("SELECT 1", db)
    postgres_cluster.start()
    assert postgres_cluster.psql("SELECT x FROM kept", db).strip() == "7"
