"""Render a :class:`~certify.report.build.Report` as one self-contained HTML file and as Markdown.

The HTML has no scripts and no external resources: styles are inline and every image is a
``data:image/png;base64`` URI.  The Markdown links its PNGs from a folder beside it
(``OUT_files/``).  All text that comes from results (property names, file names, reasons,
engine names) is escaped with :func:`html.escape`; Markdown also escapes its own specials.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from certify.report.build import CounterexampleView, Report
from certify.report.load import ResultRow
from certify.report.plots import STATUS_COLORS, Figure


@dataclass(frozen=True, slots=True)
class Written:
    html: Path
    markdown: Path
    assets: Path


def e(text: object) -> str:
    """HTML-escaped text (quotes included)."""
    return html.escape(str(text), quote=True)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#])")


def m(text: object) -> str:
    """Markdown-safe text: HTML-escaped, Markdown specials backslash-escaped, on one line."""
    one_line = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(one_line, quote=True))


def _data_uri(fig: Figure) -> str:
    return "data:image/png;base64," + base64.b64encode(fig.png).decode("ascii")


def _seconds(s: float) -> str:
    return f"{s:.2f}" if s < 100 else f"{s:.0f}"


def _anchor(k: int) -> str:
    return f"r{k}"


# ----------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:2em auto;
max-width:72em;padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{font-weight:600;padding:.05em .45em;border-radius:.3em;color:#fff}
.muted{color:#666}.mono{font-family:"DejaVu Sans Mono",monospace;font-size:.88em;word-break:break-all}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}.warn{color:#b71c1c;font-weight:600}
section.row{border-left:4px solid #ddd;padding-left:1em;margin:1.2em 0}
"""


def _verdict_html(status: str) -> str:
    color = STATUS_COLORS.get(status, "#666")
    return f'<span class="verdict" style="background:{color}">{e(status)}</span>'


