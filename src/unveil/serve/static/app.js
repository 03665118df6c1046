// unveil dashboard: plain JavaScript, no framework, no external resource.
"use strict";

const state = { models: [], model: null, input: null, offset: 0, limit: 24, total: 0, table: null };
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
  const res = await fetch(path, options);
  const type = res.headers.get("content-type") || "";
  const body = type.includes("application/json") ? await res.json() : await res.text();
  if (!res.ok) {
    let msg = body && body.detail !== undefined ? body.detail : body;
    if (Array.isArray(msg)) msg = msg.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    throw new Error(`${res.status}: ${msg}`);
  }
  return body;
}

function showError(err) {
  const box = $("error");
  box.textContent = err ? String(err.message || err) : "";
  box.hidden = !err;
}

function setStatus(text) { $("status").textContent = text; }

async function loadModels() {
  state.models = await api("/api/models");
  const sel = $("model");
  sel.replaceChildren(...state.models.map((m) => el("option", { value: m.name, text: m.name })));
  sel.addEventListener("change", () => selectModel(sel.value));
  if (state.models.length) await selectModel(state.models[0].name);
}

async function selectModel(name) {
  state.model = state.models.find((m) => m.name === name);
  state.input = null;
  state.offset = 0;
  $("model").value = name;
  $("model-desc").textContent = state.model.description;
  $("selected").textContent = "No input chosen.";
  const target = $("target");
  target.replaceChildren(el("option", { value: "predicted", text: "predicted class" }),
    ...(state.model.class_names || []).map((c, i) => el("option", { value: String(i), text: c })));
  state.table = null;
  $("global").replaceChildren();
  await Promise.all([loadSamples(), loadMethods(), loadWholeModel()]);
}

function tableQuery() { return state.table ? `?upload=${state.table.id}` : ""; }

async function loadWholeModel() {
  const tabular = state.model.modality === "tabular";
  $("whole-controls").hidden = !tabular;
  $("whole-note").hidden = tabular;
  if (!tabular) return;
  $("whole-rows").textContent = state.table ? `Rows: the uploaded table (${state.table.rows} rows).`
    : "Rows: the rows the dashboard has for this model.";
  const sel = $("audit-column");
  try {
    const cols = await api(`/api/models/${encodeURIComponent(state.model.name)}/columns${tableQuery()}`);
    sel.replaceChildren(...cols.map((c) => el("option", { value: c.name, text: `${c.name} (${c.n_values} values)` })));
    $("audit-run").disabled = !cols.length;
    if (!cols.length) sel.replaceChildren(el("option", { value: "", text: "no column with 2–20 values" }));
  } catch (err) {
    sel.replaceChildren(el("option", { value: "", text: "no rows: upload a CSV table" }));
    $("audit-run").disabled = true;
    $("whole-rows").textContent = String(err.message || err);
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
  const last = Math.min(state.total, state.offset + state.limit);
  $("page").textContent = state.total ? `${state.offset + 1}–${last} of ${state.total}` : "no samples";
}

function chooseInput(input, text, button) {
  state.input = input;
  document.querySelectorAll("#samples button").forEach((b) => b.classList.remove("selected"));
  if (button) button.classList.add("selected");
  $("selected").textContent = `Chosen: ${text}`;
}

async function loadMethods() {
  const list = await api(`/api/models/${encodeURIComponent(state.model.name)}/methods`);
  const box = $("methods");
  const preferred = ["integrated_gradients", "saliency"];
  const items = [];
  let family = null;
  for (const m of list) {
    if (m.family !== family) {
      family = m.family;
      items.push(el("div", { class: "family", text: family }));
    }
    const input = el("input", { type: "checkbox", value: m.name, "data-testid": `method-${m.name}` });
    input.disabled = !m.applies;
    input.checked = m.applies && preferred.includes(m.name);
    items.push(el("label", { class: m.applies ? "" : "na", title: m.reason || m.summary }, input,
                  ` ${m.title}`, m.applies ? "" : el("span", { class: "muted", text: ` (${m.reason})` })));
  }
  box.replaceChildren(...items);
  const sel = $("sanity-method");
  sel.replaceChildren(...list.filter((m) => m.applies)
    .map((m) => el("option", { value: m.name, text: m.title })));
  if (list.some((m) => m.applies && m.name === "saliency")) sel.value = "saliency";
}

async function upload(file) {
  showError(null);
  $("upload-status").textContent = `uploading ${file.name} …`;
  try {
    const res = await api(`/api/models/${encodeURIComponent(state.model.name)}/uploads`, {
      method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: file });
    $("upload-status").textContent = `${file.name}: ${res.kind}, ${res.rows} row(s)`;
    chooseInput({ upload: res.id, row: 0 }, `${file.name} (row 0)`, null);
    if (state.model.modality === "tabular" && res.rows >= 20) {
      state.table = res;
      await loadWholeModel();
    }
  } catch (err) {
    $("upload-status").textContent = "";
    showError(err);
  }
}

function renderPrediction(res) {
  const p = res.prediction;
  const prob = p.probability === null ? "" : ` (${(100 * p.probability).toFixed(0)}%)`;
  const parts = [el("span", { class: "big", text: `Predicted: ${p.label}${prob}` })];
  if (p.true_label) parts.push(el("span", { class: "muted", text: ` · true label: ${p.true_label}` }));
  if (p.target !== p.label) parts.push(el("span", { class: "muted", text: ` · explaining: ${p.target}` }));
  if (p.outside_data) parts.push(el("p", { class: "caution", "data-testid": "outside-data", text: `Warning: ${p.outside_data}` }));
  $("prediction").replaceChildren(...parts);
  $("narrative").textContent = res.narrative;
  $("cautions").replaceChildren(...res.cautions.map((c) => el("p", { class: "caution", text: `Caution: ${c}` })));
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
    card.append(el("div", { class: "facts", text: `${m.seconds.toFixed(2)} s · ${m.n_evals} model evaluations` }));
    return card;
  }));
}

