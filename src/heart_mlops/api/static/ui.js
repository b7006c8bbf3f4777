/* The clinician page: builds the form from GET /features, sends one patient to
   POST /predict?explain=true and shows P(disease), its main factors, the values not recorded,
   the served model's validation figures and the model's intended use.

   Every text from the server is put in the page as text (textContent), never as markup.
   The page validates nothing the API validates: out-of-range values go to the API, and its 422
   messages are shown next to their fields. */
"use strict";

(function () {
  // The API's root, from where this script is served (ui/ui.js): right behind a path prefix too.
  const API = new URL("../", document.currentScript.src);
  const TOP_FACTORS = 5;
  const UNKNOWN = "unknown";
  // Validation figures shown, by their names in /model/info's metrics (holdout_<name>,
  // cv_<name>_mean / _std); the ones a version lacks are left out.
  const FIGURES = [
    ["roc_auc", "ROC-AUC"],
    ["accuracy", "accuracy"],
    ["recall", "sensitivity (recall)"],
    ["precision", "precision"],
    ["f1", "F1"],
    ["brier", "Brier score (lower is better)"],
    ["calibration_slope", "calibration slope (ideal 1)"],
  ];

  const $ = (id) => document.getElementById(id);
  let features = [];  // GET /features' `features`
  let shownModelVersion = null;

  function element(tag, attributes, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
    }
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  async function getJson(path, init) {
    const response = await fetch(new URL(path, API), init);
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;  // not JSON: the status alone is reported
    }
    return { response, body };
  }

  function number(value, digits) {
    return Number(value).toLocaleString("en", {
      minimumFractionDigits: digits, maximumFractionDigits: digits,
    });
  }

  function percent(probability) {
    return number(probability * 100, 1) + " %";
  }

  // --- the form, from the feature table ---------------------------------------------------

  function rangeHint(feature) {
    if (feature.codes) return null;
    const unit = feature.unit ? " " + feature.unit : "";
    const note = feature.note ? " (" + feature.note + ")" : "";
    return feature.low + " to " + feature.high + unit + note;
  }

  function numberControl(feature, describedBy) {
    const input = element("input", {
      id: "f-" + feature.name, name: feature.name, type: "text", autocomplete: "off",
      inputmode: feature.low < 0 ? "text" : "decimal", "aria-describedby": describedBy,
    });
    const unknown = element("input", { id: "u-" + feature.name, type: "checkbox" });
    unknown.dataset.unknownOf = feature.name;
    unknown.addEventListener("change", () => {
      input.disabled = unknown.checked;
      if (unknown.checked) input.value = "";
      clearFieldError(feature.name);
    });
    const box = element("span", { class: "unknown" });
    box.append(unknown, element("label", { for: unknown.id }, UNKNOWN));
    return [input, box];
  }

  function selectControl(feature, describedBy) {
    const select = element("select", {
      id: "f-" + feature.name, name: feature.name, "aria-describedby": describedBy,
    });
    select.append(element("option", { value: "", selected: "", disabled: "" }, "choose…"));
    for (const { code, label } of feature.codes) {
      const text = label === String(code) ? label : label + " (" + code + ")";
      select.append(element("option", { value: String(code) }, text));
    }
    select.append(element("option", { value: UNKNOWN }, UNKNOWN));
    return [select];
  }

  function buildField(feature) {
    const field = element("div", { class: "field", id: "field-" + feature.name });
    field.dataset.feature = feature.name;
    const hint = rangeHint(feature);
    const ids = [hint ? "h-" + feature.name : null, "e-" + feature.name].filter(Boolean);
    const label = element("label", { for: "f-" + feature.name }, feature.title);
    if (feature.unit && !feature.codes) label.append(" ", element("span", { class: "unit" }, "(" + feature.unit + ")"));
    const control = element("div", { class: "control" });
    const build = feature.codes ? selectControl : numberControl;
    control.append(...build(feature, ids.join(" ")));
    field.append(label, control);
    if (hint) field.append(element("p", { class: "hint", id: "h-" + feature.name }, hint));
    field.append(element("p", { class: "error", id: "e-" + feature.name, hidden: "" }));
    return field;
  }

  function buildForm(table) {
    features = table.features;
    const fields = $("fields");
    fields.replaceChildren(...features.map(buildField));
    fields.removeAttribute("aria-busy");
    $("submit").disabled = false;
    $("intended-use").textContent = table.intended_use;
    $("about-use").textContent = table.intended_use;
    $("limitations").replaceChildren(...table.limitations.map((text) => element("li", {}, text)));
  }

  // --- reading the form and showing problems ----------------------------------------------

  const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

  // One field's value for the `patient` body: a number, null (unknown), a string the API
  // will refuse with its own message, or undefined when nothing was entered or chosen.
  function fieldValue(feature) {
    const control = $("f-" + feature.name);
    if (feature.codes) {
      if (control.value === "") return undefined;
      return control.value === UNKNOWN ? null : Number(control.value);
    }
    if ($("u-" + feature.name).checked) return null;
    const text = control.value.trim();
    if (text === "") return undefined;
    const value = Number(text);
    return NUMBER.test(text) && Number.isFinite(value) ? value : text;
  }

  function readForm() {
    const patient = {};
    const empty = [];
    for (const feature of features) {
      const value = fieldValue(feature);
      if (value === undefined) empty.push(feature);
      else patient[feature.name] = value;
    }
    return { patient, empty };
  }

  function showFieldError(name, text) {
    const control = $("f-" + name);
    const message = $("e-" + name);
    message.textContent = text;
    message.hidden = false;
    control.setAttribute("aria-invalid", "true");
  }

  function clearFieldError(name) {
    const message = $("e-" + name);
    if (!message) return;
    message.textContent = "";
    message.hidden = true;
    $("f-" + name).removeAttribute("aria-invalid");
  }

  function clearProblems() {
    features.forEach((feature) => clearFieldError(feature.name));
    $("form-error").hidden = true;
    $("form-error").replaceChildren();
  }

  function showFailure(sentence, items) {
    const box = $("form-error");
    box.replaceChildren(element("span", {}, sentence));
    if (items && items.length) {
      box.append(element("ul", {}));
      items.forEach((item) => box.lastChild.append(element("li", {}, item)));
    }
    box.hidden = false;
  }

  function focusFirstInvalid() {
    const first = document.querySelector("[aria-invalid='true']");
    if (first) first.focus();
  }

  // A 422's errors ({field, value, message, allowed?}) next to their fields; any error that
  // names no field of the form goes in one list under it.
  function showInvalid(errors) {
    const names = new Set(features.map((feature) => feature.name));
    const others = [];
    for (const error of errors) {
      const name = String(error.field || "").replace(/^patient\./, "");
      const text = error.message + (error.allowed ? ". Allowed: " + error.allowed : "");
      if (names.has(name)) showFieldError(name, text);
      else others.push((error.field ? error.field + ": " : "") + text);
    }
    if (others.length) showFailure("The server did not accept the values:", others);
    focusFirstInvalid();
  }

  // The server's one-line `detail` of an error, in brackets, or nothing.
  function detailOf(body) {
    return body && typeof body.detail === "string" ? " (" + body.detail + ")" : "";
  }

  function failureSentence(status, body) {
    const detail = detailOf(body);
    if (status === 503) {
      return "No estimate now: the service has no model loaded yet" + detail +
        ". Try again in a minute.";
    }
    if (status === 422) return "The server did not accept the values" + detail + ".";
    return "No estimate: the server answered with an error (HTTP " + status + ")" + detail +
      ". Try again; if it persists, tell the service's administrators.";
  }

  // --- the result -------------------------------------------------------------------------

  function featureNamed(name) {
    return features.find((feature) => feature.name === name);
  }

  // A value in words: a code's label, or the number and unit.
  function describeValue(feature, value) {
    if (!feature) return String(value);
    if (feature.codes) {
      const code = feature.codes.find((item) => item.code === Number(value));
      if (code) return code.label === String(code.code) ? code.label : code.label + " (" + code.code + ")";
    }
    const rounded = Number.isInteger(value) ? String(value) : number(value, 1);
    return rounded + (feature.unit ? " " + feature.unit : "");
  }

  function showDecision(prediction) {
    const threshold = percent(prediction.threshold);
    const text = prediction.prediction === 1
      ? "This is at or above the model's decision threshold of " + threshold + ", so the " +
        "model's answer is “" + prediction.label + "”: a reason for further assessment, " +
        "not a diagnosis."
      : "This is below the model's decision threshold of " + threshold + ", so the model's " +
        "answer is “" + prediction.label + "”: it does not rule heart disease out.";
    $("decision").textContent = text;
  }

  function contributionText(value, units) {
    const sign = value > 0 ? "+" : value < 0 ? "−" : "±";
    if (units === "probability") return sign + number(Math.abs(value) * 100, 1) + " percentage points";
    return sign + number(Math.abs(value), 2) + " log-odds";
  }

  function factorItem(item, units, largest) {
    const feature = featureNamed(item.feature);
    const direction = item.contribution > 0 ? "towards" : "against";
    const row = element("li", { class: "factor" });
    row.dataset.feature = item.feature;
    row.dataset.contribution = String(item.contribution);
    const name = element("span", { class: "factor-name" });
    const value = describeValue(feature, item.value);
    name.append(
      element("strong", {}, feature ? feature.title : item.feature),
      element("span", { class: "factor-value" },
        item.missing ? "not recorded; the model used " + value : "patient: " + value),
    );
    const bar = element("span", { class: "factor-bar", "aria-hidden": "true" });
    const fill = element("span", { class: "bar " + direction });
    fill.style.width = (largest > 0 ? (Math.abs(item.contribution) / largest) * 50 : 0) + "%";
    bar.append(fill);
    const effect = element("span", { class: "factor-effect " + direction },
      contributionText(item.contribution, units) + " " + direction + " disease");
    row.append(name, bar, effect);
    return row;
  }

  function showExplanation(answer) {
    const explanation = answer.explanation;
    const list = $("factors");
    if (!explanation) {
      const reason = answer.explanation_unavailable ||
        "this server does not give explanations";
      $("explanation-note").textContent = "No explanation is available for this estimate: " +
        reason + ".";
      list.replaceChildren();
      list.hidden = true;
      $("explanation-method").textContent = "";
      return;
    }
    const units = explanation.units === "probability" ? "percentage points of probability" : "log-odds of disease";
    const top = explanation.contributions.slice(0, TOP_FACTORS);
    const largest = Math.max(...top.map((item) => Math.abs(item.contribution)));
    $("explanation-note").textContent = "The " + top.length + " inputs that moved this " +
      "estimate most, in " + units + ": a bar to the right pushes towards disease, to the " +
      "left against it.";
    list.replaceChildren(...top.map((item) => factorItem(item, explanation.units, largest)));
    list.hidden = false;
    const base = explanation.units === "probability"
      ? percent(explanation.base_value) : number(explanation.base_value, 2) + " log-odds";
    $("explanation-method").textContent = "Method: " + explanation.method + "; starting point " +
      "(the training patients as reference): " + base + ". " + (explanation.detail || "");
  }

  function showMissing(patient, explanation) {
    const used = new Map((explanation ? explanation.contributions : [])
      .map((item) => [item.feature, item]));
    const missing = features.filter((feature) => patient[feature.name] === null);
    const list = $("missing");
    list.replaceChildren(...missing.map((feature) => {
      const item = element("li", {}, feature.title);
      item.dataset.feature = feature.name;
      const value = used.get(feature.name);
      if (value) item.append(": the model used " + describeValue(feature, value.value));
      return item;
    }));
    list.hidden = missing.length === 0;
    $("missing-note").textContent = missing.length === 0
      ? "All 13 values were given."
      : missing.length + " of 13 values were not recorded; the model filled each in with a " +
        "value typical of its training patients (imputed):";
  }

  function showResult(answer, patient) {
    $("probability").textContent = percent(answer.probability);
    showDecision(answer);
    showExplanation(answer);
    showMissing(patient, answer.explanation);
    $("result").hidden = false;
    $("result-heading").focus();
    if (answer.model_version !== shownModelVersion) loadModel();
  }

  // --- the served model ---------------------------------------------------------------------

  function figureRow(label, holdout, mean, sd) {
    const row = element("tr");
    row.append(element("th", { scope: "row" }, label),
      element("td", { class: "number" }, holdout === undefined ? "–" : number(holdout, 3)),
      element("td", { class: "number" },
        mean === undefined ? "–" : number(mean, 3) + (sd === undefined ? "" : " ± " + number(sd, 3))));
    return row;
  }

  function showModel(info) {
    shownModelVersion = info.version;
    const rows = info.data && info.data.rows_distinct;
    $("model-summary").textContent = "Version " + info.version + " of " + info.model_name +
      " (" + (info.candidate || info.model_type) + "), decision threshold " +
      percent(info.threshold) + (rows ? "; developed on " + rows + " distinct patients" : "") +
      ".";
    const holdout = info.metrics.holdout || {};
    const cv = info.metrics.cv || {};
    const table = $("figures");
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const [name, label] of FIGURES) {
      const mean = cv["cv_" + name + "_mean"] ?? cv["cv_" + name];  // pooled figures have no _mean
      const values = [holdout["holdout_" + name], mean, cv["cv_" + name + "_std"]];
      if (values[0] === undefined && values[1] === undefined) continue;
      const row = figureRow(label, ...values);
      row.dataset.figure = name;
      body.append(row);
    }
    table.hidden = body.rows.length === 0;
  }

  async function loadModel() {
    try {
      const { response, body } = await getJson("model/info");
      if (response.ok && body) showModel(body);
      else if (response.status === 503) {
        $("model-summary").textContent = "No model is served yet" + detailOf(body) +
          ". Its version and validation figures appear here once one is loaded.";
      } else $("model-summary").textContent = failureSentence(response.status, body);
    } catch (error) {
      $("model-summary").textContent = "The server could not be reached to describe the model.";
    }
  }

  // --- sending ------------------------------------------------------------------------------

  function setBusy(busy) {
    $("submit").disabled = busy;
    $("submit").textContent = busy ? "Estimating…" : "Estimate";
    $("patient-form").setAttribute("aria-busy", String(busy));
  }

  async function submit(event) {
    event.preventDefault();
    clearProblems();
    $("result").hidden = true;
    const { patient, empty } = readForm();
    if (empty.length) {
      empty.forEach((feature) => showFieldError(feature.name, feature.codes
        ? "Choose a value, or “unknown” if it was not recorded."
        : "Enter a value, or tick “unknown” if it was not recorded."));
      focusFirstInvalid();
      return;
    }
    setBusy(true);
    try {
      const { response, body } = await getJson("predict?explain=true", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ patient }),
      });
      if (response.ok && body) showResult(body, patient);
      else if (response.status === 422 && body && Array.isArray(body.errors)) showInvalid(body.errors);
      else showFailure(failureSentence(response.status, body));
    } catch (error) {
      showFailure("No estimate: the server could not be reached. Check the connection and " +
        "try again.");
    } finally {
      setBusy(false);
    }
  }

  function reset() {
    clearProblems();
    $("result").hidden = true;
    features.filter((feature) => !feature.codes)
      .forEach((feature) => { $("f-" + feature.name).disabled = false; });
  }

  async function start() {
    $("patient-form").addEventListener("submit", submit);
    $("patient-form").addEventListener("reset", reset);
    $("fields").addEventListener("input", (event) => {
      if (event.target.name) clearFieldError(event.target.name);
    });
    try {
      const { response, body } = await getJson("features");
      if (!response.ok || !body) throw new Error("HTTP " + response.status);
      buildForm(body);
    } catch (error) {
      showFailure("The form could not be loaded: the server did not answer with its feature " +
        "table (" + error.message + "). Reload the page to try again.");
    }
    loadModel();
  }

  start();
})();
