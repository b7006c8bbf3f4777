"""The `heart-mlops` command as users run it: exit codes, one-line errors, outputs."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys

import mlflow
import pandas as pd
import pytest

from heart_mlops import registry
from heart_mlops.report import SECTIONS
from heart_mlops.settings import PROJECT_ROOT
from tests.bad_inputs import (
    JSON_NOT_NUMBERS,
    NO_LABEL,
    NO_ROWS,
    NOT_NUMBERS,
    OUT_OF_RANGE_OR_REPEATED,
    WRONG_SHAPE,
    assert_message,
)
from tests.support import untrainable_files

HEART_CSV = PROJECT_ROOT / "data" / "heart.csv"


def run_cli(*args: str, settings=None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HEART_MLOPS_") and k != "MLFLOW_TRACKING_URI"
    }
    if settings is not None:
        env |= {
            "HEART_MLOPS_HOME": str(settings.home_dir),
            "HEART_MLOPS_CV_FOLDS": str(settings.cv_folds),
            "HEART_MLOPS_CV_REPEATS": str(settings.cv_repeats),
            "HEART_MLOPS_TUNING_TRIALS": str(settings.tuning_trials),
        }
    return subprocess.run(
        [sys.executable, "-m", "heart_mlops.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        (b"", "empty"),
        (b"age,sex\n50,1\n", "missing column(s) cp"),
        (
            HEART_CSV.read_bytes().replace(b"\n52,1,0,125,", b"\n52,1,0,abc,", 1),
            "column 'trestbps' must be numeric",
        ),
    ],
)
def test_bad_data_exits_nonzero_with_one_message_and_no_traceback(
    fresh_settings, tmp_path, content, message
):
    path = tmp_path / "input.csv"
    if content is not None:
        path.write_bytes(content)
    completed = run_cli("train", "--data", str(path), settings=fresh_settings)
    assert completed.returncode == 1
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr + completed.stdout
    registry.configure(fresh_settings)
    assert registry.version_by_alias(fresh_settings.model_name, registry.CHAMPION) is None


def test_debug_shows_the_traceback(fresh_settings, tmp_path):
    completed = run_cli(
        "--debug", "train", "--data", str(tmp_path / "absent.csv"), settings=fresh_settings
    )
    assert completed.returncode != 0 and "Traceback" in completed.stderr


def test_predict_info_and_promote_against_the_champion(trained, tmp_path):
    settings = trained["settings"]
    out = tmp_path / "predictions.csv"
    completed = run_cli("predict", str(HEART_CSV), "--output", str(out), settings=settings)
    assert completed.returncode == 0, completed.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 1025
    assert all(0 <= float(r["probability"]) <= 1 and r["prediction"] in {"0", "1"} for r in rows)
    sick = [float(r["probability"]) for r in rows if r["target"] == "0"]
    assert sum(sick) / len(sick) > 0.6  # target 0 means disease in heart.csv
    nowhere = tmp_path / "no-such-folder" / "predictions.csv"
    refused = run_cli("predict", str(HEART_CSV), "--output", str(nowhere), settings=settings)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"no such folder {nowhere.parent}" in refused.stderr

    info = run_cli("info", settings=settings)
    assert info.returncode == 0, info.stderr
    champion = json.loads(info.stdout)
    assert champion["alias"] == "champion" and champion["tags"]["data_rows_distinct"] == "302"

    missing = run_cli("promote", "--version", "999", settings=settings)
    assert missing.returncode == 1 and "has no version 999" in missing.stderr

    # a second version to roll back to: the champion's model registered again
    registry.configure(settings)
    with mlflow.start_run(run_name="rollback target"):
        uri = registry.log_model(
            registry.load_version(settings.model_name, champion["version"]), pd.read_csv(HEART_CSV)
        )
    other = registry.register(uri, settings.model_name, {"candidate": "copy"})
    rollback = run_cli(
        "promote", "--version", other, "--reason", "rollback drill", settings=settings
    )
    assert rollback.returncode == 0, rollback.stderr
    moved = registry.version_by_alias(settings.model_name, registry.CHAMPION)
    assert registry.version_of(moved) == other
    assert moved.tags["heart_mlops.promotion_reason"] == "rollback drill"
    back = run_cli("promote", "--version", champion["version"], settings=settings)
    assert back.returncode == 0, back.stderr
    # an explicit promotion scores nothing: no score tags of NaN
    assert not any(key.endswith("nan") for key in moved.tags.values())

    page = tmp_path / "report.html"
    report = run_cli(
        "report", "--version", champion["version"], "--output", str(page), settings=settings
    )
    assert report.returncode == 0, report.stderr
    assert all(f"<h2>{section}</h2>" in page.read_text() for section in SECTIONS)
    # a version registered without a report (the copy above) and one that does not exist
    for version, message in ((other, "has no artifact model_report.json"), ("999", "999")):
        refused = run_cli("report", "--version", version, settings=settings)
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr


def test_predict_rejects_rows_outside_the_schema(trained, tmp_path):
    bad = tmp_path / "rows.csv"
    bad.write_text(HEART_CSV.read_text().replace("\n52,1,0,125,", "\n52,1,0,999,", 1))
    completed = run_cli("predict", str(bad), settings=trained["settings"])
    assert completed.returncode == 1
    assert "column 'trestbps'" in completed.stderr and "60 to 250" in completed.stderr


@pytest.mark.parametrize(
    "row, message",
    [
        ("52,1,0,abc,", "column 'trestbps' must be numeric: rows 1 hold 'abc'"),
        ("52,1,4,125,", "column 'cp': rows 1 hold 4; allowed: 0, 1, 2, 3"),
    ],
    ids=["text", "uci-code"],
)
def test_predict_refuses_text_and_codes_before_reading_the_registry(
    fresh_settings, tmp_path, row, message
):
    bad = tmp_path / "rows.csv"
    bad.write_text(HEART_CSV.read_text().replace("\n52,1,0,125,", "\n" + row, 1))
    completed = run_cli("predict", str(bad), settings=fresh_settings)
    assert completed.returncode == 1
    assert message in completed.stderr and "Traceback" not in completed.stderr


def test_tune_runs_a_search_alone(trained):
    completed = run_cli(
        "tune", "--model", "logistic_regression", "--trials", "2", settings=trained["settings"]
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["model"] == "logistic_regression" and "C" in result["best_params"]
    assert 0.2 < result["cv_log_loss_mean"] < 0.6  # the default selection metric, a loss
    unknown = run_cli("tune", "--model", "xgboost", settings=trained["settings"])
    assert unknown.returncode == 1 and "allowed: random_forest" in unknown.stderr


def test_train_refuses_untrainable_data_with_exit_1_and_registers_nothing(fresh_settings, tmp_path):
    expected = {
        "no_chol.data": "column(s) 'chol' hold no value in any row",
        "three_sick.csv": "each class needs at least 5",  # 3-fold CV of the test profile
    }
    for name, path in untrainable_files(tmp_path).items():
        completed = run_cli("train", "--data", path, settings=fresh_settings)
        assert completed.returncode == 1, completed.stderr
        assert expected[name] in completed.stderr and "Traceback" not in completed.stderr
    registry.configure(fresh_settings)
    assert registry.client().search_model_versions(f"name = '{fresh_settings.model_name}'") == []


# --- input a user can get wrong: exit 1, one message, nothing registered or written ----------


def _registry_state(settings) -> tuple:
    """(the champion's version or None, the number of versions) of the settings' store."""
    registry.configure(settings)
    champion = registry.version_by_alias(settings.model_name, registry.CHAMPION)
    versions = registry.client().search_model_versions(f"name = '{settings.model_name}'")
    return registry.version_of(champion) if champion else None, len(versions)


def _refuse_each(cases, tmp_path, settings, *command: str) -> None:
    """Run `heart-mlops COMMAND FILE` on each case's file: exit 1 and its one message."""
    for number, (name, content, expected) in enumerate(cases):
        suffix = "json" if content.lstrip()[:1] in (b"[", b"{") else "csv"
        path = tmp_path / f"input-{number}.{suffix}"
        path.write_bytes(content)
        completed = run_cli(*command, str(path), settings=settings)
        shown = completed.stderr + completed.stdout
        assert completed.returncode == 1, f"{name}: exit {completed.returncode}\n{shown}"
        assert_message(shown, expected)
        assert completed.stderr.count("error:") == 1, f"{name}: {shown}"


def _refuse_for_training(cases, settings, tmp_path) -> None:
    _refuse_each(cases, tmp_path, settings, "train", "--data")
    assert _registry_state(settings) == (None, 0)  # no version, no champion
    assert not list(settings.home_dir.rglob("*.parquet"))  # no validated data stored


def _refuse_for_predictions(cases, trained, tmp_path) -> None:
    settings = trained["settings"]
    before = _registry_state(settings)
    out = tmp_path / "predictions.csv"
    _refuse_each(cases, tmp_path, settings, "predict", "--output", str(out))
    assert not out.exists()
    assert _registry_state(settings) == before


def test_train_refuses_text_in_a_number_column(fresh_settings, tmp_path):
    _refuse_for_training(NOT_NUMBERS, fresh_settings, tmp_path)


def test_predict_refuses_text_in_a_number_column_instead_of_imputing_it(trained, tmp_path):
    _refuse_for_predictions(NOT_NUMBERS + JSON_NOT_NUMBERS, trained, tmp_path)


def test_predict_refuses_numbers_beyond_the_float_range_and_repeated_keys(trained, tmp_path):
    _refuse_for_predictions(OUT_OF_RANGE_OR_REPEATED, trained, tmp_path)


def test_train_refuses_a_file_without_data_rows(fresh_settings, tmp_path):
    cases = [case for case in NO_ROWS if case[0] != "a header and blank lines"]
    _refuse_for_training(cases, fresh_settings, tmp_path)


def test_predict_refuses_a_file_without_data_rows(trained, tmp_path):
    _refuse_for_predictions(NO_ROWS, trained, tmp_path)


def test_train_refuses_a_file_of_another_shape(fresh_settings, tmp_path):
    _refuse_for_training(WRONG_SHAPE, fresh_settings, tmp_path)


def test_predict_refuses_a_file_of_another_shape(trained, tmp_path):
    _refuse_for_predictions(WRONG_SHAPE, trained, tmp_path)


def test_train_names_a_missing_label_as_the_file_does(fresh_settings, tmp_path):
    _refuse_for_training(NO_LABEL, fresh_settings, tmp_path)


def test_predict_reads_json_rows_and_uci_files_without_a_label(trained, tmp_path):
    rows = tmp_path / "rows.json"
    rows.write_text(pd.read_csv(HEART_CSV).head(3).drop(columns="target").to_json(orient="records"))
    uci = PROJECT_ROOT / "data" / "uci" / "processed.cleveland.data"
    for path, count in ((rows, 3), (uci, 303)):
        completed = run_cli("predict", str(path), settings=trained["settings"])
        assert completed.returncode == 0, completed.stderr
        predictions = pd.read_csv(io.StringIO(completed.stdout))
        assert len(predictions) == count and predictions["probability"].between(0, 1).all()


def test_serve_on_an_address_in_use_exits_1_naming_it(fresh_settings):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = run_cli("serve", "--port", str(port), settings=fresh_settings, timeout=60)
    assert refused.returncode == 1, refused.stderr
    assert f"cannot serve on 127.0.0.1:{port}" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_wrong_option_exits_2_with_the_usage():
    wrong = run_cli("train", "--no-such-option")
    assert wrong.returncode == 2 and "No such option" in wrong.stderr
