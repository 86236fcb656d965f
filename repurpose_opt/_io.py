"""Versioned, checksummed, atomic ``.npz`` files without pickle.

A file holds numpy arrays plus one JSON header stored as a ``uint8`` array under ``__header__``. The header
carries the format name, its version and a SHA-256 over every array's dtype, shape and bytes, so a
truncated or edited file is detected on load instead of producing a silently wrong object.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FormatError

_HEADER_KEY = "__header__"


def _digest(arrays: dict[str, np.ndarray]) -> str:
    sha = hashlib.sha256()
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        sha.update(key.encode())
        sha.update(str(array.dtype).encode())
        sha.update(str(array.shape).encode())
        sha.update(array.tobytes())
    return sha.hexdigest()


def write_npz(path: str | os.PathLike, kind: str, version: int, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` and ``header`` to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    full_header = {"format": kind, "version": version, "sha256": _digest(arrays), **header}
    payload = dict(arrays)
    payload[_HEADER_KEY] = np.frombuffer(json.dumps(full_header, sort_keys=True).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_npz(path: str | os.PathLike, kind: str, max_version: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a file written by :func:`write_npz`, checking format, version and checksum."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"`path` must be an existing file, got {str(path)!r}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: np.array(data[key]) for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise FormatError(f"{str(path)!r} is not a readable {kind} file (corrupted or truncated): {exc}") from exc
    raw = arrays.pop(_HEADER_KEY, None)
    if raw is None or raw.dtype != np.uint8:
        raise FormatError(f"{str(path)!r} has no repurpose-opt header; it is not a {kind} file")
    try:
        header = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{str(path)!r} has a corrupted header: {exc}") from exc
    if header.get("format") != kind:
        raise FormatError(f"{str(path)!r} holds a {header.get('format')!r} file, expected {kind!r}")
    version = header.get("version")
    if not isinstance(version, int) or version > max_version:
        raise FormatError(
            f"{str(path)!r} has format version {version!r}; this repurpose-opt reads versions up to "
            f"{max_version}: upgrade the package"
        )
    if header.get("sha256") != _digest(arrays):
        raise FormatError(f"{str(path)!r} failed its checksum: the file is corrupted")
    return header, arrays
