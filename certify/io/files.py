"""Input files as VNN-COMP ships them: a name ``X.onnx`` may be stored only as ``X.onnx.gz``.

The competition's instance lists name ``onnx/X.onnx`` and ``vnnlib/Y.vnnlib`` while the
repositories store those files gzipped beside the names.  Every reader goes through
:func:`resolve` (the path as given if it exists, else the ``.gz`` beside it) and
:func:`read_bytes` (gunzipped in memory), so nothing is ever unpacked next to the source files,
which may be read-only, and no temporary file is needed.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

__all__ = ["GZ", "is_gzipped", "plain_name", "read_bytes", "resolve"]

#: The suffix of gzipped files.
GZ = ".gz"


def is_gzipped(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a gzipped file (by its suffix)."""
    return Path(path).suffix.lower() == GZ


def resolve(path: str | os.PathLike[str]) -> Path:
    """``path`` if it exists, else ``path + '.gz'`` if that is a file, else ``path`` unchanged
    (so that "not found" errors name what the user wrote)."""
    path = Path(path)
    if path.exists() or is_gzipped(path):
        return path
    packed = path.with_name(path.name + GZ)
    return packed if packed.is_file() else path


def plain_name(path: str | os.PathLike[str]) -> Path:
    """``path`` without a trailing ``.gz``: ``onnx/X.onnx.gz`` -> ``onnx/X.onnx`` (for names and
    suffix checks; nothing is read)."""
    path = Path(path)
    return path.with_suffix("") if is_gzipped(path) else path


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The content of ``path`` (resolved as :func:`resolve` does), gunzipped if it is a ``.gz``.

    Raises :class:`OSError` only: ``FileNotFoundError`` for a missing file, a plain ``OSError``
    naming the file for a corrupt or truncated gzip stream.
    """
    path = resolve(path)
    data = path.read_bytes()
    if not is_gzipped(path):
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, zlib.error) as exc:  # gzip.BadGzipFile is already an OSError
        raise OSError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
