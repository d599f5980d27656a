"""minivae.files: atomic writes, output folders written as a whole, and folder checks."""

import errno
import os

import pytest

from minivae import files
from minivae.files import TEMPORARY_PREFIX, OutputFolder, atomic_path, check_output_folder, describe_os_error


def test_write_text_replaces_a_file_whole(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("old")
    assert files.write_text(path, "new ✓") == path
    assert path.read_text(encoding="utf-8") == "new ✓"
    assert os.listdir(tmp_path) == ["summary.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "params.npz"
    path.write_bytes(b"the good run")
    with pytest.raises(OSError, match="No space"):
        with atomic_path(path) as temporary:
            assert temporary.parent == tmp_path and temporary.name.endswith("params.npz")
            temporary.write_bytes(b"half a fi")
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as temporary:
            temporary.write_bytes(b"half")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"the good run"
    assert os.listdir(tmp_path) == ["params.npz"]


def test_output_folder_renames_together_and_removes_an_earlier_runs_files(tmp_path):
    for name in ("params.npz", "curves.png", "summary.json", "mine.txt"):
        (tmp_path / name).write_text("old " + name)
    (tmp_path / (TEMPORARY_PREFIX + "dead-params.npz")).write_text("left by a killed run")
    folder = OutputFolder(tmp_path, owned=["params.npz", "curves.png", "summary.json"])
    folder.path("params.npz").write_text("new params")
    folder.write_text("summary.json", "new summary")
    assert (tmp_path / "params.npz").read_text() == "old params.npz"  # nothing visible before commit
    assert folder.names == ["params.npz", "summary.json"]
    written = folder.commit(last="summary.json")
    assert [path.name for path in written] == ["params.npz", "summary.json"]
    assert sorted(os.listdir(tmp_path)) == ["mine.txt", "params.npz", "summary.json"]  # not ours: kept
    assert (tmp_path / "params.npz").read_text() == "new params"
    assert (tmp_path / "mine.txt").read_text() == "old mine.txt"


def test_output_folder_discard_keeps_the_previous_files(tmp_path):
    (tmp_path / "params.npz").write_text("old")
    folder = OutputFolder(tmp_path, owned=["params.npz", "history.json"])
    folder.path("params.npz").write_text("new")
    folder.write_text("history.json", "new")
    folder.discard()
    assert os.listdir(tmp_path) == ["params.npz"] and (tmp_path / "params.npz").read_text() == "old"
    folder.path("params.npz").write_text("half a figure")
    folder.forget("params.npz")  # dropped from the run: its temporary file goes
    assert os.listdir(tmp_path) == ["params.npz"] and folder.names == []
    folder.path("history.json")  # asked for, never written: commit refuses and cleans up
    with pytest.raises(RuntimeError, match="never written"):
        folder.commit()
    assert os.listdir(tmp_path) == ["params.npz"]


def test_check_output_folder(tmp_path):
    created = check_output_folder(tmp_path / "a" / "b")
    assert created.is_dir() and os.listdir(created) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="--out .*file' is a file, not a folder"):
        check_output_folder(tmp_path / "file")
    with pytest.raises(ValueError, match="lies under .*file', which is a file"):
        check_output_folder(tmp_path / "file" / "run", "--out")


def test_describe_os_error_names_the_file_and_the_reason():
    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device", "run/params.npz")) == \
        "'run/params.npz': No space left on device (ENOSPC)"
    assert describe_os_error(OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b")) == \
        "'a' -> 'b': Invalid cross-device link (EXDEV)"
