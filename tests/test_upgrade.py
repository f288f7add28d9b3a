"""Planned upgrades on the real state machine (real SQLite), block by block.

The members schedule a plan by the two-thirds vote that admits and removes members; at the
plan's height a node whose software supports the plan's rules version records it and goes
on, and one whose software does not stops before executing that block, with its state at
the block before, and refuses again when restarted. "New software" is this software with
the test hook of node/rules.py (the next version, with this version's rules).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest

from careledger.chain.app import (
    STATE_MACHINE_VERSION,
    SUPPORTED_RULES_VERSIONS,
    Application,
    BlockContext,
    IncompatibleState,
    UpgradeRequired,
)
from careledger.chain.codes import Code
from careledger.chain.modules import votes
from careledger.chain.modules.upgrade import (
    MIN_NOTICE_BLOCKS,
    UpgradeApproved,
    UpgradeCancelled,
    UpgradeProposed,
    UpgradeScheduled,
)
from careledger.chain.modules.upgrade.events import UpgradeCancelVoted
from careledger.chain.store import StateStore
from careledger.chain.tx import Tx
from careledger.consensus.cometbft import messages as m
from careledger.consensus.cometbft.handler import AbciHandler
from careledger.crypto.keys import Identity
from careledger.node.rules import TEST_RULES_ENV, BadRulesHook, supported_rules_versions
from nodeutil import CHAIN_ID, make_app, register_patient_tx, run_block, run_block_results

NEXT = STATE_MACHINE_VERSION + 1
RUNS = ", ".join(str(v) for v in sorted(SUPPORTED_RULES_VERSIONS))
OLD_SOFTWARE = supported_rules_versions({})
NEW_SOFTWARE = supported_rules_versions({TEST_RULES_ENV: str(NEXT)})


class Chain:
    """A state machine with founding members, numbering each sender's nonces."""

    def __init__(
        self,
        tmp_path: Path,
        members: int = 4,
        founders: list[Identity] | None = None,
        supported: Collection[int] = OLD_SOFTWARE,
    ) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.path = tmp_path / "state.sqlite"
        self.members = founders or [Identity.generate() for _ in range(members)]
        make_app(self.path, self.members).store.close()
        self.app = Application(StateStore(self.path), supported_versions=supported)
        self._next: dict[str, int] = {}

    def tx(self, who: Identity, type_: str, payload: dict[str, Any]) -> bytes:
        self._next[who.did] = self._next.get(who.did, 0) + 1
        return Tx(CHAIN_ID, type_, who.did, self._next[who.did], payload).sign(who)

    def run(self, *txs: bytes) -> list[int]:
        return run_block(self.app, list(txs))

    def events(self, *txs: bytes) -> list[Any]:
        results = run_block_results(self.app, list(txs))
        assert all(r.ok for r in results), [r.log for r in results]
        return [e for r in results for e in r.events]

    @property
    def height(self) -> int:
        return self.app.info().last_height

    def status(self) -> dict[str, Any]:
        result = self.app.query("upgrade/status")
        assert result.code == Code.OK, result.log
        found: dict[str, Any] = json.loads(result.value)
        return found

    def until(self, height: int) -> None:
        """Empty blocks up to and including `height`."""
        while self.height < height:
            self.run()

    def restart(self, supported: Collection[int]) -> None:
        """Close the store and open it again with software supporting `supported`."""
        self.app.store.close()
        store = StateStore(self.path)
        try:
            self.app = Application(store, supported_versions=supported)
        except BaseException:
            store.close()
            raise

    def schedule(self, height: int | None = None, name: str = "next-rules") -> dict[str, Any]:
        """A plan for the next version, scheduled by three of four members."""
        plan = {"name": name, "height": height or self.height + 1 + 25, "version": NEXT}
        a, b, c = self.members[:3]
        assert self.run(
            self.tx(a, "upgrade/propose", plan),
            self.tx(b, "upgrade/approve", plan),
            self.tx(c, "upgrade/approve", plan),
        ) == [0, 0, 0]
        assert self.status()["plan"]["scheduled_at"] == self.height
        return plan


