// unveil dashboard: plain JavaScript, no framework, no external resource.
"use strict";

const state = { models: [], model: null, input: null, inputText: "", offset: 0, limit: 24, total: 0,
                table: null, columns: {}, terms: {}, modelEpoch: 0, inputEpoch: 0, editable: null, rect: null, inputImage: null, computed: false,
                edited: false };
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

async function api(path, options = {}) {
  let res;
  try {
    res = await fetch(path, options);
  } catch (err) {
    throw new Error("The dashboard's server did not answer: is it still running?");
  }
  const type = res.headers.get("content-type") || "";
  const body = type.includes("application/json") ? await res.json().catch(() => null) : await res.text();
  if (!res.ok) {
    // the server's errors are {"detail": "<one line>"}; anything else (a proxy's page) is named by its status
    const detail = body && typeof body === "object" ? body.detail : null;
    const msg = typeof detail === "string" && detail ? detail : `${res.status} ${res.statusText || "error"}`;
    const err = new Error(msg.charAt(0).toUpperCase() + msg.slice(1));
    err.status = res.status;
    throw err;
  }
  return body;
}

async function postJson(path, body) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

function showError(err) {
  const box = $("error");
  box.textContent = err ? String(err.message || err) : "";
  box.hidden = !err;
  if (err) box.scrollIntoView({ block: "nearest" });
}

function setStatus(text) { $("status").textContent = text; }

