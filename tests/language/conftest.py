"""Fixtures: tiny causal LMs (no download) and the zoo's induction transformer."""

from __future__ import annotations

import pytest
from _lm_helpers import TINY
from torch import nn

from unveil.zoo.induction import InductionTransformer, induction_transformer


@pytest.fixture(params=sorted(TINY))
def tiny_lm(request: pytest.FixtureRequest) -> nn.Module:
    return TINY[request.param]()


@pytest.fixture(scope="session")
def induction() -> InductionTransformer:
    return induction_transformer()
