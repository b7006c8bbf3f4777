"""The `heart-mlops` command."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from heart_mlops.errors import DataError, HeartMlopsError
from heart_mlops.settings import Settings

if TYPE_CHECKING:
    from heart_mlops.step_results import PipelineResult

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Train, track, register and serve the heart-disease classifier.",
)
console = Console(stderr=True)
state = {"debug": False}


@app.callback()
def main(debug: Annotated[bool, typer.Option(help="Show tracebacks and debug logs.")] = False):
    """Train, track, register and serve the heart-disease classifier."""
    state["debug"] = debug
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if debug else "WARNING")
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("alembic", "mlflow", "urllib3", "botocore", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)
    if not debug:
        import warnings

        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning)


def _fail(exc: Exception) -> typer.Exit:
    if state["debug"]:
        raise exc
    # the message may quote the user's input: brackets in it are text, not markup
    console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
    return typer.Exit(code=1 if isinstance(exc, HeartMlopsError) else 2)


def _settings(**overrides) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except Exception as exc:  # pydantic's ValidationError names the setting and value
        raise _fail(HeartMlopsError(f"invalid setting: {exc}")) from None


def _run_settings(metric: str | None, trials: int | None = None) -> Settings:
    """The settings with --metric and --trials over them."""
    try:
        return _settings().with_run_options(selection_metric=metric, tuning_trials=trials)
    except Exception as exc:
        raise _fail(HeartMlopsError(f"invalid setting: {exc}")) from None


@app.command()
def train(
    data: Annotated[str | None, typer.Option(help="Data file: path, file:// or s3:// URI.")] = None,
    synthetic: Annotated[
        bool, typer.Option(help="Use seeded synthetic data (never champion).")
    ] = False,
    trials: Annotated[int | None, typer.Option(help="Tuning trials (default: setting).")] = None,
    metric: Annotated[
        str | None, typer.Option(help="Selection metric (default: the setting, log_loss).")
    ] = None,
):
    """Run the whole pipeline in this process and print the results table."""
    from heart_mlops.pipeline import run_pipeline

    settings = _run_settings(metric, trials)
    if data and synthetic:
        raise _fail(HeartMlopsError("--data and --synthetic exclude each other"))
    try:
        with console.status("starting") as status:

            def on_step(name: str, seconds: float, result) -> None:
                console.print(f"[green]✓[/] {name} ({seconds:.1f}s)")
                status.update(f"after {name}")

            result = run_pipeline(settings, data_uri=data, synthetic=synthetic, on_step=on_step)
    except Exception as exc:
        raise _fail(exc) from None
    print_summary(result)


def print_summary(result: PipelineResult) -> None:
    """The results table of `train`: candidates, the chosen model, the promotion, the data."""
    out = Console()
    metric = result.best.selection_metric
    table = Table(title="Candidates (CV on the training part, holdout reported only)")
    for column in (
        "candidate",
        f"CV {metric}",
        "CV ROC-AUC",
        "CV calibration slope",
        "holdout ROC-AUC",
        "holdout accuracy",
    ):
        table.add_column(column)
    for e in result.evaluations:
        m = e.metrics
        table.add_row(
            e.name,
            f"{m[f'cv_{metric}_mean']:.4f}",
            f"{m['cv_roc_auc_mean']:.4f} ± {m['cv_roc_auc_std']:.4f}",
            f"{m['cv_calibration_slope']:.2f}",
            f"{m['holdout_roc_auc']:.4f}",
            f"{m['holdout_accuracy']:.4f}",
        )
    out.print(table)
    reg = result.registered
    out.print(
        f"best: [bold]{reg.candidate}[/] ({reg.label}, {result.tuned.trials} trials) "
        f"CV {metric} {reg.cv[f'cv_{metric}_mean']:.4f}, ROC-AUC {reg.cv['cv_roc_auc_mean']:.4f}, "
        f"calibration slope {reg.cv['cv_calibration_slope']:.2f}; threshold {reg.threshold:g}, "
        f"holdout accuracy {reg.holdout['holdout_accuracy']:.4f}"
    )
    alias = "[bold green]champion[/]" if reg.champion else "challenger"
    out.print(f"registered {reg.model_name} version {reg.version}: {alias} ({reg.decision})")
    data = result.data.fingerprint
    ignored = ", ".join(data["ignored_columns"])
    out.print(
        f"data: {data['rows_raw']} rows, {data['duplicates_removed']} duplicates removed, "
        f"{data['rows_distinct']} patients, sha256 {data['sha256'][:12]}"
        + (f"; columns ignored: {ignored}" if ignored else "")
    )


@app.command()
def tune(
    model: Annotated[str, typer.Option(help="Candidate name from model_params.yaml.")],
    trials: Annotated[int, typer.Option(help="Number of Optuna trials.")] = 20,
    data: Annotated[str | None, typer.Option(help="Data file: path or URI.")] = None,
    metric: Annotated[str | None, typer.Option(help="Metric to optimise.")] = None,
):
    """Search one candidate's hyperparameters alone, logged to MLFLOW_TRACKING_URI."""
    from heart_mlops import registry, storage, tuning
    from heart_mlops.data import load_bytes
    from heart_mlops.evaluation import split_holdout
    from heart_mlops.models import load_candidates

    settings = _run_settings(metric)
    try:
        candidates = load_candidates(settings.model_params_path)
        if model not in candidates:
            raise HeartMlopsError(
                f"--model '{model}' is not a candidate; allowed: {', '.join(candidates)}"
            )
        dataset = load_bytes(storage.read_bytes(data or settings.data_uri))
        train_part, _ = split_holdout(
            dataset.frame, settings.holdout_fraction, settings.seed, cv_folds=settings.cv_folds
        )
        registry.configure(settings)
        with registry.search_run(f"tune {model}", {"step": "tuning"}):
            params, score = tuning.search(
                candidates[model],
                train_part,
                settings,
                trials=trials,
                metric=settings.selection_metric,
                on_trial=registry.log_trial,
            )
    except Exception as exc:
        raise _fail(exc) from None
    typer.echo(
        json.dumps(
            {"model": model, "best_params": params, f"cv_{settings.selection_metric}_mean": score},
            indent=2,
        )
    )


