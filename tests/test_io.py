"""atomic_write: the old file or the new one, never half of one."""
from __future__ import annotations

import pytest

from vitquant_core.io import atomic_write


def test_text_bytes_and_a_writer_function(tmp_path):
    assert atomic_write(tmp_path / "sub" / "a.txt", "text").read_text() == "text"
    assert atomic_write(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert atomic_write(tmp_path / "c.txt", lambda p: p.write_text("by path")).read_text() == "by path"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = atomic_write(tmp_path / "a.txt", "old")

    def fail(path):
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