def test_a_plan_is_scheduled_by_two_thirds_of_the_members_not_by_fewer(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    a, b, c, _ = chain.members
    plan = {"name": "v-next", "height": 40, "version": NEXT}

    proposed = chain.events(chain.tx(a, "upgrade/propose", plan))
    assert UpgradeProposed.all_in(proposed) == [UpgradeProposed("v-next", "40", str(NEXT), a.did)]
    assert UpgradeApproved.all_in(proposed) == [UpgradeApproved("v-next", a.did)]
    assert UpgradeApproved.all_in(chain.events(chain.tx(b, "upgrade/approve", plan)))
    assert chain.status()["plan"]["scheduled_at"] == 0  # two of four: a minority of the bar

    carried = chain.events(chain.tx(c, "upgrade/approve", plan))
    assert UpgradeScheduled.all_in(carried) == [UpgradeScheduled("v-next", "40", str(NEXT))]
    status = chain.status()
    assert status["plan"]["scheduled_at"] == chain.height
    assert status["plan"]["approvals"] == sorted([a.did, b.did, c.did])
    assert status["version"] == STATE_MACHINE_VERSION


def test_upgrade_and_membership_votes_are_counted_by_one_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both modules ask chain/modules/votes.py: changing that rule changes both."""
    chain = Chain(tmp_path, members=3)
    a = chain.members[0]
    calls: list[tuple[int, int]] = []
    original = votes.carried

    def counting(approvals: Collection[str], voters: Collection[str], minimum: int = 1) -> bool:
        calls.append((len(approvals), len(voters)))
        return original(approvals, voters, minimum)

    monkeypatch.setattr(votes, "carried", counting)
    plan = {"name": "v-next", "height": 40, "version": NEXT}
    victim = chain.members[2].did
    assert chain.run(
        chain.tx(a, "upgrade/propose", plan),
        chain.tx(a, "identity/approve_membership", {"action": "remove", "subject": victim}),
    ) == [0, 0]
    assert calls == [(1, 3), (1, 2)]  # the plan's vote of 3 members; the removal's of 2
    assert votes.carried is counting
    assert [original(["x"] * k, ["x", "y", "z"]) for k in range(4)] == [False, False, True, True]


def test_a_removed_members_approval_no_longer_counts() -> None:
    assert votes.counted(["a", "gone", "b"], ["a", "b", "c"]) == ["a", "b"]
    assert not votes.carried(["a", "gone"], ["a", "b", "c"])
    assert votes.carried(["a", "b", "gone"], ["a", "b", "c"])


def test_only_members_propose_approve_or_cancel(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    a = chain.members[0]
    patient = Identity.generate()
    assert chain.run(register_patient_tx(CHAIN_ID, patient, a)) == [0]
    chain._next[patient.did] = 1
    plan = {"name": "v-next", "height": 60, "version": NEXT}
    assert chain.run(chain.tx(patient, "upgrade/propose", plan)) == [Code.UNAUTHORISED]
    assert chain.run(chain.tx(a, "upgrade/propose", plan)) == [0]
    assert chain.run(
        chain.tx(patient, "upgrade/approve", plan),
        chain.tx(patient, "upgrade/cancel", {"name": "v-next"}),
    ) == [Code.UNAUTHORISED, Code.UNAUTHORISED]
    assert chain.status()["plan"]["approvals"] == [a.did]


def test_a_plan_must_be_ahead_by_the_notice_and_above_the_running_version(
    tmp_path: Path,
) -> None:
    chain = Chain(tmp_path)
    a = chain.members[0]
    next_block = chain.height + 1
    too_soon = {"name": "soon", "height": next_block + MIN_NOTICE_BLOCKS - 1, "version": NEXT}
    past = {"name": "past", "height": 1, "version": NEXT}
    same = {"name": "same", "height": 500, "version": STATE_MACHINE_VERSION}
    older = {"name": "older", "height": 500, "version": STATE_MACHINE_VERSION - 1}
    bad_names = [{"name": n, "height": 500, "version": NEXT} for n in ("", "Upper", "a b", "-x")]
    results = run_block_results(
        chain.app,
        [chain.tx(a, "upgrade/propose", p) for p in [too_soon, past, same, older, *bad_names]],
    )
    assert [r.code for r in results] == [Code.INVALID_PAYLOAD] * 8
    assert "too soon" in results[0].log and "too soon" in results[1].log
    assert "not above the chain's rules version" in results[2].log
    assert chain.status()["plan"] is None
    just_in_time = {**too_soon, "height": next_block + 1 + MIN_NOTICE_BLOCKS}
    assert chain.run(chain.tx(a, "upgrade/propose", just_in_time)) == [0]


def test_one_plan_at_a_time_and_a_vote_counts_only_for_the_plan_it_names(
    tmp_path: Path,
) -> None:
    chain = Chain(tmp_path)
    a, b, c, _ = chain.members
    plan = {"name": "v-next", "height": 60, "version": NEXT}
    assert chain.run(chain.tx(a, "upgrade/propose", plan)) == [0]
    results = run_block_results(
        chain.app,
        [
            chain.tx(b, "upgrade/propose", {**plan, "name": "another"}),
            chain.tx(b, "upgrade/approve", {**plan, "height": 61}),
            chain.tx(b, "upgrade/approve", {**plan, "version": NEXT + 1}),
            chain.tx(b, "upgrade/approve", {**plan, "name": "unknown"}),
            chain.tx(a, "upgrade/approve", plan),
        ],
    )
    assert [r.code for r in results] == [
        Code.CONFLICT,
        Code.CONFLICT,
        Code.CONFLICT,
        Code.NOT_FOUND,
        Code.CONFLICT,  # the proposer approved by proposing
    ]
    assert "one plan at a time" in results[0].log
    assert chain.status()["plan"]["approvals"] == [a.did]
    assert chain.run(chain.tx(b, "upgrade/approve", plan), chain.tx(c, "upgrade/approve", plan))
    assert chain.run(chain.tx(b, "upgrade/approve", plan)) == [Code.CONFLICT]  # scheduled


def test_a_plan_not_scheduled_by_its_height_lapses_there(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    a, b = chain.members[:2]
    plan = {"name": "v-next", "height": chain.height + 1 + MIN_NOTICE_BLOCKS, "version": NEXT}
    assert chain.run(chain.tx(a, "upgrade/propose", plan)) == [0]
    chain.until(plan["height"] - 1)
    assert chain.status()["plan"] is not None
    assert chain.run(chain.tx(b, "upgrade/approve", plan)) == [Code.NOT_FOUND]  # at its height
    assert chain.status() == {
        "version": STATE_MACHINE_VERSION,
        "plan": None,
        "min_notice_blocks": MIN_NOTICE_BLOCKS,
    }
    assert chain.run(chain.tx(b, "upgrade/propose", {**plan, "height": 500})) == [0]


def test_the_proposer_withdraws_its_plan_alone_until_the_members_schedule_it(
    tmp_path: Path,
) -> None:
    chain = Chain(tmp_path)
    a, b, c, d = chain.members
    plan = {"name": "v-next", "height": 60, "version": NEXT}
    assert chain.run(chain.tx(a, "upgrade/propose", plan)) == [0]
    assert chain.run(chain.tx(b, "upgrade/cancel", {"name": "v-next"})) == [0]  # a vote only
    assert chain.status()["plan"] is not None
    cancelled = chain.events(chain.tx(a, "upgrade/cancel", {"name": "v-next"}))
    assert UpgradeCancelled.all_in(cancelled) == [UpgradeCancelled("v-next")]
    assert chain.status()["plan"] is None

    scheduled = chain.schedule(name="v-next-2")
    # Scheduled, the plan is the members' decision: its proposer alone cannot undo it.
    voted = chain.events(chain.tx(a, "upgrade/cancel", {"name": "v-next-2"}))
    assert UpgradeCancelVoted.all_in(voted) == [UpgradeCancelVoted("v-next-2", a.did)]
    assert chain.run(chain.tx(a, "upgrade/cancel", {"name": "v-next-2"})) == [Code.CONFLICT]
    assert chain.run(chain.tx(d, "upgrade/cancel", {"name": "v-next-2"})) == [0]
    assert chain.status()["plan"]["name"] == "v-next-2"
    assert UpgradeCancelled.all_in(
        chain.events(chain.tx(c, "upgrade/cancel", {"name": "v-next-2"}))
    )
    chain.until(scheduled["height"] + 1)  # old software: nothing happens at the height
    assert chain.status()["version"] == STATE_MACHINE_VERSION


def test_new_software_switches_to_the_planned_version_at_its_height(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    chain.restart(NEW_SOFTWARE)
    plan = chain.schedule()
    chain.until(plan["height"] - 1)
    assert chain.app.rules_version == STATE_MACHINE_VERSION
    assert AbciHandler(chain.app).on_Info(m.RequestInfo()).app_version == STATE_MACHINE_VERSION

    patient = Identity.generate()
    assert chain.run(register_patient_tx(CHAIN_ID, patient, chain.members[0])) == [0]
    assert chain.height == plan["height"]  # the block at the height executed its transaction
    assert chain.app.rules_version == NEXT
    assert AbciHandler(chain.app).on_Info(m.RequestInfo()).app_version == NEXT
    assert chain.status()["version"] == NEXT and chain.status()["plan"] is None
    history = json.loads(chain.app.query("upgrade/history").value)
    assert history == [
        {
            "name": plan["name"],
            "height": plan["height"],
            "version": NEXT,
            "from_version": STATE_MACHINE_VERSION,
        }
    ]
    chain.until(plan["height"] + 3)
    chain.restart(NEW_SOFTWARE)  # restarts under the new version
    assert chain.app.rules_version == NEXT
    # The old software refuses a store that already runs the new rules.
    with pytest.raises(IncompatibleState, match=f"the chain runs rules version {NEXT}"):
        chain.restart(OLD_SOFTWARE)


def test_old_software_stops_before_the_plans_height_with_its_state_at_the_block_before(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chain = Chain(tmp_path)
    plan = chain.schedule()
    chain.until(plan["height"] - 1)
    before = chain.app.info()
    patient = Identity.generate()
    block = [register_patient_tx(CHAIN_ID, patient, chain.members[0])]

    with caplog.at_level(logging.CRITICAL), pytest.raises(UpgradeRequired) as stopped:
        chain.app.finalize_block(BlockContext(plan["height"], 1), block)
    said = str(stopped.value)
    for words in (
        f"upgrade plan {plan['name']!r}",
        f"rules version {NEXT} at height {plan['height']}",
        f"this software runs rules version {RUNS}",
        f"before executing block {plan['height']}",
    ):
        assert words in said
        assert words in caplog.text
    with pytest.raises(RuntimeError, match="commit without finalize_block"):
        chain.app.commit()  # nothing of the block is pending
    assert chain.app.info() == before
    assert chain.app.store.app_hash_at(plan["height"]) is None
    assert chain.status()["version"] == STATE_MACHINE_VERSION

    # Restarted, the old software refuses again, at once: it never executes the block.
    with pytest.raises(UpgradeRequired, match=f"height {plan['height']}"):
        chain.restart(OLD_SOFTWARE)
    chain.restart(NEW_SOFTWARE)
    assert chain.app.info() == before
    result = chain.app.finalize_block(BlockContext(plan["height"], 1), block)
    assert [r.code for r in result.tx_results] == [0]
    chain.app.commit()
    assert chain.app.rules_version == NEXT


def test_new_and_old_software_agree_on_every_app_hash_before_the_height(tmp_path: Path) -> None:
    """The hook changes nothing before the plan's height: no fork among the nodes that
    stopped and the nodes that went on, up to the block before."""
    old = Chain(tmp_path / "old")
    new = Chain(tmp_path / "new", founders=old.members, supported=NEW_SOFTWARE)
    plan = {"name": "agreed", "height": 30, "version": NEXT}
    a, b, c = old.members[:3]
    block = [
        old.tx(a, "upgrade/propose", plan),
        old.tx(b, "upgrade/approve", plan),
        old.tx(c, "upgrade/approve", plan),
    ]
    assert run_block(old.app, block) == run_block(new.app, block) == [0, 0, 0]
    old.until(29)
    new.until(29)
    for h in range(30):
        assert old.app.store.app_hash_at(h) == new.app.store.app_hash_at(h)
    with pytest.raises(UpgradeRequired):
        old.app.finalize_block(BlockContext(30, 1), [])
    new.run()
    assert new.app.rules_version == NEXT


def test_a_byzantine_proposer_cannot_skip_the_halt_with_the_blocks_transactions(
    tmp_path: Path,
) -> None:
    """A block at the plan's height that cancels the plan (with enough votes to carry) does
    not move the switch: it is decided from the committed state before any transaction."""
    chain = Chain(tmp_path)
    plan = chain.schedule()
    chain.until(plan["height"] - 1)
    cancels = [chain.tx(m, "upgrade/cancel", {"name": plan["name"]}) for m in chain.members]
    with pytest.raises(UpgradeRequired):
        chain.app.finalize_block(BlockContext(plan["height"], 1), cancels)
    chain.restart(NEW_SOFTWARE)
    results = run_block_results(chain.app, cancels)
    assert {r.code for r in results} == {Code.NOT_FOUND}  # applied before they ran
    assert chain.app.rules_version == NEXT


def test_the_test_hook_simulates_only_the_next_version() -> None:
    assert supported_rules_versions({}) == {6, STATE_MACHINE_VERSION}
    assert supported_rules_versions({TEST_RULES_ENV: ""}) == {6, STATE_MACHINE_VERSION}
    assert supported_rules_versions({TEST_RULES_ENV: str(NEXT)}) == {
        6,
        STATE_MACHINE_VERSION,
        NEXT,
    }
    for bad in (str(STATE_MACHINE_VERSION), str(NEXT + 1), "yes", "999999999"):
        with pytest.raises(BadRulesHook, match="only simulates the next rules version"):
            supported_rules_versions({TEST_RULES_ENV: bad})
