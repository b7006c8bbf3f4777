"""GET /features and GET /ui without a browser: the feature table as the page reads it, the
page's files, its headers, and that nothing in it points outside the server. The page in a
real browser is tests/api/test_ui_browser.py."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from heart_mlops.api import create_app
from heart_mlops.api.routes.ui import STATIC
from heart_mlops.data import FEATURE_SPECS, FEATURES
from heart_mlops.model_card import INTENDED_USE, LIMITATIONS


@pytest.fixture
def app(fresh_settings):
    """The app on an empty store, its lifespan not started: no model, and none needed."""
    return TestClient(create_app(fresh_settings))


def test_features_is_the_feature_table_in_the_order_of_the_features_list(app):
    body = app.get("/features").json()
    assert [f["name"] for f in body["features"]] == list(FEATURES)
    for shown, spec in zip(body["features"], FEATURE_SPECS, strict=True):
        assert shown["title"] == spec.title and shown["unit"] == spec.unit
        assert shown["allowed"] == spec.allowed and shown["missing_code"] == spec.missing_code
        if spec.codes:
            assert [c["code"] for c in shown["codes"]] == list(spec.codes)
            assert all(c["label"] for c in shown["codes"])
            assert shown["low"] is None and shown["high"] is None
        else:
            assert (shown["low"], shown["high"], shown["codes"]) == (spec.low, spec.high, None)
    cp = next(f for f in body["features"] if f["name"] == "cp")
    assert {"code": 0, "label": "asymptomatic"} in cp["codes"]  # heart.csv's code, not UCI's


def test_features_carries_the_model_cards_intended_use_and_limitations(app):
    body = app.get("/features").json()
    assert body["intended_use"] == INTENDED_USE and body["limitations"] == list(LIMITATIONS)
    text = " ".join([body["intended_use"], *body["limitations"]])
    for fact in ("research and teaching", "not a medical device", "one hospital", "300"):
        assert fact in text


def test_openapi_documents_features_with_its_model_and_not_the_page(app):
    document = app.get("/openapi.json").json()
    answer = document["paths"]["/features"]["get"]["responses"]["200"]["content"]
    assert answer["application/json"]["schema"] == {"$ref": "#/components/schemas/FeatureTable"}
    assert {"FeatureTable", "FeatureInfo", "FeatureCode"} <= set(document["components"]["schemas"])
    assert not any(path.startswith("/ui") for path in document["paths"])


def test_root_names_the_page_and_the_feature_table(app):
    body = app.get("/").json()
    assert body["ui"] == "/ui" and body["features"] == "/features"


def test_the_page_and_its_files_are_served_with_a_policy_of_this_server_only(app):
    page = app.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "unsafe" not in policy
    for name, media in (("ui.css", "text/css"), ("ui.js", "text/javascript")):
        assert f'"ui/{name}"' in page.text
        served = app.get(f"/ui/{name}")
        assert served.status_code == 200 and served.headers["content-type"].startswith(media)
        assert served.content == (STATIC / name).read_bytes()
    moved = app.get("/ui/", follow_redirects=False)
    assert moved.status_code == 308 and moved.headers["location"] == "../ui"
    assert app.get("/ui/no-such-file.js").status_code == 404


def test_nothing_in_the_page_is_fetched_from_another_server():
    page = (STATIC / "index.html").read_text()
    links = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert links and all(link.startswith(("ui/", "data:")) for link in links), links
    for path in STATIC.iterdir():
        assert not re.search(r"https?://", path.read_text()), f"{path.name} names another server"
    style = (STATIC / "ui.css").read_text()
    assert "@import" not in style and "url(" not in style
