"""The scale curves as PNG files (matplotlib, Agg backend: no display needed).

One file per measure, each against the number of records (log scale), with a dashed line at
1.5 times the first size's figure (the issue's bound: at 10^6 nothing more than 1.5 times
slower than at 10^4) where lower is better, and at 1/1.5 of it where higher is better.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on a server or in CI

import matplotlib.pyplot as plt


@dataclass(frozen=True)
class Curve:
    file: str
    title: str
    unit: str
    series: tuple[str, ...]  # figure names in the results
    higher_is_better: bool


CURVES = (
    Curve("scale-write.png", "Records written end to end", "records/s", ("write records/s",), True),
    Curve(
        "scale-write-cpu.png",
        "Node CPU per record written",
        "ms/record",
        ("write node CPU ms/record",),
        False,
    ),
    Curve(
        "scale-read.png",
        "Consent-checked audited read (1 client)",
        "ms",
        ("read p50 ms", "read p99 ms"),
        False,
    ),
    Curve(
        "scale-search.png",
        "Search: a patient's 100 records (records/records)",
        "ms",
        ("search p50 ms", "search p99 ms"),
        False,
    ),
    Curve(
        "scale-cpu.png",
        "Node CPU per operation",
        "ms",
        (
            "write node CPU ms/record",
            "read node CPU ms/read",
            "search node CPU ms",
            "tx node CPU ms/tx",
        ),
        False,
    ),
    Curve("scale-tx.png", "Committed transactions (HTTP POST /txs)", "tx/s", ("tx/s",), True),
    Curve(
        "scale-rss.png",
        "Node memory after the measures",
        "MiB",
        ("RSS MiB", "RSS anon MiB", "RSS file MiB"),
        False,
    ),
    Curve(
        "scale-disk.png",
        "Chain bytes on disk per record (state + blocks)",
        "bytes/record",
        ("chain bytes/record",),
        False,
    ),
)


def draw(results: dict[int, dict[str, float]], out: Path) -> list[Path]:
    """Every curve of `results` ({size: {figure name: value}}) into `out`; the files made."""
    out.mkdir(parents=True, exist_ok=True)
    sizes = sorted(results)
    made = []
    for curve in CURVES:
        if not all(name in results[s] for s in sizes for name in curve.series):
            continue
        made.append(_draw_one(curve, sizes, results, out / curve.file))
    return made


def _draw_one(
    curve: Curve, sizes: list[int], results: dict[int, dict[str, float]], path: Path
) -> Path:
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    for name in curve.series:
        values = [results[s][name] for s in sizes]
        axes.plot(sizes, values, marker="o", label=name)
        bound = values[0] / 1.5 if curve.higher_is_better else values[0] * 1.5
        axes.axhline(bound, linestyle="--", linewidth=0.8, color=axes.lines[-1].get_color())
    axes.set_xscale("log")
    axes.set_ylim(bottom=0)
    axes.set_xlabel("records in the store")
    axes.set_ylabel(curve.unit)
    axes.set_title(curve.title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small", title="dashed: 1.5x the first size", title_fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
