import json

import pytest

from vitquant_core.results import Provenance, find_row, read_results, write_results

ROW = {"model": "m", "method": "ptq", "w_bits": 8, "a_bits": 8, "granularity": "per_channel", "top1": 90.0}


def test_write_read_with_provenance(tmp_path):
    prov = Provenance("02_ptq", model="m", seed=0)
    path = write_results(tmp_path, "02_ptq", prov, [ROW])
    doc = json.loads(path.read_text())
    assert doc["notebook"] == "02_ptq" and doc["rows"] == [ROW]
    for key in ("commit", "packages", "started", "seconds", "model", "seed"):
        assert key in doc["provenance"]
    assert doc["provenance"]["packages"]["torch"]
    assert find_row(read_results(tmp_path, "02_ptq"), w_bits=8)["top1"] == 90.0
    assert read_results(tmp_path, "nope") is None


@pytest.mark.parametrize("bad", [{**ROW, "top1": float("nan")}, {**ROW, "extra": [1.0, float("inf")]}],
                         ids=["nan-top1", "inf-nested"])
def test_non_finite_values_are_refused_and_nothing_is_written(tmp_path, bad):
    write_results(tmp_path, "n", {}, [ROW])
    before = (tmp_path / "n.json").read_text()
    with pytest.raises(ValueError, match="non-finite"):
        write_results(tmp_path, "n", {}, [bad])
    assert (tmp_path / "n.json").read_text() == before  # the earlier file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["n.json"]  # no temp file left


def test_rows_need_the_contract_keys(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        write_results(tmp_path, "n", {}, [{"model": "m", "top1": 1.0}])


def test_results_files_get_the_users_normal_mode(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = write_results(tmp_path, "02_ptq", Provenance("02_ptq"), [ROW])
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600
