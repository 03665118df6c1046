// unveil dashboard: concept maps (CRP) for the explained input. Plain JavaScript; uses app.js's
// state, $, el, api, postJson, showError, setStatus and targetValue.
"use strict";

const conceptMaps = { layers: {}, epoch: 0 };

async function conceptLayers(model) {
  if (!conceptMaps.layers[model]) {
    conceptMaps.layers[model] = await api(`/api/models/${encodeURIComponent(model)}/concept-layers`);
  }
  return conceptMaps.layers[model];
}

function conceptCard(c) {
  const card = el("div", { class: "map concept", "data-testid": "concept", "data-channel": String(c.channel) });
  card.append(el("h3", { text: c.name }));
  if (c.heatmap) card.append(el("img", { src: c.heatmap, alt: `relevance through ${c.name}` }));
  card.append(el("div", { class: "facts",
    text: `relevance ${Number(c.relevance).toPrecision(3)} · ${(100 * c.share).toFixed(1)}% of the layer's` }));
  if (c.references.length) {
    const refs = el("div", { class: "concept-refs", "data-testid": "concept-references" });
    for (const r of c.references) {
      if (!r.image) continue;
      const img = el("img", { src: r.image, alt: `reference row ${r.row}`, title: `row ${r.row}: ${Number(r.value).toPrecision(3)}` });
      // sized through the CSSOM (the page's CSP allows no style attributes)
      Object.assign(img.style, { width: "auto", height: "56px", display: "inline-block", margin: "2px" });
      refs.append(img);
    }
    card.append(el("div", { class: "muted", text: "where the model's data uses it most:" }), refs);
  }
  return card;
}

async function runConcepts() {
  showError(null);
  const box = $("concept-result");
  const body = { model: state.model.name, layer: $("concept-layer").value, k: Number($("concept-k").value),
                 target: targetValue(), references: 4, ...state.input };
  const epoch = ++conceptMaps.epoch;
  $("concept-run").disabled = true;
  box.replaceChildren(el("p", { class: "muted", text: "propagating relevance through each concept …" }));
  try {
    const res = await postJson("/api/concepts", body);
    if (epoch !== conceptMaps.epoch) return;
    box.replaceChildren(
      el("p", { class: "muted", "data-testid": "concept-summary",
                text: `Class ${res.target} (score ${Number(res.score).toPrecision(3)}), layer ${res.layer}. ${res.note}` }),
      el("div", { class: "maps" }, ...res.concepts.map(conceptCard)));
  } catch (err) {
    box.replaceChildren();
    showError(err);
  } finally {
    $("concept-run").disabled = false;
  }
}

async function showConceptMaps() {
  const card = $("concept-maps");
  if (!state.model || !state.input) return;
  let info;
  try {
    info = await conceptLayers(state.model.name);
  } catch (err) {
    card.hidden = true;
    return;
  }
  if (!info.layers.length) { card.hidden = true; return; }
  const layer = el("select", { id: "concept-layer", "aria-label": "layer", "data-testid": "concept-layer" });
  for (const l of info.layers) {
    const opt = el("option", { value: l.name, text: `${l.name} (${l.kind}, ${l.channels})` });
    if (l.name === info.default) opt.selected = true;
    layer.append(opt);
  }
  const k = el("select", { id: "concept-k", "aria-label": "number of concepts" });
  for (const n of [3, 4, 6, 8]) {
    const opt = el("option", { value: String(n), text: String(n) });
    if (n === 4) opt.selected = true;
    k.append(opt);
  }
  const run = el("button", { type: "button", id: "concept-run", "data-testid": "concept-run", text: "Show the top concepts" });
  run.addEventListener("click", runConcepts);
  card.replaceChildren(
    el("h3", { text: "Which concepts inside the model did it use?" }),
    el("p", { class: "muted", text: "Concept relevance: the channels of a layer that carried the most relevance for this prediction, each with the part of the heat map that flows through it and examples from the model's data." }),
    el("label", { class: "row" }, "Layer ", layer), el("label", { class: "row" }, " concepts ", k), run,
    el("div", { id: "concept-result", "data-testid": "concept-result" }));
  card.hidden = false;
}

document.addEventListener("DOMContentLoaded", () => {
  const result = $("result");
  const card = $("concept-maps");
  if (!result || !card) return;
  new MutationObserver(() => {
    conceptMaps.epoch += 1;
    if (result.hidden) { card.hidden = true; card.replaceChildren(); } else showConceptMaps();
  }).observe(result, { attributes: true, attributeFilter: ["hidden"] });
});
