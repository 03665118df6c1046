"""Every registered method's declaration matches its code, and the registry checks options with it.

The declarations are what every layer above the methods reads (nobody else reads signatures);
this test is the one place that compares them with the signatures: each constructor keyword and
each call keyword is declared where it goes, with the same default, and nothing declared is
missing from the code. Then, for every method, a misspelt option and an ill-typed or
out-of-range value are refused by ``uv.explain`` with :class:`OptionError` before the model runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import unveil as uv
from _util import TinyCNN, mlp
from unveil.attention import AttentionRollout
from unveil.attribution import GradCAM, InputXGradient, IntegratedGradients, Saliency
from unveil.core.options import UNIVERSAL, Option, check_value
from unveil.core.registry import MethodInfo, get_method
from unveil.errors import OptionError
from unveil.text.synthetic import TinyTextTransformer

INFOS = list(uv.methods())
NAMES = [m.name for m in INFOS]
# common options the base class handles itself (the method's own code never sees them)
HANDLED_BY_BASE = {"target", "feature_names", "class_names"}


def _keywords(fn: Any) -> dict[str, inspect.Parameter]:
    """Keyword parameters of ``fn`` (the data and ``self`` / ``call`` left out)."""
    params = inspect.signature(fn).parameters
    return {n: p for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _call_function(info: MethodInfo) -> Any:
    """The function that receives a method's call options: its ``_attribute``."""
    return getattr(info.cls, "_attribute")  # noqa: B009  # an Attributor's, not on type


def _own(info: MethodInfo) -> list[Option]:
    return [o for o in info.options if o.name not in UNIVERSAL and o.name != "background"]


# -- declarations against the code ---------------------------------------------------------------
def test_the_registry_holds_every_method() -> None:
    assert len(NAMES) == 31 and len(set(NAMES)) == 31


@pytest.mark.parametrize("name", NAMES)
def test_init_options_are_the_constructor_keywords(name: str) -> None:
    info = get_method(name)
    kw = _keywords(vars(info.cls).get("__init__") or getattr(info.cls, "__init__"))  # noqa: B009
    declared = set(info.options.names("init"))
    assert declared == set(kw), f"{name}: declared {sorted(declared)}, __init__ takes {sorted(kw)}"
    for n in declared:
        assert info.options[n].default == kw[n].default, f"{name}.{n}: default differs"


@pytest.mark.parametrize("name", NAMES)
def test_call_options_are_the_call_keywords(name: str) -> None:
    info = get_method(name)
    fn = _call_function(info)
    kw = _keywords(fn)
    declared = set(info.options.names("call")) - HANDLED_BY_BASE
    if not info.takes_seed:
        declared.discard("seed")  # the base drops it for a method without randomness
        assert "seed" not in kw, f"{name}: its call takes seed= but the declaration says it does not"
    assert declared == set(kw), f"{name}: declared {sorted(declared)}, the call takes {sorted(kw)}"
    for n in declared:
        assert info.options[n].default == kw[n].default, f"{name}.{n}: default differs"


@pytest.mark.parametrize("name", NAMES)
def test_every_default_passes_its_own_check(name: str) -> None:
    info = get_method(name)
    for o in info.options:
        o.check(o.default, method=name)  # raises OptionError if the declaration contradicts itself
        assert o.meaning, f"{name}.{o.name}: no meaning"
        if o.low is not None and o.high is not None:
            assert o.low <= o.high


@pytest.mark.parametrize("name", NAMES)
def test_uv_options_lists_every_declared_option(name: str) -> None:
    table = uv.options(name)
    info = get_method(name)
    assert table.names() == info.options.names()
    text = repr(table)
    for o in info.options:
        assert f"\n{o.name} " in text
    assert len(_own(info)) >= 1  # every method has at least one option of its own


def test_metadata() -> None:
    by = {m.name: m for m in INFOS}
    ranks: dict[str, list[tuple[int, str]]] = {}
    for m in INFOS:
        for modality, rank in m.preferred_for.items():
            assert modality in m.modalities
            ranks.setdefault(modality, []).append((rank, m.name))
    preferred = {k: tuple(n for _, n in sorted(v)) for k, v in ranks.items()}
    assert preferred == {
        "image": ("integrated_gradients", "grad_cam", "occlusion", "saliency"),
        "tabular": ("integrated_gradients", "kernel_shap", "saliency", "lime"),
        "text": ("integrated_gradients", "attention_rollout", "occlusion", "saliency"),
        "sequence": ("integrated_gradients", "occlusion", "saliency"),
    }
    assert by["grad_cam_plus_plus"].display_name == "Grad-CAM++"
    assert by["input_x_gradient"].display_name == "Input × Gradient"
    assert {m.name for m in INFOS if m.wraps} == {"smoothgrad", "vargrad"}
    for m in INFOS:
        for inner in m.wraps:  # a wrapper wraps gradient methods that attribute in a given space
            assert by[inner].needs_gradients and hasattr(by[inner].cls, "_attribute_space")
        if m.stochastic:
            assert m.takes_seed
    assert not by["saliency"].signed and by["integrated_gradients"].signed
    assert by["integrated_gradients"].takes_seed  # for the 'uniform' baseline


# -- the registry refuses bad options before the model runs ----------------------------------
class _Ran(Exception):
    pass


