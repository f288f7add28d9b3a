"""The node process's garbage-collector setting (node/builder.py, COLLECTOR_THRESHOLDS)."""

from __future__ import annotations

import gc
from pathlib import Path

from careledger.node.builder import COLLECTOR_THRESHOLDS, Solo, build_node
from careledger.node.datadir import initialise


def test_building_a_node_makes_full_collections_rare(tmp_path: Path) -> None:
    """Every node process builds its node with build_node, which sets the thresholds the
    benchmark measured (a full pass walks every cached object: 10% of a registration's CPU
    with CPython's defaults)."""
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # CPython's defaults
    try:
        root = tmp_path / "data"
        initialise(root)
        node = build_node(root, Solo(block_interval=0.05))
        node.close()
        assert gc.get_threshold() == COLLECTOR_THRESHOLDS
        young, middle, old = COLLECTOR_THRESHOLDS
        assert young * middle * old > 700 * 10 * 10 * 1000  # full passes 1,000 times rarer
    finally:
        gc.set_threshold(*before)
