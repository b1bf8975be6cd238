"""Served model ids (`supernet.sdk.models`): one id per (weights, compute precision)."""

from __future__ import annotations

import hashlib

import pytest
from supernet.sdk.models import COMPUTE_PRECISIONS, compute_of, served_manifest, served_model_id

WEIGHTS = "0x" + hashlib.sha256(b"weights manifest").hexdigest()


def test_each_precision_has_its_own_id_and_the_id_names_it_back() -> None:
    ids = {served_model_id(WEIGHTS, c) for c in COMPUTE_PRECISIONS}
    assert len(ids) == len(COMPUTE_PRECISIONS) and WEIGHTS not in ids
    for c in COMPUTE_PRECISIONS:
        sid = served_model_id(WEIGHTS, c)
        assert compute_of(sid, WEIGHTS) == c
        assert compute_of(sid.upper().replace("0X", "0x"), WEIGHTS) == c  # hex case does not matter
        # what ModelRegistry.registerModel hashes on chain is exactly these bytes
        assert "0x" + hashlib.sha256(served_manifest(WEIGHTS, c)).hexdigest() == sid


def test_an_id_of_other_weights_or_the_weights_id_itself_serves_nothing_here() -> None:
    other = "0x" + hashlib.sha256(b"other weights").hexdigest()
    assert compute_of(served_model_id(other, "float32"), WEIGHTS) is None
    assert compute_of(WEIGHTS, WEIGHTS) is None


@pytest.mark.parametrize(
    ("weights", "compute"),
    [(WEIGHTS, "float16"), (WEIGHTS, "FLOAT32"), ("0x1234", "float32"), ("0x" + "zz" * 32, "float32")],
)
def test_unknown_precisions_and_malformed_weights_ids_are_refused(weights: str, compute: str) -> None:
    with pytest.raises(ValueError, match=r"compute precision|weights id"):
        served_model_id(weights, compute)
