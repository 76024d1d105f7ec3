"""`disk.rename_no_replace`: a rename that never replaces a file or a folder, with and without renameat2."""

from __future__ import annotations

import pytest

from model_manager.core.services import disk


@pytest.fixture(params=["renameat2", "fallback"])
def mechanism(request, monkeypatch):
    if request.param == "fallback":  # a kernel or filesystem without RENAME_NOREPLACE: link-then-unlink
        monkeypatch.setattr(disk, "_renameat2", None)
    return request.param


def test_a_file_is_renamed_when_the_name_is_free(tmp_path, mechanism):
    (tmp_path / "a").write_bytes(b"mine")
    disk.rename_no_replace(tmp_path / "a", tmp_path / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"] and (tmp_path / "b").read_bytes() == b"mine"


def test_an_existing_file_is_never_replaced(tmp_path, mechanism):
    (tmp_path / "a").write_bytes(b"mine")
    (tmp_path / "b").write_bytes(b"theirs")
    with pytest.raises(FileExistsError):
        disk.rename_no_replace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "a").read_bytes() == b"mine" and (tmp_path / "b").read_bytes() == b"theirs"


def test_an_existing_folder_even_empty_is_never_replaced(tmp_path, mechanism):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "part").write_bytes(b"partial")
    (tmp_path / "b").mkdir()
    with pytest.raises(FileExistsError):
        disk.rename_no_replace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "a" / "part").read_bytes() == b"partial" and list((tmp_path / "b").iterdir()) == []
    (tmp_path / "b").rmdir()
    disk.rename_no_replace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b" / "part").read_bytes() == b"partial" and not (tmp_path / "a").exists()
