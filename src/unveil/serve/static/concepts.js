// unveil dashboard: the Concepts view (TCAV). Plain JavaScript; uses app.js's state, $, el, api
// and postJson. A concept is a set of examples: samples picked here, or an uploaded file.
"use strict";

const cstate = { model: null, offset: 0, limit: 32, total: 0, picked: new Set(), concepts: [], upload: null };

function cbox() { return $("concepts"); }

async function conceptsInit() {
  const m = state.model;
  if (!m || cstate.model === m.name) return;
  cstate.model = m.name;
  cstate.offset = 0;
  cstate.picked = new Set();
  cstate.concepts = [];
  cstate.upload = null;
  const box = cbox();
  box.hidden = true;
  let layers;
  try {
    layers = await api(`/api/models/${encodeURIComponent(m.name)}/layers`);
  } catch (err) {
    return;  // not a torch module: no concepts view
  }
  if (cstate.model !== m.name) return;
  const layerSel = el("select", { id: "tcav-layer", "data-testid": "tcav-layer", "aria-label": "layer" },
    ...layers.layers.map((n) => el("option", { value: n, text: n })));
  if (layers.suggested) layerSel.value = layers.suggested;
  const classSel = el("select", { id: "tcav-target", "data-testid": "tcav-target", "aria-label": "class" },
    ...(m.class_names || []).map((c, i) => el("option", { value: String(i), text: c })));
  const runsSel = el("select", { id: "tcav-runs", "aria-label": "random runs" },
    el("option", { value: "", text: "auto (for power)" }),
    ...[10, 20, 50].map((n) => el("option", { value: String(n), text: String(n) })));
  box.replaceChildren(
    el("h3", { text: "Concepts (TCAV)" }),
    el("p", { class: "muted", text: "Does the model use a human concept for a class? Give examples of the " +
      "concept. At the chosen layer, TCAV finds the direction from random examples toward the concept and " +
      "counts how often moving an input of the class that way raises the class's score; the count is " +
      "tested against random directions." }),
    el("label", { class: "row" }, "Layer ", layerSel),
    el("label", { class: "row" }, "Class ", classSel),
    el("h4", { text: "A concept from examples" }),
    el("label", { class: "row" }, "Name ",
       el("input", { id: "tcav-name", "data-testid": "tcav-name", type: "text", value: "my concept", maxlength: "60" })),
    el("p", { class: "muted", text: "Click samples to pick them as examples (at least 10), or upload a file " +
      "holding a batch of examples (.npy)." }),
    el("div", { id: "tcav-samples", "data-testid": "tcav-samples",
                style: "display:grid;grid-template-columns:repeat(auto-fill,minmax(64px,1fr));gap:4px" }),
    el("div", { class: "pager" },
       el("button", { type: "button", id: "tcav-prev", "aria-label": "previous samples", text: "‹" }),
       el("span", { id: "tcav-page", class: "muted" }),
       el("button", { type: "button", id: "tcav-next", "aria-label": "next samples", text: "›" })),
    el("label", { class: "upload" }, "or upload a set of examples ",
       el("input", { type: "file", id: "tcav-upload", "data-testid": "tcav-upload", accept: ".npy,.png,.jpg,.jpeg,.csv" })),
    el("p", { id: "tcav-picked", class: "muted", "data-testid": "tcav-picked" }),
    el("button", { type: "button", id: "tcav-add", "data-testid": "tcav-add", text: "Add this concept" }),
    el("ul", { id: "tcav-list", "data-testid": "tcav-list" }),
    el("label", { class: "row" }, "Random runs ", runsSel),
    el("button", { type: "button", id: "tcav-run", class: "primary", "data-testid": "tcav-run", text: "Test the concepts" }),
    el("p", { id: "tcav-status", class: "muted", "data-testid": "tcav-status" }),
    el("div", { id: "tcav-result", "data-testid": "tcav-result" }));
  $("tcav-prev").addEventListener("click", () => { cstate.offset = Math.max(0, cstate.offset - cstate.limit); conceptSamples(); });
  $("tcav-next").addEventListener("click", () => {
    if (cstate.offset + cstate.limit < cstate.total) { cstate.offset += cstate.limit; conceptSamples(); }
  });
  $("tcav-upload").addEventListener("change", (ev) => conceptUpload(ev.target.files[0]));
  $("tcav-add").addEventListener("click", addConcept);
  $("tcav-run").addEventListener("click", runTcav);
  box.hidden = false;
  showPicked();
  showConcepts();
  await conceptSamples();
}

async function conceptSamples() {
  const m = state.model;
  const page = await api(`/api/models/${encodeURIComponent(m.name)}/samples?offset=${cstate.offset}&limit=${cstate.limit}`);
  cstate.total = page.total;
  $("tcav-samples").replaceChildren(...page.items.map((s) => {
    const b = el("button", { type: "button", "data-testid": "tcav-sample", "data-index": String(s.index),
                             "aria-pressed": String(cstate.picked.has(s.index)),
                             title: s.label ? `label: ${s.label}` : `sample ${s.index}` });
    b.style.cssText = "padding:2px;font-size:11px";
    if (s.thumbnail) b.append(el("img", { src: s.thumbnail, alt: `sample ${s.index}`, width: "48", height: "48", style: "display:block;margin:auto" }));
    b.append(el("span", { text: `#${s.index}${s.label ? " · " + s.label : ""}` }));
    if (s.preview) b.append(el("div", { class: "muted", text: s.preview }));
    if (cstate.picked.has(s.index)) b.classList.add("chosen");
    b.style.outline = cstate.picked.has(s.index) ? "3px solid #2b6cb0" : "";
    b.addEventListener("click", () => {
      if (cstate.picked.has(s.index)) cstate.picked.delete(s.index); else cstate.picked.add(s.index);
      b.classList.toggle("chosen", cstate.picked.has(s.index));
      b.style.outline = cstate.picked.has(s.index) ? "3px solid #2b6cb0" : "";
      b.setAttribute("aria-pressed", String(cstate.picked.has(s.index)));
      cstate.upload = null;
      showPicked();
    });
    return b;
  }));
  const last = Math.min(cstate.total, cstate.offset + cstate.limit);
  $("tcav-page").textContent = cstate.total ? `${cstate.offset + 1}–${last} of ${cstate.total}` : "no samples";
}

