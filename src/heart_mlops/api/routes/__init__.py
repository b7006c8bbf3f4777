"""The API's routes, one APIRouter per resource: predict, model, service, ui (the feature table
and the clinician page).

Route handlers' docstrings open with a form feed (\\f): FastAPI publishes a docstring up to the
first form feed as the operation's description, and the OpenAPI document has none.
"""
