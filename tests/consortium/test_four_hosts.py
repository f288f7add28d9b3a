"""Four organisations on four hosts that share no loopback (network namespaces on a bridge):
the genesis ceremony with the operator commands, all four nodes committing, and partitions.

One consortium serves the module (four nodes cost tens of seconds on two cores); every
partition test heals what it cut before it ends, also when it fails, so the next one starts
from a whole network.

The record written at one host's gateway and read with consent at another's is the lead's
flow (fhir_flow.py, also run on loopback by test_node_start.py), run here between hosts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fhir_flow import write_at_one_gateway_read_at_another
from hostnet import HostConsortium, wait_until
from hosts import Hosts

pytestmark = [pytest.mark.hosts, pytest.mark.network]

EVERYONE = [0, 1, 2, 3]
# Long enough for several heights at the nodes' settings (a block at least every second):
# how long a halted network is watched for a height it must not commit.
HALT_WATCH_SECONDS = 8.0


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostConsortium]:
    root = tmp_path_factory.mktemp("four-hosts")
    with Hosts(4) as hosts:
        network = HostConsortium(hosts, root)
        network.ceremony()
        network.start_all()
        network.wait_for_height(EVERYONE, 2, timeout=180)
        yield network


def test_every_founder_verified_one_genesis_and_all_four_commit(
    consortium: HostConsortium,
) -> None:
    assert len(consortium.genesis_hash) == 64
    addresses = {org.host.address for org in consortium.orgs}
    assert len(addresses) == 4  # four hosts, four addresses, no shared loopback
    start = max(consortium.height(i) for i in EVERYONE)
    digest = consortium.register_patient(1)
    wait_until(lambda: consortium.committed_code(3, digest) is not None, 60, "the tx at node 3")
    assert consortium.committed_code(3, digest) == 0
    consortium.wait_for_height(EVERYONE, start + 2)
    assert consortium.assert_no_fork(EVERYONE) >= start + 2


def test_a_record_written_at_one_hosts_gateway_is_read_with_consent_at_anothers(
    consortium: HostConsortium, tmp_path: Path
) -> None:
    write_at_one_gateway_read_at_another(consortium[0], consortium[2], tmp_path)


def test_one_host_cut_off_stops_nothing_and_catches_up_when_back(
    consortium: HostConsortium,
) -> None:
    cut = consortium.hosts[3]
    cut.link_down()
    try:
        at_cut = max(consortium.height(i) for i in (0, 1, 2))
        # 30 of 40 voting power remain: more than two thirds, so the others go on committing
        # and take transactions.
        digest = consortium.register_patient(0)
        consortium.wait_for_height([0, 1, 2], at_cut + 3)
        wait_until(lambda: consortium.committed_code(2, digest) is not None, 60, "the tx")
        assert consortium.committed_code(2, digest) == 0
    finally:
        cut.link_up()
    # Back on the network, node 3 block-syncs to the others' height, on the same chain.
    target = max(consortium.height(i) for i in (0, 1, 2))
    consortium.wait_for_height([3], target)
    assert consortium.committed_code(3, digest) == 0
    assert consortium.assert_no_fork(EVERYONE) >= target


@pytest.mark.nft
def test_two_hosts_cut_off_halt_commits_without_a_fork_and_healing_resumes(
    consortium: HostConsortium,
) -> None:
    """Two against two: neither side has more than two thirds of the power, so neither
    commits (the observer still reaches all four APIs: nftables drops only host-to-host)."""
    hosts = consortium.hosts
    left, right = [hosts[0], hosts[1]], [hosts[2], hosts[3]]
    for a in left:
        for b in right:
            a.drop_from(b)
            b.drop_from(a)
    try:
        # A height already being decided may still commit on one side: the halt is
        # measured from the first moment no node moves on.
        halted_at = wait_for_no_progress(consortium)
        digest = consortium.register_patient(0)
        time.sleep(HALT_WATCH_SECONDS)
        after = {i: consortium.height(i) for i in EVERYONE}
        assert after == halted_at, f"a side without two thirds committed: {halted_at} -> {after}"
        assert consortium.committed_code(0, digest) is None
        assert consortium.assert_no_fork(EVERYONE) >= min(halted_at.values())
    finally:
        for host in (*left, *right):
            host.undrop()
    top = max(halted_at.values())
    consortium.wait_for_height(EVERYONE, top + 2)
    wait_until(lambda: consortium.committed_code(3, digest) is not None, 60, "the held tx")
    assert consortium.committed_code(3, digest) == 0
    assert consortium.assert_no_fork(EVERYONE) >= top + 2


def wait_for_no_progress(consortium: HostConsortium, timeout: float = 60) -> dict[int, int]:
    """Heights once no node has moved for a few seconds (a stalled network)."""
    deadline = time.monotonic() + timeout
    last = {i: consortium.height(i) for i in EVERYONE}
    while time.monotonic() < deadline:
        time.sleep(3)
        now = {i: consortium.height(i) for i in EVERYONE}
        if now == last:
            return now
        last = now
    raise TimeoutError(f"the partitioned network kept committing: {last}")
