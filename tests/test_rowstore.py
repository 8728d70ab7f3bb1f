"""The keyed row store: a configuration is computed once, read back after, and never half-written."""
from __future__ import annotations

import json
import math
import os
import stat

import pytest

from vitquant_core.rowstore import STORE_VERSION, RowStore, digest


def counting(row: dict, predictions=(1, 0, 1)):
    calls = []

    def compute():
        calls.append(1)
        return dict(row), list(predictions), {"blocks": [0.5, 0.25]}
    return compute, calls


def test_a_configuration_is_computed_once_then_read_back(tmp_path):
    store = RowStore(tmp_path, {"model": "m", "checkpoint_sha256": "abc"})
    compute, calls = counting({"top1": 71.25})
    first = store.get_or_compute({"config": "W8A8"}, compute)
    again = store.get_or_compute({"config": "W8A8"}, compute)
    assert len(calls) == 1 and not first.cached and again.cached
    assert again.row == {"top1": 71.25} and again.predictions == [1, 0, 1]
    assert again.data == {"blocks": [0.5, 0.25]} and again.key == first.key
    doc = json.loads(store.path(first.key).read_text())
    assert doc["spec"] == {"config": "W8A8"} and doc["context"]["store_version"] == STORE_VERSION
    assert doc["context"]["packages"]["torch"]  # the pinned versions are part of the key


def test_the_key_covers_the_spec_and_the_context(tmp_path):
    a = RowStore(tmp_path, {"model": "m", "checkpoint_sha256": "abc"})
    b = RowStore(tmp_path, {"model": "m", "checkpoint_sha256": "abd"})
    assert a.key({"config": "W8A8"}) != a.key({"config": "W4A8"})
    assert a.key({"config": "W8A8"}) != b.key({"config": "W8A8"})
    # key order does not matter: the spec is hashed as canonical JSON
    assert a.key({"x": 1, "y": 2}) == a.key({"y": 2, "x": 1})
    assert digest({"x": 1}) != digest({"x": 1.5})


def test_recompute_ignores_stored_rows_and_overwrites_them(tmp_path):
    compute, calls = counting({"top1": 50.0})
    RowStore(tmp_path, {"m": 1}).get_or_compute({"c": 1}, compute)
    compute2, calls2 = counting({"top1": 60.0})
    rec = RowStore(tmp_path, {"m": 1}, recompute=True).get_or_compute({"c": 1}, compute2)
    assert len(calls2) == 1 and rec.row["top1"] == 60.0
    assert RowStore(tmp_path, {"m": 1}).get({"c": 1}).row["top1"] == 60.0


def test_a_non_finite_number_is_refused_and_nothing_is_written(tmp_path):
    store = RowStore(tmp_path, {"m": 1})
    compute, _ = counting({"top1": math.nan})
    with pytest.raises(ValueError, match="non-finite"):
        store.get_or_compute({"c": 1}, compute)
    assert list(tmp_path.iterdir()) == []


def test_an_unreadable_stored_row_names_its_file(tmp_path):
    store = RowStore(tmp_path, {"m": 1})
    store.path(store.key({"c": 1})).write_text("{ truncated")
    with pytest.raises(ValueError, match=r"stored row .*\.json is unreadable.*delete it"):
        store.get({"c": 1})


def test_rows_get_the_users_normal_file_mode(tmp_path):
    old = os.umask(0o022)
    try:
        store = RowStore(tmp_path, {"m": 1})
        rec = store.get_or_compute({"c": 1}, counting({"top1": 1.0})[0])
    finally:
        os.umask(old)
    assert stat.S_IMODE(store.path(rec.key).stat().st_mode) == 0o644
