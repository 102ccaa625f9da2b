"""The run report's charts: a few aggregated pandas rows in, a matplotlib Figure out (no pyplot: no global
state, rendered by Agg when saved)."""

from __future__ import annotations

import matplotlib.dates as mdates
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from jobs.segments.lifecycle import LIFECYCLE_STAGES

TOP_SEGMENTS = 8                        # bars per segment type; the rest are summed as "other"
FIRST_SEEN = "(first seen)"             # previous_stage of a customer's first history row
# Value-matrix quadrants on a (current value, potential value) grid, low = 0 and high = 1.
QUADRANT_CELLS = {"lead": (0, 0), "gold": (1, 0), "iron": (0, 1), "platinum": (1, 1)}
DQ_OUTCOMES = ("passed", "failed (warning)", "failed (critical)")
COLORS = {"passed": "#2ca02c", "failed (warning)": "#ff7f0e", "failed (critical)": "#d62728"}


def new_figure(width: float, height: float) -> Figure:
    # A Figure without pyplot: no global state, no display, rendered by Agg when saved as PNG.
    return Figure(figsize=(width, height), layout="constrained")


def segment_sizes_chart(sizes: pd.DataFrame) -> Figure:
    types = sorted(sizes["segment_type"].unique())
    columns = 2 if len(types) > 1 else 1
    rows = -(-len(types) // columns)
    fig = new_figure(10, 2.3 * rows)
    for i, segment_type in enumerate(types):
        ax = fig.add_subplot(rows, columns, i + 1)
        top = top_segments(sizes[sizes["segment_type"] == segment_type])
        bars = ax.barh(top["segment"], top["customers"], color="#1f77b4")
        ax.bar_label(bars, padding=2, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(segment_type, fontsize=10, loc="left")
        ax.tick_params(labelsize=8)
        ax.margins(x=0.15)
        whole_number_ticks(ax.xaxis)
        plain(ax)
    return fig


def top_segments(sizes: pd.DataFrame) -> pd.DataFrame:
    """The largest segments of one type, the rest summed as one 'other (n)' row."""
    if len(sizes) <= TOP_SEGMENTS:
        return sizes
    top, rest = sizes.iloc[:TOP_SEGMENTS - 1], sizes.iloc[TOP_SEGMENTS - 1:]
    other = pd.DataFrame({"segment": [f"other ({len(rest)})"], "customers": [rest["customers"].sum()]})
    return pd.concat([top[["segment", "customers"]], other], ignore_index=True)


def funnel_chart(funnel: pd.DataFrame) -> Figure:
    fig = new_figure(9, 3.6)
    ax = fig.add_subplot()
    bars = ax.barh(funnel["lifecycle_stage"], funnel["customers"], color="#1f77b4")
    ax.bar_label(bars, labels=[f"{c:,}  ({s:.1%})" for c, s in zip(funnel["customers"], funnel["share"])], padding=3)
    ax.invert_yaxis()
    ax.set_xlabel("customers")
    ax.margins(x=0.2)
    whole_number_ticks(ax.xaxis)
    plain(ax)
    return fig


def transitions_chart(moves: pd.DataFrame) -> Figure:
    """A from x to matrix of the stage changes, each cell labelled with its count."""
    sources = [s for s in (FIRST_SEEN, *LIFECYCLE_STAGES) if s in set(moves["from"])]
    targets = [s for s in LIFECYCLE_STAGES if s in set(moves["to"])]
    grid = moves.pivot_table(index="from", columns="to", values="customers", aggfunc="sum", fill_value=0) \
        .reindex(index=sources, columns=targets, fill_value=0)
    fig = new_figure(9, 1.2 + 0.55 * len(sources))
    ax = fig.add_subplot()
    ax.imshow(grid.to_numpy(), cmap="Blues", aspect="auto", vmin=0)
    ax.set_xticks(range(len(targets)), targets)
    ax.set_yticks(range(len(sources)), sources)
    ax.set_xlabel("to stage")
    ax.set_ylabel("from stage")
    peak = grid.to_numpy().max()
    for (row, column), count in pd.DataFrame(grid.to_numpy()).stack().items():
        if count:
            ax.text(column, row, f"{count:,}", ha="center", va="center",
                    color="white" if count > peak / 2 else "black")
    return fig


def value_matrix_chart(matrix: pd.DataFrame) -> Figure:
    fig = new_figure(7, 5)
    ax = fig.add_subplot()
    cells = [[0.0, 0.0], [0.0, 0.0]]
    for row in matrix.itertuples():
        x, y = QUADRANT_CELLS.get(row.value_quadrant, (None, None))
        if x is None:       # a quadrant only conf names has no cell; the table still lists it
            continue
        cells[y][x] = row.customers
        ax.text(x, y, f"{row.value_quadrant}\ncustomers: {row.customers:,} ({row.customer_share:.1%})\n"
                      f"CLV {row.clv:,.0f}\n{row.investment}", ha="center", va="center", fontsize=10)
    ax.imshow(cells, cmap="Blues", origin="lower", alpha=0.6, vmin=0)
    ax.set_xticks([0, 1], ["low", "high"])
    ax.set_yticks([0, 1], ["low", "high"])
    ax.set_xlabel("current value")
    ax.set_ylabel("potential value")
    return fig


def clv_histogram_chart(histogram: pd.DataFrame, width: float, stats: dict[str, float]) -> Figure:
    fig = new_figure(9, 3.8)
    ax = fig.add_subplot()
    ax.bar(histogram["from"], histogram["customers"], width=width, align="edge", color="#1f77b4",
           edgecolor="white")
    for name, style in (("p50", "--"), ("p90", ":")):
        ax.axvline(stats[name], color="black", linestyle=style, linewidth=1,
                   label=f"{'median' if name == 'p50' else name} {stats[name]:,.0f}")
    ax.set_xlabel("CLV (reporting currency)")
    ax.set_ylabel("customers")
    ax.legend(frameon=False, ncols=2, loc="lower right", bbox_to_anchor=(1, 1))
    whole_number_ticks(ax.yaxis)
    plain(ax)
    return fig


def kpi_chart(trends: pd.DataFrame) -> Figure:
    columns = 2 if len(trends.columns) > 1 else 1
    rows = -(-len(trends.columns) // columns)
    fig = new_figure(10, 2.8 * rows)
    for i, kpi in enumerate(trends.columns):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.plot(pd.to_datetime(trends.index), trends[kpi], marker="o", markersize=3, color="#1f77b4")
        ax.set_title(kpi, fontsize=10, loc="left")
        locator = mdates.AutoDateLocator(maxticks=6)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.tick_params(labelsize=8)
        plain(ax)
    return fig


def dq_chart(by_stage: pd.DataFrame) -> Figure:
    fig = new_figure(9, 1.2 + 0.45 * len(by_stage))
    ax = fig.add_subplot()
    left = pd.Series(0, index=by_stage.index)
    for outcome in DQ_OUTCOMES:
        bars = ax.barh(by_stage.index, by_stage[outcome], left=left, color=COLORS[outcome], label=outcome)
        ax.bar_label(bars, labels=[f"{n:,}" if n else "" for n in by_stage[outcome]], label_type="center",
                     color="white", fontsize=8)
        left = left + by_stage[outcome]
    ax.invert_yaxis()
    ax.set_xlabel("expectations")
    whole_number_ticks(ax.xaxis)
    ax.legend(frameon=False, ncols=3, loc="lower right", bbox_to_anchor=(1, 1))
    plain(ax)
    return fig


def quarantine_chart(quarantined: pd.DataFrame) -> Figure:
    grid = quarantined.pivot_table(index="source", columns="reason_code", values="rows", aggfunc="sum",
                                   fill_value=0)
    fig = new_figure(9, 1.4 + 0.45 * len(grid))
    ax = fig.add_subplot()
    left = pd.Series(0, index=grid.index)
    for reason in grid.columns:
        ax.barh(grid.index, grid[reason], left=left, label=reason)
        left = left + grid[reason]
    ax.bar_label(ax.containers[-1], labels=[f"{n:,}" for n in left], padding=3)
    ax.invert_yaxis()
    ax.set_xlabel("rows quarantined")
    whole_number_ticks(ax.xaxis)
    ax.margins(x=0.1)
    ax.legend(frameon=False, ncols=3, loc="lower right", bbox_to_anchor=(1, 1), fontsize=8)
    plain(ax)
    return fig


def plain(ax: Axes) -> None:
    """No top and right frame lines: less ink around the data."""
    ax.spines[["top", "right"]].set_visible(False)


def whole_number_ticks(axis: Axis) -> None:
    """Ticks at whole numbers only: the axis counts customers, rows or expectations."""
    axis.set_major_locator(MaxNLocator(integer=True))


