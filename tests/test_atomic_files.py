"""larp_hf.atomic_files: files and folders written whole or not at all."""

import json
import os
import stat

import pytest

from larp_hf.atomic_files import (
    install_folder,
    new_partial_folder,
    open_atomic,
    remove_folder,
    remove_swap_leftovers,
    swap_folder,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def listing(folder):
    return sorted(path.name for path in folder.iterdir())


def contents(folder):
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


# ---- files -------------------------------------------------------------------------------------------------------


def test_the_wrappers_write_bytes_text_and_json(tmp_path):
    write_bytes_atomic(tmp_path / "a.bin", b"\x00\x01")
    write_text_atomic(tmp_path / "b.txt", "héllo")
    write_json_atomic(tmp_path / "c.json", {"step": 3})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "c.json").read_text() == '{\n  "step": 3\n}\n'
    assert listing(tmp_path) == ["a.bin", "b.txt", "c.json"]


def test_two_writers_of_one_file_never_share_a_temporary_file(tmp_path):
    path = tmp_path / "metrics.json"
    with open_atomic(path) as first:
        first.write(b"first")
        with open_atomic(path) as second:
            second.write(b"second")
            temporaries = [name for name in listing(tmp_path) if name != "metrics.json"]
            assert len(temporaries) == 2  # one each, side by side
        assert path.read_bytes() == b"second"  # readers see whole files only
    assert path.read_bytes() == b"first" and listing(tmp_path) == ["metrics.json"]


def test_a_failing_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"loss": 1.0})
    with pytest.raises(RuntimeError, match="disk full"):
        with open_atomic(path, "w") as handle:
            handle.write('{"loss": ')
            raise RuntimeError("disk full")
    assert json.loads(path.read_text()) == {"loss": 1.0}
    assert listing(tmp_path) == ["metrics.json"]
    with pytest.raises(TypeError):
        write_json_atomic(path, {"loss": object()})
    assert json.loads(path.read_text()) == {"loss": 1.0} and listing(tmp_path) == ["metrics.json"]


def test_a_file_written_atomically_has_the_permissions_of_a_plain_one(tmp_path):
    (tmp_path / "plain").write_bytes(b"x")
    write_bytes_atomic(tmp_path / "atomic", b"x")
    assert stat.S_IMODE((tmp_path / "atomic").stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode)


def test_open_atomic_refuses_modes_that_read_or_append(tmp_path):
    with pytest.raises(ValueError, match="mode must start with 'w'"):
        with open_atomic(tmp_path / "x", "ab"):
            pass
    assert listing(tmp_path) == []


# ---- folders -----------------------------------------------------------------------------------------------------


def test_a_swap_replaces_the_folder_whole_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "pipe"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with swap_folder(target) as folder:
        assert folder.parent == tmp_path and folder.name.startswith(".tmp-pipe-") and listing(folder) == []
        (folder / "sub").mkdir()
        (folder / "sub" / "new.txt").write_text("new")
        assert contents(target) == {"old.txt": b"old"}  # untouched while the new folder is written
    assert contents(target) == {"sub/new.txt": b"new"}  # the old file does not survive into the new folder
    assert listing(tmp_path) == ["pipe"]
    (tmp_path / "plain").mkdir()
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode)


def test_a_failed_swap_leaves_the_target_as_it_was_and_removes_the_partial_folder(tmp_path):
    target = tmp_path / "tokens"
    target.mkdir()
    (target / "data").write_text("old")
    with pytest.raises(RuntimeError, match="broken image"):
        with swap_folder(target) as folder:
            (folder / "data").write_text("half")
            raise RuntimeError("broken image")
    assert contents(target) == {"data": b"old"} and listing(tmp_path) == ["tokens"]


