"""The model gauges with several workers: each worker's process writes its values to the shared
PROMETHEUS_MULTIPROC_DIR, and /metrics combines the live workers' values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest, multiprocess

import heart_mlops

# the module alone, without the app and MLflow that importing heart_mlops.api brings
METRICS = Path(heart_mlops.__file__).parent / "api" / "metrics.py"
# one worker: its model (a version or "none") and whether that model is the champion
WORKER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("metrics", sys.argv[1])
metrics = importlib.util.module_from_spec(spec)
spec.loader.exec_module(metrics)
version, serving = sys.argv[2], sys.argv[3] == "1"
metrics.record_model(None if version == "none" else version)
metrics.record_serving_champion(serving)
"""


def run_worker(directory, version: str, serving: bool) -> int:
    """Run one worker's gauge updates in a process of its own; -> its pid."""
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(METRICS), version, "1" if serving else "0"],
        env=environment,
    )
    assert worker.wait(timeout=120) == 0
    return worker.pid


def exposition(directory) -> str:
    """What /metrics shows in multiprocess mode: the workers' files in `directory` combined."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    return generate_latest(registry).decode()


def test_serving_champion_is_1_only_while_every_live_worker_serves_the_champion(tmp_path):
    run_worker(tmp_path, "4", serving=True)
    lost = run_worker(tmp_path, "3", serving=False)  # still serves version 3, no longer champion
    text = exposition(tmp_path)
    assert "heart_api_serving_champion 0.0" in text
    assert "heart_api_model_loaded 1.0" in text and "heart_api_model_version 4.0" in text

    multiprocess.mark_process_dead(lost, path=str(tmp_path))  # what worker_exiting does
    assert "heart_api_serving_champion 1.0" in exposition(tmp_path)
