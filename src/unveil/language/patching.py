"""Activation patching and attribution patching from a clean prompt into a corrupted one.

Activation patching (causal tracing; Meng et al., 2022; Wang et al., 2022): run the corrupted
prompt, but replace one activation by its value on the clean prompt, and measure how much of the
logit difference ``m = logit[target] - logit[foil]`` (at ``position``) comes back::

    recovered = (m_patched - m_corrupted) / (m_clean - m_corrupted)

1 means the component alone carries the difference; 0 means patching it does nothing. Components:
the residual stream after each layer at each position (``resid``), each attention head's output
at all positions (``heads``: the head's slice of the attention output projection's input) and
each MLP's output at each position (``mlp``). Patches are stacked in the batch dimension: one
forward pass evaluates ``batch_size`` of them.

Attribution patching (Nanda, 2023; Syed et al., 2023) is its first-order Taylor approximation:
one clean and one corrupted forward pass and one backward pass give, for every component at once,
``(a_clean - a_corrupted) . d m / d a`` at the corrupted run (divided by ``m_clean - m_corrupted``).
It is exact where ``m`` is linear in the component and can be far off where it is not, so each
result carries ``faithfulness``: the correlation between the approximation and exact patching on a
random sample of components.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from ..errors import InputError, OptionError
from ._grid import Grid, HtmlResult
from ._residual import DecoderParts, Patch, capture, encode, find_parts, run_patched, token_labels
from .heads import token_id

__all__ = ["PatchingResult", "activation_patching", "attribution_patching"]

SITES = ("resid", "heads", "mlp")
Component = tuple[str, int, int]  # (site, layer, position or head)


@dataclass
class PatchingResult(HtmlResult):
    """Share of the logit difference recovered per component (``NaN`` where not computed).

    ``resid`` and ``mlp`` are (layers, positions); ``heads`` is (layers, heads). ``kind`` is
    ``"activation"`` (exact) or ``"attribution"`` (first order; then ``faithfulness`` is the
    Pearson correlation with exact patching on ``checked`` components).
    """

    page_title = 'patching'

    resid: npt.NDArray[np.float64] | None
    heads: npt.NDArray[np.float64] | None
    mlp: npt.NDArray[np.float64] | None
    clean_diff: float
    corrupted_diff: float
    tokens: list[str]
    target: int
    foil: int
    kind: str = "activation"
    n_forward: int = 0
    faithfulness: float | None = None
    checked: list[tuple[Component, float, float]] = field(default_factory=list)

    def grid(self, site: str = "resid") -> Grid:
        """One site as a heat map (layer x position, or layer x head)."""
        values = {"resid": self.resid, "heads": self.heads, "mlp": self.mlp}.get(site)
        if values is None:
            raise OptionError(f"site={site!r} was not patched; the result has "
                              f"{', '.join(s for s in SITES if getattr(self, s) is not None)}")
        cols = ([f"h{h}" for h in range(values.shape[1])] if site == "heads"
                else [f"{i}:{t}" for i, t in enumerate(self.tokens)])
        note = (f"logit[{self.target}] - logit[{self.foil}]: clean {self.clean_diff:+.3f}, corrupted "
                f"{self.corrupted_diff:+.3f}")
        if self.faithfulness is not None:
            note += (f"; faithfulness (correlation with exact patching on {len(self.checked)} "
                     f"components) {self.faithfulness:.3f}")
        return Grid(values, [str(i) for i in range(values.shape[0])], cols,
                    col_name="head" if site == "heads" else "position", note=note,
                    title=f"{self.kind} patching ({site}): share of the logit difference recovered")

    def to_pandas(self) -> Any:
        """One row per component: ``site``, ``layer``, ``index`` (position or head), ``recovered``."""
        import pandas as pd

        recs = [{"site": s, "layer": layer, "index": j, "recovered": float(v[layer, j])}
                for s in SITES if (v := getattr(self, s)) is not None
                for layer in range(v.shape[0]) for j in range(v.shape[1])]
        return pd.DataFrame(recs)

    def to_html(self) -> str:
        """Self-contained HTML heat maps of every patched site."""
        return "".join(self.grid(s).to_html() for s in SITES if getattr(self, s) is not None)



@dataclass
class _Setup:
    parts: DecoderParts
    clean: torch.Tensor
    corrupted: torch.Tensor
    target: int
    foil: int
    position: int
    sites: tuple[str, ...]
    tokens: list[str]


def _setup(model: nn.Module, clean: Any, corrupted: Any, target: int | str, foil: int | str,
           tokenizer: Any, position: int, sites: Sequence[str], layers: Iterable[nn.Module] | None,
           parts: DecoderParts | None) -> _Setup:
    p = find_parts(model, layers=layers, parts=parts)
    a, b = encode(clean, tokenizer, what="clean"), encode(corrupted, tokenizer, what="corrupted")
    if a.shape[0] != 1 or b.shape[0] != 1:
        raise InputError("clean and corrupted must each be one sequence")
    if a.shape[1] != b.shape[1]:
        raise InputError(f"clean and corrupted must have the same number of tokens (positions are "
                         f"patched one to one), got {a.shape[1]} and {b.shape[1]}; reword one of them "
                         "or pad it so they tokenize to the same length")
    bad = [s for s in sites if s not in SITES]
    if bad or not sites:
        raise OptionError(f"sites={list(sites)!r}; expected a non-empty subset of {', '.join(SITES)}")
    if "heads" in sites:
        p.need_heads()
    if "mlp" in sites:
        p.need_mlps()
    t = a.shape[1]
    if not isinstance(position, int) or not -t <= position < t:
        raise InputError(f"position={position!r} is outside the prompt's {t} tokens")
    w = p.unembed.weight
    assert isinstance(w, torch.Tensor)
    return _Setup(p, a, b, token_id(target, tokenizer, w.shape[0], "target"),
                  token_id(foil, tokenizer, w.shape[0], "foil"), position % t, tuple(sites),
                  token_labels(a[0].tolist(), tokenizer))


def _components(s: _Setup) -> list[Component]:
    t, n_layers = s.clean.shape[1], s.parts.n_layers
    out: list[Component] = []
    for site in s.sites:
        for layer in range(n_layers):
            if site == "heads":
                out += [("heads", layer, h) for h in range(s.parts.n_heads)]
            elif site == "resid" or s.parts.mlp[layer] is not None:
                out += [(site, layer, p) for p in range(t)]
    return out


def _diff(logits: torch.Tensor, s: _Setup) -> torch.Tensor:
    return (logits[:, s.position, s.target] - logits[:, s.position, s.foil]).double()


def _same(comp: Component, s: _Setup, cache: dict[str, list[torch.Tensor | None]],
          corrupted: dict[str, list[torch.Tensor | None]]) -> bool:
    """Whether the component's clean activation is bit for bit the corrupted run's own (e.g. a
    position before the first token where the prompts differ: a causal model computes it from
    the same tokens), so patching it leaves the corrupted run as it is."""
    site, layer, j = comp
    key = "z" if site == "heads" else site
    a, b = cache[key][layer], corrupted.get(key, [None] * (layer + 1))[layer]
    if a is None or b is None:
        return False
    if site == "heads":
        d = a.shape[-1] // s.parts.n_heads
        return torch.equal(a[..., j * d:(j + 1) * d], b[..., j * d:(j + 1) * d])
    return torch.equal(a[0, j], b[0, j])


def _exact(model: nn.Module, s: _Setup, comps: Sequence[Component], cache: dict[str, list[torch.Tensor | None]],
           batch_size: int, corrupted: tuple[float, dict[str, list[torch.Tensor | None]]] | None = None,
           ) -> tuple[npt.NDArray[np.float64], int]:
    """The patched logit difference of each component, ``batch_size`` patches per forward pass.

    Each pass patches one site of one layer: the corrupted prompt runs once up to that layer and
    is repeated there, one row per patch (``expand``), so the layers below are not recomputed.
    With ``corrupted=(metric, activations)`` of the corrupted run, a component whose clean
    activation equals the corrupted one exactly gets the corrupted metric without a pass.
    """
    out = np.empty(len(comps))
    n_forward = 0
    groups: dict[tuple[str, int], list[int]] = {}
    for i, comp in enumerate(comps):
        if corrupted is not None and _same(comp, s, cache, corrupted[1]):
            out[i] = corrupted[0]
            continue
        groups.setdefault(comp[:2], []).append(i)
    for (site, layer), members in groups.items():
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            rows = torch.arange(len(chunk))
            js = [comps[i][2] for i in chunk]
            if site == "heads":
                z = cache["z"][layer]
                assert z is not None
                d = z.shape[-1] // s.parts.n_heads
                patches = [Patch("z", layer, rows[r:r + 1], slice(None), z[0, :, h * d:(h + 1) * d], head=h)
                           for r, h in enumerate(js)]
                key = "z"
            else:
                pos = torch.tensor(js)
                act = cache[site][layer]
                assert act is not None
                patches = [Patch(site, layer, rows, pos, act[0, pos])]
                key = site
            keep = s.clean.shape[1] - s.position  # unembed only the metric's position onwards
            logits = run_patched(model, s.parts, s.corrupted, patches, expand=(key, layer, len(chunk)), keep=keep)
            out[chunk] = (logits[:, 0, s.target] - logits[:, 0, s.foil]).double().numpy()
            n_forward += 1
    return out, n_forward


def _arrays(s: _Setup, comps: Sequence[Component], values: npt.NDArray[np.float64]
            ) -> dict[str, npt.NDArray[np.float64] | None]:
    t, n_layers = s.clean.shape[1], s.parts.n_layers
    shape = {"resid": (n_layers, t), "mlp": (n_layers, t), "heads": (n_layers, max(s.parts.n_heads, 1))}
    arrays: dict[str, npt.NDArray[np.float64] | None] = {
        site: (np.full(shape[site], np.nan) if site in s.sites else None) for site in SITES}
    for (site, layer, j), v in zip(comps, values, strict=True):
        arr = arrays[site]
        assert arr is not None
        arr[layer, j] = v
    return arrays


def _clean_cache(model: nn.Module, s: _Setup) -> tuple[float, float, dict[str, list[torch.Tensor | None]]]:
    m_clean, m_corr, cache, _ = _caches(model, s)
    return m_clean, m_corr, cache


def _caches(model: nn.Module, s: _Setup) -> tuple[float, float, dict[str, list[torch.Tensor | None]],
                                                  dict[str, list[torch.Tensor | None]]]:
    """The clean and corrupted metrics and the activations of both runs at the patched sites."""
    need = tuple({"resid": "resid", "heads": "z", "mlp": "mlp"}[x] for x in s.sites)
    clean_logits, cache = capture(model, s.parts, s.clean, sites=need)
    corr_logits, corr_cache = capture(model, s.parts, s.corrupted, sites=need)
    return float(_diff(clean_logits, s)[0]), float(_diff(corr_logits, s)[0]), cache, corr_cache


def _share(values: npt.NDArray[np.float64], clean: float, corrupted: float) -> npt.NDArray[np.float64]:
    gap = clean - corrupted
    if abs(gap) < 1e-9:
        raise InputError(f"the logit difference is the same on the clean and the corrupted prompt "
                         f"({clean:.4g}); choose a corruption (or target/foil) that changes it")
    return (values - corrupted) / gap


def activation_patching(model: nn.Module, clean: Any, corrupted: Any, *, target: int | str,
                        foil: int | str, tokenizer: Any = None, position: int = -1,
                        sites: Sequence[str] = ("resid",), batch_size: int = 64,
                        layers: Iterable[nn.Module] | None = None,
                        parts: DecoderParts | None = None) -> PatchingResult:
    """Patch each component's clean activation into the corrupted run, one at a time (exact).

    Parameters
    ----------
    clean, corrupted : str or token ids
        Two prompts of the same token length (strings need ``tokenizer``).
    target, foil : int or str
        The metric is ``logit[target] - logit[foil]`` at ``position`` (default: the last token).
    sites : sequence of {"resid", "heads", "mlp"}
        Which components to patch.
    batch_size : int, default 64
        Patched variants evaluated per forward pass (1: one forward per patch). A patch whose
        clean activation is exactly the corrupted run's own (a position before the first token
        where the prompts differ) needs no pass: its value is the corrupted run's.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise OptionError(f"batch_size must be a positive integer, got {batch_size!r}")
    s = _setup(model, clean, corrupted, target, foil, tokenizer, position, sites, layers, parts)
    m_clean, m_corr, cache, corr_cache = _caches(model, s)
    comps = _components(s)
    patched, n_forward = _exact(model, s, comps, cache, batch_size, (m_corr, corr_cache))
    arrays = _arrays(s, comps, _share(patched, m_clean, m_corr))
    return PatchingResult(resid=arrays["resid"], heads=arrays["heads"], mlp=arrays["mlp"], clean_diff=m_clean,
                          corrupted_diff=m_corr, tokens=s.tokens, target=s.target, foil=s.foil,
                          n_forward=n_forward + 2)


