"""cmp_jax.fileio: atomic writes."""

import os

import pytest

from cmp_jax import fileio


def test_atomic_write_leaves_no_temp_files_and_normal_permissions(tmp_path):
  fileio.atomic_write_bytes(tmp_path / "d" / "f.bin", b"abc")
  assert (tmp_path / "d" / "f.bin").read_bytes() == b"abc"
  assert os.listdir(tmp_path / "d") == ["f.bin"]
  assert (os.stat(tmp_path / "d" / "f.bin").st_mode & 0o777) == (0o666 & ~fileio._UMASK)


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
  p = tmp_path / "f.bin"
  p.write_bytes(b"old")

  def boom(src, dst):
    raise OSError("disk full")

  monkeypatch.setattr(os, "replace", boom)
  with pytest.raises(OSError):
    fileio.atomic_write_bytes(p, b"new")
  monkeypatch.undo()
  assert p.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]
