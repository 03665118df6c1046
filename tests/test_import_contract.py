"""The import contract: dependencies between unveil's packages point down only.

Layers, lowest first (also in ARCHITECTURE.md at the repository root):

====  ===========================  ==========================================================
  0   core                         ``core``, ``errors``, ``version``, ``zoo``
  1   methods                      ``attribution``, ``attention``, ``featurevis``, ``text``,
                                   ``surrogate``, ``counterfactual``, ``language``,
                                   ``concepts``, ``data_attribution``
  2   evaluation and runners       ``metrics``, ``audit``, ``scale``
  3   presentation                 ``report`` (including the audit page, ``report.audit_page``)
  4   front ends                   ``frontends``, ``cli``, ``serve``
  5   facade                       ``unveil/__init__.py``, ``api`` (may import anything)
====  ===========================  ==========================================================

The checker reads the source with :mod:`ast` (imports inside functions and under
``TYPE_CHECKING`` count too) and reports

(a) an import of a higher layer, except the permitted lazy display calls in ``EXCEPTIONS``
    (made inside a function);
(b) a private name (a module or attribute with a leading underscore) imported from another
    top-level package;
(c) a cycle between packages (the permitted exceptions left out);
(d) a string import (``importlib.import_module("unveil...")``), which would hide a dependency.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator, Mapping
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "unveil"

#: Top-level package or module of unveil -> layer.
LAYERS: dict[str, int] = {
    "core": 0, "errors": 0, "version": 0, "zoo": 0,
    "attribution": 1, "attention": 1, "featurevis": 1, "text": 1, "surrogate": 1, "counterfactual": 1,
    "language": 1, "concepts": 1, "data_attribution": 1,
    "metrics": 2, "audit": 2, "scale": 2,
    "report": 3,
    "frontends": 4, "cli": 4, "serve": 4,
    "unveil": 5, "api": 5,
}
#: (importing module, imported package): the permitted upward calls, made lazily in a function.
EXCEPTIONS = {
    ("unveil.core.explanation", "report"),  # Explanation.plot / to_html / _repr_html_
    ("unveil.audit.bias", "report"),  # BiasAudit.to_html: the audit page is presentation
    ("unveil.surrogate.global_importance", "report"),  # PartialDependence.plot
    ("unveil.surrogate.local", "report"),  # LocalSurrogate.plot
    ("unveil.counterfactual.result", "report"),  # Counterfactuals.to_html / _repr_html_
    ("unveil.concepts.crp", "report"),  # ConceptRelevance.to_html / _repr_html_
    ("unveil.concepts.discovery", "report"),  # ConceptDiscovery.to_html / _repr_html_
    ("unveil.data_attribution.result", "report"),  # TrainingAttribution.to_html / _repr_html_
}

Modules = Mapping[str, tuple[str, bool]]  # module name -> (source, is a package __init__)


def read_modules(root: Path = SRC) -> dict[str, tuple[str, bool]]:
    """Every module under ``root`` (the ``unveil`` package directory) with its source."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path.read_text(encoding="utf-8"), is_pkg)
    return out


def package(module: str) -> str:
    """The top-level package (or module) of ``unveil.x.y``: ``x``; the facade is ``unveil``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@functools.cache
def _imports(name: str, source: str, is_pkg: bool) -> tuple[tuple[str, str | None, int, bool], ...]:
    """(imported module, imported name or None, line, inside a function) for each unveil import."""
    here = name if is_pkg else name.rpartition(".")[0]

    def visit(node: ast.AST, in_func: bool) -> Iterator[tuple[str, str | None, int, bool]]:
        for child in ast.iter_child_nodes(node):
            func = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, None, child.lineno, in_func
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = here.split(".")[: len(here.split(".")) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                for alias in child.names:
                    yield mod, alias.name, child.lineno, in_func
            elif (isinstance(child, ast.Call) and child.args
                  and isinstance(child.args[0], ast.Constant) and isinstance(child.args[0].value, str)
                  and child.args[0].value.split(".")[0] == "unveil"
                  and (getattr(child.func, "attr", None) == "import_module"
                       or getattr(child.func, "id", None) in ("import_module", "__import__"))):
                yield child.args[0].value, "<string import>", child.lineno, in_func
            yield from visit(child, func)

    return tuple(imp for imp in visit(ast.parse(source), False)
                 if imp[0] == "unveil" or imp[0].startswith("unveil."))


def check(modules: Modules) -> list[str]:
    """The contract's violations in ``modules`` (empty when it holds)."""
    problems: list[str] = []
    edges: dict[str, set[str]] = {}
    for name, (source, is_pkg) in sorted(modules.items()):
        src = package(name)
        if src not in LAYERS:
            problems.append(f"{name}: package {src!r} is in no layer (add it to LAYERS)")
            continue
        for mod, attr, line, in_func in _imports(name, source, is_pkg):
            if attr is not None and f"{mod}.{attr}" in modules:  # `from . import module`
                mod, attr = f"{mod}.{attr}", None
            where = f"{name}:{line} imports {mod}" + (f".{attr}" if attr else "")
            dst = package(mod)
            if attr == "<string import>":
                problems.append(f"{where}: import unveil modules with an import statement")
            if dst == src or dst not in LAYERS:
                if dst not in LAYERS:
                    problems.append(f"{where}: package {dst!r} is in no layer")
                continue
            private = any(_private(p) for p in mod.split(".")[2:]) or (attr is not None and _private(attr))
            if private:
                problems.append(f"{where}: a private name of another package")
            allowed = (name, dst) in EXCEPTIONS and in_func
            if LAYERS[dst] > LAYERS[src] and not allowed:
                problems.append(f"{where}: layer {LAYERS[src]} ({src}) imports layer {LAYERS[dst]} ({dst})")
            if not allowed and src != "unveil":
                edges.setdefault(src, set()).add(dst)
    problems += [f"cycle between packages: {' -> '.join(c)}" for c in _cycles(edges)]
    return problems