def attribution_patching(model: nn.Module, clean: Any, corrupted: Any, *, target: int | str,
                         foil: int | str, tokenizer: Any = None, position: int = -1,
                         sites: Sequence[str] | None = None, check: int = 16,
                         seed: int = 0, batch_size: int = 64, layers: Iterable[nn.Module] | None = None,
                         parts: DecoderParts | None = None) -> PatchingResult:
    """First-order patching of every component at once, with a faithfulness check.

    ``sites`` defaults to every site the model has. ``check`` components drawn at random (``seed``) are also patched exactly; ``faithfulness`` is
    the Pearson correlation between the two over that sample (``None`` if fewer than 3 or the
    sample is constant), and ``checked`` lists ``(component, approximation, exact)``.
    """
    if not isinstance(check, int) or check < 0:
        raise OptionError(f"check must be a non-negative integer, got {check!r}")
    if sites is None:  # every site the model has
        found = find_parts(model, layers=layers, parts=parts)
        sites = ["resid"] + (["heads"] if found.n_heads > 0 and all(o is not None for o in found.o_proj) else []) \
            + (["mlp"] if any(m is not None for m in found.mlp) else [])
        parts = found
    s = _setup(model, clean, corrupted, target, foil, tokenizer, position, sites, layers, parts)
    m_clean, m_corr, cache = _clean_cache(model, s)
    names = [k for k in cache]
    logits, acts = capture(model, s.parts, s.corrupted, sites=names, grad=True)
    flat = [(k, i, a) for k, lst in acts.items() for i, a in enumerate(lst) if a is not None]
    grads = torch.autograd.grad(_diff(logits, s).sum(), [a for _, _, a in flat], allow_unused=True)
    gap = m_clean - m_corr
    _share(np.zeros(1), m_clean, m_corr)  # the same error as exact patching when nothing changes
    est: dict[tuple[str, int], torch.Tensor] = {}
    with torch.no_grad():
        for (k, i, a), g in zip(flat, grads, strict=True):
            c = cache[k][i]
            assert c is not None
            delta = (c - a.detach()) * (torch.zeros_like(a) if g is None else g)
            if k == "z":
                est[("heads", i)] = delta[0].reshape(delta.shape[1], s.parts.n_heads, -1).sum((0, 2))
            else:
                est[("resid" if k == "resid" else "mlp", i)] = delta[0].sum(-1)
    comps = _components(s)
    values = np.array([float(est[(site, layer)][j]) / gap for site, layer, j in comps])
    arrays = _arrays(s, comps, values)
    faith, checked, n_fwd = None, [], 0
    if check and comps:
        rng = np.random.default_rng(seed)
        pick = sorted(rng.choice(len(comps), size=min(check, len(comps)), replace=False).tolist())
        exact, n_fwd = _exact(model, s, [comps[i] for i in pick], cache, batch_size)
        exact_share = _share(exact, m_clean, m_corr)
        approx = values[pick]
        checked = [(comps[i], float(a), float(e)) for i, a, e in zip(pick, approx, exact_share, strict=True)]
        if len(pick) >= 3 and approx.std() > 0 and exact_share.std() > 0:
            faith = float(np.corrcoef(approx, exact_share)[0, 1])
    return PatchingResult(resid=arrays["resid"], heads=arrays["heads"], mlp=arrays["mlp"], clean_diff=m_clean,
                          corrupted_diff=m_corr, tokens=s.tokens, target=s.target, foil=s.foil,
                          kind="attribution", n_forward=3 + n_fwd, faithfulness=faith, checked=checked)
