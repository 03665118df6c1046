"""TextClassifier and ZeroShotClassifier: masks rebuilt from ids, scores against references."""

from __future__ import annotations

import pytest
import torch
from _text_helpers import minilm_tokenizer, tiny_bert
from torch import nn

import unveil as uv
from _util import assert_unchanged, snapshot
from unveil.errors import InputError, ModelError, OptionError
from unveil.text import TextClassifier, ZeroShotClassifier, mean_pool

IDS = torch.tensor([[2, 11, 12, 13, 3], [2, 21, 22, 3, 0]])


def test_text_classifier_masks_padding_like_an_explicit_mask():
    bert = tiny_bert("BertForSequenceClassification")
    clf = TextClassifier(bert)
    assert clf.pad_token_id == 0 and not clf.training
    with torch.no_grad():
        got = clf(IDS)
        ref = bert(input_ids=IDS, attention_mask=(IDS != 0).long()).logits
        unpadded = bert(input_ids=IDS[1:, :4]).logits
        unmasked = bert(input_ids=IDS).logits
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(got[1:], unpadded, atol=1e-5, rtol=1e-5)
    assert float((unmasked[1] - got[1]).abs().max()) > 1e-4  # guard: the mask matters


def test_text_classifier_errors():
    clf = TextClassifier(tiny_bert("BertModel"))
    with pytest.raises(ModelError, match="no \\(N, K\\) logits"):
        clf(IDS)
    clf2 = TextClassifier(tiny_bert("BertForSequenceClassification"))
    with pytest.raises(OptionError, match="does not mark exactly the padding"):
        clf2.check_mask(IDS, torch.ones_like(IDS))
    clf2.check_mask(IDS, IDS != 0)  # the right mask passes


def test_explain_through_the_wrapper_leaves_the_model_unchanged():
    bert = tiny_bert("BertForSequenceClassification")
    impl = bert.config._attn_implementation
    clf = TextClassifier(bert)
    clf(IDS)
    snap = snapshot(bert)
    for method in ("integrated_gradients", "grad_attention_rollout"):
        exp = uv.explain(clf, IDS, method=method, **({"n_steps": 8} if method[0] == "i" else {}))
        assert exp.values.shape == (2, 5)
    assert_unchanged(bert, snap)
    assert bert.config._attn_implementation == impl


@pytest.fixture(scope="module")
def zero_shot():
    tok = minilm_tokenizer()
    encoder = tiny_bert("BertModel", vocab_size=tok.vocab_size, hidden_size=32)
    return ZeroShotClassifier(encoder, tok, ["bad", "good", "neutral"], template="It is {}.",
                              scale=2.0)


def test_zero_shot_scores_are_scaled_cosine_similarities(zero_shot):
    clf = zero_shot
    ids, mask = clf.encode(["a fine day", "rain again and again all day"])
    assert (mask == 0).any()  # guard: padding present
    with torch.no_grad():
        scores = clf(ids)
        enc = clf.encoder
        h = enc(input_ids=ids, attention_mask=mask).last_hidden_state
        e = mean_pool(h, mask)
        p_ids, p_mask = clf.encode(["It is bad.", "It is good.", "It is neutral."])
        p = mean_pool(enc(input_ids=p_ids, attention_mask=p_mask).last_hidden_state, p_mask)
        ref = 2.0 * nn.functional.cosine_similarity(e[:, None], p[None], dim=-1)
        single = clf(ids[1:, : int(mask[1].sum())])
    torch.testing.assert_close(scores, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores[1:], single, atol=1e-5, rtol=1e-5)
    assert clf.tokens(ids[0])[0] == "[CLS]"
    assert clf.labels == ["bad", "good", "neutral"]


def test_zero_shot_errors(zero_shot):
    with pytest.raises(OptionError, match="at least two labels"):
        ZeroShotClassifier(zero_shot.encoder, zero_shot.tokenizer, ["only"])
    with pytest.raises(OptionError, match="must contain"):
        ZeroShotClassifier(zero_shot.encoder, zero_shot.tokenizer, ["a", "b"], template="no slot")
    with pytest.raises(InputError, match="list of texts"):
        zero_shot.encode("a single string")