function fmt(v) { return v === null || v === undefined ? "–" : Number(v).toPrecision(3); }

const HIDDEN = /^(random_|samples_beating|insertion_minus|threshold|radius)/;

function verdictCell(answer) {
  if (answer === undefined || answer === null) return el("td", { text: "–" });
  return el("td", { class: answer ? "ok" : "bad", text: answer ? "yes" : "no" });
}

function renderMetrics(res) {
  const checks = [...new Set(res.metrics.flatMap((m) => Object.keys(m.verdicts)))].sort();
  const names = [...new Set(res.metrics.flatMap((m) => Object.keys(m.figures)))]
    .filter((n) => !HIDDEN.test(n)).sort();
  const timing = Object.fromEntries(res.maps.map((m) => [m.method, m]));
  const head = el("tr", {}, ...["method", "time (s)", "model evaluations", ...checks.map((c) => `${c}?`),
                                ...names, "agreement"].map((h) => el("th", { text: h })));
  const rows = res.metrics.map((m) => el("tr", { "data-testid": "metric-row" },
    el("td", { text: timing[m.method].title }), el("td", { text: timing[m.method].seconds.toFixed(2) }),
    el("td", { text: String(timing[m.method].n_evals) }),
    ...checks.map((c) => verdictCell(m.verdicts[c])),
    ...names.map((n) => el("td", { text: fmt(m.figures[n]) })), el("td", { text: fmt(m.agreement) })));
  const parts = [el("h3", { text: "Metrics" }), el("table", { class: "grid" }, head, ...rows)];
  if (res.agreement !== null) {
    parts.push(el("p", { class: "muted", text: `Mean rank agreement between methods: ${fmt(res.agreement)} (1 = same ranking).` }));
  }
  if (res.metrics_note) parts.push(el("p", { class: "muted", text: res.metrics_note }));
  $("metrics").replaceChildren(...parts);
}

function renderDownloads(res) {
  const links = [el("a", { href: `/api/runs/${res.run}/report`, download: "unveil-report.html",
                           "data-testid": "download-report", text: "Download the report (HTML)" })];
  for (const m of res.maps.filter((m) => m.status === "ok")) {
    links.push(" · ", el("a", { href: `/api/runs/${res.run}/explanations/${m.method}`,
                                download: `${m.method}.npz`, text: `${m.title} (.npz)` }));
  }
  $("downloads").replaceChildren(el("h3", { text: "Downloads" }), ...links);
}

