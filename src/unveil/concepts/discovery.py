"""Concept discovery: factorise a layer's activations over data into concepts (CRAFT).

CRAFT (Fel et al. 2023, "CRAFT: Concept Recursive Activation FacTorization for
Explainability", CVPR) writes the non-negative activations ``A`` of many image crops at a layer
as ``A ≈ U W`` with non-negative matrix factorisation: the rows of ``W`` are concepts (directions
in the layer's channel space), ``U`` says how much of each concept every crop holds. On a
convolutional layer every position of the feature map already *is* the activation of one crop of
the input (its receptive field), so unveil factorises the positions of the map over the data —
one row of ``A`` per (image, position), the crops at the network's own scale, no resizing — and
shows each concept with the rows and receptive-field patches where its coefficient is largest.

Importance (CRAFT §3.3): the total-order Sobol index of each concept's coefficient for the
explained score. For every row the coefficients ``U`` at all positions are multiplied by random
per-concept masks in [0, 1] (a scrambled Sobol sequence; Saltelli's A, B and A_B^i designs), the
layer's output is replaced by ``(U ⊙ mask) W`` and the rest of the network runs; Jansen's
estimator ``S_T,i = E[(f(A) - f(A_B^i))²] / (2 Var f)`` gives the share of the score's variance
that concept ``i`` accounts for, with its interactions. ``importance="gradient"`` uses gradient ×
concept coefficient instead (one backward pass per row): cheaper, first order only.

For layers whose activations can be negative (a transformer's residual stream) ``method="sae"``
uses the sparse autoencoder of :mod:`unveil.language.sae` (a trained one passed as ``sae=``, or
trained here): concepts are its features, ``U`` its codes and ``W`` its decoder.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..core.batching import BatchSize, map_chunked
from ..core.hooks import forward_hooks, layer_name
from ..core.model import Model, as_model
from ..core.result_file import read_result, write_result
from ..errors import InputError, ModelError, OptionError
from ..featurevis import receptive_boxes
from ..language.sae import SparseAutoencoder, train_sae
from ._engine_crp import channel_axis as channel_axis_of

__all__ = ["ConceptDiscovery", "discover_concepts", "load_concept_discovery"]


@dataclass
class ConceptDiscovery:
    """Concepts found at a layer, their top examples and patches, and their importance.

    Attributes
    ----------
    layer, method, importance_method
        The layer, ``"nmf"`` or ``"sae"``, ``"sobol"`` or ``"gradient"``.
    components
        (r, C) the concept bank ``W``: each concept as a direction over the layer's channels.
    importance
        (r,) the concepts' mean importance for the explained class over the rows
        (total-order Sobol indices, or gradient × coefficient).
    row_importance
        (n, r) the same per row.
    row_scores
        (n, r) how much of each concept a row holds (its largest coefficient over positions).
    example_indices, example_values, example_inputs
        (r, k) the rows with the largest ``row_scores`` per concept, the scores, (r, k, ...) the rows.
    patch_indices, patch_positions, patch_values, patch_boxes, patches
        The ``k`` (row, position) pairs with the largest coefficient per concept, their
        receptive-field boxes ``[start, stop)`` per spatial axis, and the crops (per concept a
        list of arrays); ``None`` without spatial axes.
    explained_variance, fidelity
        How well ``U W`` reconstructs the activations (1 is exact), and the share of rows whose
        predicted class stays the same when the layer's output is replaced by ``U W``.
    """

    layer: str
    method: str
    importance_method: str
    target: int
    components: np.ndarray
    importance: np.ndarray
    row_importance: np.ndarray
    row_scores: np.ndarray
    example_indices: np.ndarray
    example_values: np.ndarray
    example_inputs: np.ndarray
    explained_variance: float
    fidelity: float
    patch_indices: np.ndarray | None = None
    patch_positions: np.ndarray | None = None
    patch_values: np.ndarray | None = None
    patch_boxes: np.ndarray | None = None
    patches: list[list[np.ndarray]] | None = None
    names: dict[int, str] = field(default_factory=dict)
    class_names: list[str] | None = None
    channel_axis: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    n_evals: int = 0

    @property
    def n_concepts(self) -> int:
        """How many concepts were found."""
        return int(self.components.shape[0])

    def __repr__(self) -> str:
        return (f"ConceptDiscovery(layer={self.layer!r}, method={self.method!r}, concepts={self.n_concepts}, "
                f"target={self.class_name!r}, importance={self.importance_method!r}, "
                f"explained_variance={self.explained_variance:.3f})")

    @property
    def class_name(self) -> str:
        """The explained class by name if known."""
        t = self.target
        return self.class_names[t] if self.class_names and 0 <= t < len(self.class_names) else str(t)

    def concept_name(self, j: int) -> str:
        """A display name of concept ``j``."""
        return self.names.get(int(j), f"concept {int(j)}")

    def ranking(self) -> list[tuple[int, float]]:
        """Concepts by importance, most important first: ``[(concept, importance)]``."""
        order = np.argsort(-self.importance, kind="stable")
        return [(int(j), float(self.importance[j])) for j in order]

    def concept_scores(self, model: Any, x: Any, *, batch_size: BatchSize = "auto") -> np.ndarray:
        """(n, r) how much of each concept new rows hold (largest code over positions), with this
        bank: the concepts applied to inputs they were not found on (NMF results only)."""
        if self.method != "nmf":
            raise OptionError("concept_scores re-encodes with the NMF bank; for an SAE use its encode()")
        m = as_model(model)
        xt = m.prepare(x)
        with m.guard():
            acts = _activations(m, m.layer(self.layer), xt, batch_size)
        axis = channel_axis_of(m.layer(self.layer), acts.ndim, self.channel_axis)
        pos = _to_positions(acts, axis)
        w = torch.as_tensor(self.components, dtype=pos.dtype, device=pos.device)
        u = nnls_codes(pos.reshape(-1, pos.shape[-1]), w).reshape(pos.shape[0], pos.shape[1], -1)
        return u.amax(1).double().cpu().numpy()

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain lists and numbers (JSON-ready)."""
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if isinstance(v, np.ndarray):
                out[k] = v.tolist()
            elif k == "patches":
                out[k] = None if v is None else [[p.tolist() for p in row] for row in v]
            elif k == "names":
                out[k] = {str(a): b for a, b in v.items()}
            else:
                out[k] = v
        return out

    _ARRAYS = ("components", "importance", "row_importance", "row_scores", "example_indices", "example_values",
               "example_inputs", "patch_indices", "patch_positions", "patch_values", "patch_boxes")

    def save(self, path: str | Path) -> Path:
        """Write the result to one ``.npz`` (no pickle); read it with :func:`load_concept_discovery`."""
        arrays = {k: getattr(self, k) for k in self._ARRAYS if getattr(self, k) is not None}
        counts = None
        if self.patches is not None:
            counts = [len(row) for row in self.patches]
            for j, row in enumerate(self.patches):
                for q, p in enumerate(row):
                    arrays[f"patch{j}.{q}"] = p
        meta = {"layer": self.layer, "method": self.method, "importance_method": self.importance_method,
                "target": self.target, "explained_variance": self.explained_variance, "fidelity": self.fidelity,
                "names": {str(k): v for k, v in self.names.items()}, "class_names": self.class_names,
                "channel_axis": self.channel_axis, "timings": self.timings, "n_evals": self.n_evals,
                "patch_counts": counts}
        return write_result(path, "concept_discovery", meta, arrays)

    @classmethod
    def load(cls, path: str | Path) -> ConceptDiscovery:
        """Read a result written by :meth:`save`."""
        meta, a = read_result(path, "concept_discovery", what="an unveil concept result")
        counts = meta.pop("patch_counts")
        patches = None if counts is None else [[a[f"patch{j}.{q}"] for q in range(n)] for j, n in enumerate(counts)]
        kw: dict[str, Any] = {k: a.get(k) for k in cls._ARRAYS}
        meta["names"] = {int(k): v for k, v in meta["names"].items()}
        meta.pop("kind", None)
        return cls(**meta, **kw, patches=patches)

    def to_html(self, *, full: bool = False) -> str:
        """The concepts with their importance, top patches and rows, self-contained HTML."""
        from ..report.crp import concept_discovery_html, page  # the permitted lazy upward call

        body = concept_discovery_html(self)
        return page(body, "Discovered concepts") if full else body

    def _repr_html_(self) -> str:
        return self.to_html()