// -- words ------------------------------------------------------------------------------------
function plural(n, word, many) { return `${n} ${n === 1 ? word : (many || word + "s")}`; }
function label(key) {
  const t = state.terms[key];
  return t ? t.label : key.replace(/_/g, " ");
}
function termCell(key, tag = "th", suffix = "") {
  const t = state.terms[key];
  const attrs = { text: label(key) + suffix };
  if (t && t.definition) attrs.title = t.definition;
  return el(tag, attrs);
}
function fmt(v) { return v === null || v === undefined ? "–" : Number(v).toPrecision(3); }
function pct(v) { return v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)}%`; }
function probText(p) {
  if (p.probability === null) return p.label;
  const v = 100 * p.probability;
  return `${p.label} (${v > 99.9 ? "over 99.9" : v < 0.1 ? "under 0.1" : v.toFixed(1)}%)`;
}
function describeUpload(file, res) {
  const s = res.shape;
  if (state.model.modality === "tabular" && s.length === 2)
    return `${file.name}: a table of ${plural(s[0], "row")} and ${plural(s[1], "column")}`;
  if (res.kind === "image") return `${file.name}: an image (${s.slice(-2).join("×")} pixels)`;
  if (state.model.modality === "text") return `${file.name}: ${plural(res.rows, "text")}`;
  return `${file.name}: ${plural(res.rows, "input")} of shape ${s.slice(1).join("×") || "scalar"}`;
}

// -- clearing stale results ----------------------------------------------------------------
function clearResults({ wholeModel = false } = {}) {
  $("result").hidden = true;
  state.edited = false;
  $("whatif-banner").hidden = true;
  $("whatif-banner").replaceChildren();
  for (const id of ["prediction", "cautions", "maps", "metrics", "downloads", "sanity-result"]) $(id).replaceChildren();
  $("narrative").textContent = "";
  $("sanity").hidden = true;
  $("whatif").hidden = true;
  $("whatif-form").replaceChildren();
  state.editable = null;
  state.rect = null;
  if (wholeModel) $("global").replaceChildren();
  showError(null);
}

// -- model, samples, methods ---------------------------------------------------------------
async function loadModels() {
  const [models, terms] = await Promise.all([api("/api/models"), api("/api/terms").catch(() => ({}))]);
  state.models = models;
  state.terms = terms;
  const sel = $("model");
  sel.replaceChildren(...state.models.map((m) => el("option", { value: m.name, text: m.name })));
  sel.addEventListener("change", () => selectModel(sel.value).catch(showError));
  if (state.models.length) await selectModel(state.models[0].name);
}

async function selectModel(name) {
  state.modelEpoch += 1;
  state.inputEpoch += 1;  // answers to requests made before the switch are dropped
  state.model = state.models.find((m) => m.name === name);
  state.input = null;
  state.offset = 0;
  state.table = null;
  $("model").value = name;
  $("model-desc").textContent = state.model.description;
  $("selected").textContent = "No input chosen.";
  $("upload-status").textContent = "";
  $("upload").value = "";
  const target = $("target");
  target.replaceChildren(el("option", { value: "predicted", text: "predicted class" }),
    ...(state.model.class_names || []).map((c, i) => el("option", { value: String(i), text: c })));
  clearResults({ wholeModel: true });
  $("controls").scrollTop = 0;
  window.scrollTo(0, 0);
  setStatus("Pick an input and methods, then press Explain.");
  const epoch = state.modelEpoch;
  await Promise.all([loadSamples(), loadMethods(), loadWholeModel()]);
  if (epoch === state.modelEpoch && !state.total && !state.input)
    setStatus("This model has no samples: upload an input, then press Explain.");
}

function tableQuery() { return state.table ? `?upload=${state.table.id}` : ""; }

async function loadWholeModel() {
  const tabular = state.model.modality === "tabular";
  $("whole-controls").hidden = !tabular;
  $("whole-note").hidden = tabular;
  if (!tabular) return;
  $("whole-rows").textContent = state.table ? `Rows: the uploaded table (${plural(state.table.rows, "row")}).`
    : "Rows: the model's data.";
  const sel = $("audit-column");
  try {
    const cols = await api(`/api/models/${encodeURIComponent(state.model.name)}/columns${tableQuery()}`);
    state.columns = Object.fromEntries(cols.map((c) => [c.name, c]));
    sel.replaceChildren(...cols.map((c) => el("option", { value: c.name,
      text: `${c.name} (${plural(c.n_values, "value")}${c.kept_aside ? "; not read by the model" : ""})` })));
    $("audit-run").disabled = !cols.length;
    $("distill-run").disabled = false;
    if (!cols.length) sel.replaceChildren(el("option", { value: "", text: "no column with 2–20 values" }));
  } catch (err) {
    sel.replaceChildren(el("option", { value: "", text: "no rows: upload a CSV table" }));
    $("audit-run").disabled = true;
    $("distill-run").disabled = true;
    $("whole-rows").textContent = "No rows for this model: start the dashboard with --data, or upload a CSV table of at least 20 rows.";
  }
}

async function loadSamples() {
  const m = state.model;
  const page = await api(`/api/models/${encodeURIComponent(m.name)}/samples?offset=${state.offset}&limit=${state.limit}`);
  state.total = page.total;
  const box = $("samples");
  box.className = "samples" + (m.modality === "image" ? "" : " table");
  box.replaceChildren(...page.items.map((s) => {
    const b = el("button", { type: "button", "data-testid": "sample", "data-index": String(s.index),
                             title: s.label ? `label: ${s.label}` : `sample ${s.index}` });
    if (s.thumbnail) b.append(el("img", { src: s.thumbnail, alt: `sample ${s.index}` }));
    b.append(el("span", { text: `#${s.index}${s.label ? " · " + s.label : ""}` }));
    if (s.preview) b.append(el("div", { class: "muted", text: s.preview }));
    b.addEventListener("click", () => chooseInput({ sample: s.index }, `sample #${s.index}` +
                                                  (s.label ? ` (label ${s.label})` : ""), b));
    return b;
  }));
  $("prev").hidden = $("next").hidden = !state.total;  // nothing to page through
  const last = Math.min(state.total, state.offset + state.limit);
  $("page").textContent = state.total ? `${state.offset + 1}–${last} of ${state.total}`
    : "no samples: upload a file, or start the dashboard with --data";
}

function chooseInput(input, text, button) {
  state.inputEpoch += 1;
  state.input = input;
  state.inputText = text;
  document.querySelectorAll("#samples button").forEach((b) => b.classList.remove("selected"));
  if (button) button.classList.add("selected");
  $("selected").textContent = `Input: ${text}`;
  clearResults();
  setStatus("Press Explain.");
}

