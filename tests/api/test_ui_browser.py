"""The clinician page (GET /ui) in a real browser: Debian's Chromium, driven by Selenium through
Debian's chromedriver, on the real API (uvicorn on a loopback port, the session's trained
model). What the page shows is compared with what the API answers for the same body.

Needs the Debian packages chromium and chromium-driver and the npm package axe-core
(tests/browser/package-lock.json); `make test-deps` installs all three. Selenium Manager is
never asked for a driver or a browser: both paths are given, and SE_OFFLINE is set.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from heart_mlops.data import FEATURE_SPECS, FEATURES, SPEC_BY_NAME
from tests.api.conftest import SEED, serving
from tests.support import ROOT, debian_tool

pytestmark = pytest.mark.timeout(300)

AXE = ROOT / "tests" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "test-artifacts"
SEED_PATIENT = dict(zip(FEATURES, SEED, strict=True))
NOT_RECORDED = ("chol", "slope", "ca", "thal")  # a typed value and three lists
WAIT = 30  # seconds for the page to answer


@pytest.fixture(scope="module")
def driver():
    """Headless Chromium of the Debian packages; its performance log records the requests."""
    chromium, chromedriver = debian_tool("chromium"), debian_tool("chromedriver")
    options = webdriver.ChromeOptions()
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
    ):
        options.add_argument(argument)
    options.binary_location = chromium
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download anything
        browser = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def page(driver, live_url):
    """The page at 1100 px wide, its form built from /features and the model described."""
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.set_window_size(1100, 1000)
    open_page(driver, live_url)
    return driver


def open_page(driver, url: str, model_summary: str = "Version") -> None:
    """Load the page of the API at `url`; wait until its form is built and its model section
    starts with `model_summary`."""
    driver.get(f"{url}/ui")
    WebDriverWait(driver, WAIT).until(
        lambda d: (
            d.find_element(By.ID, "submit").is_enabled()
            and d.find_element(By.ID, "model-summary").text.startswith(model_summary)
        ),
        f"the page did not build its form or its model section does not say {model_summary!r}",
    )
    driver.get_log("performance")  # drop what loading the page logged


def api_answer(live_url: str, patient: dict, *, status: int = 200) -> dict:
    """What POST /predict?explain=true answers for `patient`, asked by the test itself."""
    with httpx.Client(base_url=live_url, timeout=30) as http:
        response = http.post("/predict", params={"explain": "true"}, json={"patient": patient})
    assert response.status_code == status, response.text
    return response.json()


def explanation_of(answer: dict) -> dict:
    """The `explanation` of an answer of POST /predict?explain=true; fails the test without."""
    explanation = answer.get("explanation")
    assert explanation, (
        "POST /predict?explain=true gave no explanation: "
        f"{answer.get('explanation_unavailable', 'the answer has no explanation field')}"
    )
    return explanation


def shown_value(spec, value: float) -> str:
    """How the page writes a value the model used: a code's label and code, or the number
    (one decimal unless whole) and unit."""
    labels = dict(spec.labelled_codes)
    if value in labels:
        code = int(value)
        return labels[code] if labels[code] == str(code) else f"{labels[code]} ({code})"
    text = f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return f"{text} {spec.unit}" if spec.unit else text


def fill(driver, patient: dict) -> None:
    """Type or choose each value of `patient`; None ticks or chooses "unknown"."""
    for spec in FEATURE_SPECS:
        value, control = patient[spec.name], driver.find_element(By.ID, f"f-{spec.name}")
        if spec.codes:
            Select(control).select_by_value("unknown" if value is None else f"{value:g}")
        elif value is None:
            driver.find_element(By.ID, f"u-{spec.name}").click()
        else:
            control.clear()
            control.send_keys(f"{value:g}")


def submit_and_wait(driver) -> None:
    """Submit the form and wait until the page shows a result or a problem."""
    driver.find_element(By.ID, "submit").click()
    wait_for_answer(driver)


def wait_for_answer(driver) -> None:
    WebDriverWait(driver, WAIT).until(
        lambda d: d.execute_script(
            "return !document.getElementById('result').hidden"
            " || !document.getElementById('form-error').hidden"
            " || document.querySelector('.error:not([hidden])') !== null"
        ),
        "the page showed neither a result nor a problem",
    )


def shown_percent(driver) -> float:
    text = driver.find_element(By.ID, "probability").text
    assert text.endswith(" %"), text
    return float(text.removesuffix(" %"))


def sent_bodies(driver) -> list[dict]:
    """The bodies of the POST requests the page made since the log was last read."""
    bodies = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        request = message.get("params", {}).get("request", {})
        if message["method"] == "Network.requestWillBeSent" and request.get("method") == "POST":
            bodies.append({"url": request["url"], "body": json.loads(request["postData"])})
    return bodies


def save_full_page(driver, name: str) -> Path:
    """A PNG of the whole page (beyond the window) under test-artifacts/."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        },
    )
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def test_seed_patient_shows_the_apis_probability_decision_and_model(page, live_url, capsys):
    fill(page, SEED_PATIENT)
    submit_and_wait(page)
    answer = api_answer(live_url, SEED_PATIENT)
    assert page.find_element(By.ID, "result").is_displayed()
    assert shown_percent(page) == pytest.approx(answer["probability"] * 100, abs=0.05 + 1e-9)
    decision = page.find_element(By.ID, "decision").text
    assert f"{answer['threshold'] * 100:.1f} %" in decision and answer["label"] in decision
    assert ("at or above" in decision) == (answer["prediction"] == 1)
    assert page.find_element(By.ID, "missing-note").text == "All 13 values were given."

    with httpx.Client(base_url=live_url, timeout=30) as http:
        info = http.get("/model/info").json()
        table = http.get("/features").json()
    summary = page.find_element(By.ID, "model-summary").text
    assert summary.startswith(f"Version {answer['model_version']} of {info['model_name']}")
    roc_auc = page.find_element(By.CSS_SELECTOR, "#figures tr[data-figure='roc_auc']").text
    assert f"{info['metrics']['holdout']['holdout_roc_auc']:.3f}" in roc_auc
    assert f"{info['metrics']['cv']['cv_roc_auc_mean']:.3f}" in roc_auc
    assert page.find_element(By.ID, "intended-use").text == table["intended_use"]
    assert "not a medical device" in table["intended_use"]
    shown_limits = [li.text for li in page.find_elements(By.CSS_SELECTOR, "#limitations li")]
    assert shown_limits == table["limitations"]

    path = save_full_page(page, "ui-result.png")
    with capsys.disabled():
        print(f"\nscreenshot of the result page: {path}")
    assert path.stat().st_size > 10_000


