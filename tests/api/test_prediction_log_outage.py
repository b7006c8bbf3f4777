"""The prediction log on a PostgreSQL server of the test's own, under `heart-mlops serve
--workers 2`: the server stopped and restarted under load, a worker killed with SIGKILL. In
both, every answered row ends in the log exactly once and the spools end empty."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.api.conftest import SEED
from tests.support import free_port, wait_for_port

pytestmark = pytest.mark.outage

HEART_MLOPS = str(Path(sys.executable).parent / "heart-mlops")


def _postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.fail("initdb not found: it comes with the Debian package postgresql", pytrace=False)
    return found[-1].parent


class OwnPostgres:
    """A PostgreSQL server in a data directory of its own on a free loopback port (run as the
    `postgres` user when the tests run as root: the server refuses root)."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="predlog-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam("postgres")
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.user is not None:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        wait_for_port(self.port)

    def stop(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        engine = sa.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def postgres():
    server = OwnPostgres()
    server.start()
    server.create_database("predlog")
    try:
        yield server
    finally:
        server.remove()


class Api:
    """`heart-mlops serve --workers 2` on the session's trained store, logging to `log_url`."""

    def __init__(self, settings, log_url: str, spool: Path, metrics_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.spool = spool
        metrics_dir.mkdir(exist_ok=True)
        self.env = {
            **os.environ,
            "HEART_MLOPS_HOME": str(settings.home_dir),
            "MLFLOW_TRACKING_URI": settings.tracking_uri,
            "HEART_MLOPS_MODEL_NAME": settings.model_name,
            "HEART_MLOPS_API_PORT": str(self.port),
            "HEART_MLOPS_API_WORKERS": "2",
            "HEART_MLOPS_API_POLL_SECONDS": "0",
            "HEART_MLOPS_PREDICTION_LOG_URI": log_url,
            "HEART_MLOPS_PREDICTION_LOG_SPOOL_DIR": str(spool),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        self.process = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [HEART_MLOPS, "serve"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=self.url, timeout=5) as http:
            ready = 0
            while ready < 4 and time.monotonic() < deadline:  # both workers, most likely
                with contextlib.suppress(httpx.HTTPError):
                    ready = ready + 1 if http.get("/health/ready").status_code == 200 else 0
                time.sleep(0.2)
        assert ready >= 4, "the API did not become ready"
        deadline = time.monotonic() + 30
        while len(self.workers()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)

    def workers(self) -> list[int]:
        """The pids of the workers with a spool (one spool per worker, named by its pid)."""
        return sorted({int(path.name.split("-")[1]) for path in self.spool.glob("spool-*.jsonl")})

    def stop(self) -> None:
        """SIGTERM, as a container runtime does: the workers drain their spools."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + " ") or line.startswith(name + "{")
        )


def send(url: str, rows: int, *, tolerate_failures: bool = False) -> list[str]:
    """`rows` rows, as singles and batches of 10 (half each), from 4 client threads. -> the
    request ids of the answered rows. Connection failures and 503s (a killed worker, and the
    one started in its place while it loads the model) are tolerated only when asked."""

    def one(kind: str) -> list[str]:
        single = kind == "single"
        body = {"features": SEED} if single else {"instances": [{"features": SEED}] * 10}
        try:
            with httpx.Client(base_url=url, timeout=30) as http:
                answer = http.post("/predict" if single else "/predict/batch", json=body)
        except httpx.TransportError:
            if not tolerate_failures:
                raise
            return []
        if answer.status_code == 503 and tolerate_failures:
            return []
        assert answer.status_code == 200, answer.text
        return (
            [answer.json()["request_id"]]
            if single
            else [p["request_id"] for p in answer.json()["predictions"]]
        )

    kinds = ["single"] * (rows // 2) + ["batch"] * (rows // 20)
    with ThreadPoolExecutor(4) as pool:
        return [request_id for ids in pool.map(one, kinds) for request_id in ids]


def logged(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return list(
                connection.execute(
                    sa.text("SELECT request_id FROM prediction_log WHERE role = 'champion'")
                ).scalars()
            )
    finally:
        engine.dispose()


def wait_for_log(url: str, expected: int, timeout: float = 60.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(sa.exc.OperationalError, sa.exc.ProgrammingError):
            ids = logged(url)
            if len(ids) >= expected or time.monotonic() > deadline:
                return ids
        if time.monotonic() > deadline:
            return []
        time.sleep(0.25)


def spool_bytes(spool: Path) -> int:
    return sum(path.stat().st_size for path in spool.glob("spool-*.jsonl"))


def test_a_database_outage_under_load_loses_no_row_and_writes_none_twice(
    trained, postgres, tmp_path
):
    url = postgres.url("predlog")
    api = Api(trained["settings"], url, tmp_path / "spool", tmp_path / "metrics")
    api.start()
    try:
        answered = send(api.url, 500)
        postgres.stop()  # the database goes away under a running API
        answered += send(api.url, 1000)  # still answered: the log only spools
        time.sleep(1.0)
        assert api.metric("heart_api_prediction_log_spooled") > 0
        assert api.metric("heart_api_prediction_log_write_errors_total") > 0
        postgres.start()
        answered += send(api.url, 500)
        assert len(answered) == 2000
        ids = wait_for_log(url, len(answered))
        assert len(ids) == len(set(ids)) == 2000
        assert set(ids) == set(answered)
        time.sleep(1.0)  # the writers empty their spools once they caught up
        assert spool_bytes(api.spool) == 0
        assert api.metric("heart_api_prediction_log_spooled") == 0
        assert api.metric("heart_api_prediction_log_written_total") >= 2000
    finally:
        api.stop()
    assert not list(api.spool.glob("spool-*.jsonl"))  # drained and removed on SIGTERM


def test_rows_answered_before_a_worker_is_killed_are_logged_once_after_a_restart(
    trained, postgres, tmp_path
):
    url = postgres.url("predlog")
    spool = tmp_path / "spool"
    api = Api(trained["settings"], url, spool, tmp_path / "metrics")
    api.start()
    victim = api.workers()[0]
    try:
        answered = send(api.url, 200)
        postgres.stop()  # nothing reaches the database: the kill leaves a full spool
        with ThreadPoolExecutor(1) as pool:
            load = pool.submit(send, api.url, 600, tolerate_failures=True)
            time.sleep(1.0)
            os.kill(victim, signal.SIGKILL)  # under load
            answered += load.result()
        assert f"spool-{victim}-" in " ".join(p.name for p in spool.glob("*.jsonl"))
    finally:
        api.stop()  # the other worker cannot drain (no database): its spool stays too
    assert spool_bytes(spool) > 0
    postgres.start()
    restarted = Api(trained["settings"], url, spool, tmp_path / "metrics")
    restarted.start()
    try:
        ids = wait_for_log(url, len(answered))
        assert len(ids) == len(set(ids))
        assert set(answered) <= set(ids)  # every answered row, once
        assert restarted.metric("heart_api_prediction_log_replayed_total") > 0
        assert not [p for p in spool.glob("*.jsonl") if f"spool-{victim}-" in p.name]
    finally:
        restarted.stop()


@pytest.mark.parametrize("driver", ["postgresql", "postgresql+psycopg2"])
def test_both_postgresql_drivers_write_each_record_once(postgres, driver):
    from heart_mlops import predictionlog

    engine = predictionlog.create_log_engine(postgres.url("predlog").replace("postgresql", driver))
    predictionlog.migrate(engine)
    predictionlog.migrate(engine)  # nothing left to do
    entry = {"ids": ["a", "b"], "t": time.time(), "x": [SEED, [*SEED[:11], 4, 0]]}
    entry |= {"p": [0.25, 0.75], "y": [0, 1], "thr": 0.5, "name": "m", "v": "3"}
    entry |= {"role": "champion", "w": "host:1", "ms": 0.5, "cid": "visit-1"}
    rows = predictionlog.rows_of_entries([entry], "postgresql")
    assert predictionlog.insert_rows(engine, rows) == 2
    predictionlog.insert_rows(engine, rows)  # a replay
    frame = predictionlog.read_log(engine)
    engine.dispose()
    assert frame["request_id"].tolist() == ["a", "b"]
    assert frame["ca"].tolist() == [0, 4] and frame["ca_used"].isna().tolist() == [False, True]
    assert frame["thal_used"].isna().tolist() == [False, True]
    assert frame["correlation_id"].tolist() == ["visit-1"] * 2
    assert str(frame["received_at"].dt.tz) == "UTC"