async function loadMethods() {
  const list = await api(`/api/models/${encodeURIComponent(state.model.name)}/methods`);
  const box = $("methods");
  const preferred = ["integrated_gradients", "saliency"];
  const items = [];
  let family = null;
  const offered = list.filter((m) => m.applies);
  for (const m of offered) {
    if (m.family !== family) {
      family = m.family;
      items.push(el("div", { class: "family", text: family }));
    }
    const input = el("input", { type: "checkbox", value: m.name, "data-testid": `method-${m.name}` });
    input.checked = preferred.includes(m.name);
    items.push(el("label", { title: m.summary }, input, ` ${m.title}`));
  }
  const na = list.filter((m) => !m.applies);
  if (na.length) {
    items.push(el("details", { class: "na", "data-testid": "methods-not-offered" },
      el("summary", { text: `${plural(na.length, "method")} not offered for this model` }),
      ...na.map((m) => el("div", { class: "muted", "data-method": m.name, text: `${m.title}: ${m.reason}` }))));
  }
  box.replaceChildren(...items);
  const sel = $("sanity-method");
  sel.replaceChildren(...offered.filter((m) => m.family !== "attention")
    .map((m) => el("option", { value: m.name, text: m.title })));
  if (offered.some((m) => m.name === "saliency")) sel.value = "saliency";
}

async function upload(file) {
  showError(null);
  $("upload-status").textContent = `uploading ${file.name} …`;
  try {
    const res = await api(`/api/models/${encodeURIComponent(state.model.name)}/uploads`, {
      method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: file });
    $("upload-status").textContent = describeUpload(file, res);
    chooseInput({ upload: res.id, row: 0 }, `${file.name}${res.rows > 1 ? " (row 0)" : ""}`, null);
    if (state.model.modality === "tabular" && res.rows >= 20) {
      state.table = res;
      await loadWholeModel();
    }
  } catch (err) {
    $("upload-status").textContent = "";
    showError(err);
  }
}

// -- results ----------------------------------------------------------------------------------
function renderPrediction(res, before) {
  const p = res.prediction;
  const parts = [el("span", { class: "big", text: `Predicted: ${probText(p)}` })];
  if (before) parts.push(el("span", { class: "muted", "data-testid": "prediction-before", text: ` · before the edit: ${probText(before)}` }));
  if (p.true_label) parts.push(el("span", { class: "muted", text: ` · true label: ${p.true_label}` }));
  if (p.target !== p.label) parts.push(el("span", { class: "muted", text: ` · explaining: ${p.target}` }));
  if (p.outside_data) parts.push(el("p", { class: "caution", "data-testid": "outside-data", text: `Warning: ${p.outside_data}` }));
  $("prediction").replaceChildren(...parts);
  $("narrative").textContent = res.narrative;
  $("cautions").replaceChildren(...res.cautions.map((c) => el("p", { class: "caution", text: `Caution: ${c}` })));
  $("result").hidden = false;
}

function renderMaps(res) {
  const input = res.input_image ? [el("div", { class: "map", "data-testid": "input-view" },
    el("h3", { text: "Input" }), el("img", { src: res.input_image, alt: "input" }))] : [];
  $("maps").replaceChildren(...input, ...res.maps.map((m) => {
    if (m.status !== "ok") {
      return el("div", { class: "map failed", "data-testid": "map-failed" },
                el("b", { text: m.title }), el("div", { text: `${m.status}: ${m.note || ""}` }));
    }
    const card = el("div", { class: "map", "data-testid": "map", "data-method": m.method });
    card.append(el("h3", { text: m.title }));
    if (m.image) card.append(el("img", { src: m.image, alt: `${m.title} map`, class: m.kind === "sequence" ? "wide" : "" }));
    if (m.html) { const div = el("div"); div.innerHTML = m.html; card.append(div); }  // server-escaped
    card.append(el("div", { class: "facts", text: `${m.seconds.toFixed(2)} s · ${plural(m.n_evals, "model evaluation")}` }));
    return card;
  }));
}

