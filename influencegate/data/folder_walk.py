"""Which files of a local folder a scan reads, and a count of each kind of entry it skips.

Policy (stated in the README): a symlinked *file* is read when its target lies inside the scanned folder
(after resolving every link, the folder's own path included) and skipped when it points outside; symlinked
*folders* are never entered (no loops, no file read twice, nothing outside the folder); hidden files and
folders (a name starting with '.') are skipped, a hidden folder counted once and not entered; special files
(FIFOs, sockets, devices) are skipped, since reading one can block forever; a subfolder that cannot be
listed (no permission) is skipped. Every skipped entry is counted by kind (``SKIPPED_KINDS``), so that a
dataset's summary says what was left out even when nothing was.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator

#: Kinds of skipped entries, with the words a summary uses for them (``not_image`` is counted by the folder
#: scan, ``sources.scan_folder``: files without an image extension).
SKIPPED_KINDS = {
    "hidden": "hidden",
    "symlink_outside": "symlinks pointing outside",
    "symlinked_folder": "symlinked folders",
    "special": "special files",
    "unreadable_folder": "unreadable folders",
    "not_image": "without an image extension",
}


def skipped_counts(skipped: Counter[str]) -> dict[str, int]:
    """Every kind of SKIPPED_KINDS with its count, zeros included (what a dataset's summary carries)."""
    return {kind: int(skipped[kind]) for kind in SKIPPED_KINDS}


def describe_skipped(counts: dict[str, int]) -> str:
    """'1 hidden, 0 symlinks pointing outside, ...': every kind of ``counts`` in words."""
    return ", ".join(f"{count} {SKIPPED_KINDS.get(kind, kind)}" for kind, count in counts.items())


def walk_local(root: str, skipped: Counter[str]) -> Iterator[tuple[str, str]]:
    """(path relative to ``root`` in POSIX form, absolute path) of every file a scan of the local folder
    ``root`` reads (see the module's policy), recursively, not sorted; each skipped entry adds one to
    ``skipped[kind]``. OSError when ``root`` itself cannot be listed."""
    real_root = os.path.realpath(root)
    pending = [""]
    while pending:
        relative_dir = pending.pop()
        try:
            entries = list(os.scandir(os.path.join(root, relative_dir)))
        except PermissionError:
            if not relative_dir:
                raise
            skipped["unreadable_folder"] += 1
            continue
        for entry in entries:
            relative = f"{relative_dir}/{entry.name}" if relative_dir else entry.name
            kind = _skip_kind(entry, real_root)
            if kind is not None:
                skipped[kind] += 1
            elif entry.is_dir(follow_symlinks=False):
                pending.append(relative)
            else:
                yield relative, os.path.abspath(entry.path)


def _skip_kind(entry: os.DirEntry, real_root: str) -> str | None:
    """The SKIPPED_KINDS key of a folder entry the scan leaves out, None for a file to read or a folder to
    enter. A broken symlink inside the folder is read (its row then says "missing file")."""
    if entry.name.startswith("."):
        return "hidden"
    if entry.is_symlink():
        if entry.is_dir():
            return "symlinked_folder"
        target = os.path.realpath(entry.path)
        if os.path.commonpath([target, real_root]) != real_root:
            return "symlink_outside"
        return "special" if os.path.exists(target) and not os.path.isfile(target) else None
    if entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False):
        return None
    return "special"
