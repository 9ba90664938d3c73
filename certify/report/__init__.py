"""``certify report``: result files (check JSON, suite JSON Lines) -> one HTML page and Markdown.

>>> from certify.report import make_report, ReportOptions
>>> make_report(["run.json"], "out/report", ReportOptions(title="my study"))  # doctest: +SKIP
Written(html=PosixPath('out/report.html'), markdown=PosixPath('out/report.md'), ...)

:mod:`certify.report.load` reads results into typed rows, :mod:`certify.report.build` decides
what is shown (summary, plots, counterexample views, versions), :mod:`certify.report.plots`
draws with matplotlib (Agg) and :mod:`certify.report.render` writes HTML and Markdown.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from certify.report.build import Report, ReportOptions, build_report
from certify.report.load import ResultRow, load_results
from certify.report.render import Written, write_report

__all__ = ["Report", "ReportOptions", "ResultRow", "Written", "build_report", "load_results", "make_report",
           "write_report"]


def make_report(results: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
                options: ReportOptions = ReportOptions(), search: Sequence[Path] = ()) -> Written:
    """Read ``results``, build the report, write ``OUT.html`` and ``OUT.md`` (+ ``OUT_files/``)."""
    rows = load_results(results, search)
    return write_report(build_report(rows, options), out)