async function conceptUpload(file) {
  if (!file) return;
  try {
    const res = await api(`/api/models/${encodeURIComponent(state.model.name)}/uploads`, {
      method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: await file.arrayBuffer() });
    cstate.upload = { id: res.id, rows: res.rows, file: file.name };
    const name = $("tcav-name");
    if (name.value === "my concept") name.value = file.name.replace(/\.[^.]+$/, "");
    showPicked();
  } catch (err) {
    $("tcav-status").textContent = String(err.message || err);
  }
}

function showPicked() {
  const p = $("tcav-picked");
  if (!p) return;
  p.textContent = cstate.upload ? `Examples: ${cstate.upload.file} (${plural(cstate.upload.rows, "example")}).`
    : `Examples picked: ${cstate.picked.size}.`;
}

function addConcept() {
  const name = $("tcav-name").value.trim() || `concept ${cstate.concepts.length + 1}`;
  if (cstate.concepts.some((c) => c.name === name)) {
    $("tcav-status").textContent = `There is already a concept named “${name}”.`;
    return;
  }
  if (cstate.upload) cstate.concepts.push({ name, upload: cstate.upload.id, n: cstate.upload.rows });
  else if (cstate.picked.size) cstate.concepts.push({ name, samples: [...cstate.picked].sort((a, b) => a - b), n: cstate.picked.size });
  else { $("tcav-status").textContent = "Pick samples or upload a file of examples first."; return; }
  cstate.picked = new Set();
  cstate.upload = null;
  $("tcav-upload").value = "";
  $("tcav-name").value = `concept ${cstate.concepts.length + 1}`;
  $("tcav-status").textContent = "";
  document.querySelectorAll("#tcav-samples .chosen").forEach((b) => {
    b.classList.remove("chosen"); b.setAttribute("aria-pressed", "false"); b.style.outline = ""; });
  showPicked();
  showConcepts();
}

function showConcepts() {
  $("tcav-list").replaceChildren(...cstate.concepts.map((c, i) => {
    const rm = el("button", { type: "button", "aria-label": `remove ${c.name}`, text: "×" });
    rm.addEventListener("click", () => { cstate.concepts.splice(i, 1); showConcepts(); });
    return el("li", { "data-testid": "tcav-concept" }, `${c.name} (${plural(c.n, "example")}) `, rm);
  }));
  $("tcav-run").disabled = !cstate.concepts.length;
}

async function runTcav() {
  const m = state.model;
  const body = { model: m.name, layer: $("tcav-layer").value, target: Number($("tcav-target").value || 0),
                 concepts: cstate.concepts.map((c) => (c.upload ? { name: c.name, upload: c.upload } : { name: c.name, samples: c.samples })) };
  const runs = $("tcav-runs").value;
  if (runs) body.n_random = Number(runs);
  $("tcav-status").textContent = "Testing the concepts against random ones…";
  $("tcav-run").disabled = true;
  try {
    const res = await postJson("/api/tcav", body);
    if (cstate.model !== m.name) return;
    showTcav(res);
    $("tcav-status").textContent = "";
  } catch (err) {
    $("tcav-status").textContent = String(err.message || err);
  } finally {
    $("tcav-run").disabled = !cstate.concepts.length;
  }
}

function showTcav(res) {
  const out = $("tcav-result");
  const verdicts = el("ul", { class: "tcav-verdicts" }, ...res.concepts.map((c) => el("li", { "data-testid": "tcav-verdict" },
    el("strong", { text: `${c.name}: ${c.significant ? "significant" : "not distinguishable from random"}` }),
    ` — TCAV score ${c.score.toFixed(2)} ± ${c.score_std.toFixed(2)} (random concepts ${res.random_mean.toFixed(2)}), ` +
    `corrected p = ${Number(c.p_corrected).toPrecision(2)}.` +
    (c.significant ? ` Moving toward the concept ${c.score > res.random_mean ? "raises" : "lowers"} the class's score.` : ""))));
  const chart = el("div", { class: "tcav-chart", "data-testid": "tcav-chart" });
  chart.innerHTML = res.chart;  // SVG made by the server from escaped text
  const setup = el("p", { class: "muted", text:
    `Class ${res.target_name} at layer ${res.layer}: ${res.inputs_from}; ${plural(res.n_random, "random run")} ` +
    `(${res.n_random_mode === "auto" ? "chosen for power" : "given"}, power ${res.power.toFixed(2)}). ` +
    `A fresh random concept, as a check: ${res.control_mean.toFixed(2)} (p = ${Number(res.control_p).toPrecision(2)}). ` +
    "Significant: the concept's scores differ from random concepts' and its examples separate from random " +
    `ones better than random concepts' do, with p-values Bonferroni-corrected over the concepts below ${res.alpha}.` });
  out.replaceChildren(verdicts, chart, setup);
}

document.addEventListener("DOMContentLoaded", () => {
  const sel = $("model");
  if (sel) sel.addEventListener("change", () => setTimeout(conceptsInit, 0));
  const wait = setInterval(() => { if (state.model) { clearInterval(wait); conceptsInit(); } }, 200);
});
