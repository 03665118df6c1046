"""The ``unveil`` command: ``explain | evaluate | report | distill | audit | counterfactual |
influence | tcav | concepts | generate | lens | patch | heads | serve | methods | demo``.

A thin layer: it parses arguments, loads models and inputs (:mod:`unveil.frontends`), calls the
library and prints. User errors print one line on stderr and exit with status 1 (2 for usage
errors), without a traceback; ``--debug`` shows it.
"""

from __future__ import annotations

import errno
import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import click

from . import frontends
from .errors import MissingExtraError, OptionError, UnveilError
from .frontends import LoadedModel, Wording
from .version import __version__

__all__ = ["cli", "main"]

#: How the loaders' messages name their settings here: by this command's flags.
FLAGS = Wording(cli=True, flags={"sources": "--input", "texts": "--text", "options": "--option"})
load_model = partial(frontends.load_model, wording=FLAGS)
load_inputs = partial(frontends.load_inputs, wording=FLAGS)
load_table = partial(frontends.load_table, wording=FLAGS)
parse_option = partial(frontends.parse_option, wording=FLAGS)
parse_target = partial(frontends.parse_target, wording=FLAGS)

F = TypeVar("F", bound=Callable[..., Any])
_DEBUG = False


def _echo_json(obj: Any) -> None:
    from .core.explanation import jsonable

    click.echo(json.dumps(jsonable(obj), indent=2))


def _model_options(f: F) -> F:
    f = click.option("--allow-pickle", is_flag=True,
                     help="Allow pickle-based model or weight files (only for files you trust).")(f)
    f = click.option("--weights", type=click.Path(dir_okay=False),
                     help="Weights for the model (.safetensors).")(f)
    return click.option("--model", "-m", "model_spec", required=True, metavar="SPEC",
                        help="zoo:NAME or package.module:factory.")(f)


def _input_options(f: F) -> F:
    f = click.option("--size", metavar="H,W", help="Resize image inputs to H,W pixels.")(f)
    f = click.option("--rows", metavar="A:B|I,J", help="Select rows of the inputs.")(f)
    f = click.option("--text", "texts", multiple=True, help="A text to explain (repeatable).")(f)
    return click.option("--input", "-i", "inputs", multiple=True, metavar="PATH",
                        help="Image, .csv, .npy or .txt file, or zoo:NAME (repeatable).")(f)


def _load(model_spec: str, weights: str | None, allow_pickle: bool, inputs: Sequence[str],
          texts: Sequence[str], rows: str | None, size: str | None) -> tuple[LoadedModel, Any]:
    hw = None
    if size:
        try:
            h, w = (int(s) for s in size.split(","))
            hw = (h, w)
        except ValueError:
            raise click.BadParameter(f"expected H,W, got {size!r}", param_hint="--size") from None
    loaded = load_model(model_spec, weights=weights, allow_pickle=allow_pickle)
    return loaded, load_inputs(inputs, loaded, texts=texts, rows=rows, size=hw)


def _quiet_option(f: F) -> F:
    return click.option("--quiet", "-q", is_flag=True,
                        help="No progress bars (they show only when stderr is a terminal).")(f)


def _show_progress(quiet: bool, as_json: bool = False) -> bool:
    """Progress bars on stderr: not with --quiet or --json, and only on a terminal."""
    return not quiet and not as_json and sys.stderr.isatty()


@contextmanager
def _evaluations_bar(model: Any, show: bool, desc: str) -> Iterator[Any]:
    """``model`` as an :class:`unveil.Model` whose evaluations advance a progress bar (rows of
    the model evaluated so far; the total is not known beforehand); the model as it is when
    ``show`` is false."""
    if not show:
        yield model
        return
    from tqdm.auto import tqdm

    from .core.model import as_model

    m = as_model(model)
    bar = tqdm(desc=desc, unit=" model rows", unit_scale=True, leave=False, file=sys.stderr)
    saved, m.on_evaluate = m.on_evaluate, bar.update
    try:
        yield m
    finally:
        m.on_evaluate = saved
        bar.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="unveil")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
def cli(verbose: int, debug: bool) -> None:
    """Explain what a neural network decided, check the explanation, and show it."""
    global _DEBUG
    _DEBUG = debug
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="unveil: %(levelname)s: %(message)s", stream=sys.stderr)
    warnings.showwarning = _show_warning


