"""A fifth organisation joins a running four-host consortium on a host of its own.

Four founders run their nodes on four network-namespace hosts; records are written while
they commit. The fifth organisation makes its keys on its own host, applies with a sponsor's
voucher, starts its node with `--join`: a full node that block-syncs from the founders and
fetches the blobs of the records anchored before it came. Three of the four founders vote it
in; it becomes a validator (power 10 of 50), registers its node, and the network keeps
committing when one of the original four is then stopped (40 of 50 is more than two thirds).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hostnet import HostConsortium, wait_until
from hosts import Hosts
from orgs import Org

from careledger.storage.blobstore import BlobStore
from careledger.wallet.records import RecordsClient
from nodeutil import enrol

pytestmark = [pytest.mark.hosts, pytest.mark.network, pytest.mark.timeout(600)]

FOUNDERS = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    with Hosts(5) as made:
        yield made


def observation(n: int) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": f"obs-{n}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "valueQuantity": {"value": 60 + n, "unit": "/min"},
    }


def ok(org: Org, *args: str) -> None:
    done = org.cli(*args)
    assert done.returncode == 0, (done.stdout, done.stderr)


def key_of(org: Org) -> str:
    return str(org.home / "app" / "keys" / "organisation.json")


def test_a_fifth_organisation_joins_syncs_is_voted_in_and_the_network_outlives_a_founder(
    hosts: Hosts, tmp_path: Path
) -> None:
    network = HostConsortium(list(hosts)[:4], tmp_path)
    network.ceremony()
    network.start_all()
    network.wait_for_height(FOUNDERS, 2, timeout=180)
    sponsor = network[0]
    with RecordsClient(sponsor.api_url, sponsor.key) as clinic:
        patient = enrol(clinic, "before the fifth came")
        written = clinic.write_many(patient.did, [observation(n) for n in range(3)])

    joiner = Org(hosts[4], tmp_path / "org4", "Org4")
    joiner.init()
    voucher = tmp_path / "voucher.json"
    ok(sponsor, "consortium", "voucher", "--as", key_of(sponsor), "--member",
       str(joiner.member_file), "--node", sponsor.api_url, "--out", str(voucher))  # fmt: skip
    ok(joiner, "consortium", "apply", "--data-dir", str(joiner.home), "--voucher", str(voucher),
       "--node", sponsor.api_url)  # fmt: skip
    joiner.start(network.genesis, network.orgs, join=True)

    # While it syncs the founders go on committing; it catches up as a full node. The
    # founders' nodes refuse it blobs until it is a member (replication is for members).
    network.register_patient(1)
    wait_until(
        lambda: joiner.height() >= max(network.height(i) for i in FOUNDERS) - 1,
        180,
        "the fifth node to block-sync",
    )
    status = joiner.status()
    assert status["validator_power"] == 0 and status["catching_up"] is False
    assert status["replication_backlog"] == len(written)

    for voter in network.orgs[:3]:  # three of the four founders: two thirds
        ok(voter, "consortium", "approve", "--as", key_of(voter),
           "--subject", joiner.member.did, "--node", voter.api_url)  # fmt: skip
    wait_until(lambda: joiner.status()["validator_power"] == 10, 90, "the fifth validator")
    ok(joiner, "consortium", "register-node", "--data-dir", str(joiner.home),
       "--node", sponsor.api_url)  # fmt: skip
    # A member now: it fetches every blob anchored before it came.
    wait_until(lambda: joiner.status()["replication_backlog"] == 0, 90, "the earlier blobs")
    blobs = BlobStore(joiner.home / "app" / "blobs")
    for record in written:
        assert len(blobs.get(record.blob_hash)) > 0

    assert network.stop(3) == 0  # a founder goes away: 40 of 50 voting power remain
    running = [0, 1, 2]
    top = max(network.height(i) for i in running)
    digest = network.register_patient(2)
    network.wait_for_height(running, top + 3)
    wait_until(lambda: joiner.height() >= top + 3, 60, "the fifth node to keep up")
    wait_until(lambda: network.committed_code(0, digest) is not None, 60, "the transaction")
    assert network.committed_code(0, digest) == 0
    network.assert_no_fork(running)
    assert joiner.stop() == 0
