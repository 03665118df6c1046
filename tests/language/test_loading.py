"""Loading language models and the checks that run before any work: one clear error each."""

from __future__ import annotations

import pytest
import torch
from tests.language._lm_models import smollm2_or_skip, tiny_llama, tiny_tokenizer

from unveil.errors import InputError, ModelError, OptionError, UnknownMethodError
from unveil.language import (
    check_language_model,
    explain_generation,
    load_language_model,
    token_texts,
)


def test_model_without_a_language_model_head_is_refused():
    with pytest.raises(ModelError, match="no language-model head.*AutoModelForCausalLM"):
        explain_generation(tiny_llama(head=False), tiny_tokenizer(), "Mary went")


def test_tokenizer_of_another_model_is_refused():
    with pytest.raises(InputError, match="tokenizer has 300 tokens but the model's output layer "
                                         "has 100"):
        explain_generation(tiny_llama(vocab=100), tiny_tokenizer(), "Mary went")


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_empty_prompt_is_refused(prompt):
    with pytest.raises(InputError, match="prompt is empty"):
        explain_generation(tiny_llama(), tiny_tokenizer(), prompt)


def test_more_new_tokens_than_the_context_is_refused():
    with pytest.raises(InputError, match=r"model takes at most 64; .* at most \d+ new tokens"):
        explain_generation(tiny_llama(), tiny_tokenizer(), "Mary went to", max_new_tokens=100)


def test_other_option_errors():
    model, tok = tiny_llama(), tiny_tokenizer()
    with pytest.raises(OptionError, match="is 2 tokens"):
        explain_generation(model, tok, "Mary went", max_new_tokens=1, contrast=" John")
    with pytest.raises(OptionError, match="max_new_tokens must be a positive int"):
        explain_generation(model, tok, "Mary went", max_new_tokens=0)
    with pytest.raises(OptionError, match="either continuation"):
        explain_generation(model, tok, "Mary went", max_new_tokens=1, continuation=" to")
    with pytest.raises(OptionError, match="does not apply to generation"):
        explain_generation(model, tok, "Mary went", method="grad_cam")
    with pytest.raises(UnknownMethodError, match="integrated_gradients"):
        explain_generation(model, tok, "Mary went", method="integrated_gradient")
    with pytest.raises(OptionError, match="feature_ablation or a Shapley"):
        explain_generation(model, tok, "Mary went", method="occlusion", spans="words")
    with pytest.raises(OptionError, match="spans must be"):
        explain_generation(model, tok, "Mary went", method="saliency", spans="lines")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="set by explain_generation"):
        explain_generation(model, tok, "Mary went", target=3)
    with pytest.raises(InputError, match="continuation is empty"):
        explain_generation(model, tok, "Mary went", continuation="")


def test_chat_without_a_template_is_refused():
    from transformers import PreTrainedTokenizerFast

    tok = tiny_tokenizer()
    plain = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, eos_token="<|im_end|>")
    with pytest.raises(OptionError, match="needs a tokenizer with a chat template"):
        explain_generation(tiny_llama(), plain, "Mary went", chat=True)


def test_check_reports_what_generation_needs():
    info = check_language_model(tiny_llama(), tiny_tokenizer())
    assert info.vocab_size == 300 and info.context == 64
    assert 2 in info.eos_ids and info.keeps_last_logits and info.cache_arg == "cache"
    with pytest.raises(ModelError, match="expected a causal language model"):
        check_language_model(lambda ids: ids, tiny_tokenizer())


def test_token_texts_show_words_not_markers():
    tok = tiny_tokenizer()
    ids = tok.encode("When Mary\nwent", add_special_tokens=False)
    pieces = token_texts(tok, ids)
    assert "".join(pieces) == "When Mary\nwent"
    assert not any("\u0120" in p or "\u010a" in p for p in pieces)


def test_load_language_model_refuses_unknown_specs(tmp_path):
    with pytest.raises(ModelError, match="no language model named 'gpt9'.*smollm2"):
        load_language_model("zoo:gpt9")
    with pytest.raises(ModelError, match="folder saved with save_pretrained"):
        load_language_model(str(tmp_path / "missing"))


def test_load_language_model_reads_a_saved_folder(tmp_path):
    model, tok = tiny_llama(), tiny_tokenizer()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, tok2 = load_language_model(str(tmp_path))
    ids = torch.tensor([tok.encode("Mary went")])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    assert len(tok2) == len(tok) and not loaded.training


def test_smollm2_from_the_zoo_answers_as_documented():
    model, tok = smollm2_or_skip()
    info = check_language_model(model, tok)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (9, 3)
    assert info.vocab_size == len(tok) == 49152 and tok.chat_template
    res = explain_generation(model, tok, "What is the capital of France?", chat=True,
                             max_new_tokens=8, method="saliency")
    assert "Paris" in res.text
    res = explain_generation(model, tok, "When Mary and John went to the store, John gave a "
                             "drink to", max_new_tokens=1, method="saliency")
    assert res.generated == [" Mary"] and res.alternatives[0][0][0] == " Mary"