def test_seed_patient_shows_the_apis_main_factors(page, live_url):
    """Needs the explanations of POST /predict?explain=true."""
    fill(page, SEED_PATIENT)
    submit_and_wait(page)
    explanation = explanation_of(api_answer(live_url, SEED_PATIENT))
    expected = explanation["contributions"][:5]
    rows = page.find_elements(By.CSS_SELECTOR, "#factors li.factor")
    assert [row.get_attribute("data-feature") for row in rows] == [c["feature"] for c in expected]
    for row, item in zip(rows, expected, strict=True):
        shown = float(row.get_attribute("data-contribution"))
        assert shown == pytest.approx(item["contribution"], rel=1e-6, abs=1e-9)
        effect = row.find_element(By.CLASS_NAME, "factor-effect").text
        assert effect.endswith("towards disease" if shown > 0 else "against disease"), effect
        spec = SPEC_BY_NAME[item["feature"]]
        assert row.find_element(By.TAG_NAME, "strong").text == spec.title
        value = row.find_element(By.CLASS_NAME, "factor-value").text
        assert value == f"patient: {shown_value(spec, SEED_PATIENT[spec.name])}"
        assert item["value"] == pytest.approx(SEED_PATIENT[spec.name]) and not item["missing"]
    units = "log-odds" if explanation["units"] == "log_odds" else "percentage points"
    assert units in page.find_element(By.ID, "explanation-note").text
    assert explanation["method"] in page.find_element(By.ID, "explanation-method").text


