"""Every benchmark, one after the other, as one run: `make bench`.

Each benchmark runs as its own process with the same CARELEDGER_BENCH_RUN id, so the figures
it writes through bench/record.py (one JSON line each, with the date, machine, command, commit
and load) carry that id; at the end this reads the run's lines back from the results file and
prints them as one markdown table, with each benchmark's exit status and duration. A
benchmark that fails does not stop the others; the exit status is non-zero if any failed.

Benchmarks whose prerequisites are missing are skipped with the reason (CometBFT for the
network benchmark: COMETBFT_BIN or .bin/cometbft).

Run: .venv/bin/python -m bench.run_all [--quick] [--only NAME ...] [--skip NAME ...] [--list]
     --quick: smoke sizes (a few minutes in all); the default sizes take about half an hour.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.record import RESULTS_ENV, RUN_ENV, results_path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Benchmark:
    name: str  # the module, bench/<name>.py
    args: str  # its arguments at the default sizes
    quick: str  # and at smoke sizes
    needs_cometbft: bool = False

    def command(self, quick: bool) -> list[str]:
        return [
            sys.executable,
            "-m",
            f"bench.{self.name}",
            *(self.quick if quick else self.args).split(),
        ]


BENCHMARKS = (
    Benchmark("chain_throughput", "--txs 20000", "--txs 4000"),
    Benchmark("chain_memory", "", "--txs 20000 --checkpoint 10000"),
    Benchmark("records_throughput", "--workers 2", "--workers 2 --bundles 4"),
    Benchmark(
        "audited_read",
        "--patients 200 --records-per-patient 100 --reads 2000",
        "--patients 20 --records-per-patient 10 --grants-per-patient 3 --reads 200",
    ),
    Benchmark("audit_journal", "", "--readers 1,8 --reads 500"),
    Benchmark("audit_bytes", "", ""),
    Benchmark("read_access_worst", "", "--grants 200 --records 1000"),
    Benchmark("gateway_search", "--resources 100000", "--resources 5000"),
    Benchmark("scale", "--quick", "--quick --no-plots"),
    Benchmark("network_throughput", "", "--txs 2000 --rate 1000", needs_cometbft=True),
)


@dataclass(frozen=True)
class Outcome:
    name: str
    status: str  # "ok", "exit N", or why it was skipped
    seconds: float


def cometbft() -> str | None:
    """The CometBFT binary the network benchmark would use, if there is one."""
    explicit = os.environ.get("COMETBFT_BIN")
    if explicit:
        return explicit if Path(explicit).exists() else None
    local = ROOT / ".bin" / "cometbft"
    return str(local) if local.exists() else None


def run_one(bench: Benchmark, quick: bool, run_id: str, results: Path) -> Outcome:
    # One results file for the whole run, even one that runs past midnight (UTC).
    env = {**os.environ, RUN_ENV: run_id, RESULTS_ENV: str(results)}
    if bench.needs_cometbft:
        binary = cometbft()
        if binary is None:
            return Outcome(bench.name, "skipped: no CometBFT (COMETBFT_BIN, make cometbft)", 0.0)
        env["COMETBFT_BIN"] = binary
    command = bench.command(quick)
    print(f"\n### {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    finished = subprocess.run(command, cwd=ROOT, env=env, check=False)
    seconds = time.perf_counter() - started
    status = "ok" if finished.returncode == 0 else f"exit {finished.returncode}"
    return Outcome(bench.name, status, seconds)


def figures_of(run_id: str, path: Path) -> list[dict[str, object]]:
    """The lines of `path` that this run wrote."""
    if not path.exists():
        return []
    lines = (orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip())
    return [line for line in lines if line.get("run") == run_id]


def table(figures: list[dict[str, object]]) -> str:
    rows = ["| measure | value | unit | load | commit |", "|---|---|---|---|---|"]
    for line in figures:
        value = line["value"]
        shown = f"{value:,.2f}" if isinstance(value, float) else f"{value}"
        load = line.get("load")
        load_shown = f"{load:.2f}" if isinstance(load, float) else ""
        rows.append(
            f"| {line['measure']} | {shown} | {line['unit']} | {load_shown} | {line['commit']} |"
        )
    return "\n".join(rows)


def summary(outcomes: list[Outcome]) -> str:
    rows = ["| benchmark | status | seconds |", "|---|---|---|"]
    rows += [f"| {o.name} | {o.status} | {o.seconds:,.0f} |" for o in outcomes]
    return "\n".join(rows)


def selected(only: list[str], skip: list[str]) -> list[Benchmark]:
    known = {b.name for b in BENCHMARKS}
    unknown = (set(only) | set(skip)) - known
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: {known}")
    return [b for b in BENCHMARKS if (not only or b.name in only) and b.name not in skip]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes")
    parser.add_argument("--only", action="append", default=[], help="this benchmark (repeat)")
    parser.add_argument("--skip", action="append", default=[], help="not this one (repeat)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and stop")
    args = parser.parse_args()
    chosen = selected(args.only, args.skip)
    if args.list:
        for bench in chosen:
            print(" ".join(bench.command(args.quick)[1:]))
        return
    now = datetime.datetime.now(datetime.UTC)
    run_id = os.environ.get(RUN_ENV) or now.strftime("%Y%m%dT%H%M%SZ")
    results = results_path()
    print(f"run {run_id}: {len(chosen)} benchmarks; figures in {results}", flush=True)
    outcomes = [run_one(bench, args.quick, run_id, results) for bench in chosen]
    print(f"\n## Run {run_id}\n")
    print(summary(outcomes))
    print()
    print(table(figures_of(run_id, results)))
    if any(o.status.startswith("exit") for o in outcomes):
        sys.exit(1)


if __name__ == "__main__":
    main()
