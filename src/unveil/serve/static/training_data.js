// unveil dashboard: which training examples drove this decision (POST /api/training-data).
// Uses the page's state, el(), $(), api() and showError() from app.js.
"use strict";

(function () {
  const METHODS = [
    ["auto", "automatic (influence through the last layer, or representer points for large layers)"],
    ["influence", "influence functions, last layer"],
    ["representer", "representer points, last layer"],
    ["tracin", "TracIn, last layer"],
    ["trak", "TRAK, whole model (slower)"],
  ];

  function rowCell(item) {
    const head = el("div", { class: "td-head" },
      el("strong", { text: `#${item.index}` }), ` label ${item.label_name} · score `,
      el("span", { class: item.score >= 0 ? "ok" : "bad", text: Number(item.score).toPrecision(3) }));
    const body = [];
    if (item.image) {
      body.push(el("img", { src: item.image, alt: `training row ${item.index}, label ${item.label_name}`,
                            class: "td-thumb" }));
    } else if (item.values) {
      const shown = item.values.slice(0, 6);
      body.push(el("div", { class: "muted td-values",
        text: shown.map((v) => `${v.name} = ${Number(v.value).toPrecision(4)}`).join(", ") +
              (item.values.length > shown.length ? ", …" : "") }));
    }
    return el("div", { class: "td-row", "data-testid": "training-row" }, head, ...body);
  }

  function column(title, items, testid, empty) {
    return el("div", { class: "td-col", "data-testid": testid },
      el("h4", { text: title }),
      ...(items.length ? items.map(rowCell) : [el("p", { class: "muted", text: empty })]));
  }

  async function run() {
    const out = $("td-result");
    if (!state.model || !state.input) {
      out.replaceChildren(el("p", { class: "muted", text: "Pick an input first." }));
      return;
    }
    const body = { model: state.model.name, method: $("td-method").value, k: 5,
                   evaluate: $("td-evaluate").checked };
    if (state.input.sample !== undefined) body.sample = state.input.sample;
    else { body.upload = state.input.upload; body.row = state.input.row || 0; }
    out.replaceChildren(el("p", { class: "muted", text: "Scoring the training rows …" }));
    $("td-run").disabled = true;
    try {
      const res = await api("/api/training-data", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const ev = res.evaluation || {};
      const figures = Object.keys(ev).length
        ? el("p", { "data-testid": "training-data-evaluation" }, el("strong", { text: "How far to trust this: " }),
             res.evaluation_words)
        : el("p", { class: "muted", "data-testid": "training-data-evaluation", text: res.evaluation_words });
      out.replaceChildren(
        el("p", {}, `The model decided `, el("strong", { text: res.target_name }), ` for this input. `,
           `Scored ${res.n_train} training rows with ${res.method_words} in ${res.seconds.toFixed(1)} s.`),
        el("div", { class: "td-grid" },
          column("Proponents: made this decision more likely", res.proponents, "proponents", "none"),
          column("Opponents: pulled against it", res.opponents, "opponents", "none")),
        figures,
        ...(res.note ? [el("p", { class: "muted", text: res.note })] : []));
    } catch (err) {
      out.replaceChildren();
      showError(err);
    } finally {
      $("td-run").disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const sel = $("td-method");
    if (!sel) return;
    sel.replaceChildren(...METHODS.map(([v, t]) => el("option", { value: v, text: t })));
    $("td-run").addEventListener("click", run);
  });
})();