async function explain() {
  showError(null);
  const methods = [...document.querySelectorAll("#methods input:checked")].map((i) => i.value);
  if (!state.input) return showError(new Error("Choose an input first (a sample or an upload)."));
  if (!methods.length) return showError(new Error("Choose at least one method."));
  const t = $("target").value;
  const body = { model: state.model.name, methods, evaluate: $("evaluate").checked,
                 target: t === "predicted" ? "predicted" : Number(t), ...state.input };
  $("run").disabled = true;
  setStatus(`explaining with ${methods.length} method(s) …`);
  try {
    const res = await api("/api/explain", { method: "POST", headers: { "Content-Type": "application/json" },
                                             body: JSON.stringify(body) });
    renderPrediction(res);
    renderMaps(res);
    renderMetrics(res);
    renderDownloads(res);
    $("sanity").hidden = false;
    setStatus("done");
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
  try {
    const res = await api("/api/sanity", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: state.model.name, method: $("sanity-method").value, ...state.input }) });
    if (!res.available) { out.textContent = res.note; return; }
    const verdict = res.verdict || (res.passed ? "passed" : "failed");
    const cls = verdict === "passed" ? "ok" : verdict === "failed" ? "bad" : "muted";
    const parts = [el("span", { class: cls, "data-testid": "sanity-verdict", text: verdict })];
    if (res.similarity !== null && res.similarity !== undefined)
      parts.push(` · similarity after randomisation ${fmt(res.similarity)} (threshold ${fmt(res.threshold)})`);
    if (res.reason) parts.push(el("p", { class: "muted", text: res.reason }));
    out.replaceChildren(...parts);
  } catch (err) {
    out.textContent = "";
    showError(err);
  }
}

function pct(v) { return v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)}%`; }

async function postJson(path, body) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

async function distill() {
  showError(null);
  const out = $("global");
  out.replaceChildren(el("p", { class: "muted", text: "fitting surrogates …" }));
  const body = { model: state.model.name, kind: $("distill-kind").value, max_depth: Number($("distill-depth").value) };
  if (state.table) body.upload = state.table.id;
  try {
    const res = await postJson("/api/distill", body);
    const acc = res.accuracy === null ? "" : `; accuracy ${pct(res.accuracy)} (the model: ${pct(res.model_accuracy)})`;
    const curve = el("table", { class: "grid" }, el("tr", {}, ...["size", res.complexity_unit, "fidelity"].map((h) => el("th", { text: h }))),
      ...res.curve.map((p) => el("tr", {}, el("td", { text: String(p.size) }), el("td", { text: String(p.complexity) }),
                                 el("td", { text: pct(p.fidelity) }))));
    const imp = el("table", { class: "grid" }, el("tr", {}, el("th", { text: "column" }), el("th", { text: "answers that change when the column is shuffled" })),
      ...Object.entries(res.importance).map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: fmt(v) }))));
    out.replaceChildren(
      el("h3", { text: `Surrogate: ${res.complexity} ${res.complexity_unit}` }),
      el("p", { "data-testid": "surrogate-fidelity", text: `Agrees with the model on ${pct(res.fidelity)} of ${res.held_out_rows} rows it was not fitted on${acc}.` }),
      el("pre", { "data-testid": "surrogate-text", text: res.text }),
      el("h3", { text: "Fidelity against size (held-out rows)" }), curve,
      el("h3", { text: "Permutation importance of the model" }), imp);
  } catch (err) {
    out.replaceChildren();
    showError(err);
  }
}

async function audit() {
  showError(null);
  const out = $("global");
  out.replaceChildren(el("p", { class: "muted", text: "auditing …" }));
  const body = { model: state.model.name, sensitive: $("audit-column").value };
  if (state.table) body.upload = state.table.id;
  try {
    const res = await postJson("/api/audit", body);
    const cls = res.verdict === "pass" ? "ok" : "bad";
    out.replaceChildren(
      el("h3", {}, "Bias audit: ", el("span", { class: cls, "data-testid": "audit-verdict", text: res.verdict.toUpperCase() })),
      ...res.sentences.map((s) => el("p", { text: s })),
      el("ul", {}, ...res.flags.map((f) => el("li", { class: "muted", text: f }))),
      el("a", { href: `/api/audits/${res.page}`, download: "unveil-audit.html", "data-testid": "download-audit",
                text: "Download the audit page (HTML)" }));
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
  $("upload").addEventListener("change", (e) => { if (e.target.files.length) upload(e.target.files[0]); });
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); loadSamples().catch(showError); });
  $("next").addEventListener("click", () => {
    if (state.offset + state.limit < state.total) { state.offset += state.limit; loadSamples().catch(showError); }
  });
  loadModels().catch(showError);
});
