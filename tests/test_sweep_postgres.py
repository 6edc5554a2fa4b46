"""A search shared through a real PostgreSQL server: two workers, each trial once, exactly n_trials."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import optuna
import pytest
from test_sweep import assert_exactly_n_trials_none_duplicated, lr_search, sweep_command, write_sweep

REQUIRED = os.environ.get("LIGHTNING_CNN_REQUIRE_POSTGRES") == "1"  # CI: a server that cannot start fails the test


def _skip_or_fail(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"PostgreSQL is required here but {reason}")
    pytest.skip(reason)


def _psql(sql: str) -> None:
    subprocess.run(["su", "postgres", "-c", f'psql -v ON_ERROR_STOP=1 -q -c "{sql}"'], check=True, capture_output=True)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A database on this machine's PostgreSQL cluster, started for the test (Debian's pg_ctlcluster), dropped after."""
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        _skip_or_fail("PostgreSQL is not installed (apt-get install postgresql)")
    if os.geteuid() != 0:
        _skip_or_fail("starting the PostgreSQL cluster needs root")
    clusters = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True).stdout.split()
    if len(clusters) < 4:
        _skip_or_fail("there is no PostgreSQL cluster (pg_createcluster)")
    version, name, port = clusters[0], clusters[1], clusters[2]
    started = subprocess.run(["pg_ctlcluster", version, name, "start"], capture_output=True, text=True)
    if started.returncode not in (0, 2):  # 2: already running
        _skip_or_fail(f"the cluster did not start ({started.stderr.strip()})")
    user, database, password = "lightning_cnn_test", f"sweep_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    _psql(
        f"DO \\$\\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}') THEN "
        f"CREATE ROLE {user} LOGIN; END IF; END\\$\\$; ALTER ROLE {user} PASSWORD '{password}'"
    )
    _psql(f"CREATE DATABASE {database} OWNER {user}")
    try:
        yield f"postgresql://{user}:{password}@127.0.0.1:{port}/{database}"
    finally:
        _psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def test_two_workers_share_a_search_through_postgresql(postgres_url, synthetic_data_dir, tmp_path):
    path, logs = write_sweep(tmp_path, lr_search("shared_search")), tmp_path / "logs"
    command = sweep_command(path, logs, synthetic_data_dir, "--workers", "2", "--storage", postgres_url)
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="shared_search", storage=postgres_url)
    assert_exactly_n_trials_none_duplicated(study, 4)
    assert len({trial.user_attrs["worker"] for trial in study.trials}) == 2
    assert not (logs / "shared_search" / "optuna.journal").exists()  # the study is in the database only
    assert "Trials: 4 complete" in (logs / "shared_search" / "sweep.md").read_text()
