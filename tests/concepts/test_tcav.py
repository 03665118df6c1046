"""TCAV on a planted concept (the marked-digits CNN: every 7 carries a corner mark), its
statistics, order-independence, agreement with Captum's TCAV and with scikit-learn's logistic
regression, errors, and the model left as it was."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from unveil.concepts import CAV, TCAVResult, concept_activation_vectors, tcav
from unveil.concepts._linear import fit_logistic
from unveil.concepts.tcav import _draw, canonical_order
from unveil.errors import InputError, LayerNotFoundError, TargetError
from unveil.zoo import (
    MARKED_CLASS,
    add_corner_mark,
    corner_mark_examples,
    load_dataset,
    marked_digits_cnn,
    marked_digits_data,
    random_digit_examples,
)

LAYER = "features.6"


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    data = marked_digits_data()
    return {
        "model": marked_digits_cnn(),
        "inputs": data.X_test[data.y_test == MARKED_CLASS],
        "mark": corner_mark_examples(40, seed=0),
        "random": random_digit_examples(40, seed=11),
        "pool": random_digit_examples(300, seed=1),
    }


@pytest.fixture(scope="module")
def planted(setup: dict[str, Any]) -> TCAVResult:
    return tcav(setup["model"], {"corner mark": setup["mark"]}, setup["inputs"], MARKED_CLASS,
                LAYER, setup["pool"])


def test_planted_corner_mark_is_significant_and_random_concepts_are_not(planted: TCAVResult) -> None:
    r = planted
    assert r.scores[0] >= 0.9
    assert r.p_corrected[0] < 0.05 and r.significant[0]
    assert r["corner mark"]["verdict"].startswith("significant: the concept raises")
    # the CAV separates marked from unmarked digits; random concepts are near chance
    assert r.cav_accuracy[0] > 0.95
    # random-vs-random: what chance looks like, and a fresh random concept is not significant
    assert 0.3 <= r.random_scores.mean() <= 0.7
    assert 0.3 <= r.control_scores.mean() <= 0.7
    assert r.control_p >= 0.05
    # the number of runs was chosen for power and is reported
    assert r.n_random_mode == "auto" and 10 <= r.n_random <= 100
    assert r.run_scores.shape == (1, r.n_random) and r.random_scores.shape == (r.n_random,)
    assert 0 < r.power <= 1


def test_negative_control_is_calibrated_over_seeds(setup: dict[str, Any]) -> None:
    """Under the null the control's p-value is uniform: over 12 seeds few are below 0.05."""
    ps = [tcav(setup["model"], {"corner mark": setup["mark"]}, setup["inputs"][:20], MARKED_CLASS,
               LAYER, setup["pool"], n_random=15, seed=s).control_p for s in range(12)]
    assert sum(p < 0.05 for p in ps) <= 3, ps


def test_shuffling_example_sets_and_concepts_changes_nothing(setup: dict[str, Any]) -> None:
    g = torch.Generator().manual_seed(5)
    concepts = {"corner mark": setup["mark"], "random": setup["random"]}
    a = tcav(setup["model"], concepts, setup["inputs"], MARKED_CLASS, LAYER, setup["pool"],
             n_random=12)

    def shuffled(x: torch.Tensor) -> torch.Tensor:
        return x[torch.randperm(len(x), generator=g)]

    reordered = {"random": shuffled(setup["random"]), "corner mark": shuffled(setup["mark"])}
    b = tcav(setup["model"], reordered, shuffled(setup["inputs"]), MARKED_CLASS, LAYER,
             shuffled(setup["pool"]), n_random=12)
    for c in concepts:
        i, j = a.concepts.index(c), b.concepts.index(c)
        np.testing.assert_array_equal(a.run_scores[i], b.run_scores[j])
        assert a.p_values[i] == b.p_values[j]
        np.testing.assert_array_equal(a.cavs[c].vectors, b.cavs[c].vectors)
    np.testing.assert_array_equal(a.random_scores, b.random_scores)
    np.testing.assert_array_equal(a.p_values, b.p_values[[b.concepts.index(c) for c in a.concepts]])
    # numpy arrays too, and a different seed does change the draws
    e = tcav(setup["model"], {k: v.numpy() for k, v in concepts.items()}, setup["inputs"].numpy(),
             MARKED_CLASS, LAYER, setup["pool"].numpy(), n_random=12)
    np.testing.assert_array_equal(a.run_scores, e.run_scores)
    d = tcav(setup["model"], concepts, setup["inputs"], MARKED_CLASS, LAYER, setup["pool"],
             n_random=12, seed=1)
    assert not np.array_equal(a.random_scores, d.random_scores)