def _read_file(file: Path) -> bytes:
    """The bytes of a file the user named; DataError when it is absent or unreadable."""
    if not file.is_file():
        raise DataError(f"no such file: {file}")
    try:
        return file.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {file}: {exc.strerror}") from None


@app.command()
def predict(
    file: Annotated[
        Path, typer.Argument(help="heart.csv-style CSV, UCI processed.*.data or JSON rows.")
    ],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="CSV to write.")] = None,
):
    """Predict with the champion: P(disease) and the decision for each row.

    The file is read and validated as training data is (heart.csv-style CSV, UCI
    processed.*.data or JSON rows; the label column is optional); any invalid cell refuses it."""
    from heart_mlops.data import FEATURES, load_for_prediction

    settings = _settings()
    try:
        if output and not output.parent.is_dir():
            raise HeartMlopsError(f"--output {output}: no such folder {output.parent}")
        rows, features = load_for_prediction(_read_file(file))
        # imported once the input is accepted: a refusal does not wait for MLflow and sklearn
        from heart_mlops import registry
        from heart_mlops.evaluation import probability_of_disease

        registry.connect(settings)
        champion = registry.load_champion(settings)
        p = probability_of_disease(champion.pipeline, features.loc[:, list(FEATURES)])
    except Exception as exc:
        raise _fail(exc) from None
    result = rows.assign(
        probability=p,
        prediction=(p >= champion.threshold).astype(int),
        model_version=champion.version,
    )
    if output:
        try:
            result.to_csv(output, index=False)
        except OSError as exc:
            raise _fail(HeartMlopsError(f"cannot write --output {output}: {exc}")) from None
        console.print(f"wrote {len(result)} predictions to {output}")
    else:
        result.to_csv(sys.stdout, index=False)


@app.command()
def info():
    """The champion: version, metrics, data fingerprint."""
    from heart_mlops import registry

    settings = _settings()
    try:
        registry.connect(settings)
        champion = registry.load_champion(settings)
    except Exception as exc:
        raise _fail(exc) from None
    typer.echo(
        json.dumps(
            {
                "model": settings.model_name,
                "version": champion.version,
                "alias": registry.CHAMPION,
                "run_id": champion.run_id,
                "tags": champion.tags,
            },
            indent=2,
        )
    )


