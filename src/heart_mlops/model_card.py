"""What the model is for and where it falls short: the text that the report of every version
(report.py) and the clinician page (GET /features) both show. Plain text, one place."""

from __future__ import annotations

INTENDED_USE = (
    "Decision support for research and teaching: estimates the probability of heart disease "
    "(angiographic narrowing over 50 % in a major vessel) from 13 clinical features of an "
    "adult patient referred for evaluation. For clinicians, alongside their own judgement; "
    "not a medical device, not for diagnosis without a clinician."
)

LIMITATIONS = (
    "Developed on about 300 patients of one hospital (Cleveland Clinic, 1981-1988, UCI Heart "
    "Disease data), referred for angiography: other populations, hospitals and eras may "
    "differ, calibration especially; the validation figures describe this sample only.",
    "Women are about a third of the patients: their figures rest on few rows.",
    "Features other hospitals often lack (ca, thal, slope, chol) are imputed, which lowers "
    "accuracy for such records.",
    "No external validation is reported.",
)
