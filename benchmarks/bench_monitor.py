"""Time `heart-mlops monitor` on one window of 10 000 logged rows, Evidently's import apart.

    python benchmarks/bench_monitor.py [--home .heart-mlops/bench-monitor] [--rows 10000]
        [--outcomes 2000]

Trains a champion into HOME once (a small profile: 3-fold CV, no tuning) unless one is there,
then writes `--rows` champion rows (the shifted test stream's patients, drawn again, scored by
the champion) and as many challenger rows into a fresh SQLite log with `--outcomes` outcomes,
one row every 0.3 s inside one hour, and times, in this process:

- import:   `import evidently` in a fresh interpreter, minus the interpreter's own start
- monitor:  `pipeline.monitor` on that hour once Evidently is imported (reading the window,
            drift, live metrics and shadow comparison with 1000 bootstrap resamples, the HTML
            report, the MLflow run, the monitoring tables)
- its parts, each timed alone on the same data: read_log (the peer: what reading the window
  costs), the Evidently report, the live metrics' bootstrap

Prints a markdown table; the ratio column is each figure over read_log's. Nothing leaves the
machine (Evidently's telemetry is off: DO_NOT_TRACK).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test streams (tests/monitoring_streams.py)

START = dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)


def interpreter_seconds(code: str, repeats: int = 3) -> float:
    """Median wall time of `python -c code` in a fresh interpreter."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def champion_settings(home: Path):
    from heart_mlops import registry
    from heart_mlops.pipeline import run_pipeline
    from heart_mlops.settings import Settings

    settings = Settings(
        home=home, cv_folds=3, cv_repeats=1, tuning_trials=0, bootstrap_samples=1000
    )
    registry.connect(settings)
    if registry.champion_version(settings.model_name) is None:
        run_pipeline(settings)
    return settings.model_copy(
        update={"prediction_log_uri": f"sqlite:///{home / 'bench-log.db'}", "drift_min_rows": 200}
    )


def fill_log(settings, rows: int, outcomes: int) -> None:
    import numpy as np
    import pandas as pd

    from heart_mlops import predictionlog, registry
    from heart_mlops.data import FEATURES, missing_as_nan
    from tests.monitoring_streams import shifted_stream

    database = Path(settings.prediction_log_url.removeprefix("sqlite:///"))
    for path in database.parent.glob(database.name + "*"):
        path.unlink()
    engine = predictionlog.create_log_engine(settings.prediction_log_url)
    predictionlog.migrate(engine)
    champion = registry.load_champion(settings)
    stream = shifted_stream(rows)
    x = np.array([[np.nan if v is None else v for v in row] for row, _ in stream], dtype=float)
    p = champion.pipeline.predict_proba(
        pd.DataFrame(missing_as_nan(x.copy()), columns=list(FEATURES))
    )
    shadow = np.clip(p[:, 1] + np.random.default_rng(0).normal(0, 0.1, rows), 0, 1)
    entries = [
        {"t": (START + dt.timedelta(seconds=i * 3600 / rows)).timestamp(), "role": role,
         "x": [stream[i][0]], "ids": [f"bench-{i}"], "p": [float(prob[i])],
         "y": [int(prob[i] >= 0.5)], "thr": 0.5, "name": settings.model_name, "v": version,
         "w": "bench"}
        for i in range(rows)
        for role, prob, version in (("champion", p[:, 1], champion.version),
                                    ("challenger", shadow, "shadow"))
    ]  # fmt: skip
    predictionlog.insert_rows(engine, predictionlog.rows_of_entries(entries, "sqlite"))
    for i in range(outcomes):
        predictionlog.record_outcome(engine, f"bench-{i}", stream[i][1], START)
    engine.dispose()


def timed(function, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, default=Path(".heart-mlops/bench-monitor"))
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--outcomes", type=int, default=2_000)
    options = parser.parse_args()
    home = options.home.resolve()

    bare = interpreter_seconds("pass")
    with_evidently = interpreter_seconds("import evidently")
    settings = champion_settings(home)
    fill_log(settings, options.rows, options.outcomes)

    from heart_mlops import monitoring, predictionlog, registry
    from heart_mlops.data import FEATURES
    from heart_mlops.pipeline import _used_features, monitor

    import_here, _ = timed(__import__, "evidently")  # in this process, before the timings
    end = START + dt.timedelta(hours=1)
    seconds, result = timed(monitor, settings, since=START, until=end)
    engine = predictionlog.create_log_engine(settings.prediction_log_url)
    read, frame = timed(predictionlog.read_log, engine, predictionlog.Window(START, end))
    champion = frame[frame["role"] == "champion"]
    reference = registry.reference_frame(settings.model_name, result.model_version)[list(FEATURES)]
    drift, _ = timed(monitoring.drift_report, _used_features(champion), reference.astype(float))
    scored = champion[champion["outcome"].notna()]
    live, _ = timed(
        monitoring.live_metrics,
        scored["outcome"].to_numpy(dtype=int),
        scored["probability"].to_numpy(dtype=float),
        0.5,
        samples=settings.bootstrap_samples,
        seed=settings.seed,
    )
    print(f"{result.rows} champion rows, {options.outcomes} outcomes, drift share "
          f"{result.drift_share:.2f}, triggered {result.triggered}\n")  # fmt: skip
    print("| step | seconds | / read_log |\n| --- | ---: | ---: |")
    figures = [
        ("import evidently (fresh interpreter, minus its start)", with_evidently - bare),
        ("import evidently in this process (after heart_mlops)", import_here),
        ("monitor, Evidently imported", seconds),
        ("read_log (peer)", read),
        ("Evidently drift report", drift),
        ("live metrics, bootstrap", live),
    ]
    for name, value in figures:
        print(f"| {name} | {value:.2f} | {value / read:.1f} |")


if __name__ == "__main__":
    main()