def _table_html(headers: Sequence[str] | None, rows: Sequence[Sequence[str]], numeric: Sequence[int] = (),
                raw: bool = False, table_id: str = "", mono: bool = False) -> str:
    """A table (no header row when ``headers`` is None); cells are escaped unless ``raw``."""
    head = "" if headers is None else "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in headers) + "</tr></thead>"
    td = '<td class="mono">' if mono else "<td>"
    body = []
    for row in rows:
        cells = "".join(
            f'{"<td class=num>" if i in numeric else td}{c if raw else e(c)}</td>' for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    ident = f' id="{e(table_id)}"' if table_id else ""
    return f"<table{ident}>{head}<tbody>{''.join(body)}</tbody></table>"


def _figure_html(fig: Figure, caption: str = "") -> str:
    cap = f"<figcaption>{e(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{_data_uri(fig)}" alt="{e(fig.alt)}">{cap}</figure>'


def render_html(report: Report) -> str:
    """One self-contained HTML page."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{e(report.title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{e(report.title)}</h1>",
             f'<p class="muted">Generated {e(report.generated)} by certify report from '
             f"{len(report.rows)} result(s).</p>"]
    c = report.counts
    parts.append("<h2>Summary</h2>")
    parts.append(_table_html(
        ["holds", "violated", "unknown", "error", "total", "total time (s)"],
        [[str(c["holds"]), str(c["violated"]), str(c["unknown"]), str(c["error"]), str(len(report.rows)),
          _seconds(report.total_seconds)]], numeric=range(6)))
    if report.mismatches:
        parts.append(f'<p class="warn">{len(report.mismatches)} verdict(s) contradict the expected results: '
                     + ", ".join(f'<a href="#{_anchor(k)}">{e(report.rows[k].label)}</a>'
                                 for k in report.mismatches) + ".</p>")
    has_expected = any(r.expected for r in report.rows)
    headers = ["#", "property", "model", "verdict", "engine", "time (s)"] + (["expected"] if has_expected else [])
    rows_html = []
    for k, r in enumerate(report.rows):
        cells = [str(k + 1), f'<a href="#{_anchor(k)}">{e(r.label)}</a>', e(Path(r.model).name),
                 _verdict_html(r.status), e(r.engine), _seconds(r.seconds)]
        if has_expected:
            flag = ' <span class="warn">MISMATCH</span>' if k in report.mismatches else ""
            cells.append(e(r.expected or "") + flag)
        rows_html.append(cells)
    parts.append(_table_html(headers, rows_html, numeric=(0, 5), raw=True, table_id="summary"))
    if report.figures:
        parts.append("<h2>Plots</h2>")
        captions = {"time_per_instance": "Time per instance, coloured by verdict.",
                    "cactus": "Cumulative number of instances solved (holds or violated) within a given "
                              "time per instance, one line per results file (the VNN-COMP cactus plot).",
                    "margins": "Certified lower bounds of the unsafe disjuncts' margins per property "
                               "(every dot right of 0: that disjunct is unreachable)."}
        parts.extend(_figure_html(f, captions.get(f.name, "")) for f in report.figures)
    parts.append("<h2>Properties</h2>")
    for k, r in enumerate(report.rows):
        parts.append(_row_html(k, r, report.views.get(k)))
    parts.append("<h2>Versions</h2>")
    parts.append(_table_html(
        ["role", "file", "sha256", "bytes"],
        [[v.role, v.name, v.sha256 or "(file not found)", "" if v.size is None else str(v.size)]
         for v in report.versions], mono=True))
    parts.append(_table_html(["software", "version"], list(report.software)))
    parts.append(f'<p class="muted">Report date: {e(report.generated)}.</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _row_html(k: int, r: ResultRow, view: CounterexampleView | None) -> str:
    color = STATUS_COLORS.get(r.status, "#ddd")
    out = [f'<section class="row" id="{_anchor(k)}" style="border-left-color:{color}">',
           f"<h3>{k + 1}. {e(r.label)} {_verdict_html(r.status)}</h3>"]
    facts = [("model", r.model), ("spec", r.spec), ("engine", r.engine), ("time", f"{r.seconds:.3f} s")]
    if r.timeout is not None:
        facts.append(("timeout", f"{r.timeout:g} s"))
    if r.reason:
        facts.append(("reason", r.reason))
    if r.expected:
        facts.append(("expected", r.expected))
    facts.append(("results file", r.source.name))
    facts.extend((key, str(v)) for key, v in r.extra.items())
    out.append(_table_html(None, facts))
    if r.instances and (len(r.instances) > 1 or r.instances[0].margins):
        out.append(_table_html(
            ["instance", "verdict", "engine", "time (s)", "worst certified margin", "reason"],
            [[e(i.name), _verdict_html(i.status), e(i.engine), _seconds(i.seconds),
              f"{min(i.margins):.4g}" if i.margins else "", e(i.reason)] for i in r.instances],
            numeric=(3, 4), raw=True))
    if view is not None:
        out.append(_view_html(view))
    out.append("</section>")
    return "\n".join(out)


def _view_html(view: CounterexampleView) -> str:
    out = ["<h4>Counterexample</h4>",
           "<p>" + ("Replayed in onnxruntime: the model really produces this output."
                    if view.replayed else '<span class="warn">Not replayed in onnxruntime.</span>') + "</p>"]
    if view.figure is not None:
        out.append(_figure_html(view.figure, view.note))
    elif view.input_table:
        out.append(_table_html(view.input_columns, view.input_table, numeric=range(len(view.input_columns))))
        if view.note:
            out.append(f'<p class="muted">{e(view.note)}</p>')
    if view.output_table:
        out.append(_table_html(["output", "y"], view.output_table, numeric=(0, 1)))
    if view.facts:
        out.append(_table_html(["", "value"], view.facts))
    return "\n".join(out)


# ----------------------------------------------------------------------------- Markdown


def _table_md(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table of already-escaped cells."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report: Report, assets: str) -> str:
    """Markdown; images are linked as ``assets/NAME.png`` (see :func:`write_report`)."""
    c = report.counts
    out = [f"# {m(report.title)}", "", f"Generated {m(report.generated)} by certify report from "
           f"{len(report.rows)} result(s).", "", "## Summary", "",
           _table_md(["holds", "violated", "unknown", "error", "total", "total time (s)"],
                     [[str(c["holds"]), str(c["violated"]), str(c["unknown"]), str(c["error"]),
                       str(len(report.rows)), _seconds(report.total_seconds)]]), ""]
    if report.mismatches:
        out += [f"**{len(report.mismatches)} verdict(s) contradict the expected results:** "
                + ", ".join(m(report.rows[k].label) for k in report.mismatches), ""]
    has_expected = any(r.expected for r in report.rows)
    headers = ["#", "property", "model", "verdict", "engine", "time (s)"] + (["expected"] if has_expected else [])
    rows = []
    for k, r in enumerate(report.rows):
        cells = [str(k + 1), m(r.label), m(Path(r.model).name), f"**{m(r.status)}**", m(r.engine),
                 _seconds(r.seconds)]
        if has_expected:
            cells.append(m(r.expected or "") + (" **MISMATCH**" if k in report.mismatches else ""))
        rows.append(cells)
    out += [_table_md(headers, rows), ""]
    if report.figures:
        out += ["## Plots", ""]
        out += [f"![{m(f.alt)}]({assets}/{f.name}.png)\n" for f in report.figures]
    out += ["## Properties", ""]
    for k, r in enumerate(report.rows):
        out += [f"### {k + 1}. {m(r.label)}: {m(r.status)}", ""]
        facts = [f"model {m(r.model)}", f"spec {m(r.spec)}", f"engine {m(r.engine) or '-'}",
                 f"{r.seconds:.3f} s"]
        if r.timeout is not None:
            facts.append(f"timeout {r.timeout:g} s")
        out += ["- " + "; ".join(facts)]
        if r.reason:
            out += [f"- reason: {m(r.reason)}"]
        if r.expected:
            out += [f"- expected: {m(r.expected)}"]
        out += [""]
        if r.instances and (len(r.instances) > 1 or r.instances[0].margins):
            out += [_table_md(["instance", "verdict", "engine", "time (s)", "worst certified margin"],
                              [[m(i.name), m(i.status), m(i.engine), _seconds(i.seconds),
                                f"{min(i.margins):.4g}" if i.margins else ""] for i in r.instances]), ""]
        view = report.views.get(k)
        if view is not None:
            out += _view_md(view, assets)
    out += ["## Versions", "",
            _table_md(["role", "file", "sha256", "bytes"],
                      [[v.role, m(v.name), v.sha256 or "(file not found)", "" if v.size is None else str(v.size)]
                       for v in report.versions]), "",
            _table_md(["software", "version"], [[m(a), m(b)] for a, b in report.software]), "",
            f"Report date: {m(report.generated)}.", ""]
    return "\n".join(out)


def _view_md(view: CounterexampleView, assets: str) -> list[str]:
    out = ["Counterexample (" + ("replayed in onnxruntime" if view.replayed else "**not replayed**") + "):", ""]
    if view.figure is not None:
        out += [f"![{m(view.figure.alt)}]({assets}/{view.figure.name}.png)", ""]
    elif view.input_table:
        out += [_table_md([m(h) for h in view.input_columns], view.input_table), ""]
    if view.note:
        out += [m(view.note), ""]
    if view.output_table:
        out += [_table_md(["output", "y"], view.output_table), ""]
    if view.facts:
        out += [_table_md(["", "value"], [[m(a), m(b)] for a, b in view.facts]), ""]
    return out


# ----------------------------------------------------------------------------- files


def output_stem(out: str | Path) -> Path:
    """``OUT``, ``OUT.html`` and ``OUT.md`` all name the pair ``OUT.html`` + ``OUT.md``."""
    p = Path(out)
    return p.with_suffix("") if p.suffix.lower() in (".html", ".htm", ".md") else p


def write_report(report: Report, out: str | Path) -> Written:
    """Write ``OUT.html``, ``OUT.md`` and the Markdown's PNGs in ``OUT_files/``."""
    stem = output_stem(out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    assets = stem.parent / f"{stem.name}_files"
    assets.mkdir(exist_ok=True)
    for stale in assets.glob("*.png"):
        stale.unlink()
    figures = list(report.figures) + [v.figure for v in report.views.values() if v.figure is not None]
    for fig in figures:
        (assets / f"{fig.name}.png").write_bytes(fig.png)
    html_path, md_path = stem.parent / f"{stem.name}.html", stem.parent / f"{stem.name}.md"
    html_path.write_text(render_html(report), encoding="utf-8")
    md_path.write_text(render_markdown(report, assets.name), encoding="utf-8")
    return Written(html_path, md_path, assets)
