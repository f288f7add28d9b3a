"""CPU time of processes, from /proc: what a benchmark's run cost, per kind of process.

On a shared machine wall-clock rates swing with other people's work; the CPU seconds a
process spent (utime + stime from /proc/<pid>/stat) per unit of work swing much less.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (0.0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # fields 14 and 15 of proc(5)


def cpu_by_kind(pids: Mapping[str, Iterable[int]]) -> dict[str, float]:
    """kind -> CPU seconds summed over that kind's processes."""
    return {kind: sum(cpu_seconds(p) for p in group) for kind, group in pids.items()}


def start_py_spy(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """Sample one Python process for `seconds` into a collapsed-stack ("raw") file."""
    command = [
        str(Path(sys.executable).parent / "py-spy"),
        "record",
        "--format",
        "raw",
        "--gil",  # only the thread holding the GIL: CPU work, not threads waiting on a queue
        "--rate",
        "200",
        "--duration",
        str(max(1, round(seconds))),
        "--pid",
        str(pid),
        "--output",
        str(out),
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def top_functions(
    raw_files: Iterable[Path], limit: int = 25, *, by_inclusive: bool = False
) -> list[tuple[str, float, float]]:
    """(function, self %, inclusive %) over every sample of the collapsed-stack files, the
    `limit` largest by self time (or by inclusive time)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for path in raw_files:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            frames = stack.split(";")
            total += count
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
    if not total:
        return []
    return [
        (frame, 100 * own[frame] / total, 100 * inclusive[frame] / total)
        for frame, _ in (inclusive if by_inclusive else own).most_common(limit)
    ]
