// unveil dashboard: what would change the decision (counterfactuals) and what keeps it (anchors),
// for table rows, beside the what-if form. Uses app.js's helpers (state, el, $, api, postJson, showError).
"use strict";

const recourse = { epoch: -1, cells: null };

// The what-if form's values that differ from the row as loaded (the form rounds numbers for
// display: an untouched field must not move the row).
function recourseEdits() {
  const values = {};
  const cells = Object.fromEntries((state.editable.cells || []).map((c) => [c.name, c]));
  for (const f of document.querySelectorAll("#whatif-form [data-column]")) {
    const c = cells[f.dataset.column];
    if (!c || f.disabled) continue;
    if (f.tagName === "SELECT") {
      if (c.choices && f.value !== c.choices[c.value]) values[c.name] = f.value;
      continue;
    }
    const v = f.value.trim() === "" ? NaN : Number(f.value);
    if (!Number.isFinite(v)) throw new Error(`${c.name}: enter a number.`);
    if (v !== Number(c.value.toPrecision(6))) values[c.name] = v;
  }
  return values;
}

function constraintRow(c) {
  const how = el("select", { "data-testid": `cf-how-${c.name}`, "data-cf-column": c.name, "aria-label": `how ${c.name} may change` },
    el("option", { value: "free", text: "may change" }), el("option", { value: "fixed", text: "fixed" }));
  if (!c.choices) {
    how.append(el("option", { value: "up", text: "only up" }), el("option", { value: "down", text: "only down" }));
  }
  if (!c.used) { how.value = "fixed"; how.disabled = true; }
  const now = c.choices ? c.choices[c.value] : String(Number(c.value.toPrecision(6)));
  const bound = (side) => c.choices ? el("td", { class: "muted", text: "values in the data" }) :
    el("td", {}, el("input", { type: "number", step: "any", class: "cf-bound", placeholder: side === "low" ? "data's min" : "data's max",
                               "data-testid": `cf-${side}-${c.name}`, "data-cf-bound": side, "data-cf-column": c.name,
                               "aria-label": `${side === "low" ? "lowest" : "highest"} ${c.name}` }));
  const row = el("tr", { class: c.used ? "" : "muted" }, el("td", { text: c.name }), el("td", { text: now }), el("td", {}, how));
  if (c.choices) row.append(el("td", { colspan: "2", class: "muted", text: "values in the data" }));
  else row.append(bound("low"), bound("high"));
  return row;
}

function renderRecourseForm() {
  const box = $("recourse");
  const cells = state.editable.cells;
  const k = el("select", { id: "cf-k", "data-testid": "cf-k", "aria-label": "number of counterfactuals" },
    ...[1, 2, 3, 4, 5].map((n) => el("option", { value: String(n), text: String(n) })));
  k.value = "3";
  const head = el("tr", {}, ...["column", "now", "may it change?", "lowest", "highest"].map((h) => el("th", { text: h })));
  box.replaceChildren(
    el("h3", { text: "What would change the decision?" }),
    el("p", { class: "muted", text: "The smallest changes of this row (with your edits above) that give another decision. " +
      "Fix what cannot change (a person's age cannot go down); columns the model does not read stay fixed. " +
      "Text columns, and whole-number columns with few values, take values the data holds; other whole-number " +
      "columns stay whole, and each column stays within the data's range unless you set one." }),
    el("details", { "data-testid": "cf-constraints" }, el("summary", { text: "Constraints per column" }),
       el("table", { class: "grid cf-constraints" }, head, ...cells.map(constraintRow))),
    el("div", { class: "cf-actions" },
       el("label", {}, "Options ", k, " "),
       el("button", { type: "button", id: "cf-run", "data-testid": "cf-run", class: "primary",
                      text: "Find the smallest change that flips the decision" }),
       el("button", { type: "button", id: "anchor-run", "data-testid": "anchor-run",
                      text: "Find a rule that keeps the decision" })),
    el("div", { id: "cf-result", "data-testid": "cf-result" }),
    el("div", { id: "anchor-result", "data-testid": "anchor-result" }));
  $("cf-run").addEventListener("click", () => findCounterfactual().catch(showError));
  $("anchor-run").addEventListener("click", () => findAnchor().catch(showError));
  box.hidden = false;
}

function constraintsBody() {
  const body = { immutable: [], increasing: [], decreasing: [], ranges: {} };
  for (const s of document.querySelectorAll("#recourse select[data-cf-column]")) {
    const col = s.dataset.cfColumn;
    if (s.value === "fixed" && !s.disabled) body.immutable.push(col);
    else if (s.value === "up") body.increasing.push(col);
    else if (s.value === "down") body.decreasing.push(col);
  }
  for (const f of document.querySelectorAll("#recourse input[data-cf-bound]")) {
    if (f.value.trim() === "") continue;
    const v = Number(f.value);
    if (!Number.isFinite(v)) { f.focus(); throw new Error(`${f.dataset.cfColumn}: enter a number or leave it empty.`); }
    const r = body.ranges[f.dataset.cfColumn] || (body.ranges[f.dataset.cfColumn] = {});
    r[f.dataset.cfBound] = v;
  }
  return body;
}

function pctText(p) { return p === null || p === undefined ? "–" : `${(100 * p).toFixed(1)}%`; }
function num(v, digits = 2) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }

