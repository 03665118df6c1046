// unveil dashboard: the causal language model views ("why this response", "inside the model").
// Plain JavaScript, no framework, no external resource. app.js drives the model picker; this file
// watches which model is picked and, for a causal LM, shows its own controls and results instead
// of the classifier views.
"use strict";

(() => {
  const L = { kinds: {}, info: {}, name: null, gen: null, step: 0, showTemplate: false, busy: false };
  const byId = (id) => document.getElementById(id);

  function make(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k === "style") node.style.cssText = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  }

  async function call(path, body) {
    let res;
    try {
      res = await fetch(path, body === undefined ? {} : {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    } catch (err) {
      throw new Error("The dashboard's server did not answer: is it still running?");
    }
    const data = await res.json().catch(() => null);
    if (!res.ok) {
      const d = data && typeof data.detail === "string" ? data.detail : `${res.status} ${res.statusText || "error"}`;
      throw new Error(d.charAt(0).toUpperCase() + d.slice(1));
    }
    return data;
  }

  function error(err) {
    const box = byId("error");
    box.textContent = err ? String(err.message || err) : "";
    box.hidden = !err;
    if (err) box.scrollIntoView({ block: "nearest" });
  }

  // -- words and colours --------------------------------------------------------------------
  const shown = (t) => (t === "" ? "∅" : t.replace(/\n/g, "⏎").replace(/\t/g, "⇥"));
  const num = (v, d = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
  function diverging(v, scale) {  // red raises, blue lowers; white at zero
    if (v === null || v === undefined || !(scale > 0)) return "#f2f2f2";
    const a = Math.max(-1, Math.min(1, v / scale));
    const w = Math.round(255 * (1 - Math.abs(a)));
    return a >= 0 ? `rgb(255,${w},${w})` : `rgb(${w},${w},255)`;
  }
  function sequential(v) {  // 0 white .. 1 deep blue
    if (v === null || v === undefined) return "#f2f2f2";
    const a = Math.max(0, Math.min(1, v));
    return `rgb(${Math.round(255 - 205 * a)},${Math.round(255 - 150 * a)},255)`;
  }
  const ink = (v, scale) => (scale > 0 && Math.abs(v || 0) / scale > 0.6 ? "#fff" : "inherit");
  function maxAbs(rows) {
    let m = 0;
    for (const r of rows) for (const v of r) if (v !== null && Math.abs(v) > m) m = Math.abs(v);
    return m;
  }

  // -- mode: classifier views or language views ----------------------------------------------
  async function kindOf(name) {
    if (!(name in L.kinds)) {
      const models = await call("/api/models");
      for (const m of models) L.kinds[m.name] = m.modality;
    }
    return L.kinds[name];
  }

  async function onModel() {
    const name = byId("model").value;
    if (!name || name === L.name) return;
    L.name = name;
    const lm = (await kindOf(name)) === "causal_lm";
    document.body.classList.toggle("lm-mode", lm);
    clear();
    if (!lm) return;
    byId("lm-status").textContent = "Loading the model…";
    try {
      if (!L.info[name]) L.info[name] = await call(`/api/models/${encodeURIComponent(name)}/language`);
      if (L.name === name) fill(L.info[name]);
    } catch (err) {
      error(err);
    }
  }

  function clear() {
    L.gen = null;
    for (const id of ["lm-response", "lm-lens", "lm-patch", "lm-heads"]) {
      byId(id).replaceChildren();
      byId(id).hidden = true;
    }
    byId("lm-status").textContent = "";
  }

  function fill(info) {
    byId("lm-about").textContent = info.ids_only
      ? `This model has no tokenizer: type token ids from 0 to ${info.vocab_size - 1} separated by spaces.`
      : `${info.n_layers ?? "?"} layers, ${info.n_heads ?? "?"} heads, ${info.vocab_size} tokens` +
        `${info.context ? `, ${info.context} positions` : ""}; tokenizer ${info.tokenizer}.`;
    byId("lm-prompt").value = info.examples[0] || "";
    byId("lm-examples").hidden = !info.examples.length;
    byId("lm-examples").replaceChildren(...info.examples.slice(0, 4).map((ex) => {
      const b = make("button", { type: "button", class: "lm-example", title: ex, text: ex.length > 38 ? ex.slice(0, 37) + "…" : ex });
      b.addEventListener("click", () => { byId("lm-prompt").value = ex; });
      return b;
    }));
    const chat = byId("lm-chat");
    chat.checked = info.chat;
    chat.disabled = !info.chat;
    byId("lm-chat-label").title = info.chat ? "Wrap the prompt in the tokenizer's chat template as a user message"
      : "This tokenizer has no chat template";
    const max = byId("lm-max");
    max.max = String(info.max_new_tokens);
    max.value = String(Math.min(8, info.max_new_tokens));
    byId("lm-method").replaceChildren(...info.methods.map((m) => make("option", { value: m, text: m.replace(/_/g, " ") })));
    byId("lm-method").value = info.default_method;
    byId("lm-steps-label").hidden = info.default_method !== "integrated_gradients";
    byId("lm-contrast").placeholder = info.ids_only ? "a token id, e.g. 5" : "one token, e.g. ' John'";
    byId("lm-units").disabled = info.ids_only;
    if (info.ids_only) byId("lm-units").value = "tokens";
    const p = info.patch_example;
    byId("lm-clean").value = p.clean;
    byId("lm-corrupted").value = p.corrupted;
    byId("lm-target").value = p.target;
    byId("lm-foil").value = p.foil;
    for (const site of ["resid", "heads", "mlp"]) {  // what this model has to patch
      const cb = byId(`lm-site-${site}`);
      cb.disabled = !info.sites.includes(site);
      cb.checked = site === "resid" && !cb.disabled;
      cb.parentElement.title = cb.disabled ? "this model has none that unveil can find" : "";
    }
    byId("lm-status").textContent = "Write a prompt, then press Generate and explain.";
  }

  async function busy(button, label, work) {
    if (L.busy) return;
    L.busy = true;
    error(null);
    const buttons = document.querySelectorAll("#lm-controls button");
    buttons.forEach((b) => { b.disabled = true; });
    const t0 = performance.now();
    byId("lm-status").textContent = `${label}…`;
    try {
      await work();
      const s = (performance.now() - t0) / 1000;
      byId("lm-status").textContent = `${label}: done in ${s < 1 ? s.toFixed(2) : s.toFixed(1)} s.`;
    } catch (err) {
      byId("lm-status").textContent = `${label} failed.`;
      error(err);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
      byId("lm-chat").disabled = !(L.info[L.name] || {}).chat;
      L.busy = false;
    }
  }

  // -- why this response ---------------------------------------------------------------------
  async function generate() {
    const info = L.info[L.name];
    if (!info) return;
    const body = { model: L.name, prompt: byId("lm-prompt").value, max_new_tokens: Number(byId("lm-max").value),
                   method: byId("lm-method").value, units: byId("lm-units").value, chat: byId("lm-chat").checked };
    body.sources = byId("lm-sources-of").value;
    if (body.method === "integrated_gradients") body.n_steps = Number(byId("lm-steps").value);
    const contrast = byId("lm-contrast").value;
    if (contrast.trim()) body.contrast = contrast;
    await busy(byId("lm-generate"), "Generating and explaining", async () => {
      const res = await call("/api/generate", body);
      L.gen = res;
      L.step = 0;
      drawResponse();
    });
  }

  // which units are shown (chat template units only on request; sources of at least one token)
  function visibleUnits(r) {
    const out = [];
    r.units.forEach((u, i) => {
      const kind = r.kinds[u[0]];
      if (kind === "template" && !L.showTemplate) return;
      if (r.values.every((row) => row[i] === null)) return;  // the last token is no one's source
      out.push(i);
    });
    return out;
  }

  function drawResponse() {
    const box = byId("lm-response");
    const res = L.gen;
    const r = res.result;
    box.hidden = false;
    const gen = r.tokens.slice(r.n_prompt);
    const what = r.objective === "log_prob_diff" && r.foils
      ? `log p(token) − log p(${JSON.stringify(r.foils[0])})` : "log p(token)";
    const head = make("h3", { text: "Why this response" });
    const sub = make("p", { class: "muted", text:
      `${r.method.replace(/_/g, " ")} on ${what}, per generated token; ${r.n_evals} model evaluations` +
      `${res.chat ? "; chat template applied" : ""}. Click a generated token to see where it came from.` });
    const chips = make("div", { class: "lm-chips", "data-testid": "lm-generated", role: "list" });
    gen.forEach((t, g) => {
      const p = r.scores.prob[g];
      const h = r.scores.entropy[g];
      const extra = r.scores.prob_diff ? ` · Δp ${num(r.scores.prob_diff[g])}` : "";
      const chip = make("button", { type: "button", class: "lm-chip" + (g === L.step ? " selected" : ""),
                                    "data-step": String(g), role: "listitem",
                                    title: `step ${g + 1}: probability ${num(p, 3)}, entropy ${num(h)} nats` },
        make("span", { class: "lm-tok", text: shown(t) }),
        make("span", { class: "lm-score", text: `p ${num(p)} · H ${num(h)}${extra}` }),
        make("span", { class: "lm-pbar" }, make("i", { style: `width:${Math.round(100 * (p || 0))}%` })));
      chip.addEventListener("click", () => { L.step = g; drawResponse(); });
      chips.append(chip);
    });
    const summary = make("ul", { class: "lm-summary", "data-testid": "lm-summary" },
      ...res.summary.map((s) => make("li", { text: s })));
    const tmpl = r.kinds.includes("template")
      ? (() => {
        const lab = make("label", { class: "row muted" });
        const cb = make("input", { type: "checkbox" });
        cb.checked = L.showTemplate;
        cb.addEventListener("change", () => { L.showTemplate = cb.checked; drawResponse(); });
        lab.append(cb, " show the chat template's tokens");
        return lab;
      })() : "";
    box.replaceChildren(head, sub, make("div", { class: "lm-label", text: "Response (each step's probability p and entropy H in nats)" }),
      chips, sources(r), alternatives(r), heatmap(r), tmpl, summary,
      make("a", { href: `/api/language/pages/${res.page}`, download: "unveil-generation.html",
                  "data-testid": "lm-download", text: "Download this explanation (HTML report)" }));
  }

  function sources(r) {
    // the prompt (and the tokens generated before the chosen one) coloured by their attribution
    const g = L.step;
    const row = r.values[g];
    const scale = Math.max(1e-12, ...visibleUnits(r).map((u) => row[u]).filter((v) => v !== null).map(Math.abs));
    const unitOf = new Array(r.tokens.length).fill(-1);
    r.units.forEach((u, i) => { for (let k = u[0]; k < u[1]; k++) unitOf[k] = i; });
    const text = make("div", { class: "lm-text", "data-testid": "lm-sources" });
    const last = r.n_prompt + g;
    for (let k = 0; k < r.tokens.length; k++) {
      const kind = r.kinds[k];
      if (kind === "template" && !L.showTemplate) continue;
      const u = unitOf[k];
      const v = u >= 0 ? row[u] : null;
      const span = make("span", { class: `lm-src ${kind}` + (k === last ? " target" : "") + (k > last ? " later" : ""),
                                  text: shown(r.tokens[k]) });
      if (k < last && v !== null) {
        span.style.background = diverging(v, scale);
        span.style.color = ink(v, scale);
        span.title = `${JSON.stringify(r.unit_texts[u])}: ${v.toPrecision(3)}`;
        span.dataset.value = String(v);
      } else if (k === last) {
        span.title = "the explained token";
      }
      text.append(span);
    }
    return make("div", {},
      make("div", { class: "lm-label", text: `Sources of ${JSON.stringify(r.tokens[last])} (red raised it, blue lowered it; the boxed token is the one explained, faded ones come after it)` }),
      text);
  }

  function alternatives(r) {
    const alts = r.alternatives[L.step] || [];
    return make("p", { class: "muted lm-alts", text: `Most likely at step ${L.step + 1}: ` +
      alts.map(([t, p]) => `${JSON.stringify(t)} ${num(p)}`).join(", ") });
  }

  function heatmap(r) {
    const units = visibleUnits(r);
    const gen = r.tokens.slice(r.n_prompt);
    // each token's own scale (its objective is its own), over the sources shown
    const scales = r.values.map((row) => maxAbs([units.map((u) => row[u])]));
    const table = make("table", { class: "lm-grid lm-heat", "data-testid": "lm-heatmap" });
    const corner = make("th", { class: "corner", text: "source ↓ · generated →" });
    const headRow = make("tr", {}, corner, ...gen.map((t, g) => {
      const th = make("th", { class: "col" + (g === L.step ? " selected" : ""), title: `step ${g + 1}`, text: shown(t) });
      th.addEventListener("click", () => { L.step = g; drawResponse(); });
      return th;
    }));
    table.append(make("thead", {}, headRow));
    const body = make("tbody");
    for (const u of units) {
      const kind = r.kinds[r.units[u][0]];
      const tr = make("tr", { class: kind }, make("th", { class: "rowhead", text: shown(r.unit_texts[u]) }));
      r.values.forEach((row, g) => {
        const v = row[u];
        const td = make("td", { class: g === L.step ? "selected" : "",
                                title: v === null ? "after this token: not a source" : `${JSON.stringify(r.unit_texts[u])} → ${JSON.stringify(gen[g])}: ${v.toPrecision(3)}` });
        td.style.background = diverging(v, scales[g]);
        if (v === null) td.classList.add("na");
        td.addEventListener("click", () => { L.step = g; drawResponse(); });
        tr.append(td);
      });
      body.append(tr);
    }
    table.append(body);
    return make("div", {},
      make("div", { class: "lm-label", text: "Heat map: attribution of each generated token (columns) to each source unit (rows), each column scaled to its largest magnitude (red raises the token, blue lowers it; hatched: comes after the token)" }),
      make("div", { class: "lm-scroll" }, table));
  }

  // -- inside the model ----------------------------------------------------------------------
  function grid({ rows, cols, values, text, title, rowName, colName, colour, tips, testid, strong }) {
    const table = make("table", { class: "lm-grid", "data-testid": testid });
    table.append(make("thead", {}, make("tr", {}, make("th", { class: "corner", text: `${rowName} ↓ · ${colName} →` }),
      ...cols.map((c) => make("th", { class: "col", text: shown(c) })))));
    const body = make("tbody");
    rows.forEach((rname, i) => {
      const tr = make("tr", {}, make("th", { class: "rowhead", text: rname }));
      cols.forEach((_, j) => {
        const v = values[i][j];
        const td = make("td", { text: text ? shown(text[i][j]) : (v === null ? "" : num(Math.abs(v) < 0.005 ? 0 : v)),
                                title: tips ? tips[i][j] : `${rowName} ${rname}, ${colName} ${cols[j]}: ${v === null ? "–" : v.toPrecision(3)}` });
        td.style.background = colour(v);
        if (strong && v !== null && strong(v)) td.style.color = "#fff";
        tr.append(td);
      });
      body.append(tr);
    });
    table.append(body);
    return make("div", {}, make("div", { class: "lm-label", text: title }), make("div", { class: "lm-scroll" }, table));
  }

  function download(page, name) {
    return make("a", { href: `/api/language/pages/${page}`, download: name, text: "Download (HTML)" });
  }

  async function lens() {
    const body = { model: L.name, prompt: byId("lm-prompt").value };
    const target = byId("lm-lens-target").value;
    if (target.trim()) body.target = target;
    await busy(byId("lm-lens-run"), "Logit lens", async () => {
      const res = await call("/api/lens", body);
      const box = byId("lm-lens");
      box.hidden = false;
      const tracked = target.trim() ? `the probability of ${JSON.stringify(res.target_tokens[0])}`
        : "the probability of the model's own final prediction at that position";
      const tips = res.rows.map((r, i) => res.tokens.map((t, j) =>
        `layer ${r}, position ${j} (${JSON.stringify(t)}): ` +
        res.top_tokens[i][j].map((tk, k) => `${JSON.stringify(tk)} ${num(res.top_probs[i][j][k])}`).join(", ") +
        `; p(${JSON.stringify(res.target_tokens[j])}) = ${num(res.target_prob[i][j], 3)}`));
      box.replaceChildren(make("h3", { text: "Inside the model: logit lens" }),
        make("p", { class: "muted", text: `The residual stream after each layer decoded with the model's final norm and unembedding. Cell: the lens's top token; colour: ${tracked}. The last row equals the model's output.` }),
        grid({ rows: res.rows, cols: res.tokens.map((t, j) => `${j}:${t}`), values: res.target_prob,
               text: res.top_tokens.map((r) => r.map((c) => c[0])), title: "layer × position", rowName: "layer",
               colName: "position", colour: sequential, strong: (x) => x > 0.6, tips, testid: "lm-lens-grid" }),
        download(res.page, "unveil-logit-lens.html"));
      box.scrollIntoView({ block: "nearest" });
    });
  }

  async function patch() {
    const sites = ["resid", "heads", "mlp"].filter((s) => byId(`lm-site-${s}`).checked);
    const body = { model: L.name, clean: byId("lm-clean").value, corrupted: byId("lm-corrupted").value,
                   target: byId("lm-target").value, foil: byId("lm-foil").value, sites: sites.length ? sites : ["resid"],
                   attribution: byId("lm-attribution").checked };
    await busy(byId("lm-patch-run"), body.attribution ? "Attribution patching" : "Activation patching", async () => {
      const res = await call("/api/patch", body);
      const box = byId("lm-patch");
      box.hidden = false;
      const metric = `logit(${JSON.stringify(res.target_text)}) − logit(${JSON.stringify(res.foil_text)})`;
      const parts = [make("h3", { text: `Inside the model: ${res.kind} patching` }),
        make("p", { class: "muted", text: `Each cell: the share of ${metric} recovered when that component's clean activation is patched into the corrupted run (1: it carries the whole difference). Clean ${res.clean_diff.toFixed(3)}, corrupted ${res.corrupted_diff.toFixed(3)}; ${res.n_forward} forward passes.` })];
      if (res.kind === "attribution") {
        parts.push(make("p", { class: res.faithfulness !== null && res.faithfulness > 0.9 ? "ok" : "caution",
          "data-testid": "lm-faithfulness",
          text: res.faithfulness === null ? "Faithfulness: not measurable on this sample."
            : `Faithfulness: correlation ${res.faithfulness.toFixed(3)} with exact patching on ${res.checked.length} components drawn at random.` }));
      }
      const cols = res.tokens.map((t, j) => (res.corrupted_tokens[j] !== undefined && res.corrupted_tokens[j] !== t
        ? `${j}:${t} vs ${res.corrupted_tokens[j]}` : `${j}:${t}`));
      const all = [res.resid, res.heads, res.mlp].filter(Boolean);
      const scale = Math.max(1, maxAbs(all.flat ? all.flat() : []));
      const colour = (v) => diverging(v, scale);
      const strong = (v) => Math.abs(v) / scale > 0.6;
      if (res.resid) parts.push(grid({ rows: res.resid.map((_, i) => String(i)), cols, values: res.resid,
        title: "residual stream after each layer (layer × position; a changed position shows clean/corrupted)",
        rowName: "layer", colName: "position", colour, strong, testid: "lm-patch-resid" }));
      if (res.heads) parts.push(grid({ rows: res.heads.map((_, i) => String(i)), cols: res.heads[0].map((_, h) => `h${h}`),
        values: res.heads, title: "attention heads (layer × head, all positions)", rowName: "layer", colName: "head",
        colour, strong, testid: "lm-patch-heads" }));
      if (res.mlp) parts.push(grid({ rows: res.mlp.map((_, i) => String(i)), cols, values: res.mlp,
        title: "MLP outputs (layer × position)", rowName: "layer", colName: "position", colour, strong, testid: "lm-patch-mlp" }));
      parts.push(download(res.page, "unveil-patching.html"));
      box.replaceChildren(...parts);
      box.scrollIntoView({ block: "nearest" });
    });
  }

  async function heads() {
    await busy(byId("lm-heads-run"), "Head scores", async () => {
      const res = await call("/api/heads", { model: L.name });
      const box = byId("lm-heads");
      box.hidden = false;
      const parts = [make("h3", { text: "Inside the model: head scores" }),
        make("p", { class: "muted", text: `Mean attention on ${res.n_sequences} random runs of ${res.half} tokens, repeated: previous-token (to the token before), duplicate-token (to the earlier copy), induction (to the token after the earlier copy).` })];
      const wrap = make("div", { class: "cols" });
      for (const [key, name] of [["previous_token", "previous-token"], ["duplicate_token", "duplicate-token"], ["induction", "induction"]]) {
        const v = res[key];
        wrap.append(grid({ rows: v.map((_, i) => String(i)), cols: v[0].map((_, h) => `h${h}`), values: v,
          title: `${name} score`, rowName: "layer", colName: "head", colour: sequential, strong: (x) => x > 0.6,
          testid: `lm-heads-${key}` }));
      }
      parts.push(wrap, download(res.page, "unveil-head-scores.html"));
      box.replaceChildren(...parts);
      box.scrollIntoView({ block: "nearest" });
    });
  }

  function start() {
    byId("lm-generate").addEventListener("click", () => generate());
    byId("lm-lens-run").addEventListener("click", () => lens());
    byId("lm-patch-run").addEventListener("click", () => patch());
    byId("lm-heads-run").addEventListener("click", () => heads());
    byId("lm-method").addEventListener("change", () => {
      byId("lm-steps-label").hidden = byId("lm-method").value !== "integrated_gradients";
    });
    byId("lm-prompt").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) generate();
    });
    // app.js writes the model's description whenever a model is picked
    new MutationObserver(() => onModel().catch(error)).observe(byId("model-desc"),
      { childList: true, characterData: true, subtree: true });
    byId("model").addEventListener("change", () => onModel().catch(error));
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
