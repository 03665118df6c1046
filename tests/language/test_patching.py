"""Activation patching (exact, batched) and attribution patching (first order, with its check)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from _lm_helpers import Toy, tiny_llama
from torch import nn

from unveil.errors import InputError, LayerNotFoundError, ModelError, OptionError
from unveil.language._residual import Patch, capture, find_parts, run_patched
from unveil.language.patching import activation_patching, attribution_patching


def _pair(n: int = 8, at: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    clean = torch.randint(3, 50, (n,), generator=torch.Generator().manual_seed(seed))
    corrupted = clean.clone()
    corrupted[at] = 3 if clean[at] != 3 else 4
    return clean, corrupted


def test_patching_a_component_with_its_own_clean_activation_changes_nothing(tiny_lm: nn.Module) -> None:
    parts = find_parts(tiny_lm)
    clean, _ = _pair()
    ids = clean[None]
    want, cache = capture(tiny_lm, parts, ids, sites=("resid", "z", "mlp"))
    d = parts.n_heads
    for layer in range(parts.n_layers):
        z, r, m = cache["z"][layer], cache["resid"][layer], cache["mlp"][layer]
        assert z is not None and r is not None and m is not None
        h = z.shape[-1] // d
        patches = [Patch("resid", layer, torch.tensor([0]), 3, r[0, 3]),
                   Patch("mlp", layer, torch.tensor([0]), slice(None), m[0]),
                   Patch("z", layer, torch.tensor([0]), slice(None), z[0, :, h:2 * h], head=1)]
        for p in patches:
            assert torch.equal(run_patched(tiny_lm, parts, ids, [p]), want)


def test_batched_patching_equals_one_forward_per_patch(tiny_lm: nn.Module) -> None:
    clean, corrupted = _pair()
    kw = {"target": 5, "foil": 9, "sites": ("resid", "heads", "mlp")}
    batched = activation_patching(tiny_lm, clean, corrupted, batch_size=64, **kw)  # type: ignore[arg-type]
    single = activation_patching(tiny_lm, clean, corrupted, batch_size=1, **kw)  # type: ignore[arg-type]
    n_layers, t = find_parts(tiny_lm).n_layers, len(clean)
    # one pass per patch, against one per site and layer (the layers below run once); the
    # residual stream and MLP outputs before the changed token (at 2) are the corrupted run's
    # own, so they need no pass (nor do more MLP outputs of GPT-NeoX's parallel layer 0, which
    # reads the embeddings: only position 2's changes)
    assert single.n_forward <= 2 + n_layers * (2 * (t - 2) + 4) and batched.n_forward == 2 + 3 * n_layers
    for site in ("resid", "mlp"):
        arr = getattr(single, site)
        np.testing.assert_array_equal(arr[:, :2], 0.0)  # no share of the difference recovered
    for site in ("resid", "heads", "mlp"):
        a, b = getattr(batched, site), getattr(single, site)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_skipping_unchanged_patches_gives_the_values_of_patching_them() -> None:
    from tests.language._lm_helpers import tiny_llama

    from unveil.language.patching import _caches, _components, _exact, _setup

    model = tiny_llama()
    clean, corrupted = _pair(n=9, at=5)
    s = _setup(model, clean, corrupted, 5, 9, None, -1, ("resid", "heads", "mlp"), None, None)
    m_clean, m_corr, cache, corr_cache = _caches(model, s)
    comps = _components(s)
    every, n_every = _exact(model, s, comps, cache, 1)
    skipped, n_skipped = _exact(model, s, comps, cache, 1, (m_corr, corr_cache))
    np.testing.assert_allclose(skipped, every, rtol=1e-5, atol=1e-6)
    assert n_skipped == n_every - 2 * 5 * s.parts.n_layers  # resid and mlp at positions 0..4


def test_known_answers_of_residual_patching(tiny_lm: nn.Module) -> None:
    clean, corrupted = _pair(at=2)
    res = activation_patching(tiny_lm, clean, corrupted, target=5, foil=9)
    assert res.resid is not None and abs(res.clean_diff - res.corrupted_diff) > 1e-4
    # the last layer at the last position decides the logits: everything comes back
    assert res.resid[-1, -1] == pytest.approx(1.0, abs=1e-4)
    # before the corrupted token the two runs agree (causal attention): nothing to recover
    np.testing.assert_allclose(res.resid[:, :2], 0.0, atol=1e-5)
    # the last layer's other positions cannot reach the last one any more
    np.testing.assert_allclose(res.resid[-1, :-1], 0.0, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_attribution_patching_equals_exact_patching_on_a_linear_network(seed: int) -> None:
    model = Toy(linear=True, seed=seed).eval()
    clean, corrupted = _pair(n=6, at=1, seed=seed)
    clean, corrupted = clean % 20, corrupted % 20
    exact = activation_patching(model, clean, corrupted, target=3, foil=4)
    approx = attribution_patching(model, clean, corrupted, target=3, foil=4, check=10)
    assert exact.resid is not None and approx.resid is not None
    assert np.abs(exact.resid).max() > 0.5  # not a trivial case
    np.testing.assert_allclose(approx.resid, exact.resid, rtol=1e-4, atol=1e-5)
    assert approx.faithfulness == pytest.approx(1.0, abs=1e-6)


def test_attribution_patching_reports_its_check_against_exact_patching() -> None:
    model = tiny_llama()
    clean, corrupted = _pair()
    approx = attribution_patching(model, clean, corrupted, target=5, foil=9, check=12, seed=3)
    exact = activation_patching(model, clean, corrupted, target=5, foil=9, sites=("resid", "heads", "mlp"))
    assert len(approx.checked) == 12 and approx.faithfulness is not None
    assert -1 <= approx.faithfulness <= 1
    for (site, layer, j), estimate, truth in approx.checked:
        assert truth == pytest.approx(getattr(exact, site)[layer, j], rel=1e-4, abs=1e-5)
        assert estimate == pytest.approx(getattr(approx, site)[layer, j])
    assert "faithfulness" in approx._repr_html_()
    assert all(p.grad is None for p in model.parameters())


def test_results_render(tiny_lm: nn.Module) -> None:
    clean, corrupted = _pair()
    res = activation_patching(tiny_lm, clean, corrupted, target=5, foil=9, sites=("resid", "heads"))
    html = res._repr_html_()
    assert html.count("<table") == 2 and not re.search(r"(src|href)=", html)
    df = res.to_pandas()
    n_layers = find_parts(tiny_lm).n_layers
    assert len(df) == n_layers * (len(clean) + 4) and set(df["site"]) == {"resid", "heads"}
    with pytest.raises(OptionError, match="site='mlp' was not patched"):
        res.grid("mlp")


def test_bad_inputs_have_one_clear_error_each(tiny_lm: nn.Module) -> None:
    clean, corrupted = _pair()
    with pytest.raises(InputError, match="same number of tokens.*got 8 and 7"):
        activation_patching(tiny_lm, clean, corrupted[:-1], target=5, foil=9)
    with pytest.raises(InputError, match="the same on the clean and the corrupted prompt"):
        activation_patching(tiny_lm, clean, clean, target=5, foil=9)
    with pytest.raises(OptionError, match="sites="):
        activation_patching(tiny_lm, clean, corrupted, target=5, foil=9, sites=("neurons",))
    with pytest.raises(OptionError, match="batch_size"):
        activation_patching(tiny_lm, clean, corrupted, target=5, foil=9, batch_size=0)
    with pytest.raises(LayerNotFoundError, match="layer=7 is out of range: this model has"):
        find_parts(tiny_lm).layer_index(7)


def test_an_unknown_architecture_is_one_clear_error() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10))
    with pytest.raises(ModelError, match="cannot find the decoder layers of Sequential"):
        activation_patching(model, [1, 2], [1, 3], target=1, foil=2)


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from unveil.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_the_cli_inside_views_on_the_induction_model(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                     induction: nn.Module) -> None:
    from report._check import check_self_contained

    m = "zoo:induction_transformer"
    code, out, _ = _main(capsys, "patch", "-m", m, "--clean", "0 5 9 12 7 5", "--corrupted", "0 6 9 12 7 5",
                         "--target", "9", "--foil", "12", "--sites", "resid,heads", "--json")
    res = json.loads(out)
    assert code == 0 and res["clean_diff"] > res["corrupted_diff"]
    lib = activation_patching(induction, [0, 5, 9, 12, 7, 5], [0, 6, 9, 12, 7, 5], target=9, foil=12,
                              sites=("resid", "heads"))
    assert res["clean_diff"] == pytest.approx(lib.clean_diff)
    page = tmp_path / "lens.html"
    code, out, _ = _main(capsys, "lens", "-m", m, "--prompt", "0 5 9 12 7 5", "--out", str(page))
    assert code == 0 and "p(target)" in out and "wrote" in out
    check_self_contained(page.read_text(encoding="utf-8"))
    code, out, _ = _main(capsys, "heads", "-m", m, "--half", "8")
    assert code == 0 and out.splitlines()[2].startswith("induction") and "L1H" in out.splitlines()[2]


@pytest.mark.parametrize("args,fragment", [
    (("patch", "--clean", "0 5 9", "--corrupted", "0 6", "--target", "9", "--foil", "1"),
     "same number of tokens"),
    (("lens", "--prompt", "hello world"), "this model has no tokenizer: give token ids"),
    (("patch", "--clean", "0 5 9", "--corrupted", "0 6 9", "--target", "9", "--foil", "1", "--sites", "x"),
     "sites="),
])
def test_the_cli_reports_bad_input_in_one_line(capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                                               fragment: str, induction: nn.Module) -> None:
    code, out, err = _main(capsys, args[0], "-m", "zoo:induction_transformer", *args[1:])
    lines = err.strip().splitlines()
    assert code in (1, 2) and len(lines) == 1 and lines[0].startswith("unveil: error:") and fragment in lines[0]


def test_the_cli_names_the_language_models(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _main(capsys, "lens", "-m", "zoo:digits_cnn", "--prompt", "1 2")
    assert code == 2 and "zoo:induction_transformer or zoo:smollm2 or a local Hugging Face" in err


def test_a_metric_at_an_earlier_position_matches_a_plain_patched_run(tiny_lm: nn.Module) -> None:
    clean, corrupted = _pair(at=2)
    res = activation_patching(tiny_lm, clean, corrupted, target=5, foil=9, position=5, sites=("resid", "mlp"))
    parts = find_parts(tiny_lm)
    _, cache = capture(tiny_lm, parts, clean[None], sites=("resid", "mlp"))
    base = run_patched(tiny_lm, parts, corrupted[None], [])[0, 5]
    act = cache["mlp"][1]
    assert act is not None
    patched = run_patched(tiny_lm, parts, corrupted[None], [Patch("mlp", 1, torch.tensor([0]), 3, act[0, 3])])[0, 5]
    want = (patched[5] - patched[9] - (base[5] - base[9])) / (res.clean_diff - res.corrupted_diff)
    assert res.mlp is not None and res.mlp[1, 3] == pytest.approx(float(want), rel=1e-4, abs=1e-6)
    assert res.resid is not None and np.allclose(res.resid[:, 6:], 0.0, atol=1e-4)  # after the metric
