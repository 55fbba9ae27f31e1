"""Where data lives: local paths and fsspec URLs behind one small API.

Every location the package reads or writes (image folders, manifests, shards, encoder checkpoints, resume
directories, expectation suites) is either a local path or a URL with a scheme that fsspec knows:
``s3://`` (extra ``[s3]``: s3fs), ``gs://`` (extra ``[gcs]``: gcsfs), ``memory://``, ``file://`` (the
same as a local path), ``http(s)://`` (read only). Credentials come from the usual chain of each store
(for S3: ``AWS_*`` environment variables, ``~/.aws``, instance roles; an S3-compatible endpoint through
``AWS_ENDPOINT_URL`` or ``FSSPEC_S3_ENDPOINT_URL``); they are never passed through this module, so they
never reach a log line or a run's parameters. ``redact`` removes credentials written into a URL itself.

Local paths keep plain ``pathlib`` semantics (absolute path strings); URLs keep their scheme, so a row's
``path`` can always be opened again with ``read_bytes``.
"""
from __future__ import annotations

import io
import os
import posixpath
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from glob import glob as local_glob
from pathlib import Path
from typing import IO, Any

from influencegate.data.folder_walk import walk_local

URL_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
FILE_SCHEME = "file://"
#: The extra that brings each store's fsspec driver.
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
_BRACE_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_BRACE_LIST = re.compile(r"\{([^{}]*,[^{}]*)\}")


class StorageError(ValueError):
    """A location cannot be reached or used (no driver for its scheme, no permission, a bad pattern)."""


Location = str | os.PathLike


def is_url(location: Location) -> bool:
    """True for a URL with a scheme other than ``file://`` (those are local paths)."""
    text = str(location)
    return bool(URL_SCHEME.match(text)) and not text.startswith(FILE_SCHEME)


def normalise(location: Location) -> str:
    """A URL unchanged; ``file://`` and local paths as an absolute local path (``~`` expanded)."""
    text = os.fspath(location)
    if text.startswith(FILE_SCHEME):
        text = text[len(FILE_SCHEME):]
    if is_url(text):
        return text
    return str(Path(text).expanduser().absolute())


def redact(location: Location) -> str:
    """``location`` with any ``user:password@`` part of a URL removed (for logs, tables and run params)."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1", os.fspath(location))


def _filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) of a URL; StorageError when the scheme's driver is missing."""
    import fsspec.core

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        scheme = URL_SCHEME.match(url).group(1)
        extra = EXTRAS.get(scheme)
        hint = f" (pip install 'influencegate[{extra}]')" if extra else ""
        raise StorageError(f"cannot open {redact(url)!r}: {exc}{hint}") from None


def _url_of(filesystem: Any, path: str) -> str:
    """The URL of ``path`` on ``filesystem`` (fsspec paths carry no scheme)."""
    return filesystem.unstrip_protocol(path)


def _ask(location: Location, question: str) -> bool:
    """Path(location).<question>() locally, the fsspec filesystem's equivalent for URLs."""
    location = normalise(location)
    if not is_url(location):
        return getattr(Path(location), question)()
    filesystem, path = _filesystem(location)
    return bool(getattr(filesystem, question.replace("is_", "is"))(path))


def exists(location: Location) -> bool:
    """True when a file or folder is at ``location``."""
    return _ask(location, "exists")


def is_file(location: Location) -> bool:
    """True when ``location`` is a file (an object, for object stores)."""
    return _ask(location, "is_file")


def is_dir(location: Location) -> bool:
    """True when ``location`` is a folder (a prefix holding objects, for object stores)."""
    return _ask(location, "is_dir")


def read_bytes(location: Location) -> bytes:
    """All bytes of the file at ``location``. FileNotFoundError when it is absent, other OSErrors as raised."""
    location = normalise(location)
    if not is_url(location):
        return Path(location).read_bytes()
    filesystem, path = _filesystem(location)
    return filesystem.cat_file(path)


def read_text(location: Location) -> str:
    """The file at ``location`` decoded as UTF-8."""
    return read_bytes(location).decode("utf-8")


def open_binary(location: Location) -> IO[bytes]:
    """A readable binary file object on ``location`` (streams from object stores); close it after use."""
    location = normalise(location)
    if not is_url(location):
        return open(location, "rb")
    filesystem, path = _filesystem(location)
    return filesystem.open(path, "rb")


def write_bytes(location: Location, data: bytes) -> None:
    """Write ``data`` to ``location`` so that a reader sees the old file or the new one, never a part.

    Local: a temporary file ``.<name>.tmp-<pid>-<random>`` in the same folder, then ``os.replace``; at this
    process's first write into a folder, the temporaries that dead processes left there are removed. Object
    stores: one upload (an object appears whole or not at all). Parent folders are created.
    """
    location = normalise(location)
    if not is_url(location):
        target = Path(location)
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(target.parent)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return
    filesystem, path = _filesystem(location)
    filesystem.pipe_file(path, data)


#: Folders whose stale temporaries this process has removed already (once per folder: a resume directory
#: receives thousands of shard files, and listing it at every write would cost O(files) each time).
_CLEANED: set[str] = set()
_TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]+$")


def _remove_stale_temporaries(folder: Path) -> None:
    """Delete the ``.<name>.tmp-<pid>-<random>`` files in ``folder`` whose writing process is no longer alive,
    the first time this process writes there."""
    if str(folder) in _CLEANED:
        return
    _CLEANED.add(str(folder))
    for tmp in folder.glob(".*.tmp-*"):
        match = _TEMPORARY.match(tmp.name)
        if match and not _alive(int(match.group(1))):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def write_text(location: Location, text: str) -> None:
    """``write_bytes`` of ``text`` encoded as UTF-8."""
    write_bytes(location, text.encode("utf-8"))


