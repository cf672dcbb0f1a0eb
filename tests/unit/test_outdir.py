"""The --out check every command runs before loading (issue 20 §5)."""

from __future__ import annotations

import errno
import os

import pytest

from mechit import outdir
from mechit.errors import InputError, MechitError
from mechit.outdir import check_out_dir


def test_symlink_loop(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(InputError, match=r"--out .*loop/out is not writable \(Too many levels of symbolic links\)"):
        check_out_dir(tmp_path / "loop" / "out")


@pytest.mark.parametrize("path, root", [("/proc/self/out", "/proc"), ("/sys/x", "/sys"), ("/dev/null/x", "/dev")])
def test_virtual_file_systems(path, root):
    with pytest.raises(InputError, match=f"lies under {root}, a virtual file system"):
        check_out_dir(path)


def test_symlink_into_proc(tmp_path):
    (tmp_path / "p").symlink_to("/proc/self")
    with pytest.raises(InputError, match="lies under /proc"):
        check_out_dir(tmp_path / "p" / "out")


def test_file_and_empty(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is not writable: it is a file"):
        check_out_dir(tmp_path / "f")
    with pytest.raises(InputError, match="--out is empty"):
        check_out_dir("")


def test_read_only_directory(tmp_path, monkeypatch):
    """Root ignores permission bits, so the refusal of the file system is planted."""
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(outdir.tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(InputError, match="is not writable \\(Read-only file system\\)"):
        check_out_dir(tmp_path / "a" / "b", create=False)
    assert not (tmp_path / "a").exists()  # folders made for the check are removed again


def test_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(outdir.shutil, "disk_usage", lambda path: type("Usage", (), {"free": outdir.MIN_FREE_BYTES - 1}))
    with pytest.raises(MechitError, match="disk full: only 50.0 MiB free"):
        check_out_dir(tmp_path)


def test_create_false_leaves_nothing(tmp_path):
    assert check_out_dir(tmp_path / "x" / "y", create=False) == tmp_path / "x" / "y"
    assert list(tmp_path.iterdir()) == []
    assert check_out_dir(tmp_path / "z").is_dir()