def test_at_every_step_of_a_swap_the_old_or_the_new_folder_is_whole(tmp_path):
    target = tmp_path / "checkpoint-3"
    target.mkdir()
    (target / "weights").write_text("old")
    seen = {}

    def crash_at(step_to_crash):
        def on_step(step):
            seen[step] = {name: contents(tmp_path / name) for name in listing(tmp_path)}
            if step == step_to_crash:
                raise KeyboardInterrupt  # as a kill would, in the middle of the swap

        return on_step

    partial = new_partial_folder(target)
    (partial / "weights").write_text("new")
    with pytest.raises(KeyboardInterrupt):
        install_folder(partial, target, on_step=crash_at("old-moved-aside"))
    aside = partial.name.replace(".tmp-", ".old-")
    assert seen["old-moved-aside"] == {aside: {"weights": b"old"}, partial.name: {"weights": b"new"}}
    assert contents(target) == {"weights": b"old"}  # an error (not a kill) puts the old folder back

    with pytest.raises(KeyboardInterrupt):
        install_folder(partial, target, on_step=crash_at("installed"))
    assert seen["installed"] == {aside: {"weights": b"old"}, "checkpoint-3": {"weights": b"new"}}
    assert listing(tmp_path) == [aside, "checkpoint-3"]  # the owner's recovery removes the replaced folder


def test_a_swap_that_may_not_replace_refuses_a_non_empty_target_before_and_after_the_block(tmp_path):
    target = tmp_path / "dataset"
    target.mkdir()
    (target / "mine.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not replaced"):
        with swap_folder(target, replace=False):
            raise AssertionError("the block must not run")
    assert contents(target) == {"mine.txt": b"mine"} and listing(tmp_path) == ["dataset"]

    fresh = tmp_path / "fresh"
    with pytest.raises(FileExistsError, match="is not replaced"):
        with swap_folder(fresh, replace=False) as folder:
            (folder / "new.txt").write_text("new")
            fresh.mkdir()
            (fresh / "theirs.txt").write_text("theirs")  # another writer got there first
    assert contents(fresh) == {"theirs.txt": b"theirs"} and listing(tmp_path) == ["dataset", "fresh"]

    (target / "mine.txt").unlink()  # an empty folder, or none, may be filled
    with swap_folder(target, replace=False) as folder:
        (folder / "new.txt").write_text("new")
    assert contents(target) == {"new.txt": b"new"} and listing(tmp_path) == ["dataset", "fresh"]


def test_only_a_partial_folder_beside_the_target_is_installed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(ValueError, match="is not a .tmp-\\* folder beside"):
        install_folder(elsewhere, tmp_path / "target")
    assert listing(tmp_path) == ["elsewhere"] and os.path.isdir(elsewhere)


def test_a_folder_is_renamed_aside_before_it_is_removed(tmp_path):
    folder = tmp_path / "checkpoint-1"
    folder.mkdir()
    (folder / "weights").write_text("w")
    (tmp_path / ".deleting-checkpoint-1").mkdir()  # a removal a crash interrupted
    seen = []
    remove_folder(folder, on_step=lambda step: seen.append((step, listing(tmp_path))))
    assert seen == [("moved-aside", [".deleting-checkpoint-1"])] and listing(tmp_path) == []


def test_the_leftovers_of_interrupted_swaps_into_a_target_are_found_and_removed(tmp_path):
    for name in (".tmp-tokens-a1", ".old-tokens-b2", ".tmp-tokens2-c3", ".tmp-tokens-x-d4", "tokens"):
        (tmp_path / name).mkdir()
    assert remove_swap_leftovers(tmp_path / "tokens") == [".tmp-tokens-a1", ".old-tokens-b2"]
    assert listing(tmp_path) == [".tmp-tokens-x-d4", ".tmp-tokens2-c3", "tokens"]  # other targets' partial folders


def test_open_atomic_passes_text_options_to_open_and_a_bad_one_leaves_nothing(tmp_path):
    with open_atomic(tmp_path / "rows.csv", "w", newline="\r\n") as handle:
        handle.write("a,b\n")
    assert (tmp_path / "rows.csv").read_bytes() == b"a,b\r\n"  # the newline option reached open
    with pytest.raises(LookupError):
        with open_atomic(tmp_path / "rows.csv", "w", encoding="no-such-codec"):
            pass
    assert listing(tmp_path) == ["rows.csv"]
