"""Input arrays named in spec files: ``.npy``, ``.npz`` (``file.npz`` or ``file.npz:key``) and
Netpbm images (PGM/PPM/PNM, ASCII ``P2``/``P3`` or binary ``P5``/``P6``).

Images are scaled by their ``maxval`` to ``[0, 1]``; a grey image has shape ``(H, W)``, a
colour image ``(3, H, W)`` (channels first, as image models expect).  PNG/JPEG are not read
(no imaging library is a dependency): convert them to ``.npy`` or PGM/PPM first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from certify.errors import SpecError
from certify.spec import as_array, input_path

__all__ = ["read_array", "read_netpbm"]


def read_array(value: str, base_dir: Path, field: str = "input") -> np.ndarray:
    """The float64 array stored in the file ``value`` (relative to ``base_dir``).

    Raises :class:`SpecError` naming ``field`` when the file cannot be read or holds
    non-finite or non-numeric values.
    """
    name, key = input_path(value)
    path = base_dir / name
    try:
        if name.lower().endswith((".pgm", ".ppm", ".pnm")):
            raw = read_netpbm(path)
        elif name.lower().endswith(".npz"):
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                if key is None and len(keys) != 1:
                    raise SpecError(f"{field}: {str(path)!r} holds {len(keys)} arrays {keys}; "
                                    f"name one as '{name}:KEY'")
                if key is not None and key not in keys:
                    raise SpecError(f"{field}: {str(path)!r} has no array {key!r} (it has {keys})")
                raw = archive[key if key is not None else keys[0]]
        else:
            raw = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise SpecError(f"{field}: cannot read {str(path)!r}: {exc}") from None
    try:
        return as_array(np.asarray(raw).tolist())
    except ValueError as exc:
        raise SpecError(f"{field}: {str(path)!r} {exc}") from None


def read_netpbm(path: Path) -> np.ndarray:
    """A PGM (``(H, W)``) or PPM (``(3, H, W)``) image scaled to ``[0, 1]``; ``ValueError`` if malformed."""
    data = Path(path).read_bytes()
    magic = data[:2]
    if magic not in (b"P2", b"P3", b"P5", b"P6"):
        raise ValueError("not a PGM/PPM image (magic P2, P3, P5 or P6 expected)")
    header: list[int] = []
    pos = 2
    while len(header) < 3:  # width, height, maxval; '#' comments allowed between tokens
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            while pos < len(data) and data[pos:pos + 1] not in (b"\n", b"\r"):
                pos += 1
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace():
            pos += 1
        if start == pos:
            raise ValueError("truncated header")
        header.append(int(data[start:pos]))
    width, height, maxval = header
    if width < 1 or height < 1 or not 0 < maxval < 65536:
        raise ValueError(f"bad header: width {width}, height {height}, maxval {maxval}")
    channels = 3 if magic in (b"P3", b"P6") else 1
    count = width * height * channels
    if magic in (b"P2", b"P3"):
        values = np.array([int(t) for t in data[pos:].split()[:count]], dtype=np.float64)
    else:
        pos += 1  # the single whitespace byte after maxval
        dtype = np.dtype(">u2") if maxval > 255 else np.dtype("u1")
        values = np.frombuffer(data, dtype=dtype, count=min(count, (len(data) - pos) // dtype.itemsize),
                               offset=pos).astype(np.float64)
    if values.size != count:
        raise ValueError(f"expected {count} pixel values, found {values.size}")
    image = values.reshape(height, width, channels) / maxval
    return image[:, :, 0] if channels == 1 else np.transpose(image, (2, 0, 1))