@app.command()
def promote(
    version: Annotated[str, typer.Option(help="Version to make champion.")],
    reason: Annotated[
        str, typer.Option(help="Why (kept in the version's tags).")
    ] = "manual promotion",
):
    """Move `champion` to a version (promotion or rollback), recorded in its tags."""
    from heart_mlops import registry

    settings = _settings()
    try:
        registry.configure(settings)
        result = registry.promote(settings.model_name, version, reason)
    except Exception as exc:
        raise _fail(exc) from None
    typer.echo(
        f"{settings.model_name} version {result.version} is champion "
        f"(was {result.champion_version or 'none'})"
    )


@app.command()
def report(
    version: Annotated[str, typer.Option(help="Registered version to report on.")],
    output: Annotated[
        Path | None, typer.Option(help="HTML file to write (default: model_report_vN.html).")
    ] = None,
):
    """Write a version's HTML report (data, candidates, calibration, decision curve, subgroups,
    threshold, TRIPOD+AI checklist), rendered from what is stored with the version."""
    from heart_mlops.pipeline import report as render_version_report

    settings = _settings()
    path = output or Path(f"model_report_v{version}.html")
    try:
        page = render_version_report(settings, version)
        path.write_text(page)
    except OSError as exc:
        raise _fail(HeartMlopsError(f"cannot write {path}: {exc.strerror}")) from None
    except Exception as exc:
        raise _fail(exc) from None
    typer.echo(f"wrote the report of {settings.model_name} version {version} to {path}")


@app.command()
def calibration(
    data: Annotated[str | None, typer.Option(help="Data file: path or URI.")] = None,
):
    """Each candidate with each probability calibration (none, sigmoid, isotonic), its
    default parameters cross-validated on the same folds of the training part: mean ROC-AUC,
    Brier score and log loss, and the out-of-fold calibration slope and intercept."""
    from heart_mlops.pipeline import compare_calibration

    settings = _settings()
    try:
        rows = compare_calibration(settings, data or settings.data_uri)
    except Exception as exc:
        raise _fail(exc) from None
    table = Table(title=f"Calibration, {settings.cv_folds}-fold CV x {settings.cv_repeats}")
    for column in (
        "candidate",
        "calibration",
        "ROC-AUC",
        "Brier",
        "log loss",
        "slope",
        "intercept",
    ):
        table.add_column(column)
    for row in rows:
        figures = [row.get(key) for key in ("roc_auc", "brier", "log_loss", "slope", "intercept")]
        shown = ["n/a" if f is None else f"{f:.3f}" for f in figures]
        table.add_row(row["candidate"], row["calibration"], *shown)
    Console().print(table)


@app.command("create-buckets")
def create_buckets(
    wait: Annotated[
        float,
        typer.Option(help="Seconds to keep retrying while the S3 server is not reachable yet."),
    ] = 0.0,
):
    """Create the S3 buckets the stack needs (data, mlflow) on AWS_ENDPOINT_URL_S3."""
    import time

    from heart_mlops import storage

    deadline = time.monotonic() + wait
    while True:
        try:
            created = storage.ensure_buckets()
            break
        except HeartMlopsError as exc:
            if time.monotonic() >= deadline:
                raise _fail(exc) from None
            console.print(f"S3 not ready, retrying: {exc}")
            time.sleep(2)
    endpoint = storage.s3_endpoint() or "AWS"
    typer.echo(
        f"buckets {', '.join(storage.BUCKETS)} ready on {endpoint}"
        f" (created: {', '.join(created) or 'none'})"
    )


