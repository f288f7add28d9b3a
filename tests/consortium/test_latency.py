"""With 100 ms added on every P2P link (Toxiproxy between the hosts), the four-host
consortium keeps committing: the measurement of bench/consortium_latency.py, run briefly.
It asserts that every transaction commits and blocks keep coming, that no link bypassed the
proxies (measure raises) and that there is no fork (measure asserts it); the timings are
reported in BENCHMARKS.md, not asserted (a shared, noisy machine)."""

from __future__ import annotations

from pathlib import Path

import pytest
from proxied import measure

pytestmark = [pytest.mark.hosts, pytest.mark.network, pytest.mark.toxiproxy]


def test_commits_continue_with_100ms_on_every_p2p_link(tmp_path: Path) -> None:
    (phase,) = measure(tmp_path, seconds=8, rate=1, latency_ms=100, baseline=False)
    assert phase.failures == 0
    assert len(phase.latencies) == 8  # every transaction committed, with code 0
    assert phase.heights[1] > phase.heights[0]
