"""Atomic writes."""

from __future__ import annotations

import os

import pytest

from t2t_vit.files import atomic_output, write_text_atomic


def test_success_renames_into_place_with_normal_permissions(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "done\n")
    assert target.read_text() == "done\n"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt])
def test_interruption_leaves_the_old_file_and_no_temporary(tmp_path, interruption):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(interruption):
        with atomic_output(target) as temp_path:
            temp_path.write_text("half")
            raise interruption()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_temporary_name_does_not_look_complete(tmp_path):
    with atomic_output(tmp_path / "model.onnx") as temp_path:
        assert temp_path.parent == tmp_path
        assert temp_path.name.startswith(".") and not temp_path.name.endswith(".onnx")
        temp_path.write_bytes(b"x")