def test_unknown_values_are_sent_as_null_and_listed(page, live_url):
    patient = {**SEED_PATIENT, **dict.fromkeys(NOT_RECORDED)}
    fill(page, patient)
    submit_and_wait(page)
    (sent,) = sent_bodies(page)
    assert sent["url"] == f"{live_url}/predict?explain=true"
    assert sent["body"] == {"patient": patient}  # None is JSON null
    listed = page.find_elements(By.CSS_SELECTOR, "#missing li")
    assert [item.get_attribute("data-feature") for item in listed] == list(NOT_RECORDED)
    assert page.find_element(By.ID, "missing-note").text.startswith("4 of 13 values")
    answer = api_answer(live_url, patient)
    assert shown_percent(page) == pytest.approx(answer["probability"] * 100, abs=0.05 + 1e-9)


def test_values_not_recorded_show_what_the_model_used(page, live_url):
    """Needs the explanations of POST /predict?explain=true (the imputed values)."""
    patient = {**SEED_PATIENT, **dict.fromkeys(NOT_RECORDED)}
    fill(page, patient)
    submit_and_wait(page)
    explanation = explanation_of(api_answer(live_url, patient))
    used = {c["feature"]: c for c in explanation["contributions"]}
    assert all(used[name]["missing"] for name in NOT_RECORDED)
    listed = page.find_elements(By.CSS_SELECTOR, "#missing li")
    assert [item.get_attribute("data-feature") for item in listed] == list(NOT_RECORDED)
    for item in listed:
        spec = SPEC_BY_NAME[item.get_attribute("data-feature")]
        value = shown_value(spec, used[spec.name]["value"])
        assert item.text == f"{spec.title}: the model used {value}"


def test_out_of_range_value_shows_the_apis_message_at_its_field(page, live_url):
    patient = {**SEED_PATIENT, "age": 300}
    fill(page, patient)
    submit_and_wait(page)
    (error,) = api_answer(live_url, patient, status=422)["errors"]
    assert error["field"] == "patient.age"
    message = page.find_element(By.ID, "e-age")
    assert message.is_displayed() and error["message"] in message.text  # "300 is not allowed"
    assert page.find_element(By.ID, "f-age").get_attribute("aria-invalid") == "true"
    assert page.switch_to.active_element.get_attribute("id") == "f-age"
    shown_errors = page.find_elements(By.CSS_SELECTOR, ".error:not([hidden])")
    assert [e.get_attribute("id") for e in shown_errors] == ["e-age"]
    assert not page.find_element(By.ID, "result").is_displayed()
    assert not page.find_element(By.ID, "form-error").is_displayed()
    assert '"detail"' not in page.find_element(By.TAG_NAME, "body").text