const HIDDEN = /^(random_|samples_beating|insertion_minus|threshold|radius)/;

function verdictCell(answer) {
  if (answer === undefined || answer === null) return el("td", { text: "–" });
  return el("td", { class: answer ? "ok" : "bad", text: answer ? "yes" : "no" });
}

function renderMetrics(res) {
  if (!res.metrics.length) { $("metrics").replaceChildren(); return; }
  const checks = [...new Set(res.metrics.flatMap((m) => Object.keys(m.verdicts)))].sort();
  const names = [...new Set(res.metrics.flatMap((m) => Object.keys(m.figures)))]
    .filter((n) => !HIDDEN.test(n)).sort();
  const timing = Object.fromEntries(res.maps.map((m) => [m.method, m]));
  const head = el("tr", {}, el("th", { text: "method" }), el("th", { text: "time (s)" }),
                  el("th", { text: "model evaluations" }), ...checks.map((c) => termCell(c, "th", "?")),
                  ...names.map((n) => termCell(n)), termCell("agreement"));
  const rows = res.metrics.map((m) => el("tr", { "data-testid": "metric-row" },
    el("td", { text: timing[m.method].title }), el("td", { text: timing[m.method].seconds.toFixed(2) }),
    el("td", { text: String(timing[m.method].n_evals) }),
    ...checks.map((c) => verdictCell(m.verdicts[c])),
    ...names.map((n) => el("td", { text: fmt(m.figures[n]) })), el("td", { text: fmt(m.agreement) })));
  const parts = [el("h3", { text: "How far to trust the maps" }), el("table", { class: "grid" }, head, ...rows)];
  if (res.agreement !== null) {
    parts.push(el("p", { class: "muted", text: `Mean rank agreement between methods: ${fmt(res.agreement)} (1 = same ranking).` }));
  }
  if (res.metrics_note) parts.push(el("p", { class: "muted", text: res.metrics_note }));
  $("metrics").replaceChildren(...parts);
}

function renderDownloads(res) {
  const links = [el("a", { href: "/api/session/report", download: "unveil-session-report.html",
                           "data-testid": "download-report", text: "Download the report (HTML, everything computed so far)" }),
                 " · ", el("a", { href: `/api/runs/${res.run}/report`, download: "unveil-report.html",
                                  "data-testid": "download-run", text: "this input only" })];
  for (const m of res.maps.filter((m) => m.status === "ok")) {
    links.push(" · ", el("a", { href: `/api/runs/${res.run}/explanations/${m.method}`,
                                download: `${m.method}.npz`, text: `${m.title} (.npz)` }));
  }
  $("downloads").replaceChildren(el("h3", { text: "Downloads" }), ...links);
  showSessionLink();
}

function showSessionLink() {
  const a = $("session-report");
  a.setAttribute("href", "/api/session/report");  // set here: the page itself links only its assets
  a.hidden = false;
}

function renderResult(res, before) {
  renderPrediction(res, before);
  renderMaps(res);
  renderMetrics(res);
  renderDownloads(res);
  state.computed = true;
}

function selectedMethods() { return [...document.querySelectorAll("#methods input:checked")].map((i) => i.value); }
function targetValue() { const t = $("target").value; return t === "predicted" ? "predicted" : Number(t); }

async function explain() {
  showError(null);
  const methods = selectedMethods();
  if (!state.input) return showError(new Error("Choose an input first (a sample or an upload)."));
  if (!methods.length) return showError(new Error("Choose at least one method."));
  const body = { model: state.model.name, methods, evaluate: $("evaluate").checked, target: targetValue(), ...state.input };
  const epoch = state.inputEpoch;
  $("run").disabled = true;
  clearResults();
  setStatus(`explaining with ${plural(methods.length, "method")} …`);
  try {
    const res = await postJson("/api/explain", body);
    if (epoch !== state.inputEpoch) return;  // another model or input was chosen meanwhile
    renderResult(res, null);
    $("sanity").hidden = false;
    state.inputImage = res.input_image;
    await loadWhatIf();
    setStatus("done");
    $("result").scrollIntoView({ behavior: "instant", block: "start" });
  } catch (err) {
    showError(err);
    setStatus("");
  } finally {
    $("run").disabled = false;
  }
}