def test_fixed_random_sets_are_rarely_called_concepts(setup: dict[str, Any]) -> None:
    """Sets of random digits given as concepts: their TCAV scores alone often differ from the
    random concepts' (a fixed set's composition sways the class consistently), but the
    separation test keeps them from being significant at the nominal rate."""
    concepts = {f"random {i}": random_digit_examples(40, seed=100 + i) for i in range(8)}
    r = tcav(setup["model"], concepts, setup["inputs"], MARKED_CLASS, LAYER, setup["pool"],
             n_random=20)
    assert (r.p_values < 0.05).sum() <= 2, r.p_values
    assert not r.significant.any()
    assert np.all(r.p_values == np.maximum(r.p_scores, r.p_separation))


def test_several_concepts_are_bonferroni_corrected(setup: dict[str, Any]) -> None:
    r = tcav(setup["model"], {"corner mark": setup["mark"], "random": setup["random"],
                              "noise mark": corner_mark_examples(30, background="noise")},
             setup["inputs"], MARKED_CLASS, LAYER, setup["pool"], n_random=20)
    np.testing.assert_allclose(r.p_corrected, np.minimum(1.0, 3 * r.p_values))
    assert r.concepts == ["corner mark", "random", "noise mark"]
    assert r.scores[0] >= 0.9 and r.significant[0]


def test_classifier_matches_scikit_learn_logistic_regression() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 300)) / 10
    X[:25] += 0.05
    y = np.r_[np.ones(25), -np.ones(15)]
    l2 = 1e-2
    alpha, b, _ = fit_logistic(torch.as_tensor(X @ X.T)[None], torch.as_tensor(y)[None], l2=l2)
    w = X.T @ alpha[0].numpy()
    # ours: Σ wᵢ loss + l2/2‖w‖² with balanced weights summing to 1; scikit-learn's balanced
    # weights sum to n, with C multiplying the loss: C = 1 / (l2 n)
    ref = LogisticRegression(C=1 / (l2 * len(y)), class_weight="balanced", tol=1e-12,
                             max_iter=100_000).fit(X, y)
    np.testing.assert_allclose(w, ref.coef_[0], atol=1e-6 * np.abs(ref.coef_).max() + 1e-8)
    assert float(b[0]) == pytest.approx(ref.intercept_[0], abs=1e-6)


