"""A planned upgrade on a real 4-validator network (CometBFT, one app process per node).

Three of the four members schedule a plan with `careledger consortium upgrade`; every node
runs the software of today, so at the plan's height every application stops before
executing that block: each process exits non-zero with a log line naming the plan, and each
state store ends at the block before, with the same app hash on all four (no fork). The old
software restarted refuses again. Restarted as "new software" (the test hook of
node/rules.py: this version's rules under the next version number), the nodes replay the
block at the height under the new version and carry on committing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from netutil import (
    app_hashes,
    assert_same_app_hashes,
    height,
    running_network,
    wait_for_height,
    wait_until,
)
from typer.testing import CliRunner

from careledger.chain.app import STATE_MACHINE_VERSION, SUPPORTED_RULES_VERSIONS
from careledger.chain.modules.upgrade import MIN_NOTICE_BLOCKS
from careledger.consortium.upgrade_cli import upgrade_app
from careledger.localnet.network import (
    NetError,
    Network,
    node_pids,
    start_network,
    start_node,
    stop_node,
)
from careledger.node.rules import TEST_RULES_ENV

pytestmark = pytest.mark.timeout(300)

NEXT = STATE_MACHINE_VERSION + 1
RUNS = ", ".join(str(v) for v in sorted(SUPPORTED_RULES_VERSIONS))


def upgrade(network: Network, index: int, *args: str) -> str:
    """`careledger consortium upgrade ARGS --as <org index's key> --node <its API>`."""
    key = network.app_data(index).organisation_key
    argv = [*args, "--as", str(key), "--node", network.nodes[index].api_url]
    result = CliRunner().invoke(upgrade_app, argv)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def app_exit_code(network: Network, index: int, timeout: float) -> int:
    """Wait for the node's application process (a child of this one) to exit; its code."""
    pid = int((network.node_dir(index) / "app.pid").read_text())
    wait_until(lambda: "app" not in node_pids(network, index), timeout, f"node{index}'s app exit")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_old_software_halts_every_node_at_the_planned_height_and_new_software_carries_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TEST_RULES_ENV, raising=False)
    with running_network(tmp_path / "net") as network:
        wait_for_height(network, 0, 2)
        at = height(network, 0) + MIN_NOTICE_BLOCKS + 15  # room for the three votes
        plan = ["--name", "rules-next", "--height", str(at), "--version", str(NEXT)]
        upgrade(network, 0, "propose", *plan)
        upgrade(network, 1, "approve", *plan)
        said = upgrade(network, 2, "approve", *plan)
        assert f"Plan rules-next: rules version {NEXT} from height {at} (scheduled" in said
        assert "3 of 4 members approve" in said
        assert height(network, 3) < at  # scheduled ahead of its height

        for index in range(4):  # every application stops, non-zero, at the height
            assert app_exit_code(network, index, timeout=120) != 0
        tables = [app_hashes(network, i) for i in range(4)]
        assert [max(t) for t in tables] == [at - 1] * 4  # the block before, on every node
        assert len({t[at - 1] for t in tables}) == 1  # one app hash: no fork
        for index in range(4):
            log = " ".join((network.node_dir(index) / "app.log").read_text().split())
            assert re.search(
                f"upgrade plan 'rules-next' switches the chain to rules version {NEXT} at height"
                f" {at}; this software runs rules version {RUNS}",
                log,
            ), log[-2000:]
            stop_node(network, index)  # CometBFT, if it outlived its application

        # The old software, restarted, refuses at once: it never executes block `at`.
        with pytest.raises(NetError, match="application exited"):
            start_node(network, 0, wait=False)
        assert max(app_hashes(network, 0)) == at - 1
        stop_node(network, 0)

        # The new software replays the block at the height under the new version, goes on.
        monkeypatch.setenv(TEST_RULES_ENV, str(NEXT))
        start_network(network)
        for index in range(4):
            wait_for_height(network, index, at + 5, timeout=120)
        assert assert_same_app_hashes(network, [0, 1, 2, 3]) >= at + 5
        shown = upgrade(network, 3, "show")
        assert f"the chain runs rules version {NEXT}" in shown
        assert (
            f"Applied rules-next at height {at}: rules version {STATE_MACHINE_VERSION} ->" in shown
        )