def make_dirs(location: Location) -> None:
    """Create the folder ``location`` (a no-op on object stores, where prefixes need no creation)."""
    location = normalise(location)
    if not is_url(location):
        Path(location).mkdir(parents=True, exist_ok=True)
        return
    filesystem, path = _filesystem(location)
    try:
        filesystem.makedirs(path, exist_ok=True)
    except OSError:
        pass  # buckets that exist already, or stores without folders


def join(base: Location, *parts: str) -> str:
    """``parts`` (POSIX, relative) appended to the folder ``base``; stays a URL for URLs."""
    base = normalise(base)
    if is_url(base):
        return posixpath.join(base.rstrip("/"), *parts)
    return os.path.normpath(os.path.join(base, *parts))


def parent(location: Location) -> str:
    """The folder holding ``location``."""
    location = normalise(location)
    if is_url(location):
        scheme = URL_SCHEME.match(location).group(0)
        return scheme + posixpath.dirname(location[len(scheme):].rstrip("/"))
    return str(Path(location).parent)


def basename(location: Location) -> str:
    """The last part of ``location`` (file or folder name)."""
    return posixpath.basename(normalise(location).rstrip("/").replace(os.sep, "/"))


def suffix(location: Location) -> str:
    """The lower-case extension of ``location``'s last part, with its dot ('' when none)."""
    return posixpath.splitext(basename(location))[1].lower()


def relative_to(location: Location, root: Location) -> str | None:
    """``location`` relative to the folder ``root`` (POSIX), or None when it lies outside."""
    location, root = normalise(location), normalise(root)
    if is_url(location) != is_url(root):
        return None
    relative = posixpath.relpath(location, root) if is_url(location) else os.path.relpath(location, root)
    relative = relative.replace(os.sep, "/")
    return None if relative == ".." or relative.startswith("../") else relative


def walk_files(folder: Location, skipped: Counter[str] | None = None) -> Iterator[tuple[str, str]]:
    """(path relative to ``folder`` in POSIX form, location) of every file below ``folder`` that a scan reads,
    recursively, not sorted. Local folders follow ``folder_walk``'s policy (symlinks, hidden and special
    files); in object stores, which have no links, hidden files and folders (a part starting with '.') are
    skipped. ``skipped`` (optional) receives a count per skipped kind (``folder_walk.SKIPPED_KINDS``; a
    hidden folder counts once)."""
    folder, skipped = normalise(folder), Counter() if skipped is None else skipped
    if not is_url(folder):
        yield from walk_local(folder, skipped)
        return
    filesystem, root = _filesystem(folder)
    root = root.rstrip("/")
    hidden: set[str] = set()
    for path in filesystem.find(root):
        parts = posixpath.relpath(path, root).split("/")
        first = next((i for i, part in enumerate(parts) if part.startswith(".")), None)
        if first is None:
            yield "/".join(parts), _url_of(filesystem, path)
        else:
            hidden.add("/".join(parts[:first + 1]))
    skipped["hidden"] += len(hidden)


def expand(pattern: Location) -> list[str]:
    """The locations a shard pattern names, in order: brace ranges (``{000000..000099}``, zero padding kept)
    and lists (``{a,b}``) are expanded as WebDataset does, then ``*``/``?``/``[...]`` globs are matched
    (sorted). A pattern without either is returned as is. StorageError for a range that runs backwards."""
    names = _expand_braces(normalise(pattern) if not is_url(pattern) else str(pattern))
    out: list[str] = []
    for name in names:
        if not any(ch in name for ch in "*?["):
            out.append(name)
            continue
        if is_url(name):
            filesystem, path = _filesystem(name)
            out.extend(_url_of(filesystem, p) for p in sorted(filesystem.glob(path)))
        else:
            out.extend(sorted(local_glob(name)))
    return out


def _expand_braces(text: str) -> list[str]:
    """Brace expansion, leftmost brace first (so names come out in the order a shell lists them)."""
    matches = [m for m in (_BRACE_RANGE.search(text), _BRACE_LIST.search(text)) if m]
    if not matches:
        return [text]
    match = min(matches, key=lambda m: m.start())
    head, tail = text[:match.start()], text[match.end():]
    if match.re is _BRACE_LIST:
        options = match.group(1).split(",")
    else:
        first, last = match.group(1), match.group(2)
        if int(last) < int(first):
            raise StorageError(f"shard range {match.group(0)} runs backwards")
        options = [f"{i:0{len(first)}d}" for i in range(int(first), int(last) + 1)]
    return [name for option in options for name in _expand_braces(f"{head}{option}{tail}")]


def is_pattern(location: Location) -> bool:
    """True when ``location`` names several files (a brace range or list, or a glob) and is not itself an
    existing file or folder (a folder called ``photos [2019]`` is a folder)."""
    text = os.fspath(location)
    marked = bool(_BRACE_RANGE.search(text) or _BRACE_LIST.search(text) or any(ch in text for ch in "*?["))
    return marked and not exists(text)


def load_torch(location: Location, map_location: Any = "cpu") -> Any:
    """``torch.load(..., weights_only=True)`` of the file at ``location`` (tensors and primitive containers
    only: a file that pickles code is refused, never run)."""
    import torch

    return torch.load(io.BytesIO(read_bytes(location)), map_location=map_location, weights_only=True)