def test_agrees_with_captum_tcav_given_the_same_classifier(setup: dict[str, Any],
                                                           tmp_path: Path) -> None:
    """Captum's TCAV with our logistic regression as its classifier, on our random sets: the
    same CAVs and the same per-run scores (Captum's ``sign_count``)."""
    pytest.importorskip("captum")
    from captum.concept import TCAV, Concept
    from captum.concept._utils.classifier import Classifier

    model, x = setup["model"], setup["inputs"][:30]
    mark, pool = setup["mark"], setup["pool"]
    k = 4
    cavs = concept_activation_vectors(model, {"corner mark": mark}, LAYER, pool, n_random=k)
    pool_c = pool[torch.as_tensor(canonical_order(pool))]
    size = min(len(mark), len(pool) // 3)
    randoms = [pool_c[torch.as_tensor(_draw(len(pool), size, 0, i)[0])] for i in range(k)]

    class Ours(Classifier):  # type: ignore[misc]  # captum is untyped
        def __init__(self) -> None:
            self.w = torch.zeros(1)
            self.ids: list[int] = []

        def train_and_eval(self, dataloader: Any, **kwargs: Any) -> dict[str, Any]:
            xs, ys = zip(*dataloader)
            X, Y = torch.cat(xs).double(), torch.cat(ys)
            self.ids = sorted(set(Y.tolist()))
            s = float((X * X).sum(1).mean().sqrt())  # the same scaling as unveil
            Xs = X / s
            sign = torch.where(Y == 0, 1.0, -1.0)  # concept id 0 is the positive class
            alpha, _, _ = fit_logistic((Xs @ Xs.T)[None], sign[None])
            w = (Xs.T @ alpha[0]).float()
            self.w = torch.stack([w, -w])  # rows in the order of classes(): concept, random
            return {}

        def weights(self) -> torch.Tensor:
            return self.w

        def classes(self) -> list[int]:
            return self.ids

    def concept(i: int, name: str, t: torch.Tensor) -> Concept:
        return Concept(i, name, torch.utils.data.DataLoader(t, batch_size=64))  # type: ignore[arg-type]

    c0 = concept(0, "corner_mark", mark)
    rs = [concept(i + 1, f"random_{i}", r) for i, r in enumerate(randoms)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        captum = TCAV(model, [LAYER], classifier=Ours(), save_path=str(tmp_path / "cav"))
        out = captum.interpret(x, [[c0, r] for r in rs], target=MARKED_CLASS)
    theirs = np.array([float(out[f"0-{i + 1}"][LAYER]["sign_count"][0]) for i in range(k)])
    ours = cavs["corner mark"].score(x, MARKED_CLASS)
    np.testing.assert_allclose(ours, theirs, atol=1.5 / len(x))  # at most one input's sign
    # and their CAVs are ours
    for i in range(k):
        theirs_v = captum.cavs[f"0-{i + 1}"][LAYER].stats["weights"][0].double().numpy()
        cos = theirs_v @ cavs["corner mark"].vectors[i] / np.linalg.norm(theirs_v)
        assert cos > 0.999


def test_cavs_are_reusable_on_new_inputs(setup: dict[str, Any], planted: TCAVResult) -> None:
    cav = planted.cavs["corner mark"]
    assert isinstance(cav, CAV) and cav.layer == LAYER
    digits = load_dataset("digits_cnn")
    others = digits.X_test[digits.y_test != MARKED_CLASS][:40]
    p_marked = cav.presence(add_corner_mark(others))
    p_plain = cav.presence(others)
    assert p_marked.min() > p_plain.max()  # the mark is detected in unseen digits
    s = cav.score(setup["inputs"][:20], MARKED_CLASS)
    assert s.shape == (planted.n_random,) and s.mean() >= 0.9
    assert cav.directional_derivatives(setup["inputs"][:5], "7").shape == (5, planted.n_random)


def test_save_load_to_dict_and_html(planted: TCAVResult, tmp_path: Path,
                                    setup: dict[str, Any]) -> None:
    path = planted.save(tmp_path / "t.npz")
    back = TCAVResult.load(path)
    np.testing.assert_array_equal(back.run_scores, planted.run_scores)
    assert back.to_dict() == planted.to_dict()
    np.testing.assert_allclose(back.cavs["corner mark"].vectors, planted.cavs["corner mark"].vectors)
    # a loaded CAV needs a model to score
    s = back.cavs["corner mark"].score(setup["inputs"][:10], MARKED_CLASS, model=setup["model"])
    assert s.shape == (planted.n_random,)
    d = json.loads(json.dumps(planted.to_dict()))
    assert d["format"] == "unveil.tcav/1" and d["significant"] == [True]
    html = planted._repr_html_()
    assert "<svg" in html and "corner mark" in html and "significant" in html
    assert "<script" not in html and "cdn" not in html.lower()
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a saved TCAV result"):
        TCAVResult.load(tmp_path / "bad.npz")


def test_bad_inputs_raise_clear_errors(setup: dict[str, Any]) -> None:
    m, x, pool = setup["model"], setup["inputs"], setup["pool"]
    good = {"corner mark": setup["mark"]}
    with pytest.raises(LayerNotFoundError, match=r"features\.66.*Closest names: features\.6"):
        tcav(m, good, x, 7, "features.66", pool)
    with pytest.raises(InputError, match="has 5 examples; a CAV needs at least 10"):
        tcav(m, {"corner mark": setup["mark"][:5]}, x, 7, LAYER, pool)
    with pytest.raises(TargetError, match="out of range.*0, 9"):
        tcav(m, good, x, 12, LAYER, pool)
    with pytest.raises(TargetError, match="not a class name"):
        tcav(m, good, x, "seven", LAYER, pool)
    with pytest.raises(InputError, match="random_pool has 20 examples"):
        tcav(m, good, x, 7, LAYER, pool[:20])
    with pytest.raises(InputError, match="at least 5"):
        tcav(m, good, x[:2], 7, LAYER, pool)
    with pytest.raises(InputError, match="random_pool is missing"):
        tcav(m, good, x, 7, LAYER)
    with pytest.raises(TargetError, match="out of range"):
        tcav(m, good, x, torch.tensor(10), LAYER, pool)
    with pytest.raises(InputError, match="non-empty dict"):
        tcav(m, {}, x, 7, LAYER, pool)
    with pytest.raises(InputError, match="rejected inputs"):
        tcav(m, {"wrong": torch.rand(20, 3, 32, 32)}, x, 7, LAYER, pool)


def test_model_is_left_unchanged_on_errors(setup: dict[str, Any]) -> None:
    model = marked_digits_cnn()
    model.train()
    for p in model.features.parameters():
        p.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for bad in (dict(target=12), dict(concepts={"c": torch.rand(20, 3, 32, 32)})):
        kwargs: dict[str, Any] = {"concepts": {"corner mark": setup["mark"]}, "target": 7, **bad}
        with pytest.raises((TargetError, InputError)), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tcav(model, kwargs["concepts"], setup["inputs"], kwargs["target"], LAYER, setup["pool"])
        assert all(m.training for m in model.modules())
        assert [p.requires_grad for p in model.parameters()] == flags
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
        assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


class _Bag(nn.Module):
    """Token ids -> embeddings -> mean -> a small ReLU head, 2 logits; token 3 pushes class 1."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.embed = nn.Embedding(20, 8)
        self.hidden = nn.Linear(8, 16)
        self.head = nn.Linear(16, 2)
        with torch.no_grad():
            self.embed.weight.copy_(torch.randn(20, 8, generator=g))
            self.embed.weight[3] = torch.tensor([4.0, 0, 0, 0, 0, 0, 0, 0])
            self.hidden.weight.copy_(torch.randn(16, 8, generator=g))
            self.hidden.weight[0] = torch.tensor([2.0, 0, 0, 0, 0, 0, 0, 0])
            self.hidden.bias.zero_()
            self.hidden.bias[0] = 5.0
            self.head.weight.copy_(torch.randn(2, 16, generator=g) * 0.3)
            self.head.weight[1, 0] = 3.0
            self.head.bias.zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(torch.relu(self.hidden(self.embed(ids).mean(1))))
        return out


def test_token_spans_of_varying_length_and_table_rows() -> None:
    model = _Bag().eval()
    g = torch.Generator().manual_seed(1)
    spans = [torch.cat([torch.tensor([3]), torch.randint(4, 20, (int(n),), generator=g)])
             for n in torch.randint(1, 6, (20,), generator=g)]
    pool = torch.randint(4, 20, (90, 6), generator=g)
    inputs = torch.randint(4, 20, (12, 6), generator=g)
    r = tcav(model, {"token 3": spans}, inputs, 1, "embed", pool, n_random=12)
    assert r.pool == "mean" and r.scores[0] >= 0.9 and r.significant[0]
    # rows of a table: breast-cancer rows with a large radius, at the first hidden layer
    from unveil.zoo import breast_cancer_mlp

    data = load_dataset("breast_cancer_mlp")
    mlp = breast_cancer_mlp()
    X = data.X_train
    big = X[X[:, 0] > X[:, 0].quantile(0.8)][:40]
    t = tcav(mlp, {"large tumour": big}, data.X_test[data.y_test == 0], "malignant",
             "features.1", X, n_random=15)
    assert t.pool == "flatten" and t.target == 0 and t.scores.shape == (1,)