@cli.command("methods")
@click.option("--modality", type=click.Choice(["image", "tabular", "text", "sequence"]))
@click.option("--options", "options_of", metavar="NAME",
              help="Show the options one method takes (type, default, range, meaning).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def methods_cmd(modality: str | None, options_of: str | None, as_json: bool) -> None:
    """List the registered explanation methods, or the options of one."""
    from .core.explain import methods
    from .core.registry import options

    if options_of is not None:
        table = options(options_of)
        if as_json:
            _echo_json([o.as_dict() for o in table])
        else:
            click.echo(repr(table))
        return
    infos = methods(modality)
    if as_json:
        _echo_json([m.as_dict() for m in infos])
        return
    click.echo(f"{'name':<24} {'family':<12} {'gradients':<9}  {'modalities':<28} summary")
    for m in infos:
        click.echo(f"{m.name:<24} {m.family:<12} {'yes' if m.needs_gradients else 'no':<9}  "
                   f"{','.join(m.modalities):<28} {m.summary}")


def _sample_lines(exp: Any, top: int = 5) -> list[dict[str, Any]]:
    from .core.reference import describe_outside
    from .report.facts import class_name, method_facts
    from .report.render import display_kind, feature_table

    out = []
    for i in range(len(exp)):
        d: dict[str, Any] = {"index": i}
        if exp.targets is not None:
            d["target"] = int(exp.targets[i])
            d["target_name"] = class_name(int(exp.targets[i]), exp.class_names)
        if exp.outputs is not None:
            d["score"] = float(exp.outputs[i])
        outside = describe_outside(exp.quality.get("in_distribution", {}), i)
        if outside:
            d["warning"] = outside
        if display_kind(exp) == "table":
            d["top"] = [{"feature": r.name, "attribution": r.attribution}
                        for r in feature_table(exp, i, top_k=top)]
        else:
            f = method_facts(exp, i, exp.method)
            d.update({k: v for k, v in (("region", f.region), ("concentration", f.concentration),
                                        ("top", f.top_abs or None)) if v is not None})
        out.append(d)
    return out


def _print_samples(lines: list[dict[str, Any]]) -> None:
    for d in lines:
        head = f"input {d['index']}"
        if "target_name" in d:
            head += f" · {d['target_name']}"
        if "score" in d:
            head += f" (score {d['score']:.3g})"
        top = d.get("top")
        if top and isinstance(top[0], dict):
            body = ", ".join(f"{t['feature']} {t['attribution']:+.3g}" for t in top)
        elif top:
            body = ", ".join(map(str, top))
        elif "region" in d:
            body = f"evidence mainly in {d['region']}"
            if "concentration" in d:
                body += f" (top 10% of pixels hold {100 * d['concentration']:.0f}%)"
        else:
            body = "no attribution"
        click.echo(f"{head}: {body}")
        if "warning" in d:
            click.echo(f"  ! {d['warning']}")


def _decorate(exp: Any, loaded: LoadedModel, data: Any) -> None:
    exp.class_names = exp.class_names or loaded.class_names
    exp.feature_names = exp.feature_names or data.feature_names
    if data.tokens is not None:
        exp.meta = {**exp.meta, "tokens": data.tokens}


def _refuse_file_options(items: Sequence[str], flag: str = "--background") -> None:
    """``-o background=rows.csv`` points to the flag that reads rows from a file (an option's
    value is read as a number or a name, never as a file)."""
    for item in items:
        key = item.partition("=")[0].strip().rpartition(".")[2]
        if key == "background":
            raise OptionError(f"-o {key}= takes no file; give the rows with {flag} PATH (.csv, "
                              ".npy or zoo:NAME)")


def _check_out(out: str | None, suffixes: tuple[str, ...]) -> None:
    if out is not None and Path(out).suffix.lower() not in suffixes:
        raise click.BadParameter(f"must end in {' or '.join(suffixes)}, got {out!r}",
                                 param_hint="--out")


def _write(exp: Any, out: str | None, title: str) -> Path | None:
    if out is None:
        return None
    path = Path(out)
    if path.suffix.lower() in (".html", ".htm"):
        from .report.html import document, explanation_html

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(document(explanation_html(exp, max_samples=32), title), encoding="utf-8")
        return path
    if path.suffix.lower() != ".npz":
        raise click.BadParameter(f"must end in .npz or .html, got {out!r}", param_hint="--out")
    return Path(exp.save(path))


@cli.command("explain")
@_model_options
@_input_options
@click.option("--method", default="integrated_gradients", show_default=True, help="Registry name.")
@click.option("--target", help="predicted (default), a class index or name, or i,j,... per row.")
@click.option("--option", "-o", "options", multiple=True, metavar="NAME=VALUE",
              help="A method option, e.g. -o n_steps=32 (repeatable).")
@click.option("--background", "background_path", metavar="PATH",
              help="Rows the method averages over or draws replacements from (.csv/.npy, or "
                   "zoo:NAME for its training rows), for LIME, SHAP and other methods that take "
                   "background=.")
@click.option("--out", help="Write the Explanation (.npz) or an HTML page (.html).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_quiet_option
def explain_cmd(model_spec: str, weights: str | None, allow_pickle: bool, inputs: tuple[str, ...],
                texts: tuple[str, ...], rows: str | None, size: str | None, method: str,
                target: str | None, options: tuple[str, ...], background_path: str | None,
                out: str | None, as_json: bool, quiet: bool) -> None:
    """Explain a model's decisions on some inputs with one method."""
    from .core.explain import explain
    from .core.registry import get_method

    _check_out(out, (".npz", ".html", ".htm"))
    info = get_method(method)
    _refuse_file_options(options)
    opts = parse_option(options, info.options)
    if "target" in opts:
        raise OptionError("the target is given with --target, not -o target=")
    if background_path is not None and "background" not in info.options.by_name:
        raise OptionError(f"{method!r} takes no background rows, so --background does not apply; "
                          "methods that do: kernel_shap, lime, gradient_shap, deeplift_shap ...")
    info.split_options(opts)  # an unknown or ill-typed option fails before the model loads
    loaded, data = _load(model_spec, weights, allow_pickle, inputs, texts, rows, size)
    if background_path is not None:
        opts["background"] = _training_rows(loaded, background_path)
    elif (info.needs_data("tabular") and data.x.ndim == 2 and data.x.is_floating_point()
          and loaded.reference is None and "baseline" not in opts):
        raise OptionError(f"{method!r} on a table needs rows of real data to stand for an absent "
                          "feature: pass --background train.csv (or .npy, or zoo:NAME), or "
                          "-o baseline=VALUE; zeros are rarely neutral in a table's own units")
    with _evaluations_bar(loaded.with_data(opts.get("background"), data.feature_names),
                          _show_progress(quiet, as_json),
                          method) as model:
        names = {"feature_names": data.feature_names} if data.feature_names else {}
        exp = explain(model, data.x, method=method,
                      target=parse_target(target, loaded.class_names), **{**names, **opts})
    _decorate(exp, loaded, data)
    path = _write(exp, out, f"{method} · {loaded.name}")
    lines = _sample_lines(exp)
    if as_json:
        summary = exp.summary()
        values = exp.values.tolist() if exp.values.size <= 100_000 else None
        _echo_json({**summary, "samples": lines, "values": values, "out": str(path) if path else None})
        return
    _print_samples(lines)
    click.echo(f"{method}: {len(exp)} inputs, {exp.n_evals} model evaluations, "
               f"{sum(exp.timings.values()):.2f} s")
    if path is not None:
        click.echo(f"wrote {path}")


def _metrics_evaluate() -> Callable[..., Any]:
    try:
        from .metrics import evaluate
    except ImportError as exc:
        raise MissingExtraError("unveil.metrics is not available in this installation") from exc
    fn: Callable[..., Any] = evaluate
    return fn


@cli.command("evaluate")
@_model_options
@click.option("--explanation", "-e", "exp_path", type=click.Path(dir_okay=False),
              help="An Explanation .npz (from `unveil explain --out`); its inputs are used.")
@_input_options
@click.option("--method", default="integrated_gradients", show_default=True,
              help="Method to explain with when no --explanation is given.")
@click.option("--metric", "metric_names", multiple=True, help="Metric name (repeatable).")
@click.option("--out", help="Write the Explanation with its quality figures (.npz).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def evaluate_cmd(model_spec: str, weights: str | None, allow_pickle: bool, exp_path: str | None,
                 inputs: tuple[str, ...], texts: tuple[str, ...], rows: str | None,
                 size: str | None, method: str, metric_names: tuple[str, ...], out: str | None,
                 as_json: bool) -> None:
    """Measure the quality of an explanation (faithfulness and other metrics)."""
    from .core.explanation import load
    from .report.trust import figures

    _check_out(out, (".npz",))
    evaluate = _metrics_evaluate()
    if exp_path is not None:
        loaded = load_model(model_spec, weights=weights, allow_pickle=allow_pickle)
        if not Path(exp_path).is_file():
            raise FileNotFoundError(2, "no such explanation file", exp_path)
        exp = load(exp_path)
    else:
        from .core.explain import explain

        loaded, data = _load(model_spec, weights, allow_pickle, inputs, texts, rows, size)
        exp = explain(loaded.model, data.x, method=method)
    kw = {"metrics": list(metric_names)} if metric_names else {}
    evaluate(loaded.model, exp, **kw)
    figs = figures(exp.quality)
    path = _write(exp, out, "evaluation") if out else None
    if as_json:
        _echo_json({"method": exp.method, "quality": exp.quality, "figures": figs,
                    "out": str(path) if path else None})
        return
    for k, v in figs.items():
        click.echo(f"{k:<32} {v:.4g}")
    if path is not None:
        click.echo(f"wrote {path}")


def _training_rows(loaded: LoadedModel, path: str | None) -> Any:
    if (path is not None and path.startswith("zoo:")) or (path is None and loaded.zoo):
        from .zoo import load_dataset

        return load_dataset(path[4:] if path else str(loaded.zoo)).X_train
    if path is None:
        return None
    return load_inputs([path], loaded).x


def _report_section(build_section: Callable[..., Any], model: Any, data: Any, loaded: LoadedModel,
                    train: Any, method_names: Sequence[str], target: str | None,
                    per_method: dict[str, dict[str, Any]], budget: dict[str, Any],
                    metric_names: Sequence[str], no_evaluate: bool, sanity: bool,
                    progress: bool) -> Any:
    return build_section(
        model, data.x, list(method_names) or None, data=train,
        target=parse_target(target, loaded.class_names), options=per_method, budget=budget,
        class_names=loaded.class_names, feature_names=data.feature_names, tokens=data.tokens,
        labels=data.labels, model_name=loaded.name, description=loaded.description,
        evaluate=not no_evaluate, sanity=sanity, metrics=list(metric_names) or None,
        progress=progress,
    )


@cli.command("report")
@_model_options
@_input_options
@click.option("--method", "method_names", multiple=True, help="Registry name (repeatable).")
@click.option("--target", help="predicted (default), a class index or name.")
@click.option("--option", "-o", "options", multiple=True, metavar="[METHOD.]NAME=VALUE",
              help="An option for one method (method.name=value) or all that take it.")
@click.option("--out", default="report.html", show_default=True, help="The HTML file to write.")
@click.option("--title", default="unveil report", show_default=True)
@click.option("--sanity", is_flag=True, help="Run the sanity check of the gradient methods.")
@click.option("--metric", "metric_names", multiple=True, help="Extra metric (repeatable).")
@click.option("--data", "data_path", metavar="PATH",
              help="Training rows (.csv/.npy, or zoo:NAME) for the surrogate and for methods "
                   "that need a background set (default for zoo models: their training split).")
@click.option("--no-evaluate", is_flag=True, help="Skip the faithfulness figures.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_quiet_option
def report_cmd(model_spec: str, weights: str | None, allow_pickle: bool, inputs: tuple[str, ...],
               texts: tuple[str, ...], rows: str | None, size: str | None,
               method_names: tuple[str, ...], target: str | None, options: tuple[str, ...],
               out: str, title: str, sanity: bool, metric_names: tuple[str, ...],
               data_path: str | None, no_evaluate: bool, as_json: bool, quiet: bool) -> None:
    """Write one self-contained HTML report comparing several methods."""
    from .report import Report, build_section, check_options

    _refuse_file_options(options, "--data")
    budget, per_method = _report_options(options, method_names)
    check_options(list(method_names), per_method, budget)  # before the model loads
    loaded, data = _load(model_spec, weights, allow_pickle, inputs, texts, rows, size)
    train = _training_rows(loaded, data_path)
    show = _show_progress(quiet, as_json)
    with _evaluations_bar(loaded.with_data(train, data.feature_names), show, "report") as model:
        section = _report_section(build_section, model, data, loaded, train, method_names, target,
                                  per_method, budget, metric_names, no_evaluate, sanity, show)
    rep = Report([section], title=title, command="unveil " + " ".join(sys.argv[1:]))
    path = rep.save(out)
    if as_json:
        _echo_json({"out": str(path), "methods": [
            {"method": r.method, "status": r.shown_status, "seconds": r.seconds, "n_evals": r.n_evals,
             "note": r.error or r.skipped} for r in section.runs]})
        return
    click.echo(f"wrote {path}")


def _report_options(items: Sequence[str], methods: Sequence[str]
                    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``-o method.name=value`` for one method and ``-o name=value`` for every method that
    declares it, each value read by the type that method declares. With ``methods`` named, an
    unscoped option becomes an option of each of them that declares it (``-o layer=3`` is then
    a name for a CAM and an index for raw attention); otherwise, or when none of them declares
    it, it stays a budget option read by the first declaration it fits."""
    from .core.registry import get_method, list_methods
    from .frontends.option_text import read_option, split_item
    from .report import accepted_options

    budget: dict[str, Any] = {}
    per_method: dict[str, dict[str, Any]] = {}
    parsed = [split_item(item, scoped=True) for item in items]
    for scope, key, text in parsed:
        takers = [get_method(m) for m in dict.fromkeys(methods)] if scope is None else []
        takers = [info for info in takers if accepted_options(info, {key: text})]
        for info in takers:
            per_method.setdefault(info.name, {})[key] = read_option(text, [info.options[key]])
        if scope is None and not takers:
            budget[key] = read_option(text, [m.options[key] for m in list_methods()
                                             if key in m.options])
    for scope, key, text in parsed:  # an option for one method wins over one for all
        if scope is not None:
            opt = get_method(scope).options.by_name.get(key)
            per_method.setdefault(scope, {})[key] = read_option(text, [opt] if opt else [])
    return budget, per_method


def _table_options(f: F) -> F:
    f = click.option("--label-column", metavar="NAME|INDEX",
                     help="A column of the rows holding the true labels (taken out of the inputs).")(f)
    f = click.option("--rows", metavar="A:B|I,J", help="Select rows.")(f)
    return click.option("--input", "-i", "inputs", multiple=True, metavar="PATH",
                        help="Rows: .csv, .npy or zoo:NAME (repeatable; default for zoo models: "
                             "all rows of their data set).")(f)


def _write_json(out: str | None, obj: Any) -> Path | None:
    if out is None:
        return None
    from .core.explanation import jsonable

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(obj), indent=2), encoding="utf-8")
    return path


@cli.command("distill")
@_model_options
@_table_options
@click.option("--kind", type=click.Choice(["tree", "rules", "linear"]), default="tree", show_default=True,
              help="A decision tree, a rule list, or a sparse linear model.")
@click.option("--max-depth", type=click.IntRange(1, 32), default=4, show_default=True,
              help="Depth of the tree (tree, rules).")
@click.option("--max-features", type=click.IntRange(1), help="Largest number of columns (linear).")
@click.option("--threshold", type=float, help="For a model with one score per row: class = score > T.")
@click.option("--curve", is_flag=True, help="Also print held-out fidelity for growing sizes.")
@click.option("--augment", default="0", show_default=True, metavar="auto|N",
              help="Synthetic rows near the data, labelled by the model, to fit on (never to measure).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", help="Write the surrogate's rules or weights and figures (.json).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_quiet_option
def distill_cmd(model_spec: str, weights: str | None, allow_pickle: bool, inputs: tuple[str, ...],
                rows: str | None, label_column: str | None, kind: str, max_depth: int,
                max_features: int | None, threshold: float | None, curve: bool, augment: str,
                seed: int, out: str | None, as_json: bool, quiet: bool) -> None:
    """Fit a small tree, rule list or linear model that mimics the model, with its fidelity."""
    from .surrogate import distill

    _check_out(out, (".json",))
    if augment != "auto" and not augment.isdigit():
        raise click.BadParameter(f"expected auto or a number of rows, got {augment!r}", param_hint="--augment")
    loaded = load_model(model_spec, weights=weights, allow_pickle=allow_pickle)
    table = load_table(inputs, loaded, rows=rows, label_column=label_column)
    kw: dict[str, Any] = {"y": table.labels, "feature_names": table.feature_names,
                          "class_names": loaded.class_names, "threshold": threshold, "seed": seed,
                          "augment": augment if augment == "auto" else int(augment),
                          "preprocess": table.preprocess}
    with _evaluations_bar(loaded.model, _show_progress(quiet, as_json), "distill") as model:
        sur = distill(model, table.X, kind=kind, max_depth=max_depth,  # type: ignore[arg-type]
                      max_features=max_features, **kw)
        result: dict[str, Any] = sur.to_dict()
        if curve:
            result["curve"] = sur.curve().to_dict()  # the model's answers are reused
    path = _write_json(out, result)
    if as_json:
        _echo_json({**result, "out": str(path) if path else None})
        return
    click.echo(sur.describe())
    if curve:
        c = result["curve"]
        click.echo(f"\n{c['parameter']:>12} {c['complexity_unit']:>18} {'fidelity':>9}"
                   + (f" {'accuracy':>9}" if c["accuracy"] else ""))
        for k, v in enumerate(c["values"]):
            acc = f" {c['accuracy'][k]:>9.3f}" if c["accuracy"] else ""
            click.echo(f"{v:>12} {c['complexity'][k]:>18} {c['fidelity'][k]:>9.3f}{acc}")
    if path is not None:
        click.echo(f"wrote {path}")


@cli.command("audit")
@_model_options
@_table_options
@click.option("--sensitive", required=True, metavar="NAME|INDEX",
              help="The sensitive column (a header name or a column index).")
@click.option("--positive", default="1", show_default=True,
              help="The favourable class (an output index or a class name).")
@click.option("--threshold", type=float, help="For a model with one score per row: class = score > T.")
@click.option("--attribution", type=click.Choice(["shapley", "permutation"]), default="shapley",
              show_default=True, help="How each column's share of the decision is measured.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fail-on", type=click.Choice(["fail", "review"]),
              help="Exit with status 3 when the verdict is this or worse (for pipelines).")
@click.option("--out", help="Write the audit: a page for reviewers (.html) or every figure (.json).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_quiet_option
@click.pass_context
def audit_cmd(ctx: click.Context, model_spec: str, weights: str | None, allow_pickle: bool,
              inputs: tuple[str, ...], rows: str | None, label_column: str | None, sensitive: str,
              positive: str, threshold: float | None, attribution: str, seed: int,
              fail_on: str | None, out: str | None, as_json: bool, quiet: bool) -> None:
    """Audit a classifier for reliance on a sensitive column and its proxies."""
    from .audit import bias_audit

    _check_out(out, (".json", ".html", ".htm"))
    loaded = load_model(model_spec, weights=weights, allow_pickle=allow_pickle)
    table = load_table(inputs, loaded, rows=rows, label_column=label_column)
    names = table.feature_names
    col: Any = sensitive
    if (names is None or sensitive not in names) and sensitive.lstrip("-").isdigit():
        col = int(sensitive)
    pos: Any = positive
    if positive.lstrip("-").isdigit():
        pos = int(positive)
    elif loaded.class_names and positive in loaded.class_names:
        pos = loaded.class_names.index(positive)
    elif not hasattr(loaded.model, "classes_"):  # a scikit-learn classifier maps its own labels
        raise OptionError(f"--positive {positive!r} is neither an output index nor a class name "
                          f"(class names: {', '.join(loaded.class_names or []) or 'none known'})")
    with _evaluations_bar(loaded.model, _show_progress(quiet, as_json), "audit") as model:
        res = bias_audit(model, table.X, sensitive=col, y=table.labels, feature_names=names,
                         positive=pos, threshold=threshold, attribution=attribution, seed=seed,
                         preprocess=table.preprocess, class_names=loaded.class_names)
    path = res.save(out) if out else None
    if as_json:
        _echo_json({**res.to_dict(), "out": str(path) if path else None})
    else:
        click.echo(res.summary())
        if path is not None:
            click.echo(f"wrote {path}")
    order = {"pass": 0, "review": 1, "fail": 2}
    if fail_on is not None and order[res.verdict] >= order[fail_on]:
        ctx.exit(3)


def _constraint_pairs(items: Sequence[str], flag: str) -> dict[str | int, tuple[float | None, float | None]]:
    """``NAME=LOW:HIGH`` (either side may be empty) -> ``{NAME: (low, high)}``."""
    out: dict[str | int, tuple[float | None, float | None]] = {}
    for item in items:
        name, sep, rng = item.partition("=")
        lo, colon, hi = rng.partition(":")
        try:
            if not sep or not colon:
                raise ValueError
            out[name] = (float(lo) if lo else None, float(hi) if hi else None)
        except ValueError:
            raise click.BadParameter(f"expected NAME=LOW:HIGH (a side may be empty), got {item!r}",
                                     param_hint=flag) from None
    return out


def _counterfactual_table(inputs: Sequence[str], loaded: LoadedModel, rows: str | None,
                          label_column: str | None, data_path: str | None, feature_names: str | None,
                          class_names: str | None, preprocess: str | None) -> dict[str, Any]:
    """The rows to explain and the data, in the table's own units, read as ``unveil serve``
    reads its ``--data`` (text columns coded with their words kept, ``--preprocess`` to the
    model's inputs, ``--feature-names`` the model's columns with the others kept aside)."""
    from .frontends.tables import DATA_SUFFIXES, read_data_file, split_names

    one_file = len(inputs) == 1 and Path(inputs[0]).suffix.lower() in DATA_SUFFIXES
    if not one_file:
        for flag, value in (("--preprocess", preprocess), ("--feature-names", feature_names)):
            if value is not None:
                raise click.BadParameter("works on one table file given with --input (.csv, .tsv, .npy, "
                                         ".parquet)", param_hint=flag)
        table = load_table(inputs, loaded, rows=rows, label_column=label_column)
        data = load_table((data_path,) if data_path else inputs, loaded, label_column=label_column).X
        return {"X": table.X, "data": data, "names": table.feature_names, "preprocess": None, "words": {},
                "aside": [], "class_names": split_names(class_names) or loaded.class_names}
    from .serve import ServedModel

    wording = replace(FLAGS, flags={**FLAGS.flags, "data": "--input"})
    pre = None if preprocess is None else frontends.load_object(preprocess, "preprocess", wording=FLAGS)
    p = ServedModel(loaded, data=inputs[0], feature_names=feature_names, class_names=class_names,
                    label_column=label_column, preprocess=pre).prepared(loaded.name, wording)
    t = p.table
    assert t is not None  # a table file always makes one
    X = t.X if not rows else t.X[frontends.parse_rows(rows, t.X.shape[0], wording=FLAGS)]
    data = t.X
    if data_path:
        known = getattr(pre, "categories", None)
        d = read_data_file(data_path, label_column=label_column, names=t.names,
                           known={**(known if isinstance(known, dict) else {}), **t.categories}, wording=FLAGS)
        missing = [n for n in t.names if n not in d.names]
        if missing:
            raise click.BadParameter(f"lacks the columns {', '.join(missing)} of --input; its columns are "
                                     f"{', '.join(d.names)}", param_hint="--data")
        data = d.X[:, [d.names.index(n) for n in t.names]]
    return {"X": X, "data": data, "names": t.names, "preprocess": p.preprocess, "words": t.categories,
            "aside": p.kept_aside or [], "class_names": p.class_names}


@cli.command("counterfactual")
@_model_options
@_table_options
@click.option("--data", "data_path", metavar="PATH",
              help="Rows the model knows (.csv/.npy): column scales, allowed values, neighbours "
                   "(default: every row of --input).")
@click.option("--feature-names", metavar="A,B,...",
              help="The model's input columns among the table's (the others are kept aside and fixed), or "
                   "the names of a file without a header; as unveil serve takes them.")
@click.option("--class-names", metavar="A,B,...", help="Names of the model's classes, in output order.")
@click.option("--preprocess", metavar="package.module:object",
              help="A function of the table's rows (text columns coded 0, 1, … in the order of its "
                   ".categories, else sorted) returning the model's inputs, as serve and audit take.")
@click.option("--desired", help="The class to reach (index or class name; default: the other of two).")
@click.option("--immutable", multiple=True, metavar="NAME", help="A column that never changes (repeatable).")
@click.option("--increasing", multiple=True, metavar="NAME", help="A column that may only go up (repeatable).")
@click.option("--decreasing", multiple=True, metavar="NAME", help="A column that may only go down (repeatable).")
@click.option("--range", "ranges", multiple=True, metavar="NAME=LOW:HIGH", help="Allowed values of a column.")
@click.option("--integer", multiple=True, metavar="NAME", help="A column of whole numbers (repeatable).")
@click.option("--categorical", multiple=True, metavar="NAME",
              help="A column whose values come from those seen in the data (repeatable; text columns "
                   "always are).")
@click.option("--n-counterfactuals", "-k", type=click.IntRange(1, 50), default=1, show_default=True,
              help="Diverse counterfactuals per row.")
@click.option("--method", type=click.Choice(["auto", "gradient", "spheres"]), default="auto", show_default=True)
@click.option("--threshold", type=float, help="For a model with one score per row: class = score > T.")
@click.option("--anchor", "with_anchor", is_flag=True, help="Also find each row's anchor (a rule that keeps "
                                                             "the decision).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", help="Write the result: a page (.html), every figure (.json) or arrays (.npz).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_quiet_option
def counterfactual_cmd(model_spec: str, weights: str | None, allow_pickle: bool, inputs: tuple[str, ...],
                       rows: str | None, label_column: str | None, data_path: str | None,
                       feature_names: str | None, class_names: str | None, preprocess: str | None,
                       desired: str | None, immutable: tuple[str, ...], increasing: tuple[str, ...],
                       decreasing: tuple[str, ...], ranges: tuple[str, ...], integer: tuple[str, ...],
                       categorical: tuple[str, ...], n_counterfactuals: int, method: str, threshold: float | None,
                       with_anchor: bool, seed: int, out: str | None, as_json: bool, quiet: bool) -> None:
    """What would have to change for the model to decide otherwise, within hard constraints."""
    from .counterfactual import Constraints, anchor, counterfactuals

    _check_out(out, (".json", ".html", ".htm", ".npz"))
    loaded = load_model(model_spec, weights=weights, allow_pickle=allow_pickle)
    t = _counterfactual_table(inputs, loaded, rows, label_column, data_path, feature_names, class_names,
                              preprocess)
    want: Any = int(desired) if desired is not None and desired.lstrip("-").isdigit() else desired
    cons = Constraints(immutable=list(dict.fromkeys([*immutable, *t["aside"]])), increasing=increasing,
                       decreasing=decreasing, ranges=_constraint_pairs(ranges, "--range"), integer=integer,
                       categorical=categorical)
    with _evaluations_bar(loaded.model, _show_progress(quiet, as_json), "counterfactual") as model:
        res = counterfactuals(model, t["X"], data=t["data"], desired=want, threshold=threshold, constraints=cons,
                              n_counterfactuals=n_counterfactuals, method=method,  # type: ignore[arg-type]
                              preprocess=t["preprocess"], feature_names=t["names"], class_names=t["class_names"],
                              seed=seed, value_names=t["words"])
        anchors = ([anchor(model, t["X"][i], data=t["data"], feature_names=res.feature_names,
                           categorical=categorical, class_names=t["class_names"], model_threshold=threshold,
                           preprocess=t["preprocess"], seed=seed, value_names=t["words"]).to_dict()
                    for i in range(min(len(res), 20))] if with_anchor else None)
    path: Path | None = None
    if out:
        suffix = Path(out).suffix.lower()
        if suffix == ".npz":
            path = res.save(out)
        elif suffix == ".json":
            path = _write_json(out, {**res.to_dict(), "anchors": anchors})
        else:
            path = Path(out)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(res.to_html(), encoding="utf-8")
    if as_json:
        _echo_json({**res.to_dict(), "anchors": anchors, "out": str(path) if path else None})
        return
    for i in range(len(res)):
        click.echo(f"row {i}: {res.recourse(i)}")
        if anchors is not None and i < len(anchors):
            click.echo(f"        anchor: {anchors[i]['sentence']}")
    m = res.metrics
    fixed = f"; fixed because the model does not read them: {', '.join(t['aside'])}" if t["aside"] else ""
    click.echo(f"\n{int(res.found.sum())}/{len(res)} rows with a counterfactual; mean L1 {m['l1']:.3g}, "
               f"columns changed {m['l0']:.2g}, constraint violations {int(m['violations'])}, "
               f"{m['seconds']:.2f} s ({res.method}){fixed}")
    if path is not None:
        click.echo(f"wrote {path}")


@cli.command("influence")
@_model_options
@click.option("--data", "data_paths", multiple=True, metavar="PATH",
              help="Training rows (.npy or .csv; default for zoo models: their training split).")
@click.option("--labels", "labels_path", metavar="PATH", help="Labels of the training rows (.npy or one-column .csv).")
@click.option("--label-column", metavar="NAME|INDEX", help="A column of the --data CSV holding the labels.")
@click.option("--input", "-i", "inputs", multiple=True, metavar="PATH",
              help="The rows to explain (.npy, .csv or zoo:NAME).")
@click.option("--rows", metavar="A:B|I,J", help="Select rows of the inputs.")
@click.option("--targets", metavar="I,J,...", help="Class (or value) per explained row (default: the model's decisions).")
@click.option("--method", default="influence", show_default=True,
              help="influence (last layer by default), trak, tracin or representer.")
@click.option("--option", "-o", "options", multiple=True, metavar="NAME=VALUE",
              help="An option of the method (proj_dim=256, solver=cg, damping=0.01, ...).")
@click.option("--top", "-k", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Proponents and opponents shown per row.")
@click.option("--evaluate", type=click.IntRange(0), default=0, show_default=True,
              help="Measure the leave-one-out correlation on N training rows (last layer refit exactly).")
@click.option("--out", help="Write the result (.npz) or a page (.html).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def influence_cmd(model_spec: str, weights: str | None, allow_pickle: bool, data_paths: tuple[str, ...],
                  labels_path: str | None, label_column: str | None, inputs: tuple[str, ...], rows: str | None,
                  targets: str | None, method: str, options: tuple[str, ...], top: int, evaluate: int,
                  out: str | None, as_json: bool) -> None:
    """Which training rows drove each decision: top proponents and opponents per explained row."""
    from .frontends.option_text import split_item
    from .frontends.training_data import influence_for, training_rows

    _check_out(out, (".npz", ".html", ".htm"))
    opts: dict[str, Any] = {}
    for item in options:
        _, key, text = split_item(item, scoped=False)
        try:
            opts[key] = json.loads(text)
        except ValueError:
            opts[key] = text
    loaded = load_model(model_spec, weights=weights, allow_pickle=allow_pickle)
    if hasattr(loaded.model, "eval") and hasattr(loaded.model, "parameters"):
        loaded.model.eval()  # loaded here for this command: nothing else sees its mode
    train = training_rows(loaded, data_paths, labels=labels_path, label_column=label_column, wording=FLAGS)
    x = load_inputs(inputs, loaded, rows=rows).x
    ys = None
    if targets is not None:
        try:
            ys = [float(t) if "." in t else int(t) for t in targets.split(",")]
        except ValueError:
            raise click.BadParameter(f"expected numbers separated by commas, got {targets!r}",
                                     param_hint="--targets") from None
        if len(ys) == 1:
            ys = ys * len(x)
    res = influence_for(loaded.model, train, x, ys, method=method, options=opts, evaluate=evaluate,
                        class_names=loaded.class_names)
    path = None
    if out is not None:
        path = Path(out)
        if path.suffix.lower() in (".html", ".htm"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(res.to_html(title=f"unveil influence: {method}", k=top), encoding="utf-8")
        else:
            path = res.save(path)
    if as_json:
        _echo_json({**res.to_dict(k=top), "out": str(path) if path else None})
        return
    click.echo(f"{method}: {res.n_test} rows explained against {res.n_train} training rows "
               f"in {sum(res.timings.values()):.2f} s")
    for t in range(res.n_test):
        best = res.top(t, top)
        target = res.test_targets[t].item()
        names = res.class_names or []
        click.echo(f"row {t} (target {names[target] if isinstance(target, int) and 0 <= target < len(names) else target}):")
        for kind in ("proponents", "opponents"):
            items = ", ".join(f"#{e['index']} ({e['class']}) {e['score']:+.3g}" for e in best[kind]) or "none"
            click.echo(f"  {kind}: {items}")
    for k, v in res.evaluation.items():
        click.echo(f"{k:<28} {v:.4g}")
    if path is not None:
        click.echo(f"wrote {path}")


@cli.command("tcav")
@_model_options
@click.option("--layer", "-l", required=True, help="Dotted layer name, e.g. features.6.")
@click.option("--target", "-t", required=True, help="The class: an index or a class name.")
@click.option("--concept", "-c", "concept_specs", multiple=True, required=True, metavar="NAME=PATH",
              help="A concept's examples: a .npy batch or a folder of images/.npy (repeatable).")
@click.option("--input", "-i", "inputs", multiple=True, metavar="PATH",
              help="Inputs of the class (default for zoo models: its test rows of that class).")
@click.option("--random-pool", "pool_path", metavar="PATH",
              help="Examples random sets are drawn from (default for zoo models: training rows).")
@click.option("--n-random", default="auto", show_default=True,
              help="Random runs, or 'auto' (chosen for the test's power).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", help="Write the result: a page (.html), the figures (.json) or arrays (.npz).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tcav_cmd(model_spec: str, weights: str | None, allow_pickle: bool, layer: str, target: str,
             concept_specs: tuple[str, ...], inputs: tuple[str, ...], pool_path: str | None,
             n_random: str, seed: int, out: str | None, as_json: bool) -> None:
    """Which human concepts (sets of examples) sway a class, tested against random concepts."""
    from .concepts import tcav
    from .frontends.concept_sets import class_inputs, parse_concept, random_pool, read_example_set

    _check_out(out, (".json", ".html", ".htm", ".npz"))
    if n_random != "auto" and not n_random.isdigit():
        raise click.BadParameter(f"expected an integer or 'auto', got {n_random!r}", param_hint="--n-random")
    loaded = load_model(model_spec, weights=weights, allow_pickle=allow_pickle)
    tgt: Any = int(target) if target.lstrip("-").isdigit() else target
    if isinstance(tgt, str) and loaded.class_names and tgt in loaded.class_names:
        tgt = loaded.class_names.index(tgt)
    concepts = {name: read_example_set(path, loaded, wording=FLAGS)
                for name, path in (parse_concept(c, wording=FLAGS) for c in concept_specs)}
    x, where = class_inputs(inputs, loaded, tgt if isinstance(tgt, int) else -1, wording=FLAGS)
    res = tcav(loaded.model, concepts, x, tgt, layer, random_pool(pool_path, loaded, wording=FLAGS),
               n_random="auto" if n_random == "auto" else int(n_random), seed=seed)
    path: Path | None = None
    if out:
        suffix = Path(out).suffix.lower()
        if suffix == ".npz":
            path = res.save(out)
        elif suffix == ".json":
            path = _write_json(out, res.to_dict())
        else:
            from .report.concepts import tcav_page

            path = Path(out)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(tcav_page(res), encoding="utf-8")
    if as_json:
        _echo_json({**res.to_dict(), "out": str(path) if path else None})
        return
    from .report.concepts import tcav_sentences

    click.echo(f"TCAV at {res.layer} for class {res.target_name} on {res.n_inputs} inputs ({where}); "
               f"{res.n_random} random runs ({res.n_random_mode}, power {res.power:.2f})")
    for c, line in zip(res.concepts, tcav_sentences(res)):
        click.echo(f"  {c}: {line}")
    click.echo(f"  random control: {res.control_scores.mean():.2f} (p = {res.control_p:.2g})")
    if path:
        click.echo(f"wrote {path}")


@cli.command("generate")
@click.option("--model", "-m", "model_spec", required=True, metavar="SPEC",
              help="zoo:smollm2 or a folder saved with save_pretrained (model and tokenizer).")
@click.option("--prompt", required=True, help="The text the model continues.")
@click.option("--max-new-tokens", type=click.IntRange(1), help="Tokens to generate (default 8).")
@click.option("--continuation", help="Explain this continuation instead of generating one.")
@click.option("--method", default="integrated_gradients", show_default=True,
              help="Registry name (gradient, ablation or Shapley methods).")
@click.option("--contrast", metavar="TOKEN", help="Explain p(token) against this one-token foil, "
              "e.g. ' John' (mind the leading space).")
@click.option("--chat", is_flag=True, help="Wrap the prompt in the tokenizer's chat template.")
@click.option("--spans", type=click.Choice(["tokens", "words", "sentences"]), default="tokens",
              show_default=True, help="Units of the prompt that are attributed (and removed).")
@click.option("--sources", type=click.Choice(["all", "prompt"]), default="all", show_default=True,
              help="Attribute to the prompt and earlier generated tokens, or to the prompt only.")
@click.option("--option", "-o", "options", multiple=True, metavar="NAME=VALUE",
              help="A method option, e.g. -o n_steps=32 (repeatable).")
@click.option("--top", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Sources printed per generated token.")
@click.option("--out", help="Write a report page (.html) or the result (.json).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def generate_cmd(model_spec: str, prompt: str, max_new_tokens: int | None,
                 continuation: str | None, method: str, contrast: str | None, chat: bool,
                 spans: str, sources: str, options: tuple[str, ...], top: int, out: str | None,
                 as_json: bool) -> None:
    """Generate from a language model and show which tokens made each generated token."""
    from .core.registry import get_method
    from .language import explain_generation, load_language_model

    _check_out(out, (".html", ".htm", ".json"))
    info = get_method(method)
    opts = parse_option(options, info.options)
    info.split_options(opts)  # an unknown or ill-typed option fails before the model loads
    model, tokenizer = load_language_model(model_spec)
    res = explain_generation(model, tokenizer, prompt, max_new_tokens=max_new_tokens,
                             continuation=continuation, method=method, contrast=contrast,
                             chat=chat, spans=spans, sources=sources,  # type: ignore[arg-type]
                             **opts)
    path = None
    if out is not None:
        path = Path(out)
        if path.suffix == ".json":
            res.save(path)
        else:
            from .report.generation import generation_page

            path.write_text(generation_page(res, title=f"{method} · {model_spec}"),
                            encoding="utf-8")
    rows: list[dict[str, Any]] = [{"step": g, "token": tok, "prob": float(res.scores["prob"][g]),
             "sources": [{"text": s.text, "kind": s.kind, "value": s.value}
                         for s in res.top_sources(g, top)]}
            for g, tok in enumerate(res.generated)]
    if as_json:
        _echo_json({"prompt": prompt, "generated": res.text, "method": method,
                    "objective": res.objective, "tokens": rows,
                    "out": str(path) if path else None})
        return
    click.echo(f"generated: {res.text!r}")
    for r in rows:
        srcs = ", ".join(f"{s['text']!r} {s['value']:+.3g}" for s in r["sources"])
        click.echo(f"  {r['step']:>3} {r['token']!r:<14} p={r['prob']:.2f}  <- {srcs}")
    click.echo(f"{method}: {len(rows)} tokens, {res.n_evals} model evaluations, "
               f"{sum(res.timings.values()):.2f} s")
    if path is not None:
        click.echo(f"wrote {path}")


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--model", "-m", "model_specs", multiple=True, metavar="SPEC",
              help="Extra model to offer besides the zoo (package.module:factory, or a language model: "
                   "zoo:smollm2, zoo:induction_transformer; repeatable).")
@click.option("--weights", type=click.Path(dir_okay=False), help="Weights for the one --model.")
@click.option("--data", metavar="PATH",
              help="The (first) --model's data: a table (.csv with a header, text categories allowed; "
                   ".npy; .parquet) or texts (.txt, one a line). Gives samples and the whole-model views.")
@click.option("--feature-names", metavar="A,B,...",
              help="Names of the (first) model's input columns; with a table, the columns it takes (the "
                   "others are kept aside for the audit).")
@click.option("--class-names", metavar="A,B,...", help="Names of the (first) model's classes, in output order.")
@click.option("--label-column", metavar="NAME|INDEX",
              help="A column of --data holding the true labels (taken out of the inputs).")
@click.option("--preprocess", metavar="package.module:object",
              help="A function of the table's rows (text columns coded 0, 1, … in the order of its "
                   ".categories, else sorted) returning the model's inputs, as distill and audit take.")
@click.option("--tokenizer", metavar="package.module:object",
              help="A tokenizer for a text model or a language model (an object, or a function or class "
                   "making one).")
@click.option("--no-zoo", is_flag=True, help="Do not offer the zoo models.")
@click.option("--max-upload-kb", default=2048, show_default=True, type=click.IntRange(1, 65536))
@click.option("--max-pixels", default=4096 * 4096, show_default=True, type=click.IntRange(1),
              help="Most pixels (width x height) an uploaded image may have.")
@click.option("--time-budget", default=120.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds one explanation, sanity check, surrogate or audit may take.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Another Host name to serve (besides loopback names and --host).")
def serve_cmd(host: str, port: int, model_specs: tuple[str, ...], weights: str | None,
              data: str | None, feature_names: str | None, class_names: str | None,
              label_column: str | None, preprocess: str | None, tokenizer: str | None,
              no_zoo: bool, max_upload_kb: int, max_pixels: int, time_budget: float,
              allowed_hosts: tuple[str, ...]) -> None:
    """Start the local web dashboard (loopback only unless --host says otherwise)."""
    from .errors import require

    require("uvicorn", "serve")
    import uvicorn

    from .serve import ServedModel, create_app

    if weights and len(model_specs) != 1:
        raise click.BadParameter("--weights needs exactly one --model", param_hint="--weights")
    per_model = {"--data": data, "--feature-names": feature_names, "--class-names": class_names,
                 "--label-column": label_column, "--preprocess": preprocess, "--tokenizer": tokenizer}
    for flag, value in per_model.items():
        if value is not None and not model_specs:
            raise click.BadParameter(f"{flag} describes a --model; give one", param_hint=flag)
    if label_column is not None and data is None:
        raise click.BadParameter("--label-column names a column of --data; give --data too",
                                 param_hint="--label-column")
    wording = replace(FLAGS, missing=frozenset({"allow_pickle"}))
    models: dict[str, Any] = {}
    for k, spec in enumerate(model_specs):
        # never pickle: the dashboard does not unpickle (nor offers --allow-pickle)
        lm = load_model(spec, weights=weights, wording=wording)
        if k == 0 and any(v is not None for v in per_model.values()):
            served = ServedModel(
                lm, data=data, feature_names=feature_names, class_names=class_names,
                label_column=label_column,
                preprocess=None if preprocess is None else frontends.load_object(preprocess, "preprocess", wording=FLAGS),
                tokenizer=None if tokenizer is None else frontends.load_object(
                    tokenizer, "tokenizer", factory=True, wording=FLAGS))
            served.prepared(lm.name, FLAGS)  # the data's errors now, as one line naming the flags
            models[lm.name] = served
        else:
            models[lm.name] = lm
    _check_port(host, port)  # a busy port is one error line, before the zoo loads and the banner
    hosts = ["127.0.0.1", "localhost", "::1", *([host] if host not in ("0.0.0.0", "::") else []),
             *allowed_hosts]
    app = create_app(models=models, zoo=not no_zoo, max_upload_bytes=max_upload_kb * 1024,
                     max_pixels=max_pixels, time_budget=time_budget, allowed_hosts=hosts)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: serving on {host} makes the dashboard reachable from other machines",
                   err=True)
    click.echo(f"unveil dashboard on http://{host}:{port}/ (Ctrl+C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False)


def _check_port(host: str, port: int) -> None:
    """A one-line error when ``host:port`` cannot be bound (the port is in use, say)."""
    import socket

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise click.ClickException(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        busy = "the port is in use (another server?); pick another with --port" \
            if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise click.ClickException(f"cannot serve on {host}:{port}: {busy}") from None
    sock.close()


# ------------------------------------------------------------------ inside a language model
def _language_model(spec: str) -> tuple[Any, Any]:
    """``(model, tokenizer or None)`` for ``zoo:induction_transformer``, ``zoo:smollm2`` or a local
    Hugging Face folder (never a hub name: nothing is downloaded)."""
    if spec == "zoo:induction_transformer":
        from .zoo.induction import induction_transformer

        return induction_transformer(), None
    if spec != "zoo:smollm2" and not Path(spec).is_dir():
        raise click.BadParameter(f"expected zoo:induction_transformer or zoo:smollm2 or a local Hugging "
                                 f"Face model folder, got {spec!r}", param_hint="--model")
    from .language import load_language_model

    return load_language_model(spec)


def _lm_text(text: str, tokenizer: Any, flag: str) -> Any:
    """A prompt: text for a model with a tokenizer, else token ids separated by spaces or commas."""
    if tokenizer is not None:
        return text
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise click.BadParameter(f"this model has no tokenizer: give token ids separated by spaces, "
                                 f"got {text!r}", param_hint=flag) from None


def _lm_token(value: str | None, tokenizer: Any, flag: str) -> int | str | None:
    """A token: a string (its first token) with a tokenizer, else an integer id."""
    if value is None or tokenizer is not None:
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"this model has no tokenizer: give a token id, got {value!r}",
                                 param_hint=flag) from None


def _lm_out(result: Any, out: str | None) -> None:
    if out is None:
        return
    _check_out(out, (".html",))
    click.echo(f"wrote {result.save(out)}")


def _lm_options(f: F) -> F:
    f = click.option("--out", help="Write the heat maps to an HTML page (.html).")(f)
    f = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)
    return click.option("--model", "-m", "model_spec", required=True, metavar="SPEC",
                        help="zoo:induction_transformer, zoo:smollm2 or a local Hugging Face folder.")(f)


@cli.command("lens")
@_lm_options
@click.option("--prompt", required=True, help="The text (or token ids for a model without tokenizer).")
@click.option("--target", help="Track this token's probability (default: the model's own prediction).")
@click.option("--top", default=1, show_default=True, type=click.IntRange(1, 20), help="Top tokens shown.")
def lens_cmd(model_spec: str, prompt: str, target: str | None, top: int, as_json: bool, out: str | None) -> None:
    """Logit lens: what the residual stream after each layer predicts at each position."""
    from .language.lens import logit_lens

    model, tok = _language_model(model_spec)
    res = logit_lens(model, _lm_text(prompt, tok, "--prompt"), tokenizer=tok,
                     target=_lm_token(target, tok, "--target"), top_k=top)
    if as_json:
        _echo_json({"rows": res.rows, "tokens": res.tokens, "target_ids": res.target_ids,
                    "target_prob": res.target_prob.tolist(), "top_tokens": res.top_tokens})
    else:
        click.echo(f"last position ({res.tokens[-1]!r}); target id {res.target_ids[-1]}")
        click.echo(f"{'layer':<6} {'p(target)':>9}  top tokens")
        for i, row in enumerate(res.rows):
            tops = ", ".join(f"{t!r} {p:.2f}" for t, p in zip(res.top_tokens[i][-1], res.top_probs[i, -1], strict=True))
            click.echo(f"{row:<6} {res.target_prob[i, -1]:>9.3f}  {tops}")
    _lm_out(res, out)


@cli.command("patch")
@_lm_options
@click.option("--clean", required=True, help="The clean prompt.")
@click.option("--corrupted", required=True, help="The corrupted prompt (same number of tokens).")
@click.option("--target", required=True, help="Metric: logit(target) - logit(foil) at the last token.")
@click.option("--foil", required=True, help="The competing token.")
@click.option("--sites", default="resid", show_default=True, metavar="LIST",
              help="Comma-separated: resid, heads, mlp.")
@click.option("--attribution", is_flag=True,
              help="First-order attribution patching (one backward pass) with a check against exact patching.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1), help="Patches per forward pass.")
def patch_cmd(model_spec: str, clean: str, corrupted: str, target: str, foil: str, sites: str,
              attribution: bool, batch_size: int, as_json: bool, out: str | None) -> None:
    """Activation patching: the share of logit(target) - logit(foil) each component restores
    when its clean activation is patched into the corrupted run."""
    from .language.patching import activation_patching, attribution_patching

    model, tok = _language_model(model_spec)
    args = (model, _lm_text(clean, tok, "--clean"), _lm_text(corrupted, tok, "--corrupted"))
    kw: dict[str, Any] = {"target": _lm_token(target, tok, "--target"), "foil": _lm_token(foil, tok, "--foil"),
                          "tokenizer": tok, "sites": [s.strip() for s in sites.split(",") if s.strip()],
                          "batch_size": batch_size}
    res = attribution_patching(*args, **kw) if attribution else activation_patching(*args, **kw)
    table = res.to_pandas().sort_values("recovered", key=abs, ascending=False)
    if as_json:
        _echo_json({"clean_diff": res.clean_diff, "corrupted_diff": res.corrupted_diff, "kind": res.kind,
                    "faithfulness": res.faithfulness, "components": table.to_dict("records")})
    else:
        click.echo(f"{res.kind} patching: logit diff clean {res.clean_diff:+.3f}, corrupted "
                   f"{res.corrupted_diff:+.3f}; {res.n_forward} forward passes")
        if res.faithfulness is not None:
            click.echo(f"faithfulness (correlation with exact patching on {len(res.checked)} components): "
                       f"{res.faithfulness:.3f}")
        for r in table.head(10).itertuples():
            where = f"head {r.index}" if r.site == "heads" else f"position {r.index} ({res.tokens[int(r.index)]!r})"
            click.echo(f"  {r.site:<6} layer {r.layer:<3} {where:<28} recovered {r.recovered:+.3f}")
    _lm_out(res, out)


@cli.command("heads")
@_lm_options
@click.option("--half", default=20, show_default=True, type=click.IntRange(2), help="Length of the repeated run.")
def heads_cmd(model_spec: str, half: int, as_json: bool, out: str | None) -> None:
    """Previous-token, duplicate-token and induction score of every attention head."""
    from .language.heads import head_scores

    model, _ = _language_model(model_spec)
    res = head_scores(model, half=half)
    if as_json:
        _echo_json(res.to_pandas().to_dict("records"))
    else:
        for kind in ("previous_token", "duplicate_token", "induction"):
            tops = ", ".join(f"L{layer}H{h} {v:.2f}" for layer, h, v in res.top(kind, 3))
            click.echo(f"{kind:<16} {tops}")
    _lm_out(res, out)


@cli.group("concepts")
def concepts_cmd() -> None:
    """What a layer's channels mean: concept relevance (CRP) and concept discovery (CRAFT)."""


@concepts_cmd.command("crp")
@_model_options
@_input_options
@click.option("--layer", required=True, help="The conditioning layer's dotted name, e.g. features.6.")
@click.option("--top", type=click.IntRange(1), default=5, show_default=True,
              help="How many of the most relevant channels to show per row (without --channels).")
@click.option("--channels", metavar="C,C+C", help="Condition on these channels instead ('+' joins "
              "channels into one concept), e.g. 3,5+7.")
@click.option("--target", help="predicted (default), a class index or name, or i,j,... per row.")
@click.option("--composite", default="epsilon_plus_flat", show_default=True, help="LRP composite preset.")
@click.option("--references", "ref_path", metavar="PATH",
              help="Rows to draw each concept's reference examples from (.npy, or zoo:NAME).")
@click.option("--mode", type=click.Choice(["relevance", "activation"]), default="relevance",
              show_default=True, help="Reference examples by relevance or activation maximisation.")
@click.option("--out", help="Write the result (.npz) or an HTML page (.html).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def concepts_crp_cmd(model_spec: str, weights: str | None, allow_pickle: bool, inputs: tuple[str, ...],
                     texts: tuple[str, ...], rows: str | None, size: str | None, layer: str, top: int,
                     channels: str | None, target: str | None, composite: str, ref_path: str | None,
                     mode: str, out: str | None, as_json: bool) -> None:
    """Which concepts (channels of a layer) a prediction used, with conditional heat maps."""
    from .concepts import conditional_relevance, top_concepts
    from .frontends.concept_maps import parse_channels, relevance_summary, write_result

    _check_out(out, (".npz", ".html", ".htm"))
    chans = parse_channels(channels)
    loaded, data = _load(model_spec, weights, allow_pickle, inputs, texts, rows, size)
    tg = parse_target(target, loaded.class_names)
    if chans is None:
        res = top_concepts(loaded.model, data.x, layer=layer, k=top, target=tg, composite=composite)
    else:
        res = conditional_relevance(loaded.model, data.x, layer=layer, concepts=chans, target=tg,
                                    composite=composite)
    if ref_path is not None:
        res.with_references(loaded.model, _training_rows(loaded, ref_path), mode=mode)  # type: ignore[arg-type]
    path = write_result(res, out, f"Concept relevance · {loaded.name}")
    lines = relevance_summary(res, top)
    if as_json:
        _echo_json({"layer": res.layer, "rows": lines, "out": str(path) if path else None})
        return
    for line in lines:
        parts = ", ".join(f"{c['concept']} {c['relevance']:+.3g}" for c in line["concepts"])
        click.echo(f"row {line['row']}: class {line['target']} ({line['score']:.3g}): {parts}")
    if path is not None:
        click.echo(f"wrote {path}")


@concepts_cmd.command("discover")
@_model_options
@_input_options
@click.option("--layer", required=True, help="The layer whose activations are factorised (after a ReLU for NMF).")
@click.option("--concepts", "n_concepts", type=click.IntRange(1), default=8, show_default=True,
              help="How many concepts to find.")
@click.option("--target", help="The explained class: predicted (the most frequent) or a class index or name.")
@click.option("--method", type=click.Choice(["nmf", "sae"]), default="nmf", show_default=True,
              help="Non-negative factorisation (CRAFT) or a sparse autoencoder (signed activations).")
@click.option("--importance", type=click.Choice(["sobol", "gradient"]), default="sobol", show_default=True,
              help="Total-order Sobol indices (CRAFT) or gradient x concept coefficient.")
@click.option("--designs", type=click.IntRange(2), default=32, show_default=True,
              help="Sobol sample size per row (the model runs designs x (concepts + 2) times per row).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", help="Write the result (.npz) or an HTML page (.html).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def concepts_discover_cmd(model_spec: str, weights: str | None, allow_pickle: bool, inputs: tuple[str, ...],
                          texts: tuple[str, ...], rows: str | None, size: str | None, layer: str,
                          n_concepts: int, target: str | None, method: str, importance: str, designs: int,
                          seed: int, out: str | None, as_json: bool) -> None:
    """Factorise a layer's activations over the inputs into concepts and rank them for a class."""
    from .concepts import discover_concepts
    from .frontends.concept_maps import discovery_summary, write_result

    _check_out(out, (".npz", ".html", ".htm"))
    loaded, data = _load(model_spec, weights, allow_pickle, inputs, texts, rows, size)
    res = discover_concepts(loaded.model, data.x, layer=layer, n_concepts=n_concepts,
                            target=parse_target(target, loaded.class_names), method=method,  # type: ignore[arg-type]
                            importance=importance, n_designs=designs, seed=seed)  # type: ignore[arg-type]
    path = write_result(res, out, f"Discovered concepts · {loaded.name}")
    lines = discovery_summary(res)
    if as_json:
        _echo_json({"layer": res.layer, "target": res.class_name, "explained_variance": res.explained_variance,
                    "fidelity": res.fidelity, "concepts": lines, "out": str(path) if path else None})
        return
    click.echo(f"{res.n_concepts} concepts at {res.layer} for class {res.class_name} "
               f"(reconstruction explains {100 * res.explained_variance:.0f}% of the variance)")
    for line in lines:
        click.echo(f"  {line['concept']:<12} importance {line['importance']:.3g}  top rows {line['top_rows'][:5]}")
    if path is not None:
        click.echo(f"wrote {path}")


@cli.command("demo")
@click.option("--out-dir", default="unveil-demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--model", "models", multiple=True, help="Zoo name (default: the whole zoo).")
@click.option("--method", "method_names", multiple=True, help="Registry name (default: all).")
@click.option("--samples", type=click.IntRange(1, 64), help="Test inputs per model.")
@click.option("--no-evaluate", is_flag=True, help="Skip the trust-card metrics.")
@click.option("--no-audit", is_flag=True, help="Skip the bias audit of the fair-data network.")
@_quiet_option
@click.pass_context
def demo_cmd(ctx: click.Context, out_dir: str, models: tuple[str, ...],
             method_names: tuple[str, ...], samples: int | None, no_evaluate: bool,
             no_audit: bool, quiet: bool) -> None:
    """Explain the zoo models with every method that applies, write a report, and audit a
    network trained on real survey data for bias."""
    from .report.demo import run_demo

    res = run_demo(out_dir, models=list(models) or None, methods=list(method_names) or None,
                   n_samples=samples, evaluate=not no_evaluate, audit=not no_audit and not models,
                   echo=None if quiet else click.echo,
                   progress=_show_progress(quiet))
    click.echo(f"\n{'model':<24} {'method':<24} {'status':<8} {'time (s)':>8} {'evals':>7}  note")
    for model, r in res.rows:
        note = r.error or r.skipped or ""
        click.echo(f"{model:<24} {r.method:<24} {r.shown_status:<8} {r.seconds:>8.2f} {r.n_evals:>7}  {note}")
    click.echo(f"\nreport: {res.path.resolve()}")
    if res.audit_note:
        click.echo(f"{res.audit_note.strip()}" + (f"\naudit: {res.audit_path.resolve()}" if res.audit_path else ""))
    if res.errors:
        click.echo(f"{len(res.errors)} method run(s) failed: "
                   + ", ".join(f"{m}/{r.method}" for m, r in res.errors), err=True)
        ctx.exit(1)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Warnings from the library, one line each on stderr (no source line)."""
    click.echo(f"unveil: warning: {message}", err=True)


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point ``unveil``; exits with the command's status."""
    saved = warnings.showwarning
    try:
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="unveil",
                        standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        hint = f" (see unveil {exc.ctx.info_name} --help)" if getattr(exc, "ctx", None) and exc.ctx else ""  # type: ignore[attr-defined]
        click.echo(f"unveil: error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except (UnveilError, OSError) as exc:
        if _DEBUG:
            raise
        click.echo(f"unveil: error: {_error_line(exc)}", err=True)
        sys.exit(1)
    finally:
        warnings.showwarning = saved
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
