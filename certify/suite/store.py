"""The results file: JSON Lines appended, flushed and fsync'ed per finished instance; resume."""


from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from certify.errors import UsageError
from certify.suite.instances import Key

log = logging.getLogger(__name__)

#: Statuses of a suite record (an instance that could not run at all is an ``error``).
STATUSES: tuple[str, ...] = ("holds", "violated", "unknown", "error")

# ----------------------------------------------------------------------------- results store

#: Fields every record has.  ``seconds`` is measured by the worker from receiving the instance
#: (network and spec loading included) to its verdict.  Records written by this version also carry
#: ``wall_seconds``: measured by the suite's parent from handing the instance to a worker to
#: receiving its record (loading, the pipe, a killed or crashed worker's whole stay; for a
#: ``--fuzz-first`` hit the whole fuzz task of its network), the figure to hold against
#: ``timeout``; ``net_loaded`` (whether the network loaded) where the worker knows it; and on
#: errors ``error_type`` (the exception class, ``internal <class>`` for a bug, ``crash`` for a
#: dead worker) and ``op`` (an unsupported ONNX op).
RECORD_FIELDS: tuple[str, ...] = ("onnx", "vnnlib", "occurrence", "timeout", "status", "seconds",
                                  "engine", "reason", "counterexample")


def record_key(record: dict[str, Any]) -> Key:
    return (str(record["onnx"]), str(record["vnnlib"]), int(record.get("occurrence", 0)))


def _valid_record(obj: Any) -> bool:
    return isinstance(obj, dict) and all(k in obj for k in RECORD_FIELDS) and obj["status"] in STATUSES


class ResultsStore:
    """An append-only JSON Lines file of finished instances; only the suite's parent writes it.

    Opening it reads the records already there.  A torn last line (the writer was killed
    mid-write) is cut off; any other unreadable line is an error naming it.
    """

    def __init__(self, path: Path, records: dict[Key, dict[str, Any]], handle: Any) -> None:
        self.path = path
        self.records = records
        self._handle = handle

    @classmethod
    def open(cls, path: str | os.PathLike[str], resume: bool = False, overwrite: bool = False) -> ResultsStore:
        path = Path(path)
        records: dict[Key, dict[str, Any]] = {}
        if path.exists() and overwrite:
            path.unlink()
        if path.exists():
            records, good_bytes, needs_newline = _read_records(path)
            if records and not resume:
                raise UsageError(f"{path} already holds {len(records)} result(s): pass --resume to continue "
                                 "it, or --overwrite to start again")
            size = path.stat().st_size
            if good_bytes < size or needs_newline:
                with open(path, "r+b") as fh:
                    if good_bytes < size:
                        log.warning("%s: dropping a torn last line (%d bytes)", path, size - good_bytes)
                        fh.truncate(good_bytes)
                    if needs_newline:
                        fh.seek(0, os.SEEK_END)
                        fh.write(b"\n")
                    fh.flush()
                    os.fsync(fh.fileno())
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        created = not path.exists()
        handle = open(path, "a", encoding="utf-8")
        if created:
            _fsync_dir(path.parent)
        return cls(path, records, handle)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line, flushed and fsync'ed before returning."""
        self._handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.records[record_key(record)] = record

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_records(path: Path) -> tuple[dict[Key, dict[str, Any]], int, bool]:
    """Records by key, the byte length of the good prefix, and whether the last record lacks
    its newline.  Only the last non-blank line may be unreadable (torn): it is left out."""
    data = path.read_bytes()
    records: dict[Key, dict[str, Any]] = {}
    chunks = data.split(b"\n")  # every chunk but the last ended with a newline
    good = 0
    for k, raw in enumerate(chunks):
        tail = k == len(chunks) - 1
        if raw.strip():
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                obj = None
            if not _valid_record(obj):
                if all(not rest.strip() for rest in chunks[k + 1:]):
                    return records, good, False  # a torn last line: cut it off
                raise UsageError(f"{path}:{k + 1}: not a suite result record; fix or remove the line")
            records[record_key(obj)] = obj
            if tail:  # a complete record whose newline never made it to disk
                return records, len(data), True
        good += len(raw) + (0 if tail else 1)
    return records, good, False


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