def load_concept_discovery(path: str | Path) -> ConceptDiscovery:
    """Read a :class:`ConceptDiscovery` written by its ``save``."""
    return ConceptDiscovery.load(path)


# -- the factorisations ------------------------------------------------------------------------

def _update_codes(a: torch.Tensor, u: torch.Tensor, w: torch.Tensor, steps: int) -> torch.Tensor:
    """Multiplicative updates of ``u`` for ``a ≈ u w`` with ``w`` fixed (Lee & Seung 2001)."""
    aw, ww = a @ w.T, w @ w.T
    for _ in range(steps):
        u = u * aw / (u @ ww).clamp_min(1e-12)
    return u


def nmf(a: torch.Tensor, r: int, *, seed: int = 0, steps: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative ``a (P, C) ≈ u (P, r) w (r, C)`` by multiplicative updates in float64.

    Rows of ``a`` that are all zero (blank background) are left out of the fit and get zero
    codes. The start is seeded random (scaled to the data's mean), so results repeat.
    """
    x = a.double()
    keep = x.abs().sum(1) > 0
    xk = x[keep]
    if xk.shape[0] < r:
        raise InputError(f"only {xk.shape[0]} non-zero activation rows for {r} concepts; give more data")
    g = torch.Generator(device="cpu").manual_seed(seed)
    scale = (xk.mean() / r).sqrt().item()
    u = (torch.rand(xk.shape[0], r, generator=g, dtype=torch.float64) * scale + 1e-3).to(x.device)
    w = (torch.rand(r, x.shape[1], generator=g, dtype=torch.float64) * scale + 1e-3).to(x.device)
    for _ in range(steps):
        u = u * (xk @ w.T) / (u @ (w @ w.T)).clamp_min(1e-12)
        w = w * (u.T @ xk) / ((u.T @ u) @ w).clamp_min(1e-12)
    norm = w.norm(dim=1, keepdim=True).clamp_min(1e-12)  # unit concepts; the codes carry the size
    w, u = w / norm, u * norm.T
    full = torch.zeros(x.shape[0], r, dtype=torch.float64, device=x.device)
    full[keep] = u
    return full.to(a.dtype), w.to(a.dtype)


def nnls_codes(a: torch.Tensor, w: torch.Tensor, *, steps: int = 200) -> torch.Tensor:
    """Non-negative codes ``u`` of ``a (P, C)`` for a fixed bank ``w (r, C)``: ``a ≈ u w``."""
    x = a.double()
    wd = w.double()
    u0 = (x @ wd.T).clamp_min(0) / (wd @ wd.T).diagonal().clamp_min(1e-12) / w.shape[0] + 1e-6
    return _update_codes(x, u0, wd, steps).to(a.dtype)


class _Factors:
    """``encode`` (P, C) -> (P, r) codes and ``decode`` back; fitted on the data's positions."""

    def __init__(self, method: str, n_concepts: int, seed: int, sae: SparseAutoencoder | None,
                 sae_steps: int) -> None:
        self.method, self.r, self.seed, self.sae, self.sae_steps = method, n_concepts, seed, sae, sae_steps
        self.W: torch.Tensor | None = None

    def fit(self, p: torch.Tensor) -> torch.Tensor:
        """Fit on positions ``p`` (P, C); returns their codes."""
        if self.method == "sae":
            if self.sae is None:
                self.sae = train_sae(p.float(), n_features=self.r, steps=self.sae_steps, seed=self.seed)
            elif self.sae.W_dec.shape != (self.r, p.shape[1]):
                raise OptionError(
                    f"the sae= autoencoder has {self.sae.W_dec.shape[0]} features of width "
                    f"{self.sae.W_dec.shape[1]}, but the layer has {p.shape[1]} channels; pass an SAE "
                    f"trained on this layer (n_concepts is then its feature count)"
                )
            self.W = self.sae.W_dec.detach().to(p.dtype)
            return self.encode(p)
        if float(p.min()) < 0:
            raise InputError(
                "NMF needs non-negative activations, but this layer's are negative in places; "
                "choose the layer after a ReLU, or method='sae' (e.g. for a transformer's residual stream)"
            )
        if p.shape[0] < self.r:
            raise InputError(f"only {p.shape[0]} activation rows for {self.r} concepts; give more data")
        u, self.W = nmf(p, self.r, seed=self.seed)
        return u

    def encode(self, p: torch.Tensor) -> torch.Tensor:
        """Codes (P, r) of activations (P, C) with the fitted bank."""
        if self.method == "sae":
            assert self.sae is not None
            with torch.no_grad():
                return self.sae.encode(p.float()).to(p.dtype)
        assert self.W is not None
        return nnls_codes(p, self.W)

    def decode(self, u: torch.Tensor) -> torch.Tensor:
        """Activations (..., C) of codes (..., r)."""
        if self.method == "sae":
            assert self.sae is not None  # the SAE's decoder with its weights held fixed
            return (u.float() @ self.sae.W_dec.detach() + self.sae.b_dec.detach()).to(u.dtype)
        assert self.W is not None
        return u @ self.W.to(u.dtype)


# -- helpers -----------------------------------------------------------------------------------

def _to_positions(a: torch.Tensor, axis: int) -> torch.Tensor:
    """(N, ..., C, ...) -> (N, S, C) with the positions flattened."""
    a = a.movedim(axis, -1)
    return a.reshape(a.shape[0], -1, a.shape[-1])


def _from_positions(p: torch.Tensor, like: torch.Size, axis: int) -> torch.Tensor:
    moved = [like[i] for i in range(len(like)) if i != axis] + [like[axis]]
    return p.reshape(p.shape[0], *moved[1:]).movedim(-1, axis)


def _activations(m: Model, layer_mod: nn.Module, x: torch.Tensor, batch_size: BatchSize) -> torch.Tensor:
    def run(a: int, b: int) -> torch.Tensor:
        seen: list[torch.Tensor] = []

        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            if not isinstance(out, torch.Tensor):
                raise ModelError("the layer's output is not a tensor; choose a layer that returns one")
            seen.append(out.detach())

        with torch.no_grad(), forward_hooks([(layer_mod, hook)]):
            m.forward(x[a:b])
        if not seen:
            raise ModelError("the layer did not run in the model's forward pass")
        return seen[0]

    return map_chunked(run, x.shape[0], batch_size=batch_size, model=m, key=("discover",))


def _replaced(m: Model, layer_mod: nn.Module, x: torch.Tensor, new: torch.Tensor,
              targets: torch.Tensor) -> torch.Tensor:
    """Target scores of ``x`` with the layer's output replaced by ``new`` (same rows)."""
    def hook(_m: nn.Module, _i: Any, out: Any) -> torch.Tensor:
        return new.to(out.dtype)

    with forward_hooks([(layer_mod, hook)]):
        out = m.forward(x)
    return m.select(out, targets)


def _sobol_designs(r: int, n: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """Saltelli's designs: rows ``A`` (n), ``B`` (n), then ``A_B^i`` (n each), shape (n (r + 2), r)."""
    eng = torch.quasirandom.SobolEngine(dimension=2 * r, scramble=True, seed=seed)  # type: ignore[no-untyped-call]
    ab = eng.draw(n, dtype=torch.float64).to(dtype)
    a, b = ab[:, :r], ab[:, r:]
    mixes = []
    for i in range(r):
        c = a.clone()
        c[:, i] = b[:, i]
        mixes.append(c)
    return torch.cat([a, b, *mixes])


def _sobol_total(f: torch.Tensor, r: int, n: int) -> torch.Tensor:
    """Jansen's total-order indices (r,) from scores ``f`` over the designs."""
    fa, fb = f[:n], f[n:2 * n]
    var = torch.cat([fa, fb]).var(unbiased=True)
    if float(var) <= 0:
        return torch.zeros(r, dtype=f.dtype)
    fc = f[2 * n:].reshape(r, n)
    return ((fa[None] - fc) ** 2).mean(1) / (2 * var)


def _importance(m: Model, layer_mod: nn.Module, x: torch.Tensor, targets: torch.Tensor, u: torch.Tensor,
                shape: torch.Size, axis: int, fac: _Factors, how: str, n_designs: int, seed: int) -> torch.Tensor:
    """(n, r) importance of each concept for each row."""
    n, r = x.shape[0], u.shape[-1]
    out = torch.zeros(n, r, dtype=torch.float64)
    if how == "gradient":
        for i in range(n):
            ui = u[i:i + 1].detach().clone().requires_grad_(True)
            with torch.enable_grad():
                new = _from_positions(fac.decode(ui), torch.Size((1, *shape[1:])), axis)
                s = _replaced(m, layer_mod, x[i:i + 1], new, targets[i:i + 1])
                (g,) = torch.autograd.grad(s.sum(), ui)
            out[i] = (g * ui.detach()).sum(1)[0].double()
        return out
    designs = _sobol_designs(r, n_designs, seed, u.dtype).to(u.device)  # (M, r)
    mm = designs.shape[0]
    with torch.no_grad():
        for i in range(n):
            new = fac.decode(u[i][None] * designs[:, None, :])  # (M, S, C)
            new = _from_positions(new, torch.Size((mm, *shape[1:])), axis)
            xs = x[i:i + 1].expand(mm, *x.shape[1:])
            f = _replaced(m, layer_mod, xs, new, targets[i:i + 1].expand(mm))
            m.n_evals += mm
            out[i] = _sobol_total(f.double().cpu(), r, n_designs)
    return out


# -- the public function -----------------------------------------------------------------------

def discover_concepts(
    model: Any,
    data: Any,
    *,
    layer: Any,
    n_concepts: int = 8,
    target: Any = "predicted",
    method: Literal["nmf", "sae"] = "nmf",
    importance: Literal["sobol", "gradient"] = "sobol",
    n_designs: int = 32,
    k: int = 6,
    channel_axis: int | None = None,
    sae: SparseAutoencoder | None = None,
    sae_steps: int = 2000,
    names: dict[int, str] | Sequence[str] | None = None,
    seed: int = 0,
    batch_size: BatchSize = "auto",
) -> ConceptDiscovery:
    """Factorise ``layer``'s activations over ``data`` into concepts and rank them for a class.

    Parameters
    ----------
    model
        A ``torch.nn.Module`` (read with hooks; it is never changed).
    data
        (n, ...) rows, as CRAFT does the images of one class (the importance is averaged over them).
    layer
        The layer whose activations are factorised: a ReLU's output for ``"nmf"``.
    n_concepts
        How many concepts ``r``.
    target
        The explained class: ``"predicted"`` (the most frequent prediction over ``data``) or a class.
    method
        ``"nmf"`` (CRAFT) or ``"sae"`` (a sparse autoencoder, for signed activations).
    importance
        ``"sobol"`` (total-order Sobol indices, CRAFT) or ``"gradient"`` (gradient × coefficient).
    n_designs
        Sobol sample size ``N`` per row; the model runs ``N (r + 2)`` times per row.
    k
        Top rows and patches kept per concept.
    channel_axis
        The channel axis of the layer's output (default: 1, or the last for 3-D outputs
        ``(N, T, D)`` such as a transformer's).
    sae, sae_steps
        A trained :class:`~unveil.language.sae.SparseAutoencoder` for ``method="sae"``, or the
        training steps of one trained here.

    Returns
    -------
    ConceptDiscovery
    """
    for val, nm in ((n_concepts, "n_concepts"), (n_designs, "n_designs"), (k, "k")):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise OptionError(f"{nm} must be a whole number >= 1, got {val!r}")
    if method not in ("nmf", "sae"):
        raise OptionError(f"method must be 'nmf' or 'sae', got {method!r}")
    if importance not in ("sobol", "gradient"):
        raise OptionError(f"importance must be 'sobol' or 'gradient', got {importance!r}")
    if not isinstance(data, (torch.Tensor, np.ndarray)):
        raise InputError(f"data must be a tensor or array (n, ...) of rows, got {type(data).__name__}")
    if sae is not None:
        n_concepts = int(sae.W_dec.shape[0])
    t0 = time.perf_counter()
    m = as_model(model)
    x = m.prepare(data, name="data")
    if m.module is None:
        raise ModelError(f"concept discovery reads a layer, so it needs a torch.nn.Module; got {type(m.obj).__name__}")
    name = layer_name(m.module, layer)
    layer_mod = m.layer(name)
    with m.guard():
        acts = _activations(m, layer_mod, x, batch_size)
        if acts.ndim < 2:
            raise ModelError(f"layer {name!r} returns shape {tuple(acts.shape)}: no channel axis")
        axis = channel_axis_of(layer_mod, acts.ndim, channel_axis)
        pos = _to_positions(acts, axis)  # (n, S, C)
        n, s, c = pos.shape
        fac = _Factors(method, int(n_concepts), seed, sae, sae_steps)
        u = fac.fit(pos.reshape(-1, c)).reshape(n, s, -1)
        recon = fac.decode(u)
        ev = float(1 - (pos - recon).double().pow(2).sum() / (pos.double() - pos.double().mean((0, 1))).pow(2).sum().clamp_min(1e-30))
        t_fit = time.perf_counter() - t0
        with torch.no_grad():
            out = m.forward(x)
        if isinstance(target, str) and target == "predicted" and out.ndim == 2:
            target = int(torch.mode(out.argmax(1)).values)
        tg = m.resolve_targets(target, out)
        if tg is None:
            raise OptionError("concept discovery explains a class score: the model must return (n, K) scores")
        with torch.no_grad():
            new = _from_positions(recon, acts.shape, axis)
            same = float((_out_replaced(m, layer_mod, x, new).argmax(1) == out.argmax(1)).double().mean())
        imp = _importance(m, layer_mod, x, tg, u, acts.shape, axis, fac, importance, int(n_designs), seed)
    res = _examples(u, x, int(k))
    result = ConceptDiscovery(
        layer=name, method=method, importance_method=importance, target=int(tg[0]),
        components=fac.W.detach().double().cpu().numpy() if fac.W is not None else np.zeros((0, c)),
        importance=imp.mean(0).numpy(), row_importance=imp.numpy(),
        row_scores=u.amax(1).double().cpu().numpy(), explained_variance=ev, fidelity=same,
        names=_names(names, u.shape[-1]), class_names=m.class_names, channel_axis=axis, n_evals=m.n_evals,
        **res,
    )
    spatial = acts.movedim(axis, -1).shape[1:-1]
    if x.ndim >= 3 and len(spatial) == x.ndim - 2 and len(spatial) >= 1 and axis == 1:
        _patches(result, u, x, m.module, name, spatial, int(k))
    result.timings = {"factorise": t_fit, "total": time.perf_counter() - t0}
    return result


def _out_replaced(m: Model, layer_mod: nn.Module, x: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    def hook(_m: nn.Module, _i: Any, out: Any) -> torch.Tensor:
        return new.to(out.dtype)

    with forward_hooks([(layer_mod, hook)]):
        return m.forward(x)


def _names(names: dict[int, str] | Sequence[str] | None, r: int) -> dict[int, str]:
    if names is None:
        return {}
    if isinstance(names, dict):
        return {int(a): str(b) for a, b in names.items()}
    if isinstance(names, (str, bytes)) or len(names) != r:
        raise OptionError(f"names must be a dict {{concept: name}} or {r} names")
    return {i: str(v) for i, v in enumerate(names)}


def _examples(u: torch.Tensor, x: torch.Tensor, k: int) -> dict[str, Any]:
    score = u.amax(1)  # (n, r)
    kk = min(k, u.shape[0])
    order = torch.sort(score, dim=0, descending=True, stable=True).indices[:kk].T  # (r, k)
    vals = torch.gather(score.T, 1, order)
    return {"example_indices": order.cpu().numpy(), "example_values": vals.double().cpu().numpy(),
            "example_inputs": x.detach().cpu().numpy()[order.cpu().numpy()]}


def _patches(res: ConceptDiscovery, u: torch.Tensor, x: torch.Tensor, module: nn.Module, layer: str,
             spatial: torch.Size, k: int) -> None:
    n, s, r = u.shape
    flat = u.permute(2, 0, 1).reshape(r, -1)  # (r, n S)
    kk = min(k, flat.shape[1])
    vals, where = torch.sort(flat, dim=1, descending=True, stable=True)
    vals, where = vals[:, :kk], where[:, :kk]
    rows, p = where // s, where % s
    pos = torch.stack(torch.unravel_index(p.reshape(-1), tuple(spatial)), dim=1)
    with torch.no_grad():
        boxes = receptive_boxes(module, layer, x[:1].detach().clone(), pos.clone()).reshape(r, kk, -1)
    xs = x.detach().cpu().numpy()
    crops: list[list[np.ndarray]] = []
    for j in range(r):
        row = []
        for q in range(kk):
            b = boxes[j, q].tolist()
            sl = tuple(slice(b[2 * d], b[2 * d + 1]) for d in range(len(b) // 2))
            row.append(xs[int(rows[j, q])][(slice(None), *sl)])
        crops.append(row)
    res.patch_indices = rows.cpu().numpy()
    res.patch_positions = pos.reshape(r, kk, -1).cpu().numpy()
    res.patch_values = vals.double().cpu().numpy()
    res.patch_boxes = boxes.cpu().numpy()
    res.patches = crops
