"""Property-based API tests: Schemathesis generates requests from the published OpenAPI schema
and runs them in-process against the ASGI app (fixed seed, bounded examples). No request may
cause a server error, and responses must match the schema."""

from __future__ import annotations

import pytest
import torch

from _util import mlp

pytest.importorskip("schemathesis")
import schemathesis  # noqa: E402
from hypothesis import HealthCheck, seed, settings  # noqa: E402

from unveil.frontends import LoadedModel  # noqa: E402
from unveil.serve import create_app  # noqa: E402


def _app():
    torch.manual_seed(0)
    # a tiny model with samples and no zoo: generated requests stay cheap
    extra = {"mlp": LoadedModel(mlp(n_in=6, n_out=3).eval(), name="mlp", class_names=["a", "b", "c"])}
    return create_app(models=extra, samples={"mlp": torch.randn(4, 6)}, zoo=False,
                      max_upload_bytes=16 * 1024, budget={"n_steps": 4, "n_samples": 8, "seed": 0})


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@seed(20240601)
@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_never_errors(case) -> None:
    case.call_and_validate()
