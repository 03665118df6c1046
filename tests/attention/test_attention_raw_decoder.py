"""Raw attention of a decoder with grouped-query attention: the query's row of one layer's map,
averaged over the query heads (not over queries), against the model's own eager attentions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.language._lm_helpers import tiny_llama
from tests.language._lm_models import smollm2_or_skip

from unveil.core.explain import explain
from unveil.language import NextTokenScore


@pytest.mark.parametrize("query", [0, 3, -1, 8])
@pytest.mark.parametrize("layer", [0, -1])
def test_raw_attention_is_the_head_mean_of_the_query_row(query, layer):
    model = tiny_llama()  # 4 query heads sharing 2 key/value heads
    ids = torch.randint(3, 50, (2, 9), generator=torch.Generator().manual_seed(0))
    exp = explain(NextTokenScore(model, 5), ids, method="attention_raw", target=0, query=query,
                  layer=layer)
    model.set_attn_implementation("eager")
    with torch.no_grad():
        att = model(input_ids=ids, output_attentions=True).attentions[layer]  # (N, H, T, T)
    want = att.mean(1)[:, query].numpy()
    np.testing.assert_allclose(exp.values, want, atol=1e-6)
    q = query % 9
    np.testing.assert_allclose(exp.values.sum(1), 1, atol=1e-5)  # a softmax row
    assert np.all(exp.values[:, q + 1:] == 0)  # causal: no weight on later tokens


def test_raw_attention_on_smollm2_rows_of_every_query():
    model, tok = smollm2_or_skip()  # 9 query heads sharing 3 key/value heads
    ids = torch.tensor([tok.encode("When Mary and John went to the store, John gave")])
    t = ids.shape[1]
    for query in (0, 5, t - 1, -1):
        exp = explain(NextTokenScore(model, 5), ids, method="attention_raw", target=0,
                      query=query, layer=-1)
        maps = exp.extras["attentions"]  # (N, L, H, T, T)
        assert maps.shape[2] == 9
        np.testing.assert_allclose(exp.values[0], maps[0, -1].mean(0)[query], atol=1e-6)
        assert exp.values[0].sum() == pytest.approx(1, abs=1e-4)
        assert np.all(exp.values[0, query % t + 1:] == 0)
    assert exp.values[0, 0] > 0