@app.command()
def pipeline(
    data: Annotated[str | None, typer.Option(help="Data file: path, file:// or s3:// URI.")] = None,
    synthetic: Annotated[
        bool, typer.Option(help="Use seeded synthetic data (never champion).")
    ] = False,
    trials: Annotated[int | None, typer.Option(help="Tuning trials (default: setting).")] = None,
    metric: Annotated[str | None, typer.Option(help="Selection metric (default: setting).")] = None,
):
    """Run the Airflow DAG once without a scheduler (`airflow dags test`, SQLite): scripts, CI."""
    from heart_mlops.devstack import services
    from heart_mlops.graph import DAG_ID

    settings = _run_settings(metric, trials)
    if data and synthetic:
        raise _fail(HeartMlopsError("--data and --synthetic exclude each other"))
    conf = {
        "data_uri": data,
        "synthetic": synthetic,
        "tuning_trials": trials,
        "selection_metric": metric,
    }
    try:
        code = services.run_dag_once(settings, conf)
    except Exception as exc:
        raise _fail(exc) from None
    if code:
        console.print(
            f"[bold red]{DAG_ID} failed[/] (exit {code}); task logs are above "
            f"and in {settings.home_dir / 'airflow' / 'logs'}"
        )
        raise typer.Exit(code=1)
    console.print(f"[green]✓[/] {DAG_ID} succeeded")


@app.command()
def up(
    trials: Annotated[int | None, typer.Option(help="Tuning trials of the first run.")] = None,
):
    """The embedded stack: MLflow, Airflow standalone, the API; runs the DAG once; Ctrl-C stops."""
    from heart_mlops.devstack import up as devstack_up

    settings = _settings()
    with_api = "serve" in typer.main.get_command(app).commands
    try:
        devstack_up.up(
            settings,
            with_api=with_api,
            say=console.print,
            conf={"tuning_trials": trials} if trials is not None else None,
        )
    except Exception as exc:
        raise _fail(exc) from None


def _post_feedback(url: str, token: str, row: dict) -> tuple[int, str]:
    """POST one outcome to `url`/feedback -> (HTTP status, 0 when unreachable; what it says)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{url.rstrip('/')}/feedback",
        data=json.dumps(row).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read()).get("status", "")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read()).get("detail", exc.reason)
        except ValueError:
            return exc.code, str(exc.reason)
    except (urllib.error.URLError, OSError) as exc:
        return 0, f"cannot reach {url}: {getattr(exc, 'reason', exc)}"


def _feedback_rows(file: Path) -> list[dict]:
    """The rows of a feedback CSV: request_id, outcome (0/1), optional observed_at and replace.
    DataError naming a missing column or a file that is not CSV."""
    import pandas as pd

    try:
        frame = pd.read_csv(file, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{file}: not a readable CSV: {exc}") from None
    missing = [c for c in ("request_id", "outcome") if c not in frame.columns]
    if missing:
        raise DataError(
            f"{file}: no column {', '.join(missing)}; columns: request_id, outcome, "
            "observed_at (optional), replace (optional)"
        )
    rows = []
    for record in frame.to_dict("records"):
        outcome = record["outcome"].strip()
        row = {"request_id": record["request_id"].strip()}
        row["outcome"] = int(outcome) if outcome in ("0", "1") else outcome
        if record.get("observed_at", "").strip():
            row["observed_at"] = record["observed_at"].strip()
        if record.get("replace", "").strip().lower() in ("true", "1", "yes"):
            row["replace"] = True
        rows.append(row)
    return rows


@app.command()
def feedback(
    file: Annotated[
        Path, typer.Argument(help="CSV: request_id, outcome (0/1), observed_at?, replace?")
    ],
    url: Annotated[
        str | None, typer.Option(help="The API (default: http://HEART_MLOPS_API_HOST:PORT).")
    ] = None,
):
    """Send confirmed outcomes to the API's POST /feedback (token: HEART_MLOPS_API_TOKEN), one
    per row, and report each row's answer. Exit 1 when any row was not recorded."""
    settings = _settings()
    try:
        _read_file(file)
        rows = _feedback_rows(file)
        token = settings.api_token.get_secret_value() if settings.api_token else ""
        if not token:
            raise HeartMlopsError("set HEART_MLOPS_API_TOKEN: POST /feedback needs the token")
    except Exception as exc:
        raise _fail(exc) from None
    url = url or f"http://{settings.api_host}:{settings.api_port}"
    table = Table(title=f"feedback to {url}")
    for column in ("row", "request_id", "status", "result"):
        table.add_column(column)
    failed = 0
    for number, row in enumerate(rows, start=2):  # line numbers of the CSV (header: 1)
        status, said = _post_feedback(url, token, row)
        failed += status not in (200, 201, 202)
        table.add_row(str(number), escape(row["request_id"]), str(status or "-"), escape(said))
    Console().print(table)
    console.print(f"{len(rows) - failed} of {len(rows)} outcomes recorded")
    if failed:
        raise typer.Exit(code=1)