def _cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle through each package that can reach itself (depth-first, sorted for stability)."""
    found: list[list[str]] = []
    seen_in_cycle: set[str] = set()
    for start in sorted(edges):
        if start in seen_in_cycle:
            continue
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        visited: set[str] = set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(edges.get(node, ())):
                if nxt == start:
                    found.append([*path, start])
                    seen_in_cycle.update(path)
                    stack.clear()
                    break
                if nxt not in visited:
                    visited.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    return found


def test_unveil_keeps_the_import_contract() -> None:
    modules = read_modules()
    assert "unveil.core.explanation" in modules and "unveil.cli" in modules
    assert check(modules) == []


def _plant(extra: dict[str, str]) -> list[str]:
    """The real package with ``extra`` modules (name -> source) added or replaced."""
    modules = read_modules()
    for name, source in extra.items():
        modules[name] = (source, False)
    return check(modules)


def test_an_upward_import_is_reported_also_inside_a_function() -> None:
    top = _plant({"unveil.core.planted": "from ..metrics import evaluate\n"})
    assert any("unveil.core.planted:1" in p and "layer 0 (core) imports layer 2 (metrics)" in p for p in top)
    lazy = _plant({"unveil.attribution.planted": "def f():\n    from ..report import html\n"})
    assert any("unveil.attribution.planted:2" in p and "imports layer 3 (report)" in p for p in lazy)


def test_the_exception_is_narrow() -> None:
    # Explanation may call report lazily, not at module level, and not reach cli.
    source = read_modules()["unveil.core.explanation"][0]
    eager = _plant({"unveil.core.explanation": source + "\nfrom ..report import html as _h\n"})
    assert any("unveil.core.explanation" in p and "imports layer 3 (report)" in p for p in eager)
    cli = _plant({"unveil.core.explanation": source + "\ndef f():\n    from .. import cli\n"})
    assert any("imports layer 5 (unveil)" in p or "layer 4 (cli)" in p for p in cli)


def test_a_private_name_of_another_package_is_reported() -> None:
    problems = _plant({"unveil.metrics.planted": "from ..attribution._base import Attributor\n"})
    assert problems == ["unveil.metrics.planted:1 imports unveil.attribution._base.Attributor: "
                        "a private name of another package"]
    attr = _plant({"unveil.scale.planted": "from unveil.core.explanation import _FORMAT\n"})
    assert len(attr) == 1 and "a private name of another package" in attr[0]
    same = _plant({"unveil.report.planted": "from ._builder import Report\n"})  # own package: fine
    assert same == []


def test_a_cycle_between_packages_is_reported() -> None:
    # attention -> text is allowed (same layer); text -> attention closes a cycle.
    problems = _plant({"unveil.text.planted": "from ..attention import rollout\n"})
    assert problems == ["cycle between packages: attention -> text -> attention"]


def test_string_imports_and_unknown_packages_are_reported() -> None:
    hidden = _plant({"unveil.metrics.planted":
                     "import importlib\n\ndef f():\n    return importlib.import_module('unveil.cli')\n"})
    assert any("import unveil modules with an import statement" in p for p in hidden)
    assert any("layer 2 (metrics) imports layer 4 (cli)" in p for p in hidden)
    assert _plant({"unveil.newpkg.mod": ""}) == ["unveil.newpkg.mod: package 'newpkg' is in no layer "
                                                 "(add it to LAYERS)"]
