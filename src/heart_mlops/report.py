"""The report of a registered version: one self-contained HTML page for people who decide
whether to use it (plots inline), rendered from one JSON document that is stored with the
version, so `heart-mlops report --version N` renders it again at any time.

Sections follow what TRIPOD+AI (Collins et al., BMJ 2024;385:e078378) asks of a prediction
model's report; the checklist at the end names only the items this page covers.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np

from heart_mlops.evaluation import pooled
from heart_mlops.model_card import INTENDED_USE, LIMITATIONS

FIGURES = {  # figure -> (label, ideal)
    "roc_auc": ("ROC-AUC", "1"),
    "brier": ("Brier score", "0"),
    "log_loss": ("log loss", "0"),
    "calibration_slope": ("calibration slope", "1"),
    "calibration_intercept": ("calibration intercept (in the large)", "0"),
    "sensitivity": ("sensitivity at the threshold", "1"),
    "specificity": ("specificity at the threshold", "1"),
}
SECTIONS = (
    "Intended use",
    "Data",
    "Candidates",
    "Model",
    "Performance",
    "Calibration",
    "Decision curve",
    "Subgroups",
    "Threshold",
    "Limitations",
    "TRIPOD+AI checklist",
)
TRIPOD_AI = [  # (item as TRIPOD+AI names it, the section of this report that covers it)
    ("Data: sources and dates", "Data"),
    ("Outcome: definition", "Data"),
    ("Predictors: definition", "Model"),
    ("Missing data: how handled", "Model"),
    ("Analytical methods: model type, building and internal validation", "Candidates"),
    ("Analytical methods: performance measures (discrimination and calibration)", "Performance"),
    ("Analytical methods: model output and threshold", "Threshold"),
    ("Fairness: performance in subgroups", "Subgroups"),
    ("Model performance: with confidence intervals", "Performance"),
    ("Model performance: calibration plot", "Calibration"),
    ("Model performance: clinical utility (decision curve)", "Decision curve"),
    ("Model specification", "Model"),
    ("Limitations", "Limitations"),
    ("Usability: intended use and users", "Intended use"),
]


def render(document: dict[str, Any]) -> str:
    """The HTML page of a version's report `document` (as `pipeline` stores it:
    model_name, version, candidate, calibration, label, params, selection_metric, synthetic,
    fingerprint, evidence (evaluation.clinical_evidence with "candidates"), holdout
    (evaluation.bootstrap on the holdout) and holdout_predictions {y, p}). KeyError when a
    part is missing."""
    evidence = document["evidence"]
    threshold = evidence["threshold"]
    sections = {
        "Intended use": _intended_use(document),
        "Data": _data(document["fingerprint"]),
        "Candidates": _candidates(evidence["candidates"], document["selection_metric"]),
        "Model": _model(document, threshold["value"]),
        "Performance": _performance(evidence["out_of_fold"], document["holdout"]),
        "Calibration": _calibration(evidence["predictions"], document["holdout_predictions"]),
        "Decision curve": _decision_curve(evidence["decision_curve"], threshold["value"]),
        "Subgroups": _subgroups(evidence["subgroups"]),
        "Threshold": _threshold(threshold, evidence, document["holdout"]),
        "Limitations": _LIMITATIONS,
        "TRIPOD+AI checklist": _checklist(),
    }
    title = f"{document['model_name']} version {document['version']}"
    warning = (
        "<p class=warning><strong>Trained on synthetic data: for testing the pipeline only, "
        "never for patients.</strong></p>"
        if document["synthetic"]
        else ""
    )
    body = "\n".join(
        f'<section id="{_anchor(name)}"><h2>{name}</h2>\n{content}</section>'
        for name, content in sections.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Model report: {_e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; line-height: 1.45; color: #1b1b1b; }}
table {{ border-collapse: collapse; margin: .5rem 0 1rem; }}
th, td {{ border: 1px solid #ccc; padding: .25rem .6rem; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.warning {{ background: #fff3cd; padding: .5rem 1rem; border: 1px solid #e0c36a; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>Model report: {_e(title)}</h1>
{warning}
{body}
</body></html>
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _anchor(name: str) -> str:
    return name.lower().replace("+", "").replace(" ", "-")


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _with_interval(figure: dict[str, float]) -> str:
    interval = (
        f" [{_number(figure['low'])}, {_number(figure['high'])}]"
        if np.isfinite(figure["low"])
        else ""
    )
    return _number(figure["value"]) + interval


def _table(header: list[str], rows: list[list[Any]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    lines = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{_e(cell)}</td>' if i >= numeric_from else f"<td>{_e(cell)}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>"


def _intended_use(document: dict) -> str:
    return f"<p>{_e(INTENDED_USE)}</p>"


def _data(fingerprint: dict) -> str:
    rows = [
        ["format", fingerprint.get("format")],
        ["sha256", fingerprint.get("sha256")],
        ["rows read", fingerprint.get("rows_raw")],
        ["distinct patients", fingerprint.get("rows_distinct")],
        ["duplicate records removed", fingerprint.get("duplicates_removed")],
    ]
    return (
        "<p>UCI Heart Disease data (Cleveland Clinic Foundation, 1981-1988, as heart.csv). "
        "Outcome: <code>disease</code> = 1 when heart disease is present (heart.csv's "
        "<code>target</code> is inverted). Duplicates are removed on the 13 features and the "
        "label before any split; a stratified holdout is set aside, and every figure below "
        "marked out-of-fold comes from repeated stratified cross-validation of the rest.</p>"
        + _table(["", "value"], rows, numeric_from=2)
    )


def _candidates(ranking: list[dict], metric: str) -> str:
    keys = [
        "cv_roc_auc_mean",
        "cv_brier_mean",
        "cv_log_loss_mean",
        "cv_calibration_slope",
        "cv_calibration_intercept",
    ]
    rows = [[entry["name"], *(_number(entry.get(key)) for key in keys)] for entry in ranking]
    return (
        f"<p>Every candidate was cross-validated on the same folds (paired); the best by mean "
        f"<strong>{_e(metric)}</strong> was kept, tuned, and scored again on fresh folds. "
        "Calibration is fitted inside each training fold.</p>"
        + _table(["candidate", "ROC-AUC", "Brier", "log loss", "slope", "intercept"], rows)
    )


def _model(document: dict, threshold: float) -> str:
    rows = [
        ["candidate", document["candidate"]],
        ["probability calibration", document.get("calibration") or "none"],
        ["parameters", f"{document['label']}: {document['params']}"],
        ["decision threshold on P(disease)", f"{threshold:g}"],
    ]
    return (
        "<p>One scikit-learn pipeline: disguised missing codes (ca 4, thal 0, chol 0, "
        "trestbps 0) to missing, median or most-frequent imputation fitted on the training "
        "rows, scaling, one-hot encoding of the categorical features, then the estimator. "
        "Predictors: age, sex, cp, trestbps, chol, fbs, restecg, thalach, exang, oldpeak, "
        "slope, ca, thal (data/README.md).</p>" + _table(["", "value"], rows, numeric_from=2)
    )


def _performance(out_of_fold: dict, holdout: dict) -> str:
    rows = [
        [label, ideal, _with_interval(out_of_fold[key]), _with_interval(holdout[key])]
        for key, (label, ideal) in FIGURES.items()
    ]
    return (
        "<p>Point estimates with bootstrap 95 % intervals over patients (seeded). "
        "Out-of-fold: every training patient predicted by a model that never saw them. "
        "Holdout: the final model on patients set aside before training (few: wide "
        "intervals).</p>"
        + _table(["figure", "ideal", "out-of-fold [95 % CI]", "holdout [95 % CI]"], rows, 1)
    )


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return (
        f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'
    )


def _calibration(predictions: dict, holdout: dict) -> str:
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    for label, (y, p), bins in (
        ("out-of-fold", pooled(np.array(predictions["y"]), np.array(predictions["oof"])), 10),
        ("holdout", (np.array(holdout["y"]), np.array(holdout["p"])), 5),
    ):
        observed, predicted = calibration_curve(y, p, n_bins=bins, strategy="quantile")
        ax.plot(predicted, observed, "o-", label=f"{label} ({bins} groups by predicted risk)")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="ideal")
    ax.set(xlabel="predicted P(disease)", ylabel="observed share with disease", xlim=(0, 1))
    ax.legend(loc="upper left")
    return (
        "<p>Patients grouped by predicted risk; each point is a group's mean prediction "
        "against its observed share with disease. On the diagonal, a predicted 80 % is right "
        "80 % of the time.</p>" + _png(fig)
    )


def _decision_curve(curve: list[dict], threshold: float) -> str:
    import matplotlib.pyplot as plt

    t = np.array([row["threshold"] for row in curve])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(t, [row["model"] for row in curve], label="model")
    ax.plot(t, [row["treat_all"] for row in curve], label="treat all")
    ax.plot(t, [row["treat_none"] for row in curve], label="treat none")
    ax.axvline(threshold, color="grey", linestyle=":", label=f"threshold {threshold:g}")
    ax.set(xlabel="threshold probability", ylabel="net benefit", ylim=(-0.05, 0.6))
    ax.legend()
    shown = [row for row in curve if round(row["threshold"] * 100) % 10 == 0]
    rows = [
        [f"{row['threshold']:.1f}", _number(row["model"]), _number(row["treat_all"])]
        for row in shown
    ]
    return (
        "<p>Net benefit of acting on the model's out-of-fold predictions at each threshold "
        "probability (the risk at which one would act), against treating everyone and "
        "no-one (Vickers and Elkin 2006). Where the model's curve is highest it is the most "
        "useful of the three.</p>" + _png(fig) + _table(["threshold", "model", "treat all"], rows)
    )


def _subgroups(groups: dict[str, dict]) -> str:
    keys = ["roc_auc", "calibration_intercept", "sensitivity", "specificity"]
    rows = []
    for name, group in groups.items():
        cells = (
            ["too few"] * len(keys)
            if group["too_few"]
            else [_with_interval(group["metrics"][key]) for key in keys]
        )
        rows.append([name, group["n"], group["positives"], *cells])
    return (
        "<p>Out-of-fold figures by sex and age band, with bootstrap 95 % intervals; a group "
        "under the minimum size is reported as too few, not as a number.</p>"
        + _table(
            [
                "group",
                "n",
                "with disease",
                "ROC-AUC",
                "calibration intercept",
                "sensitivity",
                "specificity",
            ],
            rows,
        )
    )


def _threshold(threshold: dict, evidence: dict, holdout: dict) -> str:
    value = threshold["value"]
    policy = (
        f"the highest threshold whose out-of-fold sensitivity reaches "
        f"{threshold['target_sensitivity']:g}"
        if threshold["policy"] == "sensitivity"
        else "a fixed threshold"
    )
    at = min(evidence["decision_curve"], key=lambda row: abs(row["threshold"] - value))
    out_of_fold = evidence["out_of_fold"]
    rows = [
        [
            "sensitivity",
            _with_interval(out_of_fold["sensitivity"]),
            _with_interval(holdout["sensitivity"]),
        ],
        [
            "specificity",
            _with_interval(out_of_fold["specificity"]),
            _with_interval(holdout["specificity"]),
        ],
    ]
    return (
        f"<p>Policy <code>{_e(threshold['policy'])}</code>: {policy}. Threshold "
        f"<strong>{value:g}</strong> on P(disease), stored with the version. Net benefit "
        f"there (at {at['threshold']:.2f}): model {_number(at['model'])}, treat all "
        f"{_number(at['treat_all'])}, treat none 0.</p>"
        + _table(["", "out-of-fold [95 % CI]", "holdout [95 % CI]"], rows)
    )


_LIMITATIONS = "<ul>\n" + "".join(f"<li>{_e(item)}</li>\n" for item in LIMITATIONS) + "</ul>"


def _checklist() -> str:
    rows = "".join(
        f'<tr><td>{_e(item)}</td><td><a href="#{_anchor(section)}">{_e(section)}</a></td></tr>'
        for item, section in TRIPOD_AI
    )
    return (
        "<p>TRIPOD+AI items this report covers, and where. Items it does not cover (such as "
        "the title and abstract of a publication, ethics, funding, patient involvement and "
        "external validation) are left out.</p>"
        f"<table><thead><tr><th>TRIPOD+AI item</th><th>section</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
