"""Where every benchmark writes its figures: one JSON line per figure, with its provenance.

Each figure carries the date, the machine, the command that produced it and the commit it
measured (plus whether the work tree had uncommitted changes), so a table in BENCHMARKS.md can
say exactly what it compares. `make bench` (bench/run_all.py) reads the lines of its own run
back and prints them as one table.

    from bench.record import record
    record("chain.inproc.saturating", "committed tx/s", 2157.0, txs=20000)

The file is $CARELEDGER_BENCH_RESULTS, or bench/results/<UTC date>.jsonl (not committed).
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import orjson

from bench.common import machine

RESULTS_ENV = "CARELEDGER_BENCH_RESULTS"
RUN_ENV = "CARELEDGER_BENCH_RUN"  # set by run_all.py: ties the figures of one `make bench`
_ROOT = Path(__file__).resolve().parent.parent


def results_path() -> Path:
    explicit = os.environ.get(RESULTS_ENV)
    if explicit:
        return Path(explicit)
    day = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    return _ROOT / "bench" / "results" / f"{day}.jsonl"


@cache
def commit() -> str:
    """The measured code's commit, `+dirty` when the work tree differs from it."""
    try:
        head = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(_ROOT), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def record(measure: str, unit: str, value: float, **detail: object) -> None:
    """Append one figure. `measure` is a dotted name (`records.write`), `unit` what `value`
    counts (`records/s`, `ms p99`), `detail` anything that qualifies it (sizes, settings)."""
    line = {
        "measure": measure,
        "unit": unit,
        "value": value,
        "detail": detail,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load": os.getloadavg()[0],
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "commit": commit(),
        "run": os.environ.get(RUN_ENV, ""),
    }
    path = results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as out:
        out.write(orjson.dumps(line) + b"\n")