function changesTable(res) {
  const opts = res.options.length ? res.options : (res.closest ? [res.closest] : []);
  const cols = [...new Set(opts.flatMap((o) => o.changes.map((c) => c.column)))];
  if (!cols.length) return null;
  const before = {};
  for (const o of opts) for (const c of o.changes) before[c.column] = c.before;
  const names = res.options.length ? opts.map((_, i) => `option ${i + 1}`) : ["closest found (not valid)"];
  const head = el("tr", {}, el("th", { text: "column" }), el("th", { text: "now" }), ...names.map((n) => el("th", { text: n })));
  const rows = cols.map((col) => el("tr", { "data-testid": "cf-change" }, el("td", { text: col }), el("td", { text: before[col] }),
    ...opts.map((o) => { const c = o.changes.find((d) => d.column === col); return el("td", { class: c ? "cf-changed" : "muted", text: c ? c.after : "same" }); })));
  const fig = (label, f, title) => el("tr", { class: "cf-figure" }, el("td", { text: label, title }), el("td", { text: "" }), ...opts.map((o) => el("td", { text: f(o) })));
  return el("table", { class: "grid cf-table", "data-testid": "cf-table" }, head, ...rows,
    fig("new decision", (o) => `${o.decision} (${pctText(o.probability)})`, "the model's decision for the changed row and its probability"),
    fig("valid", (o) => (o.valid ? "yes" : "no"), "the model gives the other decision and no constraint is broken"),
    fig("columns changed", (o) => (o.l0 === null ? "–" : String(o.l0)), "how many columns change"),
    fig("size of the change", (o) => num(o.l1), "sum of the changes, each in units of its column's spread (L1)"),
    fig("distance to real rows", (o) => num(o.plausibility), "mean distance to the 5 nearest rows of the data: small means a realistic case"));
}

async function findCounterfactual() {
  showError(null);
  const out = $("cf-result");
  let body;
  try {
    body = { model: state.model.name, ...state.input, values: recourseEdits(), ...constraintsBody(), n_counterfactuals: Number($("cf-k").value) };
  } catch (err) { return showError(err); }
  const epoch = state.inputEpoch;
  $("cf-run").disabled = true;
  out.replaceChildren(el("p", { class: "muted", text: "searching …" }));
  try {
    const res = await postJson("/api/counterfactual", body);
    if (epoch !== state.inputEpoch) return;
    const edited = Object.keys(body.values).length ? " (with your edits)" : "";
    const parts = [el("p", { class: "muted", "data-testid": "cf-decision",
      text: `Now${edited}: ${res.decision} (probability of ${res.desired}: ${pctText(res.probability)}).` })];
    parts.push(el("p", { class: res.found ? "cf-sentence" : "cf-sentence caution", "data-testid": "cf-sentence", text: res.recourse }));
    if (!res.found) parts.push(el("p", { class: "muted", "data-testid": "cf-status", text: "No counterfactual within these constraints: loosen them (unfix a column, widen a range)." }));
    const table = changesTable(res);
    if (table) parts.push(table);
    if (res.options.length) {
      parts.push(el("p", { class: "muted", text: "The smallest changes stop just past the model's boundary: a " +
        "slightly larger change gives a safer margin." }));
    }
    const m = res.result.metrics || {};
    parts.push(el("p", { class: "muted", text: `${res.options.length} option${res.options.length === 1 ? "" : "s"} · ${res.method} search · ` +
      `${num(res.seconds)} s · constraint violations ${m.violations === null || m.violations === undefined ? 0 : m.violations}` +
      (res.fixed.length ? ` · fixed because the model does not read them: ${res.fixed.join(", ")}` : "") }));
    out.replaceChildren(...parts);
  } catch (err) {
    out.replaceChildren();
    showError(err);
  } finally {
    $("cf-run").disabled = false;
  }
}

async function findAnchor() {
  showError(null);
  const out = $("anchor-result");
  let values;
  try { values = recourseEdits(); } catch (err) { return showError(err); }
  const epoch = state.inputEpoch;
  $("anchor-run").disabled = true;
  out.replaceChildren(el("p", { class: "muted", text: "searching …" }));
  try {
    const res = await postJson("/api/anchor", { model: state.model.name, ...state.input, values });
    if (epoch !== state.inputEpoch) return;
    out.replaceChildren(el("h3", { text: "A rule that keeps the decision" }),
      el("p", { "data-testid": "anchor-sentence", class: res.valid ? "" : "caution", text: res.sentence }),
      el("p", { class: "muted", text: `Precision measured on ${res.n_samples} rows drawn from the data with these ` +
        "conditions held; coverage counted on the data's rows." }));
  } catch (err) {
    out.replaceChildren();
    showError(err);
  } finally {
    $("anchor-run").disabled = false;
  }
}

function syncRecourse() {
  const box = $("recourse");
  const table = !$("whatif").hidden && state.editable && state.editable.kind === "table";
  if (!table) {
    box.hidden = true;
    box.replaceChildren();
    recourse.cells = null;
    return;
  }
  if (recourse.cells === state.editable.cells && recourse.epoch === state.inputEpoch) return;  // unchanged: keep the results
  recourse.cells = state.editable.cells;
  recourse.epoch = state.inputEpoch;
  renderRecourseForm();
}

document.addEventListener("DOMContentLoaded", () => {
  document.head.append(el("link", { rel: "stylesheet", href: "/static/recourse.css" }));
  new MutationObserver(syncRecourse).observe($("whatif"), { attributes: true, attributeFilter: ["hidden"], childList: true, subtree: true });
});