def _refuse_forward(model: nn.Module) -> nn.Module:
    def hook(*_: Any) -> None:
        raise _Ran("the model ran before the options were checked")

    model.register_forward_pre_hook(hook)
    return model


@pytest.fixture(scope="module")
def setups() -> Iterator[dict[str, tuple[nn.Module, torch.Tensor]]]:
    torch.manual_seed(0)
    text = TinyTextTransformer(vocab_size=20, seq_len=6, dim=8, depth=1, heads=2).eval()
    yield {
        "image": (_refuse_forward(TinyCNN().eval()), torch.rand(2, 1, 16, 16)),
        "tabular": (_refuse_forward(mlp().eval()), torch.randn(2, 6)),
        "text": (_refuse_forward(text), torch.randint(1, 20, (2, 6))),
    }


def _setup(info: MethodInfo, setups: dict[str, Any]) -> tuple[nn.Module, torch.Tensor]:
    if info.family == "attention":
        return setups["text"]  # type: ignore[no-any-return]
    return setups["tabular" if "tabular" in info.modalities else "image"]  # type: ignore[no-any-return]


def _bad_value(o: Option) -> Any:
    """A value the option's type refuses."""
    for v in ("many", object(), 1.5, -1):
        if not check_value(v, o.type):
            return v
    raise AssertionError(f"option {o.name} accepts anything")


@pytest.mark.parametrize("name", NAMES)
def test_a_misspelt_option_is_refused_with_a_suggestion(name: str, setups: Any) -> None:
    info = get_method(name)
    model, x = _setup(info, setups)
    for o in _own(info):
        typo = o.name[:-1] if len(o.name) > 3 else o.name + "s"
        with pytest.raises(OptionError, match=f"takes no option '{typo}'. Did you mean '{o.name}'"):
            uv.explain(model, x, method=name, **{typo: o.default})


def test_integrated_gradients_typo() -> None:
    with pytest.raises(OptionError, match="takes no option 'n_step'. Did you mean 'n_steps'"):
        uv.explain(mlp(), torch.randn(2, 6), method="integrated_gradients", n_step=8)
    with pytest.raises(OptionError, match=r"n_steps='many' should be int \| 'auto'"):
        uv.explain(mlp(), torch.randn(2, 6), method="integrated_gradients", n_steps="many")


@pytest.mark.parametrize("name", NAMES)
def test_ill_typed_and_out_of_range_values_are_refused(name: str, setups: Any) -> None:
    info = get_method(name)
    model, x = _setup(info, setups)
    for o in info.options:
        bad = _bad_value(o)
        with pytest.raises(OptionError, match=f"option {o.name}=.* should be"):
            uv.explain(model, x, method=name, **{o.name: bad})
        if o.low is not None:
            below = o.low - 1 if check_value(int(o.low) - 1, o.type) else o.low - 0.5
            with pytest.raises(OptionError, match=f"option {o.name}=.* is outside"):
                uv.explain(model, x, method=name, **{o.name: below})  # type: ignore[arg-type]  # any option
        if o.high is not None:
            with pytest.raises(OptionError, match=f"option {o.name}=.* is outside"):
                uv.explain(model, x, method=name, **{o.name: o.high + 1})  # type: ignore[arg-type]  # any option


def test_numpy_numbers_pass_the_checks() -> None:
    e = uv.explain(mlp().eval(), torch.randn(2, 6), method="kernel_shap", n_samples=np.int64(16),
                   seed=np.int64(3), target=0, baseline=0.0)
    assert e.params["n_samples"] == 16 and type(e.params["n_samples"]) is int


# -- classes used directly --------------------------------------------------------------------
def test_options_given_in_the_wrong_place() -> None:
    net = mlp().eval()
    with pytest.raises(OptionError, match="baseline is an option of the call, not of the constructor"):
        IntegratedGradients(net, baseline=0.5)  # type: ignore[call-arg]  # refused on purpose
    with pytest.raises(OptionError, match="n_steps is an option of the constructor, not of the call"):
        IntegratedGradients(net)(torch.randn(2, 6), n_steps=3)
    # a class without a constructor of its own is checked against its own declaration
    with pytest.raises(OptionError, match="'input_x_gradient' takes no option 'n_steps'"):
        InputXGradient(net, n_steps=3)  # type: ignore[call-arg]  # refused on purpose
    with pytest.raises(OptionError, match="'grad_cam' takes no option 'layers'. Did you mean 'layer'"):
        GradCAM(TinyCNN(), layers="features.3")  # type: ignore[call-arg]  # refused on purpose


def test_unregistered_subclasses_still_refuse_unknown_call_options() -> None:
    class MySaliency(Saliency):
        pass

    class MyCAM(GradCAM):
        pass

    class MyRollout(AttentionRollout):
        pass

    with pytest.raises(OptionError, match="'saliency' takes no option 'layr'. Did you mean 'layer'"):
        MySaliency(mlp().eval())(torch.randn(2, 6), layr="2")
    with pytest.raises(OptionError, match="'grad_cam' takes no option 'baseline'"):
        MyCAM(TinyCNN().eval())(torch.rand(2, 1, 16, 16), baseline=0)
    text = TinyTextTransformer(vocab_size=20, seq_len=6, dim=8, depth=1, heads=2).eval()
    with pytest.raises(OptionError, match="takes no option 'attention_masks'. Did you mean"):
        MyRollout(text)(torch.randint(1, 20, (2, 6)), attention_masks=None)