log_app = typer.Typer(no_args_is_help=True, help="Read the prediction log (patient data).")
app.add_typer(log_app, name="log")


def _log_engine(settings: Settings):
    from heart_mlops import predictionlog

    return predictionlog.create_log_engine(settings.prediction_log_url)


def _window(since: str | None, until: str | None, role: str | None):
    """The export window of the options; HeartMlopsError naming a bad one."""
    from heart_mlops import predictionlog

    if role is not None and role not in predictionlog.ROLES:
        raise HeartMlopsError(f"--role {role!r}: allowed {', '.join(predictionlog.ROLES)}")
    try:
        return predictionlog.Window(
            since=predictionlog.parse_time(since) if since else None,
            until=predictionlog.parse_time(until) if until else None,
            role=role,
        )
    except ValueError as exc:
        raise HeartMlopsError(f"--since/--until: {exc}") from None


@log_app.command("export")
def log_export(
    output: Annotated[Path, typer.Argument(help="OUT.parquet or OUT.csv")],
    since: Annotated[
        str | None, typer.Option(help="Received at or after (ISO 8601; no zone: UTC).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Received before (ISO 8601).")] = None,
    role: Annotated[str | None, typer.Option(help="champion or challenger (default both).")] = None,
):
    """Write the prediction log joined with the outcomes fed back: one row per record (request
    id and role), the 13 features as received and as used, P(disease), decision, threshold,
    model, outcome. Times ISO 8601 in UTC."""
    from heart_mlops import predictionlog

    settings = _settings()
    try:
        window = _window(since, until, role)
        if not output.parent.is_dir():
            raise HeartMlopsError(f"{output}: no such folder {output.parent}")
        count = predictionlog.export(_log_engine(settings), output, window)
    except Exception as exc:
        raise _fail(exc) from None
    console.print(f"wrote {count} records to {output}")


@log_app.command("compare")
def log_compare(
    since: Annotated[
        str | None, typer.Option(help="Received at or after (ISO 8601; no zone: UTC).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Received before (ISO 8601).")] = None,
):
    """Champion and challenger on the logged rows both scored that have an outcome: ROC-AUC,
    Brier score and accuracy (each at its own threshold) with bootstrap 95 % intervals
    (HEART_MLOPS_BOOTSTRAP_SAMPLES), and how often their decisions agree."""
    from heart_mlops import predictionlog

    settings = _settings()
    try:
        window = _window(since, until, None)
        pairs = predictionlog.compare(
            _log_engine(settings), window, samples=settings.bootstrap_samples, seed=settings.seed
        )
    except Exception as exc:
        raise _fail(exc) from None
    if not pairs:
        console.print("no rows scored by both champion and challenger have an outcome yet")
        raise typer.Exit(code=1)
    for pair in pairs:
        title = (
            f"champion v{pair['champion_version']} vs challenger v{pair['challenger_version']}: "
            f"{pair['rows']} rows with outcomes, decisions agree on {pair['agreement']:.1%}"
        )
        table = Table(title=title)
        for column in ("model", "ROC-AUC", "Brier", "accuracy"):
            table.add_column(column)
        for role in predictionlog.ROLES:
            shown = [
                f"{f['value']:.3f} [{f['low']:.3f}, {f['high']:.3f}]"
                for f in (pair[role][name] for name in predictionlog.COMPARED)
            ]
            table.add_row(f"{role} v{pair[role + '_version']}", *shown)
        Console().print(table)


