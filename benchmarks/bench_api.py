"""Serve the same champion several ways, one worker each, and load all with the same client.

    python benchmarks/bench_api.py --home .bench-home --train random_forest --baseline 2cc371c
    python benchmarks/bench_api.py --home .bench-home --train svm --peers "" --explain

- this API: `heart-mlops serve --workers 1`
- mlflow:   `mlflow models serve -m models:/<name>@champion --env-manager local --workers 1`
- baseline (with `--baseline GIT_REF`): this API as of that commit (`heart-mlops serve` from its
  source), to compare an old commit with the new one in the same run
- constant: benchmarks/constant_app.py, a FastAPI endpoint that reads the body and answers
  fixed JSON, served by uvicorn the same way (one worker, access log on): the server's ceiling
- nolog:    this API with the prediction log switched off (HEART_MLOPS_PREDICTION_LOG_ENABLED=
  false): the ratio API/nolog is what logging costs (this API logs to a SQLite file of the run)
- shadow:   this API serving a copy of the champion registered under `<model>-shadow`, with a
  second copy of it under @challenger scored in shadow: the ratio API/shadow is what shadow
  scoring costs on top of logging

    python benchmarks/bench_api.py --home .bench-home --train svm --peers nolog,shadow

With --explain, single rows with `?explain=true` are measured on this API too, and compared with
its own plain /predict of the same run.

Servers start one at a time; each one's cold start is the time from launch to the first 200 of
its readiness path (/health/ready, mlflow's /ping).

Both listen on loopback ports (18800-18899). One load generator measures each in turn, rounds
alternating the order: single rows at concurrency 1 and 32, and batches of 1000 rows. The
generator is `wrk` (Debian package wrk) when installed, else a bounded asyncio client (httpx,
which shares the CPUs and inflates tail latencies at high concurrency); --client chooses.
Prints a markdown table with requests/s, rows/s, p50 and p99 latency and the ratio of this API
to each peer (same run, same machine). Every measurement is bounded in time and count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from heart_mlops.data import FEATURES  # noqa: E402
from heart_mlops.settings import Settings  # noqa: E402

HOST = "127.0.0.1"
STARTUP_SECONDS = 300
MAX_REQUESTS = 50_000  # per measurement, besides the time bound


@dataclass
class Scenario:
    name: str
    concurrency: int
    rows: int
    explain: bool = False  # `?explain=true`: this API only, compared with its plain /predict


@dataclass
class Measurement:
    seconds: float = 0.0
    rows: int = 0
    requests: int = 0
    latencies: list[float] = field(default_factory=list)  # every request's (httpx client)
    p50: float | None = None  # seconds, as reported by wrk
    p99: float | None = None
    failures: int = 0


@dataclass
class Server:
    name: str
    url: str
    ready_path: str
    process: subprocess.Popen | None = None

    started: float = 0.0  # monotonic time of its launch
    cold_start: float = 0.0  # seconds from launch to ready

    def body(self, rows: list[list[float]]) -> dict:
        if self.name == "mlflow":
            return {"dataframe_split": {"columns": list(FEATURES), "data": rows}}
        if len(rows) == 1:
            return {"features": rows[0]}
        return {"instances": [{"features": row} for row in rows]}

    def path(self, scenario: Scenario) -> str:
        if self.name == "mlflow":
            return "/invocations"
        path = "/predict" if scenario.rows == 1 else "/predict/batch"
        return path + ("?explain=true" if scenario.explain else "")


def train_champion(settings: Settings, candidate: str) -> None:
    """A quick store whose champion is `candidate` (only that candidate is trained)."""
    import yaml

    from heart_mlops.pipeline import run_pipeline

    params = yaml.safe_load(settings.model_params_path.read_text())
    only = {"candidates": {candidate: params["candidates"][candidate]}}
    path = settings.home_dir / "bench_model_params.yaml"
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(only))
    quick = settings.model_copy(
        update={"model_params_path": path, "cv_folds": 3, "cv_repeats": 1, "tuning_trials": 0}
    )
    result = run_pipeline(quick)
    if not result.registered.champion:
        raise SystemExit(
            f"the trained {candidate} did not become champion: {result.registered.decision}"
        )


def start(command: list[str], env: dict, log_path: Path) -> subprocess.Popen:
    log = log_path.open("wb")
    return subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, 15)  # its own session: the server and its workers
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait(timeout=10)


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            raise SystemExit(f"{server.name} exited during startup (see its log)")
        try:
            if httpx.get(server.url + server.ready_path, timeout=5).status_code == 200:
                server.cold_start = time.monotonic() - server.started
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{server.name} not ready after {STARTUP_SECONDS}s")


def wait_challenger(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while httpx.get(server.url + "/model/info", timeout=10).json().get("challenger") is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"{server.name}: no challenger loaded after {STARTUP_SECONDS}s")
        time.sleep(0.2)


async def measure(
    server: Server, scenario: Scenario, rows: list[list[float]], seconds: float
) -> Measurement:
    body = server.body(rows[: scenario.rows])
    path = server.path(scenario)
    result = Measurement()
    deadline = time.perf_counter() + seconds
    sent = 0
    limits = httpx.Limits(
        max_connections=scenario.concurrency, max_keepalive_connections=scenario.concurrency
    )

    async def user(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while time.perf_counter() < deadline and sent < MAX_REQUESTS:
            sent += 1
            started = time.perf_counter()
            try:
                response = await client.post(path, json=body)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                result.latencies.append(time.perf_counter() - started)
                result.requests += 1
                result.rows += scenario.rows
            else:
                result.failures += 1

    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=120) as client:
        for _ in range(3):  # warm connections and caches
            await client.post(path, json=body)
        started = time.perf_counter()
        await asyncio.gather(*(user(client) for _ in range(scenario.concurrency)))
        result.seconds = time.perf_counter() - started
    return result


_WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = io.open("{body}", "r")
wrk.body = file:read("*a")
file:close()
"""
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def measure_wrk(
    server: Server, scenario: Scenario, rows: list[list[float]], seconds: float, workdir: Path
) -> Measurement:
    """One wrk run (one thread, `concurrency` connections, bounded by `seconds`)."""
    body = workdir / f"{server.name}-{scenario.rows}.json"
    body.write_text(json.dumps(server.body(rows[: scenario.rows])))
    script = workdir / f"{server.name}-{scenario.rows}-{scenario.explain}.lua"
    script.write_text(_WRK_SCRIPT.format(body=body))
    completed = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{scenario.concurrency}",
            f"-d{seconds:g}s",
            "--latency",
            "--timeout",
            "60s",
            "-s",
            str(script),
            server.url + server.path(scenario),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=True,
    )
    out = completed.stdout
    requests, duration = re.search(r"(\d+) requests in ([\d.]+\w+)", out).groups()
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failures = (int(non_2xx.group(1)) if non_2xx else 0) + (
        sum(map(int, errors.groups())) if errors else 0
    )
    ok = int(requests) - failures
    return Measurement(
        seconds=_seconds(duration),
        rows=ok * scenario.rows,
        requests=ok,
        p50=_seconds(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),
        p99=_seconds(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),
        failures=failures,
    )


def percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _stats(runs: list[Measurement]) -> dict:
    seconds = sum(r.seconds for r in runs)
    latencies = [x for r in runs for x in r.latencies]
    if latencies:  # every request's latency: exact percentiles over all rounds
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    else:  # wrk's percentiles per round: their median
        p50 = statistics.median(r.p50 for r in runs)
        p99 = statistics.median(r.p99 for r in runs)
    return {
        "rps": sum(r.requests for r in runs) / seconds,
        "rows": sum(r.rows for r in runs) / seconds,
        "p50": p50 * 1e3,
        "p99": p99 * 1e3,
        "failed": sum(r.failures for r in runs),
    }


def table(
    results: dict[tuple[str, str], list[Measurement]],
    scenarios: list[Scenario],
    peers: list[Server],
) -> str:
    lines = [
        "| scenario | server | requests/s | rows/s | p50 ms | p99 ms | failed |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    plain = {(s.concurrency, s.rows): s.name for s in scenarios if not s.explain}
    for scenario in scenarios:
        summary = {}
        names = ["api"] if scenario.explain else ["api", *(peer.name for peer in peers)]
        for name in names:
            stats = summary[name] = _stats(results[(scenario.name, name)])
            lines.append(
                f"| {scenario.name} | {'this API' if name == 'api' else name} | "
                f"{stats['rps']:.1f} | {stats['rows']:.0f} | {stats['p50']:.2f} | "
                f"{stats['p99']:.2f} | {stats['failed']} |"
            )
        if scenario.explain:  # against the same API's plain requests of this run
            comparisons = [
                ("explain/plain", _stats(results[(plain[(scenario.concurrency, 1)], "api")]))
            ]
        else:
            comparisons = [(f"API/{peer.name}", summary[peer.name]) for peer in peers]
        for label, theirs in comparisons:
            ours = summary["api"]
            ratio = {key: ours[key] / theirs[key] for key in ("rps", "rows", "p50", "p99")}
            lines.append(
                f"| {scenario.name} | **ratio {label}** | **{ratio['rps']:.3f}x** | "
                f"**{ratio['rows']:.3f}x** | {ratio['p50']:.3f} | **{ratio['p99']:.3f}** | |"
            )
    return "\n".join(lines)


def cold_start_table(api: Server, peers: list[Server]) -> str:
    lines = ["| server | launch to ready, s | ratio API/server |", "| --- | ---: | ---: |"]
    for server in (api, *peers):
        ratio = api.cold_start / server.cold_start
        lines.append(f"| {server.name} | {server.cold_start:.1f} | {ratio:.3f} |")
    return "\n".join(lines)


SERVE = ["serve", "--host", HOST, "--workers", "1", "--port"]  # then the port


def git(*arguments: str) -> None:
    subprocess.run(["git", "-C", str(ROOT), *arguments], check=True, capture_output=True)


def shadow_model(settings: Settings) -> str:
    """The champion registered twice more under `<model>-shadow`: @champion and @challenger.
    -> that model's name."""
    from heart_mlops import registry

    registry.connect(settings)
    name = f"{settings.model_name}-shadow"
    if registry.version_by_alias(name, registry.CHALLENGER) is not None:
        return name
    champion = registry.version_by_alias(settings.model_name, registry.CHAMPION)
    tags = registry.untagged(champion.tags)
    champion_copy = registry.register(champion.source, name, tags)
    registry.promote(name, champion_copy, "benchmark: shadow scoring")
    challenger_copy = registry.register(champion.source, name, tags)
    registry.client().set_registered_model_alias(name, registry.CHALLENGER, challenger_copy)
    return name


def this_api_env(env: dict, name: str, logs: Path) -> dict:
    """The environment of this API as server `name`: its own prediction log and spool."""
    return {
        **env,
        "HEART_MLOPS_PREDICTION_LOG_URI": f"sqlite:///{logs / f'{name}-log.db'}",
        "HEART_MLOPS_PREDICTION_LOG_SPOOL_DIR": str(logs / f"{name}-spool"),
    }


def start_peer(peer: Server, args: argparse.Namespace, settings: Settings, env: dict, logs: Path):
    """Launch `peer` (mlflow, baseline, constant, nolog or shadow) on its port; record when."""
    bin_dir = Path(sys.executable).parent
    if peer.name in ("nolog", "shadow"):
        command = [str(bin_dir / "heart-mlops"), *SERVE]
        env = this_api_env(env, peer.name, logs)
        if peer.name == "nolog":
            env["HEART_MLOPS_PREDICTION_LOG_ENABLED"] = "false"
        else:
            env["HEART_MLOPS_MODEL_NAME"] = shadow_model(settings)
    elif peer.name == "baseline":
        source = logs / "baseline"
        git("worktree", "add", "--detach", str(source), args.baseline)
        command = [sys.executable, "-c", "from heart_mlops.cli import app; app()", *SERVE]
        env = {**env, "PYTHONPATH": str(source / "src")}
    elif peer.name == "constant":
        command = [
            str(bin_dir / "uvicorn"),
            "constant_app:app",
            "--app-dir",
            str(ROOT / "benchmarks"),
        ]
        command += ["--host", HOST, "--workers", "1", "--log-level", "info", "--port"]
    else:
        command = [str(bin_dir / "mlflow"), "models", *SERVE[:-1], "--env-manager", "local"]
        command += ["-m", f"models:/{settings.model_name}@champion", "--port"]
    peer.started = time.monotonic()
    peer.process = start(
        [*command, str(peer.url.rsplit(":", 1)[1])], env, logs / f"{peer.name}.log"
    )


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--home",
        type=Path,
        help="store to serve from (HEART_MLOPS_HOME); default: the settings' home",
    )
    parser.add_argument(
        "--train",
        metavar="CANDIDATE",
        help="first train a quick store whose champion is this candidate "
        "(e.g. random_forest, logistic_regression, svm)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    parser.add_argument("--api-port", type=int, default=18810, help="peers on the next ports")
    parser.add_argument("--output", type=Path, help="also write the tables here")
    parser.add_argument(
        "--baseline",
        metavar="GIT_REF",
        help="also serve this API as of GIT_REF (e.g. HEAD~1) as the peer 'baseline'",
    )
    parser.add_argument(
        "--peers",
        default="mlflow,constant",
        help="comma-separated peers among mlflow, constant, nolog, shadow (baseline comes "
        "with --baseline)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="also single rows with ?explain=true (this API only), beside its plain /predict",
    )
    parser.add_argument(
        "--client",
        choices=("wrk", "httpx"),
        default="wrk" if shutil.which("wrk") else "httpx",
        help="load generator (default: wrk when installed)",
    )
    return parser.parse_args()


def start_servers(
    api: Server, peers: list[Server], args, settings: Settings, env: dict, logs: Path
) -> None:
    """Each server, one at a time: each cold start on an otherwise idle machine."""
    for server in (api, *peers):
        if server is api:
            api.started = time.monotonic()
            api.process = start(
                [str(Path(sys.executable).parent / "heart-mlops"), *SERVE, str(args.api_port)],
                this_api_env(env, "api", logs),
                logs / "api.log",
            )
        else:
            start_peer(server, args, settings, env, logs)
        wait_ready(server)
        if server.name == "shadow":  # the challenger loads after the champion
            wait_challenger(server)


def run_rounds(
    servers: list[Server], scenarios: list[Scenario], rows: list, args, logs: Path
) -> dict[tuple[str, str], list[Measurement]]:
    """Every scenario on every server, `args.rounds` times, the order reversed every round."""
    results: dict[tuple[str, str], list[Measurement]] = {
        (s.name, server.name): [] for s in scenarios for server in servers
    }
    for round_number in range(args.rounds):
        order = servers if round_number % 2 == 0 else servers[::-1]
        for scenario in scenarios:
            for server in order:
                if scenario.explain and server.name != "api":
                    continue
                result = (
                    measure_wrk(server, scenario, rows, args.seconds, logs)
                    if args.client == "wrk"
                    else asyncio.run(measure(server, scenario, rows, args.seconds))
                )
                results[(scenario.name, server.name)].append(result)
                print(
                    f"round {round_number + 1} {scenario.name} {server.name}: "
                    f"{result.requests / result.seconds:.1f} req/s",
                    file=sys.stderr,
                )
    return results


SCENARIOS = [
    Scenario("1 row, concurrency 1", 1, 1),
    Scenario("1 row, concurrency 32", 32, 1),
    Scenario("1000-row batch, concurrency 1", 1, 1000),
]
EXPLAIN_SCENARIOS = [
    Scenario("1 row explain=true, concurrency 1", 1, 1, explain=True),
    Scenario("1 row explain=true, concurrency 32", 32, 1, explain=True),
]


def main() -> None:
    args = parse_arguments()
    names = [name for name in args.peers.split(",") if name] + (
        ["baseline"] if args.baseline else []
    )
    if unknown := set(names) - {"mlflow", "constant", "baseline", "nolog", "shadow"}:
        raise SystemExit(f"unknown peer(s): {', '.join(sorted(unknown))}")
    if not 18800 <= args.api_port <= 18899 - len(names):
        raise SystemExit(f"port {args.api_port}: use 18800-{18899 - len(names)}")

    env = {**os.environ}
    if args.home:
        env["HEART_MLOPS_HOME"] = str(args.home.resolve())
        os.environ["HEART_MLOPS_HOME"] = env["HEART_MLOPS_HOME"]
    settings = Settings()
    if args.train:
        train_champion(settings, args.train)
    env.update(
        {
            "MLFLOW_TRACKING_URI": settings.tracking_uri,
            "HEART_MLOPS_API_POLL_SECONDS": "0",
            "PYTHONWARNINGS": "ignore",
        }
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"  # mlflow runs `uvicorn`
    api = Server("api", f"http://{HOST}:{args.api_port}", "/health/ready")
    peers = [
        Server(
            name,
            f"http://{HOST}:{args.api_port + 1 + index}",
            "/ping" if name == "mlflow" else "/health/ready",
        )
        for index, name in enumerate(names)
    ]
    rows = (
        pd.read_csv(ROOT / "data" / "heart.csv")
        .loc[:, list(FEATURES)]
        .head(1000)
        .astype(float)
        .to_numpy()
        .tolist()
    )
    scenarios = SCENARIOS + (EXPLAIN_SCENARIOS if args.explain else [])
    logs = Path(tempfile.mkdtemp(prefix="bench-api-"))
    servers = [api, *peers]
    try:
        start_servers(api, peers, args, settings, env, logs)
        info = httpx.get(api.url + "/model/info", timeout=10).json()
        if args.explain:  # the explainer is built at its first request: not in the rounds
            httpx.post(api.url + "/predict?explain=true", json={"features": rows[0]}, timeout=120)
        results = run_rounds(servers, scenarios, rows, args, logs)
    except BaseException:
        print(f"server logs kept in {logs}", file=sys.stderr)
        raise
    finally:
        for server in servers:
            stop(server.process)
        if args.baseline:
            git("worktree", "remove", "--force", str(logs / "baseline"))
    report = (
        f"Champion: {settings.model_name} v{info['version']} ({info['model_type']}, "
        f"{info['runtime']} runtime here); {args.rounds} rounds of {args.seconds:g}s per "
        f"measurement, one worker each, {os.cpu_count()} CPUs, load by {args.client}.\n\n"
        + (f"Peer 'baseline': this API as of {args.baseline}.\n\n" if args.baseline else "")
        + table(results, scenarios, peers)
        + "\n\nCold start (launch to the first 200 of the readiness path):\n\n"
        + cold_start_table(api, peers)
    )
    print(report)
    if args.output:
        args.output.write_text(report + "\n")
    shutil.rmtree(logs, ignore_errors=True)


if __name__ == "__main__":
    main()
