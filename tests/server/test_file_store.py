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


def test_old_versions_are_pruned_except_the_newest_n_and_those_in_use(tmp_path):
    store = FileStore(tmp_path / "store", keep_versions=2)
    pkgs = [make_package("kws", seed=i) for i in range(5)]
    store.track_in_use(lambda task: {pkgs[0].version} if task == "kws" else set())  # still served somewhere
    for p in pkgs:
        store.put("kws", p.version, p.data)
    kept = sorted(p.stem for p in (tmp_path / "store/kws").glob("*.safetensors"))
    assert kept == sorted([pkgs[0].version, pkgs[3].version, pkgs[4].version])
    store.put("kws", pkgs[3].version, pkgs[3].data)  # a rollback to a kept version: it is the newest now
    store.put("kws", make_package("kws", seed=9).version, make_package("kws", seed=9).data)
    kept = {p.stem for p in (tmp_path / "store/kws").glob("*.safetensors")}
    assert pkgs[3].version in kept and pkgs[4].version not in kept and pkgs[0].version in kept
    assert open_store(str(tmp_path / "other"), keep_versions=7).keep_versions == 7


def test_concurrent_puts_and_deletes_never_fail_nor_leave_a_half_task(tmp_path):
    import threading

    store = FileStore(tmp_path / "store")
    pkgs = [make_package("kws", seed=i) for i in range(3)]
    errors: list[BaseException] = []

    def hammer(i: int) -> None:
        for n in range(40):
            try:
                if (n + i) % 2:
                    store.delete("kws")
                else:
                    p = pkgs[n % 3]
                    store.put("kws", p.version, p.data)
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, [str(e) for e in errors[:3]]
    assert store.current_version("kws") in {None, *(p.version for p in pkgs)}