def test_no_horizontal_scroll_at_375_px(driver, live_url):
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 375, "height": 800, "deviceScaleFactor": 2, "mobile": True},
    )
    try:
        open_page(driver, live_url)
        fill(driver, {**SEED_PATIENT, "chol": None, "age": 300})  # a field message, and
        submit_and_wait(driver)
        widths = (
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert driver.find_element(By.ID, "e-age").is_displayed()
        with_error = driver.execute_script(widths)
        driver.find_element(By.ID, "f-age").clear()
        driver.find_element(By.ID, "f-age").send_keys("63")
        submit_and_wait(driver)  # then a result
        assert driver.find_element(By.ID, "result").is_displayed()
        scroll_width, client_width = driver.execute_script(widths)
        assert client_width == 375
        assert scroll_width <= client_width and with_error[0] <= with_error[1], (
            f"horizontal scroll at 375 px: {scroll_width} px of content"
        )
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def press(driver, *keys) -> None:
    """Send `keys` to whatever has the focus, as a keyboard would."""
    ActionChains(driver).send_keys(*keys).perform()


def test_keyboard_alone_fills_and_submits_the_form(page, live_url):
    page.execute_script("document.getElementById('f-age').focus()")
    for spec in FEATURE_SPECS:
        value = SEED_PATIENT[spec.name]
        assert page.switch_to.active_element.get_attribute("id") == f"f-{spec.name}"
        if spec.codes:  # from "choose…", one arrow down per option up to the value's code
            press(page, *[Keys.ARROW_DOWN] * (spec.codes.index(value) + 1), Keys.TAB)
        else:  # the value, then past the "unknown" box
            press(page, f"{value:g}", Keys.TAB, Keys.TAB)
    assert page.switch_to.active_element.get_attribute("id") == "submit"
    press(page, Keys.ENTER)
    wait_for_answer(page)
    (sent,) = sent_bodies(page)
    assert sent["body"] == {"patient": SEED_PATIENT}
    answer = api_answer(live_url, SEED_PATIENT)
    assert shown_percent(page) == pytest.approx(answer["probability"] * 100, abs=0.05 + 1e-9)

    # Enter in a typed field submits too: an older patient, a new answer
    page.execute_script("document.getElementById('f-age').focus()")
    press(page, Keys.END, *[Keys.BACKSPACE] * 2, "71", Keys.ENTER)
    wait_for_answer(page)
    (sent,) = sent_bodies(page)
    assert sent["body"] == {"patient": {**SEED_PATIENT, "age": 71}}
    older = api_answer(live_url, {**SEED_PATIENT, "age": 71})
    assert shown_percent(page) == pytest.approx(older["probability"] * 100, abs=0.05 + 1e-9)


def test_no_serious_or_critical_accessibility_violations(page, live_url):
    if not AXE.is_file():
        pytest.fail(
            f"axe-core is not installed ({AXE.relative_to(ROOT)}): `make test-deps` installs "
            "the npm packages of tests/browser",
            pytrace=False,
        )
    fill(page, {**SEED_PATIENT, "chol": None})
    submit_and_wait(page)
    assert page.find_element(By.ID, "result").is_displayed()
    with_result = axe_violations(page)
    page.find_element(By.ID, "f-age").clear()
    page.find_element(By.ID, "f-age").send_keys("300")
    submit_and_wait(page)
    assert page.find_element(By.ID, "e-age").is_displayed()
    with_error = axe_violations(page)
    assert with_result == [] and with_error == [], json.dumps(
        {"with a result": with_result, "with a field error": with_error}, indent=1
    )


def axe_violations(driver) -> list[dict]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not driver.execute_script("return typeof window.axe === 'object'"):
        driver.execute_script(AXE.read_text())
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document).then(done, (error) => done({error: String(error)}));"
    )
    assert "error" not in result, result
    return [
        {
            "rule": violation["id"],
            "impact": violation["impact"],
            "help": violation["help"],
            "where": [node["target"] for node in violation["nodes"]][:5],
        }
        for violation in result["violations"]
        if violation["impact"] in ("serious", "critical")
    ]


def test_no_model_and_no_server_are_each_said_in_one_plain_sentence(driver, fresh_settings):
    with serving(fresh_settings.model_copy(update={"api_poll_seconds": 0}), ready=False) as url:
        driver.set_window_size(1100, 1000)
        open_page(driver, url, model_summary="No model is served yet")
        fill(driver, SEED_PATIENT)
        submit_and_wait(driver)
        no_model = driver.find_element(By.ID, "form-error").text
        assert no_model.startswith("No estimate now: the service has no model loaded yet")
        assert no_model.endswith("Try again in a minute.") and "{" not in no_model
        assert not driver.find_element(By.ID, "result").is_displayed()
    submit_and_wait(driver)  # the server has stopped
    assert driver.find_element(By.ID, "form-error").text == (
        "No estimate: the server could not be reached. Check the connection and try again."
    )
