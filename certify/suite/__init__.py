"""Run a whole VNN-COMP instance list: long-lived workers, a crash-safe results file, resume.

An instance list is VNN-COMP's CSV, ``onnx,vnnlib,timeout`` per row (no header; one is
tolerated), paths relative to the CSV's folder.  :func:`run_suite` runs every row in worker
processes that start once (``spawn``) and keep loaded networks cached by path, so no instance
pays for Python or torch start-up.  Each finished instance is appended to a JSON Lines file by
the parent alone, flushed and fsync'ed before the worker gets its next instance; a result is
keyed by ``(onnx, vnnlib, occurrence)`` as written in the CSV (``occurrence`` counts earlier
rows naming the same pair, so duplicates are allowed), which is what ``resume`` skips on.

A worker that dies (SIGKILL, segfault, out of memory) costs only its instance, recorded as
``error``; a worker still busy ``grace`` seconds after its instance's timeout is killed and
the instance recorded as ``unknown`` with reason ``"timeout (worker killed)"``.  Either way a
fresh worker takes its place and the suite goes on.

The parent never imports torch: workers load the solver preset and report ready (or a usage
error, raised here as :class:`~certify.errors.UsageError`) before any instance is sent.

Modules: ``instances`` (the CSV), ``store`` (the results file), ``summary`` (options, events,
the table), ``worker`` (the worker process), ``pool`` (the parent side and :func:`run_suite`).
"""

from __future__ import annotations

from certify.suite.instances import SuiteEntry, read_instances
from certify.suite.pool import KILLED_REASON, run_suite
from certify.suite.store import ResultsStore
from certify.suite.summary import SuiteEvent, SuiteOptions, format_summary, vnncomp_result, write_vnncomp_csv

__all__ = ["KILLED_REASON", "ResultsStore", "SuiteEntry", "SuiteEvent", "SuiteOptions", "format_summary",
           "read_instances", "run_suite", "vnncomp_result", "write_vnncomp_csv"]
