"""Listing folders for a backup: names as bytes, in byte order, relative to the folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from timevault.core.archiver.walk import Entry, list_dir, node_for
from timevault.core.repository.format import Node

# Byte order and code point order disagree on these: U+10000 is F0 90 80 80 in UTF-8, and the
# stray byte F8 becomes U+DCF8 as a str (surrogateescape), which sorts before U+10000.
FOUR_BYTE = "\U00010000".encode()
STRAY = b"\xf8-not-utf8"


def test_names_come_back_as_the_bytes_on_disk_in_byte_order(tmp_path: Path) -> None:
    folder = os.fsencode(tmp_path)
    names = [STRAY, FOUR_BYTE, b"a", b"\xff\xfe", "é".encode()]
    for name in names:
        with open(os.path.join(folder, name), "wb") as f:
            f.write(name)
    os.symlink(b"a", os.path.join(folder, b"link-\xe9"))
    os.mkdir(os.path.join(folder, b"sub"))
    listed, to_read, warnings = list_dir(folder, {})
    assert warnings == []
    entries = [entry for entry in listed if isinstance(entry, Entry)]
    assert entries == listed, "no previous nodes to reuse"
    in_order = [entry.name for entry in entries]
    assert in_order == sorted([*names, b"link-\xe9", b"sub"])
    assert in_order.index(FOUR_BYTE) < in_order.index(STRAY)
    by_name = {entry.name: entry for entry in entries}
    assert by_name[b"link-\xe9"].kind == "symlink" and by_name[b"link-\xe9"].target == b"a"
    assert by_name[b"sub"].kind == "dir"
    assert all(entry.path == os.path.join(folder, entry.name) for entry in entries)
    assert {entry.name for entry in to_read} == set(names)  # small files, nothing known of them
    assert all(os.lstat(entry.path).st_ino == entry.st.st_ino for entry in entries)


def test_a_folder_replaced_by_a_symlink_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret").write_text("not part of the backup")
    os.symlink(tmp_path / "elsewhere", tmp_path / "folder")
    with pytest.raises(OSError):
        list_dir(os.fsencode(tmp_path / "folder"), {})


def test_unchanged_files_come_back_as_their_previous_nodes(tmp_path: Path) -> None:
    for name in ("same", "chmod", "edited"):
        (tmp_path / name).write_bytes(b"content of " + name.encode())
    previous: dict[bytes, Node] = {}
    for entry in list_dir(os.fsencode(tmp_path), {})[0]:
        assert isinstance(entry, Entry)
        node = node_for(entry)
        node.content = [b"\0" * 32]
        previous[entry.name] = node
    os.chmod(tmp_path / "chmod", 0o600)
    (tmp_path / "edited").write_bytes(b"new content, another size")
    entries, to_read, _ = list_dir(os.fsencode(tmp_path), previous)
    chmod, edited, same = entries  # in name order
    assert same is previous[b"same"], "reused as it was: the very node"
    assert isinstance(chmod, Entry) and chmod.unchanged is previous[b"chmod"], "content reused, mode new"
    assert isinstance(edited, Entry) and edited.unchanged is None and to_read == [edited]