async function sanity() {
  showError(null);
  if (!state.input) return showError(new Error("Choose an input first."));
  const out = $("sanity-result");
  out.textContent = "running …";
  const epoch = state.inputEpoch;
  try {
    const res = await postJson("/api/sanity", { model: state.model.name, method: $("sanity-method").value, ...state.input });
    if (epoch !== state.inputEpoch) return;
    if (!res.available) { out.textContent = res.note; return; }
    const original = state.edited ? ", the original input (the check does not run on what-if edits)" : "";
    const verdict = res.verdict || (res.passed ? "passed" : "failed");
    const cls = verdict === "passed" ? "ok" : verdict === "failed" ? "bad" : "muted";
    const title = $("sanity-method").selectedOptions[0].textContent;
    const parts = [`${title} on ${state.inputText}${original}: `, el("span", { class: cls, "data-testid": "sanity-verdict", text: verdict })];
    if (res.similarity !== null && res.similarity !== undefined)
      parts.push(` · rank similarity to the map after randomising the weights ${fmt(res.similarity)} (passes below ${fmt(res.threshold)})`);
    if (res.reason) parts.push(el("p", { class: "muted", text: res.reason }));
    parts.push(el("p", { class: "muted", text: "The session's report includes this check." }));
    out.replaceChildren(...parts);
  } catch (err) {
    out.textContent = "";
    showError(err);
  }
}

// -- what-if --------------------------------------------------------------------------------
function inputQuery() {
  const i = state.input;
  return i.sample !== undefined ? `sample=${i.sample}` : `upload=${i.upload}&row=${i.row || 0}`;
}

async function loadWhatIf() {
  const form = $("whatif-form");
  let inp;
  try {
    inp = await api(`/api/models/${encodeURIComponent(state.model.name)}/input?${inputQuery()}`);
  } catch (err) {
    $("whatif").hidden = true;
    return;
  }
  state.editable = inp;
  if (inp.kind === "table") {
    $("whatif-help").textContent = "Change values of the row and see the prediction and the explanation of the edited row.";
    form.className = "whatif-table";
    form.replaceChildren(...inp.cells.map((c) => {
      let field;
      if (c.choices) {
        field = el("select", { "data-testid": `whatif-${c.name}`, "data-column": c.name });
        field.replaceChildren(...c.choices.map((w, k) => el("option", { value: w, text: w })));
        field.value = c.choices[c.value];
      } else {
        field = el("input", { type: "number", step: "any", value: String(Number(c.value.toPrecision(6))),
                              "data-testid": `whatif-${c.name}`, "data-column": c.name });
      }
      if (!c.used) field.disabled = true;
      return el("label", { class: c.used ? "" : "na" }, el("span", { text: c.name }), field,
                c.used ? "" : el("span", { class: "muted", text: "not read by the model" }));
    }));
  } else if (inp.kind === "image" && state.inputImage) {
    $("whatif-help").textContent = "Drag over the image to mark a region, choose how to fill it, and see how the prediction changes.";
    form.className = "whatif-image";
    const img = el("img", { src: state.inputImage, alt: "input to paint on", draggable: "false" });
    const box = el("div", { class: "rect", hidden: "" });
    const wrap = el("div", { class: "paint", "data-testid": "whatif-canvas" }, img, box);
    const fill = el("select", { id: "whatif-fill", "data-testid": "whatif-fill" },
      el("option", { value: "mean", text: "fill with the data's mean" }), el("option", { value: "zero", text: "fill with zeros" }),
      el("option", { value: "blur", text: "blur it" }));
    attachPainter(wrap, img, box, inp);
    form.replaceChildren(wrap, el("label", { class: "row" }, "Region: ", fill));
  } else if (inp.kind === "text" && inp.text !== null) {
    $("whatif-help").textContent = "Rewrite the text and see how the prediction changes.";
    form.className = "whatif-text";
    form.replaceChildren(el("textarea", { id: "whatif-text", "data-testid": "whatif-text", rows: "3", text: inp.text }));
    $("whatif-text").value = inp.text;
  } else {
    $("whatif").hidden = true;
    return;
  }
  $("whatif").hidden = false;
}

