"""`explain=true`: the served version's explanations (heart_mlops.explanations), built at the
first request that asks for one (shap and the pipeline take seconds to load), once per version.

An explanation is shown only when it adds up to the probability served with it (within the
runtime parity tolerance: the exact methods explain the scikit-learn pipeline, which ONNX
Runtime may be serving); otherwise, or when none can be given, `"explanation": null` with the
reason in `"explanation_unavailable"`. Never an error answer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from heart_mlops.errors import ExplanationError
from heart_mlops.onnx_model import PARITY_TOLERANCE

if TYPE_CHECKING:  # scikit-learn: imported only when an explanation is asked for
    from heart_mlops.explanations import Explainer

log = logging.getLogger(__name__)


class ExplainerSlot:
    """The Explainer of one loaded version: `build` is called at the first `explain`, under a
    lock, then `built` (the holder freezes the heap again: shap's modules and the explainer
    would otherwise be walked by every full garbage collection, a pause on the hot path). A
    model no method explains is remembered (ExplanationError); a failure to load what the
    explainer needs (the registry down) is tried again at the next request."""

    def __init__(self, build: Callable[[], Explainer], built: Callable[[], None] = lambda: None):
        self._build, self._built = build, built
        self._lock = threading.Lock()
        self._explainer: Explainer | None = None
        self._unavailable: str | None = None

    def _get(self) -> Explainer:
        with self._lock:
            if self._explainer is None and self._unavailable is None:
                try:
                    self._explainer = self._build()
                except ExplanationError as exc:
                    self._unavailable = str(exc)
                self._built()
        if self._unavailable is not None:
            raise ExplanationError(self._unavailable)
        return self._explainer

    def explain(self, rows: np.ndarray, served: list[float]) -> list[dict]:
        """Rows (n, 13) and their served P(disease) (n values) -> per row `{"explanation": {...}}`
        or `{"explanation": None, "explanation_unavailable": reason}`. Blocking: run it in a
        worker thread."""
        from heart_mlops.explanations import implied_probability

        try:
            explanations = self._get().explain(rows)
        except ExplanationError as exc:
            return [_unavailable(str(exc))] * len(rows)
        except Exception as exc:  # a model the explainer cannot handle: the answer stands
            log.exception("explaining %d row(s) failed", len(rows))
            return [_unavailable(f"the explanation failed ({type(exc).__name__})")] * len(rows)
        answers = []
        for explanation, probability in zip(explanations, served, strict=True):
            total = implied_probability(explanation)
            if abs(total - probability) <= PARITY_TOLERANCE:
                answers.append({"explanation": explanation})
            else:
                answers.append(
                    _unavailable(
                        f"the explanation adds up to P(disease) {total:.6f}, not the served "
                        f"{probability:.6f}"
                    )
                )
        return answers


def _unavailable(reason: str) -> dict:
    return {"explanation": None, "explanation_unavailable": reason}
