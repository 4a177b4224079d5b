"""File store: atomic puts, CURRENT, hand-dropped packages, half-written files never served, names."""

from __future__ import annotations

import os

import pytest

from server.errors import InvalidTaskName
from server.stores import open_store
from server.stores.file import FileStore, complete_safetensors
from speechprompt.package import digest

from .fakes import make_package


@pytest.fixture
def store(tmp_path):
    return FileStore(tmp_path / "store")


def test_put_makes_current_and_read_checks_digest(store, tmp_path):
    p1, p2 = make_package("kws", seed=1), make_package("kws", seed=2)
    store.put("kws", p1.version, p1.data)
    assert store.list_tasks() == ["kws"] and store.current_version("kws") == p1.version
    store.put("kws", p2.version, p2.data)
    assert store.current_version("kws") == p2.version
    assert store.read("kws", p1.version) == p1.data  # old versions stay readable (immutable)
    assert (tmp_path / "store/kws/CURRENT").read_text().strip() == p2.version
    assert not list((tmp_path / "store/kws").glob("*.tmp"))
    assert store.snapshot() == {"kws": p2.version}
    with pytest.raises(ValueError):
        store.put("kws", p1.version, p2.data)  # the version must be the content digest


def test_dropped_file_becomes_current_and_partial_files_are_ignored(store, tmp_path):
    p1, p2 = make_package("emo", seed=1), make_package("emo", seed=2)
    folder = tmp_path / "store/emo"
    folder.mkdir(parents=True)
    (folder / "upload.safetensors.tmp").write_bytes(p1.data)  # in-progress copies are ignored
    assert store.snapshot() == {"emo": None}
    (folder / "emotion.safetensors").write_bytes(p1.data[:-7])  # half-written: not a complete frame
    assert store.current_version("emo") is None
    (folder / "emotion.safetensors").write_bytes(p1.data)
    assert store.current_version("emo") == p1.version and store.read("emo", p1.version) == p1.data
    # a file named for a digest it does not have (e.g. torn write) is never served
    (folder / f"{p2.version}.safetensors").write_bytes(p1.data)
    assert store.current_version("emo") == p1.version
    # a package dropped after a put wins (newest choice), and CURRENT written later wins back
    store.put("emo", p2.version, p2.data)
    assert store.current_version("emo") == p2.version
    os.utime(folder / "emotion.safetensors", ns=(2**62, 2**62))
    assert store.current_version("emo") == p1.version


def test_current_naming_a_missing_file_serves_nothing(store, tmp_path):
    p = make_package("kws")
    store.put("kws", p.version, p.data)
    (tmp_path / "store/kws/CURRENT").write_text("0123456789abcdef\n")
    assert store.current_version("kws") is None
    assert store.snapshot() == {"kws": None}


@pytest.mark.parametrize("name", ["../x", "a/b", "", "-x", "X", "a" * 65, "é", ".hidden"])
def test_bad_task_names_are_refused(store, name):
    with pytest.raises(InvalidTaskName):
        store.current_version(name)
    with pytest.raises(InvalidTaskName):
        store.put(name, digest(b"x"), b"x")


def test_folders_with_bad_names_are_not_tasks(store, tmp_path):
    (tmp_path / "store/Bad Name").mkdir(parents=True)
    (tmp_path / "store/.deleted-x").mkdir()
    assert store.list_tasks() == []


def test_delete(store):
    p = make_package("kws")
    store.put("kws", p.version, p.data)
    assert store.delete("kws") is True
    assert store.list_tasks() == [] and store.delete("kws") is False and store.read("kws", p.version) is None


def test_complete_safetensors_frame():
    data = make_package("kws").data
    assert complete_safetensors(data)
    assert not complete_safetensors(data[:-1]) and not complete_safetensors(data + b"\0")
    assert not complete_safetensors(b"\x80\x04pickle") and not complete_safetensors(b"")


def test_open_store_picks_the_file_store_for_paths(tmp_path):
    assert isinstance(open_store(str(tmp_path)), FileStore)