function attachPainter(wrap, img, box, inp) {
  let start = null;
  const pos = (e) => {
    const r = img.getBoundingClientRect();
    return [Math.min(Math.max(e.clientX - r.left, 0), r.width), Math.min(Math.max(e.clientY - r.top, 0), r.height), r];
  };
  wrap.addEventListener("pointerdown", (e) => { start = pos(e); e.preventDefault(); });
  wrap.addEventListener("pointermove", (e) => {
    if (!start) return;
    const [x, y] = pos(e);
    Object.assign(box.style, { left: `${Math.min(x, start[0])}px`, top: `${Math.min(y, start[1])}px`,
                               width: `${Math.abs(x - start[0])}px`, height: `${Math.abs(y - start[1])}px` });
    box.hidden = false;
  });
  const end = (e) => {
    if (!start) return;
    const [x, y, r] = pos(e);
    const sx = inp.width / r.width, sy = inp.height / r.height;
    const left = Math.floor(Math.min(x, start[0]) * sx), right = Math.ceil(Math.max(x, start[0]) * sx);
    const top = Math.floor(Math.min(y, start[1]) * sy), bottom = Math.ceil(Math.max(y, start[1]) * sy);
    start = null;
    state.rect = right > left && bottom > top ? { top, left, bottom, right } : null;
  };
  wrap.addEventListener("pointerup", end);
  wrap.addEventListener("pointerleave", end);
}

function whatIfEdit() {
  const inp = state.editable;
  if (inp.kind === "table") {
    const values = {};
    for (const f of document.querySelectorAll("#whatif-form [data-column]")) {
      if (f.disabled) continue;
      if (f.tagName === "SELECT") { values[f.dataset.column] = f.value; continue; }
      const v = f.value.trim() === "" ? NaN : Number(f.value);
      if (!Number.isFinite(v)) { f.focus(); throw new Error(`${f.dataset.column}: enter a number.`); }
      values[f.dataset.column] = v;
    }
    return { kind: "values", values };
  }
  if (inp.kind === "image") {
    if (!state.rect) throw new Error("Drag over the image to mark the region to paint first.");
    return { kind: "rect", ...state.rect, fill: $("whatif-fill").value };
  }
  return { kind: "text", text: $("whatif-text").value };
}

async function whatIf() {
  showError(null);
  const methods = selectedMethods();
  if (!state.input || !state.editable) return;
  if (!methods.length) return showError(new Error("Choose at least one method."));
  let edit;
  try { edit = whatIfEdit(); } catch (err) { return showError(err); }
  $("whatif-run").disabled = true;
  setStatus("explaining the edited input …");
  const epoch = state.inputEpoch;
  try {
    const res = await postJson("/api/whatif", { model: state.model.name, methods, target: targetValue(),
                                                evaluate: $("evaluate").checked, edit, ...state.input });
    if (epoch !== state.inputEpoch) return;
    renderResult(res.result, res.before);
    state.edited = true;
    $("sanity-result").replaceChildren();  // it was about the input before the edit
    const banner = $("whatif-banner");
    banner.replaceChildren(el("b", { text: "What-if: " }), res.changes.join("; "));
    banner.hidden = false;
    setStatus("done (edited input)");
    $("result").scrollIntoView({ behavior: "instant", block: "start" });
  } catch (err) {
    showError(err);
    setStatus("");
  } finally {
    $("whatif-run").disabled = false;
  }
}