@app.command()
def monitor(
    since: Annotated[
        str | None,
        typer.Option(
            help="Window start, inclusive (ISO 8601; no zone: UTC). Default: one "
            "period of HEART_MLOPS_MONITOR_SCHEDULE before --until."
        ),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Window end, exclusive (ISO 8601). Default: now.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")
    ] = False,
):
    """Drift and live performance of a window of the prediction log, per served version
    against its own training rows: an Evidently report, the missing-value shares, live
    ROC-AUC, Brier score and calibration with 95 % intervals once outcomes are fed back, and
    whether a retrain is asked for (docs/monitoring.md). Writes the report and a summary to
    the artifact store, a run of the MLflow experiment `monitoring` and the monitoring tables
    of the log's database."""
    from heart_mlops import pipeline, predictionlog

    settings = _settings()
    try:
        bounds = {}
        for option, value in (("since", since), ("until", until)):
            try:
                bounds[option] = predictionlog.parse_time(value) if value else None
            except ValueError as exc:
                raise HeartMlopsError(f"--{option}: {exc}") from None
        result = pipeline.monitor(settings, **bounds)
    except Exception as exc:
        raise _fail(exc) from None
    if as_json:
        sys.stdout.write(json.dumps(result.to_xcom()) + "\n")
        return
    print_monitored(result)


def print_monitored(result) -> None:
    """A few lines on stdout: the window, drift, live figures, the decision."""
    lines = [
        f"window {result.window_start} .. {result.window_end}: {result.rows} rows",
        f"dataset drift: {str(result.dataset_drift).lower()} ({result.drift_reason})",
    ]
    if result.drifted_features:
        lines.append("drifted features: " + ", ".join(result.drifted_features))
    if result.live:
        figures = ("roc_auc", "brier", "calibration_intercept", "calibration_slope")
        shown = "; ".join(f"{name} {_with_interval(result.live[name])}" for name in figures)
        lines.append(f"live, {result.live['outcomes']} outcomes: {shown}")
    lines.append(f"retrain triggered: {str(result.triggered).lower()} ({result.trigger_reason})")
    if result.report_uri:
        lines.append(f"report: {result.report_uri}")
    typer.echo("\n".join(lines))


def _with_interval(figure: dict) -> str:
    """{"value", "low", "high"} (None where undefined) -> '0.812 [0.701, 0.905]'."""
    value, low, high = (
        "n/a" if figure[k] is None else f"{figure[k]:.3f}" for k in ("value", "low", "high")
    )
    return f"{value} [{low}, {high}]"


def _require_free_port(host: str, port: int) -> None:
    """HeartMlopsError naming the address when nothing can listen there (a port in use, an
    address of no interface): checked before uvicorn, which would exit with status 3."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise HeartMlopsError(
                f"cannot serve on {host}:{port}: {exc.strerror}; another server may be there "
                "(choose --port or HEART_MLOPS_API_PORT)"
            ) from None


def _migrate_prediction_log(settings: Settings) -> None:
    """The prediction log's schema brought up to date once, before the workers start. A
    database that cannot be reached is no reason not to serve: the workers' writers migrate
    (under a lock) when it answers, and spool meanwhile."""
    if not settings.prediction_log_enabled:
        return
    from heart_mlops import predictionlog
    from heart_mlops.api.model_holder import redact

    engine = predictionlog.create_log_engine(settings.prediction_log_url)
    try:
        predictionlog.migrate(engine)
    except Exception as exc:
        console.print(
            "[yellow]warning:[/] the prediction log's database cannot be reached; predictions "
            f"are spooled until it can: {escape(redact(str(exc)))}",
            soft_wrap=True,
            highlight=False,
        )
    finally:
        engine.dispose()


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default: setting HEART_MLOPS_API_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default: HEART_MLOPS_API_PORT, 8800).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: HEART_MLOPS_API_WORKERS).")
    ] = None,
):
    """Serve the champion over HTTP (FastAPI on uvicorn); /docs describes the API."""
    import uvicorn

    from heart_mlops.api.metrics import prepare_multiprocess_dir

    settings = _settings(api_host=host, api_port=port, api_workers=workers)
    # a registry that is down must not hold a reload for minutes of HTTP retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        _require_free_port(settings.api_host, settings.api_port)
        if settings.api_workers > 1:  # metrics of all workers, summed at /metrics
            prepare_multiprocess_dir(settings.home_dir / "prometheus")
        _migrate_prediction_log(settings)
        # each worker builds its app from the same environment (and .env)
        uvicorn.run(
            "heart_mlops.api.app:create_app",
            factory=True,
            host=settings.api_host,
            port=settings.api_port,
            workers=settings.api_workers,
            log_level="debug" if state["debug"] else "info",
        )
    except Exception as exc:
        raise _fail(exc) from None


if __name__ == "__main__":
    app()
