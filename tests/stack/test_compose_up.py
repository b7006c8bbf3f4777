"""docker-compose.yaml run for real: `--profile all up` with two Airflow workers, then the
pipeline, the registry, the object store, the API and Prometheus, reached through the published
loopback ports only.

The public images are local stand-ins (tests/stack/standins.py); the project's three images are
built from their Dockerfiles on the stand-in Python base. The stack runs as its own Compose
project with an env file of its own (fresh secrets, free host ports, the fast training profile);
any stale copy of that project is removed first, and the project is removed at the end.
Grafana has no stand-in: it is scaled to 0 (its provisioning is checked in test_monitoring.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from heart_mlops.devstack import StackError
from heart_mlops.devstack.airflow_client import AirflowClient, follow_run
from heart_mlops.devstack.processes import check_ports, wait_for
from heart_mlops.graph import DAG_ID, MONITOR_DAG_ID
from heart_mlops.settings import Settings
from tests.conftest import FAST_PROFILE
from tests.integration.test_celery_dag import VARIABLES
from tests.support import debian_tool, free_port

from . import standins
from .conftest import COMPOSE_FILE, ROOT, RUN_SUMMARY, STEP_TIMES, load_script, parse_env_file

pytestmark = [pytest.mark.compose_stack, pytest.mark.timeout(1800)]

PROJECT = "heart-mlops-stack-test"
IMAGE_TAG = "stack-test"
# one service per image the project builds
BUILT = {
    "airflow-apiserver": "heart-mlops-airflow",
    "mlflow": "heart-mlops-mlflow",
    "api": "heart-mlops-api",
}
WORKERS = 2
SCALE = ["--scale", f"airflow-worker={WORKERS}", "--scale", "grafana=0"]
HOST_PORTS = (
    "AIRFLOW_HOST_PORT",
    "MLFLOW_HOST_PORT",
    "API_HOST_PORT",
    "PROMETHEUS_HOST_PORT",
    "GRAFANA_HOST_PORT",
    "S3_HOST_PORT",
    "MINIO_HOST_PORT",
    "MINIO_CONSOLE_HOST_PORT",
)
HEALTHY_TIMEOUT = 420
RUN_TIMEOUT = 900
FEATURES = [63, 1, 3, 145, 233, 1, 0, 150, 0, 2.3, 0, 0, 1]


class Failure(pytest.fail.Exception):
    """The stack cannot be set up or does not behave: the test fails with this one message."""

    def __init__(self, message: str):
        super().__init__(message, pytrace=False)


def wait(predicate, timeout: float, what: str, interval: float = 3) -> None:
    try:
        wait_for(predicate, timeout, what, interval)
    except StackError as exc:
        raise Failure(str(exc)) from None


@dataclass
class Compose:
    """docker-compose (Debian's 1.29) on the test's own project and env file."""

    docker: str  # the docker.io client, the one that builds with BuildKit
    env_file: Path
    values: dict[str, str]
    times: dict[str, float] = field(default_factory=dict)
    project: str = PROJECT

    def __call__(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        command = [debian_tool("docker-compose"), "--project-name", self.project]
        command += ["--project-directory", str(ROOT), "--file", str(COMPOSE_FILE)]
        command += ["--env-file", str(self.env_file), "--profile", "all", *args]
        # nothing of the caller's environment reaches the compose file's variables
        env = {
            "PATH": f"{Path(self.docker).parent}:{os.environ['PATH']}",
            "HOME": os.environ.get("HOME", "/root"),
            "COMPOSE_DOCKER_CLI_BUILD": "1",
            "DOCKER_BUILDKIT": "1",
        }
        return subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout
        )

    def check(self, *args: str, what: str, timeout: float = 900) -> None:
        result = self(*args, timeout=timeout)
        if result.returncode:
            output = (result.stdout + result.stderr).strip().splitlines()
            raise Failure(f"{what} failed:\n" + "\n".join(output[-30:]))

    def docker_run(self, *args: str) -> str:
        result = subprocess.run([self.docker, *args], capture_output=True, text=True, timeout=120)
        if result.returncode:
            raise Failure(f"docker {args[0]} failed: {result.stderr.strip()}")
        return result.stdout

    def containers(self, service: str | None = None) -> list[dict]:
        """`docker inspect` of the project's containers (of one service)."""
        filters = ["--filter", f"label=com.docker.compose.project={self.project}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        ids = self.docker_run("ps", "--all", "--quiet", *filters).split()
        return json.loads(self.docker_run("inspect", *ids)) if ids else []

    def unhealthy(self) -> list[str]:
        """Each container not yet healthy (or a one-shot job not done), with why."""
        waiting = []
        for container in self.containers():
            name, state = container["Name"].lstrip("/"), container["State"]
            health = state.get("Health")
            if state["Status"] == "exited" and state["ExitCode"] == 0 and not health:
                continue  # a one-shot job that succeeded
            if state["Status"] == "running" and health and health["Status"] == "healthy":
                continue
            why = state["Status"] if not health else health["Status"]
            if health and health["Log"]:
                why += f": {health['Log'][-1]['Output'].strip()[-300:]}"
            elif state["Status"] == "exited":
                why += f" with status {state['ExitCode']}"
            waiting.append(f"{name} ({why})")
        return waiting

    def wait_healthy(self, timeout: float = HEALTHY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while waiting := self.unhealthy():
            if time.monotonic() > deadline:
                raise Failure(f"not healthy after {timeout:.0f} s: " + "; ".join(waiting))
            time.sleep(3)

    def up(self) -> None:
        result = self("up", "--detach", "--no-build", *SCALE)
        if result.returncode:
            output = result.stdout + result.stderr
            for name in HOST_PORTS:
                if f":{self.values[name]} " in output or f":{self.values[name]}:" in output:
                    raise Failure(
                        f"host port {self.values[name]} ({name}) is already taken:\n{output}"
                    )
            raise Failure(f"docker-compose up failed:\n{output.strip()}")
        self.wait_healthy()

    def remove(self) -> None:
        """Everything of the project: containers, network, volumes, built images."""
        self("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=300)
        images = [f"{image}:{self.values['IMAGE_TAG']}" for image in BUILT.values()]
        subprocess.run([self.docker, "image", "rm", *images], capture_output=True, timeout=120)

    def timed(self, step: str, action, *args, **kwargs):
        started = time.monotonic()
        try:
            return action(*args, **kwargs)
        finally:
            self.times[step] = self.times.get(step, 0.0) + time.monotonic() - started


def stack_env_file(folder: Path) -> tuple[Path, dict[str, str]]:
    """An env file of the test's own: fresh secrets, free ports, fast training."""
    path = folder / "stack-test.env"
    assert load_script("make_env").main(["--output", str(path)]) == 0
    values = parse_env_file(path)
    values.update({name: str(free_port()) for name in HOST_PORTS})
    # the fast profile, one CV job per task: two workers of two tasks each fill two cores
    training = {**FAST_PROFILE, "n_jobs": 1}
    values.update({f"HEART_MLOPS_{key.upper()}": str(value) for key, value in training.items()})
    values.update(
        BIND_ADDRESS="127.0.0.1",
        IMAGE_TAG=IMAGE_TAG,
        # scaled to 0, never run: docker-compose 1.29 still looks up the image of each service
        GRAFANA_IMAGE=standins.BASE_IMAGE,
        AIRFLOW_TASK_HEARTBEAT_TIMEOUT="60",
    )
    write_env(path, values)
    return path, values


def write_env(path: Path, values: dict[str, str]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, request):
    """The stack up and healthy. -> Compose; removed at the end, as any stale copy first."""
    try:
        docker = standins.docker_client()
    except standins.StandinError as exc:
        pytest.fail(str(exc), pytrace=False)
    if subprocess.run([docker, "version"], capture_output=True, timeout=60).returncode:
        pytest.fail("the Docker engine does not answer: start dockerd as root", pytrace=False)
    compose = Compose(docker, *stack_env_file(tmp_path_factory.mktemp("compose-up")))
    compose.timed("remove a stale copy", compose.remove)
    try:
        if os.geteuid() != 0:
            raise Failure("the stack test needs root (debootstrap of its base image)")
        compose.timed("base image", standins.build_base, docker)
        compose.values.update(compose.timed("stand-ins", standins.build_standins, docker))
        write_env(compose.env_file, compose.values)
        check_ports({name: int(compose.values[name]) for name in HOST_PORTS})
        for service, image in BUILT.items():
            what = f"building {image}:{IMAGE_TAG}"
            compose.timed("build", compose.check, "build", service, what=what)
        compose.timed("up", compose.up)
        yield compose
    except (standins.StandinError, StackError) as exc:
        raise Failure(str(exc)) from None
    finally:
        compose.timed("down -v", compose.remove)
        request.config.stash[STEP_TIMES] = compose.times  # printed at the end of the run


def url(compose: Compose, port_name: str, path: str = "") -> str:
    return f"http://127.0.0.1:{compose.values[port_name]}{path}"


def http(
    method: str, address: str, body=None, headers: dict | None = None, timeout: float = 30
) -> tuple[int, dict]:
    """-> (status, JSON body); an error status is returned, not raised."""
    request = urllib.request.Request(
        address,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def airflow(compose: Compose) -> AirflowClient:
    return AirflowClient(
        url(compose, "AIRFLOW_HOST_PORT"),
        username=compose.values["AIRFLOW_ADMIN_USERNAME"],
        password=compose.values["AIRFLOW_ADMIN_PASSWORD"],
    )


def mlflow_champion(compose: Compose, *, login: bool = True) -> tuple[int, dict]:
    query = urllib.parse.urlencode({"name": Settings().model_name, "alias": "champion"})
    address = url(compose, "MLFLOW_HOST_PORT", f"/api/2.0/mlflow/registered-models/alias?{query}")
    user, password = (
        compose.values["MLFLOW_ADMIN_USERNAME"],
        compose.values["MLFLOW_ADMIN_PASSWORD"],
    )
    basic = b64encode(f"{user}:{password}".encode()).decode()
    return http("GET", address, headers={"Authorization": f"Basic {basic}"} if login else {})


def bucket_keys(compose: Compose, bucket: str) -> list[str]:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=url(compose, "S3_HOST_PORT"),
        aws_access_key_id=compose.values["S3_ACCESS_KEY"],
        aws_secret_access_key=compose.values["S3_SECRET_KEY"],
        region_name="us-east-1",
    )
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def predict(compose: Compose) -> tuple[int, dict]:
    return http("POST", url(compose, "API_HOST_PORT", "/predict"), {"features": FEATURES})


def kill_a_busy_worker(compose: Compose, client: AirflowClient, run_id: str) -> tuple[str, str]:
    """Kills the worker container of the first task seen running, as the kernel's OOM killer
    would (SIGKILL to its init: `docker kill` would count as a stop, not restarted).
    -> (task id, the worker's host name)"""
    workers = {c["Config"]["Hostname"]: c for c in compose.containers("airflow-worker")}
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        for ti in client.task_instances(run_id):
            if ti["state"] == "running" and ti["hostname"] in workers:
                os.kill(workers[ti["hostname"]]["State"]["Pid"], signal.SIGKILL)
                return ti["task_id"], ti["hostname"]
        if client.run_state(run_id) in ("success", "failed"):
            raise Failure("the DAG run ended before a task was seen running")
        time.sleep(1)
    raise Failure(f"no task of the DAG run ran within {RUN_TIMEOUT} s")


def summary(seen: dict) -> list[str]:
    """What the DAG run did, in lines for the end of the test run: the killed worker and the
    task it ran, that task's tries, and which worker ran each task."""
    task_id, killed = seen["killed"]
    lines = [f"DAG run {seen['run_id']}: {seen['state']}; killed worker {killed} under {task_id}"]
    lines += [
        f"  {task_id} try {t.get('try_number')}: {t.get('state')} on {t.get('hostname')}"
        for t in seen["tries"]
    ]
    lines += [f"  {task}: {ti['state']} on {ti['hostname']}" for task, ti in seen["tasks"].items()]
    lines.append(f"  worker restarts: {seen['workers']}")
    return lines


@pytest.fixture(scope="module")
def pipeline_run(stack, request):
    """The DAG run, a worker killed under one of its tasks. -> dict of what the test saw"""
    client = airflow(stack)

    def run():
        wait(client.dag_loaded, 300, f"the DAG {DAG_ID} to be parsed")
        client.unpause()
        run_id = client.trigger()
        task_id, killed = kill_a_busy_worker(stack, client, run_id)
        try:
            state = follow_run(client, run_id, RUN_TIMEOUT, interval=5)
        except StackError as exc:
            raise Failure(str(exc)) from None
        tasks = client.task_instances(run_id)
        return {
            "run_id": run_id,
            "state": state,
            "tasks": {ti["task_id"]: ti for ti in tasks},
            "killed": (task_id, killed),
            "tries": client.task_tries(run_id, task_id),
            "workers": {
                c["Config"]["Hostname"]: c["RestartCount"]
                for c in stack.containers("airflow-worker")
            },
        }

    seen = stack.timed("DAG run", run)
    request.config.stash[RUN_SUMMARY] = summary(seen)
    return seen


def test_the_dag_run_survives_a_killed_worker(pipeline_run):
    states = {task: ti["state"] for task, ti in pipeline_run["tasks"].items()}
    assert pipeline_run["state"] == "success", states
    task_id, killed = pipeline_run["killed"]
    tries = pipeline_run["tries"]
    assert len(tries) >= 2, f"{task_id} was not retried after its worker was killed: {tries}"
    assert tries[0]["hostname"] == killed and tries[-1]["state"] == "success", tries
    hosts = {ti["hostname"] for ti in pipeline_run["tasks"].values()} | {killed}
    assert hosts == set(pipeline_run["workers"]) and len(hosts) == WORKERS, hosts
    assert pipeline_run["workers"][killed] == 1, "Docker did not restart the killed worker"


def test_champion_artifacts_and_variables(stack, pipeline_run):
    def check():
        status, _ = mlflow_champion(stack, login=False)
        assert status == 401, f"MLflow answered {status} without login"
        status, found = mlflow_champion(stack)
        assert status == 200, f"no champion in MLflow ({status})"
        version = found["model_version"]
        mlflow_keys = bucket_keys(stack, "mlflow")
        model_files = [key for key in mlflow_keys if key.endswith("/MLmodel")]
        ids = [version["run_id"], version["source"].rsplit("/", 1)[-1]]  # models:/<model id>
        assert any(i in key for i in ids for key in model_files), (version, model_files)
        data_keys = bucket_keys(stack, "data")
        runs = {key.split("/")[2] for key in data_keys if key.startswith("pipeline/runs/")}
        assert len(runs) == 1, runs
        run = runs.pop()
        assert {f"pipeline/runs/{run}/raw/data.csv", f"pipeline/runs/{run}/train.parquet"} <= set(
            data_keys
        )
        client = airflow(stack)
        variables = {key: client.variable(key) for key in VARIABLES}
        published = variables["best_model_version"]
        assert str(published["version"]) == version["version"] and published["champion"]

    stack.timed("checks", check)


def test_the_api_serves_the_champion(stack, pipeline_run, request):
    def check():
        token = stack.values["HEART_MLOPS_API_TOKEN"]
        address = url(stack, "API_HOST_PORT", "/model/reload")
        # loads the model from MLflow: can take a minute on a busy machine
        status, reloaded = http("POST", address, {}, {"Authorization": f"Bearer {token}"}, 300)
        assert status == 200 and reloaded["reloaded"], (status, reloaded)
        _, champion = mlflow_champion(stack)
        assert str(reloaded["model_version"]) == champion["model_version"]["version"]
        status, answer = predict(stack)
        assert status == 200 and 0 <= answer["probability"] <= 1, (status, answer)
        request.config.stash.setdefault(RUN_SUMMARY, []).append(
            f"API container: reloaded version {reloaded['model_version']} (MLflow @champion "
            f"{champion['model_version']['version']}); seed patient P(disease) "
            f"{answer['probability']:.4f}, {answer['label']}"
        )

    stack.timed("checks", check)


def prediction_log_query(stack: Compose, query: str, *, as_grafana: bool = False) -> str:
    """`query` run by psql in the postgres container (PostgreSQL publishes no port) on the
    prediction log's database, as the superuser or as Grafana's login. -> its output;
    Failure with psql's error when it fails."""
    values = stack.values
    user, password = (
        (values["GRAFANA_DB_USER"], values["GRAFANA_DB_PASSWORD"])
        if as_grafana
        else ("postgres", values["POSTGRES_PASSWORD"])
    )
    (postgres,) = stack.containers("postgres")
    psql = ["exec", "--env", f"PGPASSWORD={password}", postgres["Id"], "psql"]
    psql += ["--host", "127.0.0.1", "--username", user, "--dbname"]
    psql += [values.get("PREDICTION_LOG_DB_NAME", "prediction_log"), "-tAc", query]
    return stack.docker_run(*psql).strip()


def test_each_answer_is_in_the_stacks_prediction_log(stack, pipeline_run):
    status, answer = predict(stack)
    assert status == 200 and answer["request_id"], (status, answer)
    query = (
        "SELECT count(*) FROM prediction_log "
        f"WHERE request_id = '{answer['request_id']}' AND role = 'champion'"
    )

    def logged() -> bool:
        return prediction_log_query(stack, query) == "1"

    stack.timed("checks", wait, logged, 60, "the answer's record in the prediction_log database")


def test_model_monitoring_runs_on_celery_and_grafana_reads_only_its_summaries(
    stack, pipeline_run, request
):
    """model_monitoring on the workers against the stack's log: the API's few answers are too
    few for drift, so the run succeeds and asks for no retrain; its summary is in PostgreSQL,
    where Grafana's login reads it and cannot read the patient-level log."""
    for _ in range(3):
        assert predict(stack)[0] == 200
    client = airflow(stack)

    def run() -> tuple[str, dict]:
        wait(lambda: client.dag_loaded(MONITOR_DAG_ID), 300, f"the DAG {MONITOR_DAG_ID}")
        client.unpause(MONITOR_DAG_ID)
        run_id = client.trigger(dag_id=MONITOR_DAG_ID)
        state = follow_run(client, run_id, RUN_TIMEOUT, interval=5, dag_id=MONITOR_DAG_ID)
        tasks = client.task_instances(run_id, dag_id=MONITOR_DAG_ID)
        return state, {ti["task_id"]: ti["state"] for ti in tasks}

    state, tasks = stack.timed("monitoring run", run)
    assert state == "success", tasks
    assert tasks == {
        "monitor": "success",
        "expire_predictions": "success",
        "request_retrain": "skipped",
    }, tasks
    query = (
        "SELECT predictions, drift_reason, triggered FROM monitoring_window "
        "ORDER BY id DESC LIMIT 1"
    )
    predictions, reason, triggered = prediction_log_query(stack, query, as_grafana=True).split("|")
    assert int(predictions) >= 4 and reason.startswith("not enough rows"), reason
    assert triggered == "f"
    with pytest.raises(Failure, match="permission denied"):
        prediction_log_query(stack, "SELECT count(*) FROM prediction_log", as_grafana=True)
    request.config.stash.setdefault(RUN_SUMMARY, []).append(
        f"model_monitoring on Celery: {state}; {predictions} champion rows: {reason}"
    )


def test_prometheus_scraped_the_api(stack, pipeline_run):
    query = urllib.parse.urlencode({"query": 'count by (__name__) ({__name__=~"heart_api_.+"})'})
    address = url(stack, "PROMETHEUS_HOST_PORT", f"/api/v1/query?{query}")

    def scraped() -> bool:
        predict(stack)
        status, found = http("GET", address)
        return status == 200 and bool(found["data"]["result"])

    stack.timed("checks", wait, scraped, 120, "Prometheus to scrape heart_api_* series", 5)


def test_the_api_answers_while_postgres_restarts(stack, pipeline_run):
    answers: list[int] = []
    done = threading.Event()

    def ask():
        while not done.is_set():
            answers.append(predict(stack)[0])
            time.sleep(0.2)

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        stack.timed("postgres restart", stack.check, "restart", "postgres", what="restart postgres")
        stack.timed("postgres restart", stack.wait_healthy)
    finally:
        done.set()
        asker.join()
    assert answers and set(answers) == {200}, f"{len(answers)} answers: {set(answers)}"


def test_down_then_up_keeps_the_data(stack, pipeline_run):
    before = mlflow_champion(stack)[1]["model_version"]
    keys = {bucket: set(bucket_keys(stack, bucket)) for bucket in ("data", "mlflow")}
    stack.timed("down, up again", stack.check, "down", what="docker-compose down")
    stack.timed("down, up again", stack.up)
    status, after = mlflow_champion(stack)
    assert status == 200 and after["model_version"]["version"] == before["version"]
    for bucket, names in keys.items():
        assert names <= set(bucket_keys(stack, bucket)), f"objects lost in bucket {bucket}"
    client = airflow(stack)
    assert str(client.variable("best_model_version")["version"]) == before["version"]
    ready = url(stack, "API_HOST_PORT", "/health/ready")
    wait(lambda: http("GET", ready)[0] == 200, 120, "the API to load the champion")
    assert predict(stack)[0] == 200


def test_an_image_that_does_not_build_is_named_and_only_its_project_removed(stack, tmp_path):
    """The project's Python base replaced by the bare Debian stand-in (no Python): building
    the API image stops with one message naming the image; removing that project leaves the
    other one (the stack) and the stand-in images as they were."""
    env_file = tmp_path / "refused.env"
    values = {**stack.values, "PYTHON_IMAGE": standins.BASE_IMAGE, "IMAGE_TAG": "refused"}
    write_env(env_file, values)
    refused = Compose(stack.docker, env_file, values, project=f"{PROJECT}-refused")
    with pytest.raises(Failure, match=r"^building heart-mlops-api:refused failed:\n"):
        refused.check("build", "api", what="building heart-mlops-api:refused")
    refused.remove()
    assert refused.containers() == []
    assert stack.unhealthy() == [] and len(stack.containers()) > len(BUILT)
    assert standins.image_exists(stack.docker, standins.BASE_IMAGE)