// -- whole model ----------------------------------------------------------------------------
async function distill() {
  showError(null);
  const out = $("global");
  out.replaceChildren(el("p", { class: "muted", text: "fitting surrogates …" }));
  out.scrollIntoView({ behavior: "instant", block: "start" });
  const body = { model: state.model.name, kind: $("distill-kind").value, max_depth: Number($("distill-depth").value) };
  if (state.table) body.upload = state.table.id;
  const epoch = state.modelEpoch;
  try {
    const res = await postJson("/api/distill", body);
    if (epoch !== state.modelEpoch) return;
    const acc = res.accuracy === null ? "" : `; accuracy ${pct(res.accuracy)} (the model: ${pct(res.model_accuracy)})`;
    const curve = el("table", { class: "grid" }, el("tr", {}, ...["size", res.complexity_unit, "fidelity"].map((h) => el("th", { text: h }))),
      ...res.curve.map((p) => el("tr", {}, el("td", { text: String(p.size) }), el("td", { text: String(p.complexity) }),
                                 el("td", { text: pct(p.fidelity) }))));
    const imp = el("table", { class: "grid" }, el("tr", {}, el("th", { text: "column" }), el("th", { text: "share of answers that change when the column is shuffled" })),
      ...Object.entries(res.importance).map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: fmt(v) }))));
    out.replaceChildren(
      el("h3", { text: `Surrogate of ${state.model.name}: ${res.complexity} ${res.complexity_unit}` }),
      el("p", { "data-testid": "surrogate-fidelity", text: `Agrees with the model on ${pct(res.fidelity)} of ${plural(res.held_out_rows, "row")} it was not fitted on${acc}.` }),
      el("pre", { "data-testid": "surrogate-text", text: res.text }),
      el("div", { class: "cols" },
         el("div", {}, el("h3", { text: "Fidelity against size (held-out rows)" }), curve),
         el("div", {}, el("h3", { text: "Permutation importance of the model" }), imp)));
    out.scrollIntoView({ behavior: "instant", block: "start" });
  } catch (err) {
    out.replaceChildren();
    showError(err);
  }
}

function groupName(column, g) {
  const c = (state.columns || {})[column];
  return c && c.values && c.values[Number(g)] !== undefined ? c.values[Number(g)] : g;
}

async function audit() {
  showError(null);
  const out = $("global");
  out.replaceChildren(el("p", { class: "muted", text: "auditing …" }));
  out.scrollIntoView({ behavior: "instant", block: "start" });
  const column = $("audit-column").value;
  const body = { model: state.model.name, sensitive: column };
  if (state.table) body.upload = state.table.id;
  const epoch = state.modelEpoch;
  try {
    const res = await postJson("/api/audit", body);
    if (epoch !== state.modelEpoch) return;
    const cls = res.verdict === "pass" ? "ok" : "bad";
    const rates = el("table", { class: "grid" }, el("tr", {}, el("th", { text: column }), el("th", { text: "selection rate" })),
      ...Object.entries(res.selection_rates).map(([g, v]) => el("tr", {}, el("td", { text: groupName(column, g) }), el("td", { text: pct(v) }))));
    out.replaceChildren(
      el("h3", {}, `Bias audit of ${column}: `, el("span", { class: cls, "data-testid": "audit-verdict", text: res.verdict.toUpperCase() })),
      ...res.sentences.map((s) => el("p", { text: s })),
      el("ul", {}, ...res.flags.map((f) => el("li", { class: "muted", text: f }))), rates,
      el("p", {}, el("a", { href: `/api/audits/${res.page}`, download: "unveil-audit.html", "data-testid": "download-audit",
                            text: "Download the audit page (HTML)" })));
    out.scrollIntoView({ behavior: "instant", block: "start" });
  } catch (err) {
    out.replaceChildren();
    showError(err);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("distill-run").addEventListener("click", distill);
  $("audit-run").addEventListener("click", audit);
  $("run").addEventListener("click", explain);
  $("sanity-run").addEventListener("click", sanity);
  $("whatif-run").addEventListener("click", whatIf);
  $("whatif-reset").addEventListener("click", () => { if (state.input) explain(); });
  $("upload").addEventListener("change", (e) => { if (e.target.files.length) upload(e.target.files[0]); });
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); loadSamples().catch(showError); });
  $("next").addEventListener("click", () => {
    if (state.offset + state.limit < state.total) { state.offset += state.limit; loadSamples().catch(showError); }
  });
  loadModels().catch(showError);
});
