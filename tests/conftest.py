"""Shared fixtures: one trained store per test session, on the fast test profile."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from heart_mlops.settings import Settings
from tests.support import free_port, rclone_s3_command, use_s3, wait_for_port

# few CV folds and trials: the pipeline's logic is tested, not its statistical power
FAST_PROFILE = {
    "cv_folds": 3,
    "cv_repeats": 1,
    "tuning_trials": 2,
    "n_jobs": 2,
    "bootstrap_samples": 100,
}

# The heavy tiers, each a marker (pyproject.toml): `make test-fast` runs what has none of them.
HEAVY_TIERS = ("airflow", "integration", "outage", "compose_stack")
_tier_of: dict[str, str] = {}  # test id -> its tier
_wall_time: dict[str, float] = {}  # test id -> seconds of its setup, call and teardown


def pytest_collection_modifyitems(items):
    for item in items:
        tier = next((name for name in HEAVY_TIERS if item.get_closest_marker(name)), "fast")
        _tier_of[item.nodeid] = tier
        if tier != "fast":
            item.add_marker(pytest.mark.heavy)


def pytest_runtest_logreport(report):
    _wall_time[report.nodeid] = _wall_time.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    """Wall time of each tier and of each heavy test (the budget is in docs/testing.md)."""
    if not _wall_time:
        return
    tiers: dict[str, list[float]] = {}
    for nodeid, seconds in _wall_time.items():
        tiers.setdefault(_tier_of.get(nodeid, "fast"), []).append(seconds)
    terminalreporter.write_sep("=", "wall time by tier")
    for tier, times in sorted(tiers.items()):
        terminalreporter.write_line(f"{tier:<12} {len(times):>4} tests {sum(times):>8.1f} s")
    heavy = sorted(
        (
            (seconds, nodeid)
            for nodeid, seconds in _wall_time.items()
            if _tier_of.get(nodeid, "fast") != "fast"
        ),
        reverse=True,
    )
    if heavy:
        terminalreporter.write_sep("-", "heavy tests, wall time")
        for seconds, nodeid in heavy:
            terminalreporter.write_line(f"{seconds:>8.1f} s  {_tier_of[nodeid]:<12} {nodeid}")


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment():
    """Tests never read the developer's settings or stores."""
    for key in list(os.environ):
        if key.startswith("HEART_MLOPS_") or key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            del os.environ[key]
    os.environ["PYTHONWARNINGS"] = "ignore::FutureWarning"
    yield


def fast_settings(home: Path, **overrides) -> Settings:
    return Settings(home=home, **{**FAST_PROFILE, **overrides})


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict:
    """A local store (SQLite MLflow + file artifacts) with one registered champion.

    -> {"settings": Settings, "result": run_pipeline's result}
    """
    from heart_mlops.pipeline import run_pipeline

    settings = fast_settings(tmp_path_factory.mktemp("trained-home"))
    result = run_pipeline(settings, run_key="test-session")
    assert result.registered.champion, result.registered
    return {"settings": settings, "result": result}


@pytest.fixture
def fresh_settings(tmp_path) -> Settings:
    """Settings on an empty store of the test's own."""
    return fast_settings(tmp_path / "home")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (`rclone serve s3`) on a loopback port, with keys made for this run.

    -> {"endpoint", "access_key", "secret_key", "root"}; buckets are folders under root.
    """
    import secrets
    import subprocess

    root = tmp_path_factory.mktemp("s3")
    port = free_port()
    access_key, secret_key = secrets.token_hex(8), secrets.token_hex(16)
    process = subprocess.Popen(
        rclone_s3_command(root, port, access_key, secret_key),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield {
            "endpoint": f"http://127.0.0.1:{port}",
            "access_key": access_key,
            "secret_key": secret_key,
            "root": root,
        }
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Environment of an S3 client of `s3_server` (the standard AWS variables)."""
    from heart_mlops import storage

    use_s3(monkeypatch, s3_server["endpoint"], s3_server["access_key"], s3_server["secret_key"])
    yield s3_server
    storage._client.cache_clear()
