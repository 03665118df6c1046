"""Build a report: run several methods on one model and batch, measure what can be measured,
and keep the facts the HTML and the narrative are written from."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.explanation import Explanation, jsonable
from ..core.modality import infer_modality
from ..core.model import Model, TargetSpec, as_model
from ..core.options import suggest
from ..core.registry import MethodInfo, get_method, list_methods
from ..errors import OptionError, UnveilError
from .trust import GlobalFacts, TrustCard, global_facts, trust_card

__all__ = ["MethodRun", "Report", "Section", "accepted_options", "build_section", "check_options",
           "default_methods", "preferred_order", "report", "run_method", "skip_not_applicable",
           "skip_reason"]

log = logging.getLogger("unveil.report")


@dataclass
class MethodRun:
    """One method's outcome: its Explanation, or why it failed or was skipped."""

    method: str
    explanation: Explanation | None = None
    error: str | None = None
    skipped: str | None = None
    seconds: float = 0.0
    error_type: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def n_evals(self) -> int:
        """Model rows the method evaluated (0 if it did not run)."""
        return 0 if self.explanation is None else int(self.explanation.n_evals)

    @property
    def status(self) -> str:
        """``"ok"``, ``"error"`` or ``"skipped"``."""
        return "error" if self.error else "skipped" if self.skipped else "ok"

    @property
    def shown_status(self) -> str:
        """The status a reader sees: ``"degenerate"`` (or ``"degenerate on 1 of 4 inputs"``)
        instead of ``"ok"`` when the map is constant for some input (``quality["degenerate"]``)."""
        d: Any = self.explanation.quality.get("degenerate") if self.explanation is not None else None
        if isinstance(d, dict) and d.get("n"):
            n, of = int(d["n"]), int(d.get("of") or d["n"])
            return "degenerate" if n >= of else f"degenerate on {n} of {of} inputs"
        return self.status


@dataclass
class Section:
    """Everything the report shows about one model and one batch."""

    model_name: str
    description: str
    modality: str
    inputs: np.ndarray
    scores: np.ndarray
    targets: np.ndarray | None
    runs: list[MethodRun]
    trust: TrustCard
    global_facts: GlobalFacts
    fingerprint: str | None
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    labels: np.ndarray | None = None
    tokens: list[list[str]] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    #: rows of the model's data (model inputs, tables only): what "high" and "low" mean
    reference: np.ndarray | None = None
    #: what would change the decision of the explained rows (table classifiers with data):
    #: a :class:`~unveil.counterfactual.Counterfactuals`, anchors per row, and a note
    counterfactuals: Any = None
    anchors: list[Any] = field(default_factory=list)
    recourse_note: str | None = None

    @property
    def explanations(self) -> dict[str, Explanation]:
        """The explanations that were computed, by method name."""
        return {r.method: r.explanation for r in self.runs if r.explanation is not None}

    def reproducibility(self) -> dict[str, Any]:
        """JSON facts to rerun this section: fingerprint, methods, parameters, seeds."""
        return {
            "model": self.model_name,
            "fingerprint": self.fingerprint,
            "input_shape": list(self.inputs.shape),
            **jsonable(_describe(self.settings)),
            "methods": {
                r.method: {"status": r.shown_status, "options": jsonable(_describe(r.options))}
                | ({"params": jsonable(r.explanation.params), "seed": r.explanation.seed}
                   if r.explanation is not None else {})
                for r in self.runs
            },
        }


def _describe(obj: Any) -> Any:
    """Options as facts: feature groups by kind, count and names (no arrays)."""
    from ..core.groups import FeatureGroups

    if isinstance(obj, FeatureGroups):
        return {"groups": obj.kind, "n_groups": obj.n_groups, "names": obj.names}
    if isinstance(obj, dict):
        return {k: _describe(v) for k, v in obj.items()}
    return obj


