"""Versioned, checksummed, atomic ``.npz`` files without pickle.

A file holds numpy arrays plus one JSON header stored as a ``uint8`` array under ``__header__``. The header
carries the format name, its version, a SHA-256 over every array's name, dtype, shape and bytes
(``sha256``) and a SHA-256 over the header's own canonical JSON (``header_sha256``), so a truncated or
edited file is detected on load instead of producing a silently wrong object. (Files written before
``header_sha256`` existed have none and are accepted on their array checksum alone.)

Writes are atomic: the archive goes to a temporary file in the destination directory, is flushed and
fsync'ed, then renamed over the destination, so a crash or an error mid-write leaves the previous file
intact and never a half-written one.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import as_path
from .errors import FormatError, InvalidParameterError

_HEADER_KEY = "__header__"

#: What parsing damaged bytes as an .npz can raise. Besides the usual ones, zipfile raises
#: NotImplementedError ("compression method", "strong encryption", "zip file version") and RuntimeError
#: ("is encrypted") when a flag byte is flipped, lzma/bz2 errors when the method byte turns into theirs,
#: and numpy MemoryError/OverflowError for an array header claiming an absurd shape.
UNREADABLE: tuple[type[BaseException], ...] = (
    OSError, ValueError, EOFError, KeyError, IndexError, TypeError, zipfile.BadZipFile, zlib.error, NotImplementedError,
    RuntimeError, OverflowError, MemoryError, lzma.LZMAError, struct.error,
)
_HEADER_DIGEST = "header_sha256"


def _digest(arrays: dict[str, np.ndarray]) -> str:
    sha = hashlib.sha256()
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        sha.update(key.encode())
        sha.update(str(array.dtype).encode())
        sha.update(str(array.shape).encode())
        sha.update(array.tobytes())
    return sha.hexdigest()


def _header_digest(header: dict[str, Any]) -> str:
    """SHA-256 of the header's canonical JSON, without the digest itself."""
    body = {key: value for key, value in header.items() if key != _HEADER_DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _publish(tmp: str, path: Path) -> None:
    """Give ``tmp`` the permissions a plain ``open()`` would (mkstemp makes it 0600), then rename it to ``path``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, tuples and enums turned into what ``json`` writes."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Enum):
        return value.value
    return value


def write_npz(path: str | os.PathLike, kind: str, version: int, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` and ``header`` to ``path`` atomically (temporary file, then rename)."""
    path = as_path("path", path)
    if not path.name or path.name in (".", ".."):
        raise InvalidParameterError(f"`path` must name a file, got {str(path)!r}")
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    full_header = {"format": kind, "version": version, "sha256": _digest(arrays), **header}
    try:
        full_header[_HEADER_DIGEST] = _header_digest(full_header)
    except (TypeError, ValueError) as exc:  # a value JSON cannot hold: a caller's bug, caught before writing
        raise InvalidParameterError(f"cannot write {kind} to {str(path)!r}: its description is not JSON-serialisable: {exc}") from exc
    payload = dict(arrays)
    payload[_HEADER_KEY] = np.frombuffer(json.dumps(full_header, sort_keys=True, allow_nan=True).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, "wb", lambda handle: np.savez(handle, **payload))
    return path



def _write_atomic(path: Path, mode: str, write: Any) -> None:
    """Call ``write(handle)`` on a temporary file next to ``path``, sync it, then rename it over ``path``: a
    crash leaves the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_version(version: Any, max_version: int, where: str, what: str = "format") -> None:
    """Refuse a missing/invalid format version, or one newer than this package reads."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise FormatError(f"{where} has no valid format version, got {version!r}")
    if version > max_version:
        raise FormatError(
            f"{where} has {what} version {version!r}; this repurpose-opt reads versions up to {max_version}: "
            f"upgrade the package"
        )

def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file in the same directory, then rename)."""
    path = as_path("path", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, "w", lambda handle: handle.write(text))
    return path


def read_npz(path: str | os.PathLike, kind: str, max_version: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a file written by :func:`write_npz`, checking format, version and checksum."""
    path = as_path("path", path)
    if not path.is_file():
        raise FormatError(f"`path` must be an existing file, got {str(path)!r}")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not an .npz archive")
        with data:
            arrays = {key: np.array(data[key]) for key in data.files}
    except UNREADABLE as exc:
        raise FormatError(f"{str(path)!r} is not a readable {kind} file (corrupted or truncated): {exc}") from exc
    raw = arrays.pop(_HEADER_KEY, None)
    if raw is None or raw.dtype != np.uint8:
        raise FormatError(f"{str(path)!r} has no repurpose-opt header; it is not a {kind} file")
    try:
        header = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise FormatError(f"{str(path)!r} has a corrupted header: {exc}") from exc
    if not isinstance(header, dict):
        raise FormatError(f"{str(path)!r} has a corrupted header: expected a JSON object")
    if header.get("format") != kind:
        raise FormatError(f"{str(path)!r} holds a {header.get('format')!r} file, expected {kind!r}")
    check_version(header.get("version"), max_version, repr(str(path)))
    if header.get("sha256") != _digest(arrays):
        raise FormatError(f"{str(path)!r} failed its checksum: the file is corrupted")
    # Files written before the header had its own digest have none; they are still accepted.
    if _HEADER_DIGEST in header and header[_HEADER_DIGEST] != _header_digest(header):
        raise FormatError(f"{str(path)!r} failed its header checksum: the file's description was altered or corrupted")
    return header, arrays
