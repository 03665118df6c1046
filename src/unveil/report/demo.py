"""``unveil demo``: explain a few test inputs of each zoo model with every registered method
that applies, and write one self-contained report.

Methods run with small budgets so the whole demo takes well under two minutes on a laptop. A
method whose modality does not fit is skipped; one that refuses the model's architecture
(:class:`~unveil.errors.ModelError`, :class:`~unveil.errors.LayerNotFoundError`) or lacks an
optional dependency (:class:`~unveil.errors.MissingExtraError`) is skipped with its reason; any
other failure is recorded as an error (and the CLI exits non-zero).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.groups import FeatureGroups, column_groups, patches
from ..core.registry import list_methods
from ._builder import MethodRun, Report, build_section, skip_not_applicable

__all__ = ["DEMO_BUDGET", "DemoResult", "run_demo"]

#: Options given to every method that declares them (kept small: the demo must be quick; a
#: fixed batch size skips the auto-batching probe). A method that refuses to run without a
#: ``background=`` runs again with 16 training rows.
DEMO_BUDGET: dict[str, Any] = {"n_steps": 16, "n_samples": 64, "seed": 0, "batch_size": 64}
#: How many test inputs of each zoo model are explained.
DEMO_SAMPLES = {"image": 3, "tabular": 4}
#: Methods whose model-randomisation sanity check the demo runs (when unveil.metrics has it).
DEMO_SANITY = ("saliency", "guided_backprop")


def coarse_groups(modality: str, sample_shape: Sequence[int],
                  feature_names: Sequence[str] | None = None) -> FeatureGroups | None:
    """Few feature groups, for methods whose cost is exponential in the number of groups.

    Images: four quadrants. Tables: columns sharing a name once qualifiers are dropped (words
    in at least a third of the names, such as "mean", "worst", "error"), if that leaves 2 to 12
    groups; otherwise up to 10 runs of neighbouring columns.
    """
    if modality == "image" and len(sample_shape) >= 2:
        return patches(sample_shape, size=(-(-sample_shape[-2] // 2), -(-sample_shape[-1] // 2)))
    if modality != "tabular" or len(sample_shape) != 1:
        return None
    n = int(sample_shape[0])
    if feature_names is not None and len(feature_names) == n:
        words = [set(f.split()) for f in feature_names]
        common = {w for ws in words for w in ws if sum(w in v for v in words) * 3 >= n}
        stems = [" ".join(w for w in f.split() if w not in common) or f for f in feature_names]
        if 2 <= len(set(stems)) <= 12:
            mapping: dict[str, list[int]] = {}
            for j, s in enumerate(stems):
                mapping.setdefault(s, []).append(j)
            return column_groups(mapping, n, list(feature_names))
    k = min(n, 10)
    mapping = {f"x{b[0]}-x{b[-1]}": list(map(int, b)) for b in _chunks(n, k)}
    return column_groups(mapping, n)


def _chunks(n: int, k: int) -> list[list[int]]:
    import numpy as np

    return [c.tolist() for c in np.array_split(np.arange(n), k)]


def _demo_options(methods: Sequence[str], groups: FeatureGroups | None) -> dict[str, dict[str, Any]]:
    """Per-method options: exhaustive methods (those with ``max_groups``) get coarse groups."""
    from ..core.registry import get_method

    out: dict[str, dict[str, Any]] = {}
    for name in methods:
        declared = get_method(name).options
        if groups is not None and "max_groups" in declared and "groups" in declared:
            out[name] = {"groups": groups}
    return out


@dataclass
class DemoResult:
    """The written report and one row per (model, method)."""

    report: Report
    path: Path
    rows: list[tuple[str, MethodRun]]
    audit_path: Path | None = None
    audit_note: str | None = None  # the verdict line, or why no audit was written

    @property
    def errors(self) -> list[tuple[str, MethodRun]]:
        """The runs that failed with an error (not the skipped ones)."""
        return [(m, r) for m, r in self.rows if r.error]


def run_demo(
    out_dir: str | Path = "unveil-demo",
    *,
    models: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    budget: dict[str, Any] | None = None,
    n_samples: int | None = None,
    evaluate: bool = True,
    audit: bool = True,
    echo: Callable[[str], None] | None = None,
    progress: bool = True,
) -> DemoResult:
    """Run the demo and write ``out_dir/report.html`` (and ``out_dir/audit.html``).

    Parameters
    ----------
    out_dir : path
        Folder for ``report.html`` (created).
    models : list of str, optional
        Zoo names (default: the whole zoo).
    methods : list of str, optional
        Registry names (default: every registered method).
    budget : dict, optional
        Options for every method that declares them (default :data:`DEMO_BUDGET`).
    n_samples : int, optional
        Test inputs per model (default 3 images, 4 table rows).
    evaluate : bool
        Fill the trust card with :mod:`unveil.metrics` when it is installed.
    audit : bool
        Also train the small network of :func:`unveil.audit.examples.fair_example` on
        statsmodels' ``fair`` data and write its bias audit (needs the ``audit`` and
        ``examples`` extras; skipped with a note without them).
    echo : callable, optional
        Receives one line per step (the CLI prints them); silent by default.
    progress : bool
        A progress bar over each model's methods (on a terminal only).
    """
    from ..zoo import ZOO, load_dataset

    say = echo or (lambda _line: None)
    names = list(models) if models is not None else sorted(n for n, z in ZOO.items() if z.demo)
    all_methods = list(methods) if methods is not None else [m.name for m in list_methods()]
    sections = []
    for name in names:
        entry = ZOO[name]
        say(f"loading zoo:{name} ({entry.description})")
        model = entry.factory()
        data = load_dataset(name)
        k = n_samples or DEMO_SAMPLES.get(entry.modality, 3)
        say(f"explaining {k} test inputs of zoo:{name} with {len(all_methods)} methods")
        groups = coarse_groups(entry.modality, tuple(data.X_test.shape[1:]), data.feature_names)
        section = build_section(
            model, data.X_test[:k], all_methods, options=_demo_options(all_methods, groups),
            budget=dict(budget or DEMO_BUDGET), retry_options={"background": data.X_train[:16]},
            class_names=data.class_names, feature_names=data.feature_names,
            labels=data.y_test[:k], data=data.X_train[:256], model_name=f"zoo:{name}",
            description=entry.description, evaluate=evaluate, sanity=DEMO_SANITY if evaluate else False,
            trust_options={"n_steps": 10},
            on_error="record", progress=progress,
        )
        skip_not_applicable(section.runs)
        sections.append(section)
    rep = Report(sections, title="unveil demo: the zoo models explained")
    path = rep.save(Path(out_dir) / "report.html")
    rows = [(s.model_name, r) for s in sections for r in s.runs]
    audit_path, note = _fair_audit(Path(out_dir), say) if audit else (None, None)
    return DemoResult(rep, path, rows, audit_path, note)


def _fair_audit(out_dir: Path, say: Callable[[str], None]) -> tuple[Path | None, str]:
    """The bias audit of a network trained on statsmodels' ``fair`` data, as ``audit.html``."""
    from ..errors import MissingExtraError

    say("training a network on statsmodels' fair data and auditing it for 'religious'")
    try:
        from ..audit.examples import fair_example

        ex = fair_example()
    except (ImportError, MissingExtraError) as exc:
        return None, f"bias audit skipped: {str(exc).splitlines()[0]}"
    path = ex.audit.save(out_dir / "audit.html")
    return path, ex.summary().splitlines()[1]
