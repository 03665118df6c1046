"""Content digests and fingerprints of dataset runs (``unveil.scale._store``)."""

from __future__ import annotations

import numpy as np
import torch

from unveil.scale._store import digest_rows, fingerprint


def test_digest_is_of_content_dtype_and_shape() -> None:
    x = torch.arange(12.0).reshape(3, 4)
    assert digest_rows(x.t()) == digest_rows(x.t().contiguous())  # the layout in memory does not count
    assert digest_rows(x) == digest_rows(x.clone())
    assert digest_rows(x) != digest_rows(x.reshape(4, 3))
    assert digest_rows(x) != digest_rows(x.double())
    y = x.clone()
    y[2, 3] = float(np.nextafter(np.float32(11.0), np.float32(12.0)))  # one ulp in one element
    assert digest_rows(x) != digest_rows(y)
    assert digest_rows(x, np.array([0, 1, 2])) != digest_rows(x, np.array([0, 1, 1]))
    assert digest_rows(x, np.array([0, 1, 2])) != digest_rows(x)


def test_object_labels_hash_by_value_not_by_address() -> None:
    x = torch.zeros(2, 1)
    a = np.array(["cat", "dog"], dtype=object)
    b = np.array(["".join(["c", "at"]), "dog"], dtype=object)  # equal strings, other objects
    assert digest_rows(x, a) == digest_rows(x, b)
    assert digest_rows(x, a) != digest_rows(x, np.array(["cat", "cow"], dtype=object))


def test_fingerprint_of_options() -> None:
    b = torch.ones(1, 6, dtype=torch.bfloat16)  # no numpy dtype: hashed through float32, labelled bf16
    fb = fingerprint({"baseline": b, "n_steps": 8, "layers": ("a", "b")})
    assert fb["baseline"]["dtype"] == "torch.bfloat16" and fb["n_steps"] == 8 and fb["layers"] == ["a", "b"]
    assert fb["baseline"]["blake2b"] != fingerprint(b.float())["blake2b"]
    assert fb == fingerprint({"baseline": b.clone(), "n_steps": 8, "layers": ("a", "b")})

    def fn(t: torch.Tensor) -> torch.Tensor:
        return t

    assert "0x" not in fingerprint(fn) and fingerprint(fn) == fingerprint(fn)
    assert fingerprint(np.float32(0.5)) == 0.5