def versions() -> dict[str, str]:
    """Versions of Python, the platform and the libraries a result depends on."""
    import platform
    import sys
    from importlib import metadata

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in ("unveil", "torch", "numpy", "scikit-learn", "scipy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


@dataclass
class Report:
    """A finished report: ``.html`` is one self-contained page, ``.save(path)`` writes it."""

    sections: list[Section]
    title: str = "unveil report"
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S %z"))
    command: str | None = None
    versions: dict[str, str] = field(default_factory=versions)
    max_samples: int = 8

    @property
    def html(self) -> str:
        """The report as one HTML document (images embedded, no external resource)."""
        from .page import render_report

        return render_report(self)

    def save(self, path: str | Path) -> Path:
        """Write the HTML document to ``path`` (``.html`` is appended if missing)."""
        path = Path(path)
        if path.suffix.lower() not in (".html", ".htm"):
            path = path.with_name(path.name + ".html")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(self.html, encoding="utf-8")
        tmp.replace(path)
        return path

    @property
    def runs(self) -> list[tuple[str, MethodRun]]:
        """Every (model name, run) of the report."""
        return [(s.model_name, r) for s in self.sections for r in s.runs]

    @property
    def errors(self) -> list[tuple[str, str, str]]:
        """(model, method, message) of each method that failed."""
        return [(m, r.method, r.error) for m, r in self.runs if r.error]

    @property
    def explanations(self) -> dict[str, Explanation]:
        """Explanations by method (prefixed ``model/`` when the report has several models)."""
        many = len(self.sections) > 1
        return {(f"{s.model_name}/{k}" if many else k): e
                for s in self.sections for k, e in s.explanations.items()}

    def _repr_html_(self) -> str:
        return self.html


#: Errors by which a method says it cannot handle this model (architecture, missing extra).
NOT_APPLICABLE = ("ModelError", "LayerNotFoundError", "MissingExtraError", "NotDifferentiableError")


def skip_not_applicable(runs: Sequence[MethodRun]) -> None:
    """Turn runs that failed with a "does not apply to this model" error into skipped runs."""
    for r in runs:
        if r.error and r.error_type in NOT_APPLICABLE:
            r.skipped, r.error = f"does not apply to this model: {r.error}", None


# -- methods ------------------------------------------------------------------------------
def accepted_options(info: MethodInfo, options: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of ``options`` that the method declares (``seed`` only for a method that
    takes one; never ``target``, which the report gives itself)."""
    return {k: v for k, v in options.items()
            if k in info.options and k != "target" and (k != "seed" or info.takes_seed)}


def check_options(names: Sequence[str], options: Mapping[str, Mapping[str, Any]],
                  budget: Mapping[str, Any]) -> None:
    """Raise :class:`OptionError` before any work for an option a method does not declare or a
    value of the wrong type: per-method ``options`` against their method, ``budget`` options
    against every method of ``names`` that declares them (a budget option no registered
    method declares is a typo)."""
    if "target" in budget:
        raise OptionError("target= is an argument of the report, not a budget option")
    declared = {n for m in list_methods() for n in m.options.names()}
    for key in budget:
        if key not in declared:
            raise OptionError(f"no method takes the option {key!r}.{suggest(key, declared)} "
                              "uv.options(method) lists the options of a method")
    for name, opts in options.items():
        info = get_method(name)
        if not isinstance(opts, Mapping):
            raise OptionError(f"options of {name!r} should be a dict, got {type(opts).__name__}")
        info.options.check(opts)
        if "target" in opts:
            raise OptionError(f"{name!r}: target= is an argument of the report, not an option")
    for name in names:
        info = get_method(name)
        info.options.check(accepted_options(info, budget))


def skip_reason(info: MethodInfo, modality: str, model: Model) -> str | None:
    """Why ``info`` cannot explain ``model`` on inputs of ``modality`` (None if it can)."""
    if modality not in info.modalities:
        return f"made for {'/'.join(info.modalities)} inputs, not {modality}"
    if info.needs_gradients and not model.differentiable:
        return "needs gradients, and this model takes numpy arrays"
    if info.needs_module and model.module is None:
        return "needs a torch.nn.Module"
    return None


def preferred_order(modality: str, names: Sequence[str]) -> list[str]:
    """``names`` with the modality's preferred methods first (the rest in their order)."""
    ranks = {n: get_method(n).preferred_for.get(modality) for n in names}
    pref = sorted((n for n in names if ranks[n] is not None), key=lambda n: ranks[n] or 0)
    return pref + [n for n in names if n not in pref]


def default_methods(modality: str, model: Model, k: int = 3) -> list[str]:
    """Up to ``k`` registered methods that suit the modality: those declared preferred for it
    (``preferred_for``, by rank) first, then the others in registry order."""
    usable = [m for m in list_methods(modality) if skip_reason(m, modality, model) is None
              and not (m.needs_data(modality) and model.reference is None)]
    pref = sorted((m for m in usable if modality in m.preferred_for),
                  key=lambda m: m.preferred_for[modality])
    return [m.name for m in pref + [m for m in usable if modality not in m.preferred_for]][:k]


def run_method(
    info: MethodInfo, model: Model, x: torch.Tensor, target: TargetSpec, options: dict[str, Any]
) -> Explanation:
    """Construct the method with its declared constructor options and call it with the rest."""
    init, call = info.split_options(options)
    exp: Explanation = info.cls(model, **init)(x, target=target, **call)
    return exp


def _predict(model: Model, x: torch.Tensor) -> np.ndarray:
    with model.guard(), torch.inference_mode():
        out = model.forward(x)
    return np.asarray(out.detach().cpu().numpy(), dtype=np.float64)


def _asked_for(exc: Exception, retry: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    """The retry options a refusal names (``name=`` in its message) that were not given."""
    if not isinstance(exc, UnveilError):
        return {}
    return {k: v for k, v in retry.items() if f"{k}=" in str(exc) and k not in opts}


def _run_one(info: MethodInfo, model: Model, x: torch.Tensor, target: TargetSpec,
             opts: dict[str, Any], retry: dict[str, Any], on_error: str) -> MethodRun:
    t0 = time.perf_counter()
    try:
        try:
            exp = run_method(info, model, x, target, opts)
        except UnveilError as exc:
            extra = _asked_for(exc, retry, opts)
            if not extra:
                raise
            opts = {**opts, **extra}
            exp = run_method(info, model, x, target, opts)
    except Exception as exc:  # recorded (or re-raised): one method must not end the report
        if on_error == "raise":
            raise
        msg = str(exc).splitlines()[0] if str(exc) else ""
        kind = "" if isinstance(exc, UnveilError) else f"{type(exc).__name__}: "
        log.info("method %s failed: %s%s", info.name, kind, msg)
        return MethodRun(info.name, error=f"{kind}{msg}", seconds=time.perf_counter() - t0,
                         options=opts, error_type=type(exc).__name__)
    return MethodRun(info.name, exp, seconds=time.perf_counter() - t0, options=opts)


def _run_all(
    names: Sequence[str], model: Model, x: torch.Tensor, modality: str, *, target: TargetSpec,
    options: dict[str, dict[str, Any]], budget: dict[str, Any], retry: dict[str, Any],
    explicit: bool, on_error: str, progress: bool,
) -> list[MethodRun]:
    from tqdm.auto import tqdm

    runs: list[MethodRun] = []
    for name in tqdm(list(names), desc="methods", disable=None if progress else True, leave=False):
        info = get_method(name)
        reason = skip_reason(info, modality, model)
        if reason is not None:
            if explicit and on_error == "raise":
                raise OptionError(f"method {name!r} cannot explain this model: it {reason}")
            runs.append(MethodRun(name, skipped=reason))
            continue
        opts = {**accepted_options(info, budget), **options.get(name, {})}
        runs.append(_run_one(info, model, x, target, opts, retry, on_error))
    return runs


def build_section(
    model: Any,
    x: Any,
    methods: Sequence[str] | None = None,
    *,
    target: TargetSpec = "predicted",
    options: dict[str, dict[str, Any]] | None = None,
    budget: dict[str, Any] | None = None,
    seed: int | None = 0,
    class_names: Sequence[str] | None = None,
    feature_names: Sequence[str] | None = None,
    tokens: Sequence[Sequence[str]] | None = None,
    labels: Any = None,
    data: Any = None,
    data_units: tuple[Any, Callable[[Any], Any]] | None = None,
    model_name: str | None = None,
    description: str = "",
    evaluate: bool = True,
    checks: Sequence[str] = ("faithful",),
    metrics: Sequence[str] | None = None,
    sanity: bool | Sequence[str] = False,
    trust_options: dict[str, Any] | None = None,
    retry_options: dict[str, Any] | None = None,
    on_error: str = "raise",
    progress: bool = False,
    recourse: bool | Mapping[str, Any] | None = None,
) -> Section:
    """Explain ``x`` with each method and gather the facts of one report section.

    See :func:`report` for the parameters.
    """
    if on_error not in ("raise", "record"):
        raise OptionError(f"on_error must be 'raise' or 'record', got {on_error!r}")
    budget = {"seed": seed, **(budget or {})} if seed is not None else dict(budget or {})
    check_options(list(methods or ()), dict(options or {}), budget)  # before any work
    m = as_model(model)
    xt = m.prepare(x)
    scores = _predict(m, xt)
    modality = infer_modality(xt)
    if data is not None and m.reference is None and modality in ("tabular", "image"):
        m = m.with_data(data, feature_names=feature_names)
    names = list(methods) if methods is not None else default_methods(modality, m)
    if methods is None:
        check_options(names, {}, budget)
    retry = dict(retry_options or {})
    if data is not None and "background" not in retry:
        retry["background"] = m.prepare(data)[:64]  # for the methods that ask for one
    runs = _run_all(names, m, xt, modality, target=target, options=dict(options or {}),
                    budget=budget, retry=retry, explicit=methods is not None,
                    on_error=on_error, progress=progress)
    toks = [list(map(str, t)) for t in tokens] if tokens is not None else None
    for r in runs:
        if r.explanation is not None:
            e = r.explanation
            e.class_names = list(map(str, class_names)) if class_names is not None else e.class_names
            e.feature_names = list(map(str, feature_names)) if feature_names is not None else e.feature_names
            if toks is not None:
                e.meta = {**e.meta, "tokens": toks}
    first = next((r.explanation for r in runs if r.explanation is not None), None)
    targets = first.targets if first is not None else (
        None if scores.ndim == 1 else scores.argmax(1))
    trust = trust_card(m, xt, runs, evaluate=evaluate, checks=checks, metrics=metrics,
                       sanity=sanity, options=trust_options)
    cf, anchors, cf_note = _recourse(m, xt, scores, modality, data, recourse, feature_names, class_names,
                                     on_error)
    return Section(
        model_name=model_name or type(getattr(m, "obj", model)).__name__,
        description=description,
        modality=modality,
        inputs=xt.detach().cpu().numpy(),
        scores=scores,
        targets=None if targets is None else np.asarray(targets),
        runs=runs,
        trust=trust,
        global_facts=global_facts(m, runs, data=data, feature_names=feature_names,
                                  class_names=class_names, data_units=data_units),
        fingerprint=first.fingerprint if first is not None else m.fingerprint(),
        class_names=list(map(str, class_names)) if class_names is not None else None,
        feature_names=list(map(str, feature_names)) if feature_names is not None else None,
        labels=None if labels is None else np.asarray(labels).reshape(-1),
        tokens=toks,
        reference=_reference_rows(m, data, modality),
        settings={"target": target if isinstance(target, (str, int)) or target is None else "per-row",
                  "seed": seed, "budget": budget, "options": options or {}},
        counterfactuals=cf, anchors=anchors, recourse_note=cf_note,
    )


#: Explained rows given counterfactuals in a report (the page shows 8 by default).
RECOURSE_ROWS = 8


def _recourse(m: Model, xt: torch.Tensor, scores: np.ndarray, modality: str, data: Any,
              spec: bool | Mapping[str, Any] | None, feature_names: Sequence[str] | None,
              class_names: Sequence[str] | None, on_error: str) -> tuple[Any, list[Any], str | None]:
    """Counterfactuals of the first rows of a table classifier and the first row's anchor,
    with the model's data for scales and neighbours (``spec``: ``None`` = when they apply,
    ``False`` = never, ``True`` or options of :func:`unveil.counterfactual.counterfactuals`
    plus ``anchor=False`` to skip the anchor). What cannot be done is said in the note."""
    if spec is False or modality != "tabular" or xt.ndim != 2:
        return None, [], None
    asked = spec is not None
    opts = dict(spec) if isinstance(spec, Mapping) else {}
    with_anchor = bool(opts.pop("anchor", True))
    if data is None:
        return None, [], ("What would change the decision needs the model's data (data=): the "
                          "scale of each column and the values it takes." if asked else None)
    k = 1 if scores.ndim == 1 else int(scores.shape[1])
    if "desired" not in opts and ((k == 1 and "threshold" not in opts) or k > 2):
        why = ("the model has one score per row: pass recourse={'threshold': T}" if k == 1 else
               f"the model has {k} classes: pass recourse={{'desired': CLASS}}, the class to reach")
        return None, [], f"No counterfactuals: {why}." if asked else None
    from ..counterfactual import anchor, counterfactuals

    rows = xt[:RECOURSE_ROWS].detach().cpu().numpy().astype(np.float64)
    try:
        D = m.prepare(data).detach().cpu().numpy().astype(np.float64)
        opts.setdefault("n_counterfactuals", 2)
        cf = counterfactuals(m, rows, data=D, feature_names=feature_names, class_names=class_names, **opts)
        anchors = ([anchor(m, rows[0], data=D, feature_names=cf.feature_names, class_names=class_names,
                           model_threshold=opts.get("threshold"), value_names=opts.get("value_names"),
                           budget=4000, seed=int(opts.get("seed", 0)))] if with_anchor else [])
    except Exception as exc:  # recorded: the explanations stand without it
        if asked and on_error == "raise":
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.info("counterfactuals failed: %s", msg)
        return None, [], f"No counterfactuals: {msg}"
    more = xt.shape[0] - rows.shape[0]
    note = (f"Counterfactuals of the first {rows.shape[0]} rows; {more} more rows were explained."
            if more > 0 else None)
    return cf, anchors, note


def _reference_rows(m: Model, data: Any, modality: str, limit: int = 2000) -> np.ndarray | None:
    """Up to ``limit`` rows of ``data`` as the model sees them (tables only; None otherwise)."""
    if data is None or modality != "tabular":
        return None
    try:
        rows = m.prepare(data)[:limit].detach().cpu().numpy().astype(np.float64)
    except (UnveilError, TypeError, ValueError):
        return None
    return rows if rows.ndim == 2 else None


def report(
    model: Any,
    x: Any,
    methods: Sequence[str] | None = None,
    *,
    title: str = "unveil report",
    max_samples: int = 8,
    **kwargs: Any,
) -> Report:
    """Explain a batch with several methods and gather everything into one HTML report.

    Parameters
    ----------
    model
        A ``torch.nn.Module`` or any model :class:`unveil.Model` accepts.
    x : array-like
        The batch to explain: images (N, C, H, W), tables (N, F) or token ids (N, T).
    methods : list of str, optional
        Registry names; by default up to three methods that suit the inputs.
    title : str
        Heading of the page.
    max_samples : int
        Inputs shown in the page (all of ``x`` is explained).
    target : int, sequence or "predicted"
        The class explained (default: the predicted one).
    options : dict, optional
        Per-method options, e.g. ``{"integrated_gradients": {"n_steps": 32}}``; an option the
        method does not declare (see :func:`unveil.options`) raises
        :class:`~unveil.errors.OptionError` before any work.
    budget : dict, optional
        Options applied to every method that declares them (``n_steps``, ``n_samples``...);
        one that no registered method declares raises :class:`~unveil.errors.OptionError`.
    seed : int or None
        Passed to every method that takes a seed (default 0), for reproducible reports.
    class_names, feature_names, tokens, labels
        Names to show; ``tokens`` one list of strings per row; ``labels`` the true classes.
    data : array-like, optional
        Rows of the data the model works on: for the global section (a surrogate of the model,
        when available), and up to 64 of them as ``background=`` for the methods that ask.
    data_units : (rows, preprocess), optional
        The same kind of rows in the data set's own units, and the function that turns them
        into model inputs (e.g. raw columns and a standardisation): the surrogate's rules are
        then read in those units ("worst radius > 16.8").
    evaluate : bool
        Fill the trust card from :mod:`unveil.metrics` when it is installed (False: only the
        agreement between methods, which needs no extra model evaluation).
    checks : list of str
        Checks of :func:`unveil.metrics.trust_card` run for every method (default
        ``("faithful",)``: deletion and insertion against a random order).
    metrics : list of str, optional
        Extra metrics for :func:`unveil.metrics.evaluate` (e.g. ``["sparseness"]``).
    sanity : bool or list of str
        Run the model-randomisation sanity check on the gradient methods (True) or on the
        methods named.
    trust_options : dict, optional
        Options of :func:`unveil.metrics.trust_card` (``n_steps``, ``seed`` ...).
    retry_options : dict, optional
        Options for a second attempt of a method whose refusal names one of them (its message
        says ``name=``), e.g. ``{"background": X_train[:16]}`` for the methods that need one;
        other methods run without them.
    on_error : {"raise", "record"}
        Whether a failing method stops the report or is shown in it as failed.
    progress : bool
        Show a progress bar over the methods.
    recourse : bool or dict, optional
        "What would change the decision" for a table classifier given ``data``: the smallest
        changes of the first 8 rows that give another decision
        (:func:`unveil.counterfactual.counterfactuals`) and a rule that keeps the first row's
        (an anchor). Default: when they apply (two classes, or ``desired=`` given); ``False``
        never; a dict gives the search's options (``constraints``, ``n_counterfactuals``,
        ``desired``, ``threshold``, ``value_names`` ...) and ``anchor=False`` skips the anchor.

    Returns
    -------
    Report
        ``.html`` holds the page, ``.save(path)`` writes it, ``.explanations`` the results.
    """
    return Report([build_section(model, x, methods, **kwargs)], title=title, max_samples=max_samples)
