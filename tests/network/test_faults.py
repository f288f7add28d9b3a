"""Faults on a real 4-validator network: a crashed validator, and a lost quorum.

A network of 4 tolerates f = 1 fault (f < N/3): with one validator down the other three hold
more than two thirds of the power and keep committing; with two down nothing commits, and
nothing forks, until one comes back.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from netutil import (
    assert_same_app_hashes,
    block_hash,
    committed_code,
    height,
    organisation,
    patient_tx,
    running_network,
    wait_for_height,
    wait_until,
)

from careledger.localnet.network import kill_node, node_running, start_node, stop_node
from careledger.wallet.node_client import NodeClient

pytestmark = pytest.mark.timeout(150)


def test_a_validator_killed_with_sigkill_catches_up_with_the_same_app_hash(
    tmp_path: Path,
) -> None:
    with running_network(tmp_path / "net") as network:
        client = NodeClient(network.nodes[0].api_url, organisation(network, 0), timeout=60)
        wait_for_height(network, 3, 2)

        kill_node(network, 3)
        assert not node_running(network, 3)
        stalled_at = height(network, 0)
        for _ in range(5):  # the other three keep committing transactions
            assert client.submit(patient_tx(network)[1], wait=True)["code"] == 0
        wait_for_height(network, 0, stalled_at + 3)

        start_node(network, 3)
        target = height(network, 0)
        wait_for_height(network, 3, target, timeout=60)
        assert assert_same_app_hashes(network, [0, 1, 2, 3]) >= target
        late = NodeClient(network.nodes[3].api_url, organisation(network, 3))
        wait_until(lambda: not late.status()["catching_up"], 30, "node3 to finish catching up")
        assert late.status()["height"] >= target


def test_with_two_of_four_down_nothing_commits_nothing_forks_and_commits_resume(
    tmp_path: Path,
) -> None:
    with running_network(tmp_path / "net") as network:
        client = NodeClient(network.nodes[0].api_url, organisation(network, 0), timeout=60)
        wait_for_height(network, 1, 2)

        stop_node(network, 2)
        kill_node(network, 3)
        time.sleep(1.5)  # let a height already under way finish
        halted = [height(network, 0), height(network, 1)]
        waiting = client.submit(patient_tx(network)[1], wait=False)  # accepted, not committed
        assert waiting["check_code"] == 0
        time.sleep(4)
        assert [height(network, 0), height(network, 1)] == halted
        top = min(halted)
        for at in range(1, top + 1):  # no fork: both halves of the survivors agree
            assert block_hash(network, 0, at) == block_hash(network, 1, at)

        start_node(network, 2)
        start_node(network, 3)
        wait_for_height(network, 0, max(halted) + 2, timeout=60)
        wait_until(
            lambda: committed_code(client, waiting["hash"]) is not None,
            30,
            "the waiting transaction to commit",
        )
        assert committed_code(client, waiting["hash"]) == 0
        wait_for_height(network, 3, max(halted) + 2, timeout=60)
        assert assert_same_app_hashes(network, [0, 1, 2, 3]) >= max(halted)
