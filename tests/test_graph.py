"""The graph orders the steps; what flows between them is whatever the steps return."""

from __future__ import annotations

from heart_mlops.graph import task_id, wire
from tests.support import heavy_imports


class RecordingSteps:
    """`graph.Steps` that record each call and return a token naming it."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def _call(self, step: str, *args):
        self.calls.append((step, *args))
        return f"<{step}{''.join(f' {a}' for a in args if isinstance(a, str))}>"

    def extract_data(self):
        return self._call("extract_data")

    def preprocess_data(self, extracted):
        return self._call("preprocess_data", extracted)

    def train_candidate(self, name, prepared):
        return self._call("train_candidate", name, prepared)

    def evaluate_candidate(self, name, trained, prepared):
        return self._call("evaluate_candidate", name, trained, prepared)

    def select_best_model(self, evaluations, prepared):
        return self._call("select_best_model", evaluations, prepared)

    def tune_best_model(self, best, prepared):
        return self._call("tune_best_model", best, prepared)

    def register_model(self, tuned, prepared):
        return self._call("register_model", tuned, prepared)


def test_wire_calls_the_steps_in_order_with_what_the_previous_ones_returned():
    steps = RecordingSteps()
    result = wire(steps, ["rf", "lr"])
    extracted = "<extract_data>"
    prepared = f"<preprocess_data {extracted}>"
    trained_rf = f"<train_candidate rf {prepared}>"
    trained_lr = f"<train_candidate lr {prepared}>"
    evaluated = [
        f"<evaluate_candidate rf {trained_rf} {prepared}>",
        f"<evaluate_candidate lr {trained_lr} {prepared}>",
    ]
    best = f"<select_best_model {prepared}>"
    tuned = f"<tune_best_model {best} {prepared}>"
    assert steps.calls == [
        ("extract_data",),
        ("preprocess_data", extracted),
        ("train_candidate", "rf", prepared),
        ("evaluate_candidate", "rf", trained_rf, prepared),
        ("train_candidate", "lr", prepared),
        ("evaluate_candidate", "lr", trained_lr, prepared),
        ("select_best_model", evaluated, prepared),
        ("tune_best_model", best, prepared),
        ("register_model", tuned, prepared),
    ]
    assert result == f"<register_model {tuned} {prepared}>"


def test_wire_takes_candidates_from_a_mapping_in_its_order():
    """run_pipeline passes load_candidates' dict: its keys are the candidates."""
    steps = RecordingSteps()
    wire(steps, {"svm": object(), "random_forest": object(), "logistic_regression": object()})
    trained = [call[1] for call in steps.calls if call[0] == "train_candidate"]
    evaluated = [call[1] for call in steps.calls if call[0] == "evaluate_candidate"]
    assert trained == evaluated == ["svm", "random_forest", "logistic_regression"]
    (select,) = [call for call in steps.calls if call[0] == "select_best_model"]
    assert [e.split()[1] for e in select[1]] == ["svm", "random_forest", "logistic_regression"]


def test_wire_with_one_candidate_selects_among_one_evaluation():
    steps = RecordingSteps()
    wire(steps, iter(["svm"]))
    (select,) = [call for call in steps.calls if call[0] == "select_best_model"]
    assert len(select[1]) == 1 and select[1][0].startswith("<evaluate_candidate svm ")


def test_task_id_of_a_per_candidate_step():
    assert task_id("train", "random_forest") == "train_random_forest"
    assert task_id("evaluate", "svm") == "evaluate_svm"


def test_graph_imports_without_the_heavy_libraries():
    """The DAG file imports the graph whenever Airflow parses it."""
    assert heavy_imports("heart_mlops.graph", {"sklearn", "mlflow", "pandas", "optuna"}) == []
