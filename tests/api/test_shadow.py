"""Shadow scoring: with a version under @challenger, every answered row is also scored by it and
logged under the same id; `heart-mlops log compare` on outcomes fed back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pydantic import SecretStr

from heart_mlops import predictionlog, registry
from heart_mlops.api import create_app
from heart_mlops.api.model_holder import _REGISTRY_LOCK
from heart_mlops.api.shadow import ShadowScorer
from heart_mlops.data import FEATURES, load_bytes
from heart_mlops.evaluation import xy
from heart_mlops.models import load_candidates
from heart_mlops.settings import Settings
from tests.api.conftest import TOKEN, register_champion, wait_until_ready
from tests.api.test_feedback import run_cli
from tests.api.test_prediction_log import log_rows
from tests.support import HEART_CSV

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def counted(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.fixture(scope="module")
def two_versions(own_store, tmp_path_factory):
    """Model `shadowed`: logistic regression @champion, a random forest @challenger; with the
    prediction log in a folder of the module's own."""
    X, y = xy(load_bytes(Path(HEART_CSV).read_bytes()).frame)
    candidates = load_candidates(Settings().model_params_path)
    champion = candidates["logistic_regression"].build(seed=1).fit(X, y)
    challenger = candidates["random_forest"].build(seed=1).fit(X, y)
    settings = register_champion(own_store, champion, "shadowed", X)
    with _REGISTRY_LOCK:
        registry.configure(settings)
        with mlflow.start_run(run_name="challenger"):
            uri = registry.log_model(challenger, X.assign(target=0))
        version = registry.register(uri, "shadowed", {"threshold": 0.4})
        registry.client().set_registered_model_alias("shadowed", registry.CHALLENGER, version)
    root = tmp_path_factory.mktemp("shadow-log")
    return {
        "settings": settings.model_copy(
            update={
                "prediction_log_uri": f"sqlite:///{root / 'log.db'}",
                "prediction_log_spool_dir": str(root / "spool"),
                "api_token": SecretStr(TOKEN),
            }
        ),
        "rows": X,
        "outcomes": y,
    }


def test_each_answered_row_is_scored_in_shadow_and_compared(two_versions, tmp_path):
    settings, X, y = two_versions["settings"], two_versions["rows"], two_versions["outcomes"]
    disagreements = counted("heart_api_shadow_disagreements_total")
    with TestClient(create_app(settings)) as client:
        wait_until_ready(client)
        deadline = time.monotonic() + 60  # the challenger loads after the champion
        while (info := client.get("/model/info").json())["challenger"] is None:
            assert time.monotonic() < deadline, "no challenger loaded"
            time.sleep(0.1)
        rows = [[None if v != v else v for v in r] for r in X.iloc[:200].to_numpy().tolist()]
        bodies = [{"patient": dict(zip(FEATURES, r, strict=True))} for r in rows]
        batch = client.post("/predict/batch", json={"instances": bodies[:150]})
        singles = [client.post("/predict", json=body) for body in bodies[150:]]
        answers = [*batch.json()["predictions"], *(s.json() for s in singles)]
        records = log_rows(settings.prediction_log_url, 400)
        for answer, outcome in zip(answers, y[:200], strict=True):
            sent = {"request_id": answer["request_id"], "outcome": int(outcome)}
            assert client.post("/feedback", json=sent, headers=AUTH).status_code in (201, 202)
    assert info["version"] == "1" and info["challenger"]["version"] == "2"
    assert info["challenger"]["alias"] == "challenger" and info["challenger"]["threshold"] == 0.4
    by_role = {
        role: {r["request_id"]: r for r in records if r["role"] == role}
        for role in ("champion", "challenger")
    }
    ids = [a["request_id"] for a in answers]
    assert sorted(by_role["champion"]) == sorted(ids) == sorted(by_role["challenger"])
    shadow = by_role["challenger"]
    assert {r["model_version"] for r in shadow.values()} == {"2"}
    assert all(r["threshold"] == 0.4 for r in shadow.values())
    assert all(r["prediction"] == int(r["probability"] >= 0.4) for r in shadow.values())
    assert [shadow[i]["age"] for i in ids] == [r[0] for r in rows]
    differ = sum(shadow[a["request_id"]]["prediction"] != a["prediction"] for a in answers)
    assert counted("heart_api_shadow_disagreements_total") - disagreements == differ
    # log compare: both models' figures with intervals, and the agreement
    done = run_cli("log", "compare", settings=settings, HEART_MLOPS_BOOTSTRAP_SAMPLES="200")
    assert done.returncode == 0, done.stderr
    assert "champion v1 vs challenger v2: 200 rows with outcomes" in " ".join(done.stdout.split())
    assert f"agree on {1 - differ / 200:.1%}" in done.stdout
    engine = predictionlog.create_log_engine(settings.prediction_log_url)
    (pair,) = predictionlog.compare(engine, samples=100, seed=1)
    for role in ("champion", "challenger"):
        for figure in ("roc_auc", "brier", "accuracy"):
            found = pair[role][figure]
            assert found["low"] <= found["value"] <= found["high"]
        p = np.array([by_role[role][i]["probability"] for i in ids])
        accuracy = np.mean((p >= (0.5 if role == "champion" else 0.4)) == y[:200])
        assert pair[role]["accuracy"]["value"] == pytest.approx(accuracy)


class SlowChallenger:
    version, threshold, info = "9", 0.5, {"model_name": "m"}

    @staticmethod
    def runtime(rows):
        time.sleep(0.01)
        return np.full(len(rows), 0.7)


class Holder:
    challenger = SlowChallenger()


class Log:
    def __init__(self):
        self.roles = []

    def append(self, ids, *args, role, **kwargs):
        self.roles += [role] * len(ids)


def test_a_full_shadow_queue_skips_and_counts_and_never_blocks():
    skipped = counted("heart_api_shadow_skipped_total")
    log = Log()

    async def burst() -> float:
        scorer = ShadowScorer(Holder(), log, capacity=4)
        scorer.start()
        started = time.perf_counter()
        for n in range(10):  # no await in between: the queue fills
            scorer.offer([f"id-{n}"], np.zeros((1, len(FEATURES))), [0], time.time(), None)
        offered = time.perf_counter() - started
        await scorer.close()  # what was queued is scored
        return offered

    offered = asyncio.run(burst())
    assert offered < 0.05  # offering never waits for the challenger
    assert counted("heart_api_shadow_skipped_total") - skipped == 6
    assert log.roles == ["challenger"] * 4
