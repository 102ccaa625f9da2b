"""The run report's page: sections rendered as one self-contained HTML document (charts inlined as PNG
data URIs, inline style, a Content-Security-Policy that loads nothing else)."""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
import re
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

OPEN_TABLE_ROWS = 15                    # longer tables start folded
NUMBER = re.compile(r"-?[\d,]+(\.\d+)?%?")     # a cell as `cell_text` or `percent` writes a number


@dataclass(frozen=True)
class Section:
    """One part of the report: a chart, tables of its figures, or a note saying why there are none."""

    key: str                                            # anchor of the section; its chart is `chart-<key>`
    title: str
    chart: Figure | None = None
    caption: str = ""
    tables: tuple[tuple[str, pd.DataFrame], ...] = ()   # (caption, rows)
    note: str | None = None


STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 0;
       background: #f6f7f9; }
header, main { max-width: 1000px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 24px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
nav ol { columns: 3; padding-left: 1.2em; }
section { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; margin: 18px 0; padding: 8px 20px 16px; }
h2 { font-size: 1.2em; }
figure { margin: 0; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption, .meta { color: #555; font-size: 0.9em; }
.note { color: #8a5a00; background: #fff8e5; border-left: 4px solid #f0b400; padding: 8px 12px; }
details { margin-top: 10px; }
summary { cursor: pointer; color: #333; }
table.data { border-collapse: collapse; font-size: 0.85em; margin-top: 6px; }
table.data th, table.data td { padding: 3px 10px; border-bottom: 1px solid #e6e8eb; text-align: left; }
table.data th { background: #f0f2f5; }
table.data .num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 0.95em; }
"""

# Nothing but inline data and style may load: the page is complete offline, and stays so.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def render(sections: list[Section], as_of: date, run_id: str) -> str:
    """The whole page: a header with the contents, then every section."""
    esc = html.escape
    contents = "".join(f'<li><a href="#{s.key}">{esc(s.title)}</a></li>' for s in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>CDP run report {as_of}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<header><h1>CDP run report: {as_of}</h1>\n"
        f'<p class="meta">As-of date <b>{as_of}</b>; data quality and ingestion of run <code>{esc(run_id)}</code>.'
        f"</p>\n<nav><ol>{contents}</ol></nav></header>\n"
        f"<main>\n{''.join(render_section(s) for s in sections)}</main>\n</body>\n</html>\n"
    )


def render_section(section: Section) -> str:
    esc = html.escape
    parts = [f'<section id="{section.key}">\n<h2>{esc(section.title)}</h2>\n']
    if section.note:
        parts.append(f'<p class="note">{esc(section.note)}</p>\n')
    if section.chart is not None:
        parts.append(f'<figure id="chart-{section.key}"><img alt="{esc(section.title)}" '
                     f'src="data:image/png;base64,{png_base64(section.chart)}">\n'
                     f"<figcaption>{esc(section.caption)}</figcaption></figure>\n")
    for caption, rows in section.tables:
        folded = "" if len(rows) <= OPEN_TABLE_ROWS else " (click to open)"
        parts.append(f"<details{' open' if not folded else ''}><summary>{esc(caption)}{folded}</summary>\n"
                     f"{table_html(rows)}</details>\n")
    parts.append("</section>\n")
    return "".join(parts)


def table_html(rows: pd.DataFrame) -> str:
    """`rows` as an HTML table, every cell escaped; columns of numbers (and percentages) right-aligned."""
    esc = html.escape
    texts = [[cell_text(v) for v in rows[c]] for c in rows.columns]
    align = ['' if any(t and not NUMBER.fullmatch(t) for t in column) else ' class="num"' for column in texts]
    head = "".join(f"<th{a}>{esc(str(c))}</th>" for c, a in zip(rows.columns, align))
    body = "".join("<tr>" + "".join(f"<td{a}>{esc(t)}</td>" for t, a in zip(row, align)) + "</tr>\n"
                   for row in zip(*texts))
    return f'<table class="data"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>\n'


def cell_text(value: object) -> str:
    """Empty for a missing value; integers with thousands separators, other numbers with two decimals too."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool | np.bool_):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{value:,}"
    if isinstance(value, numbers.Real):
        return f"{value:,.2f}"
    return str(value)


def png_base64(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
