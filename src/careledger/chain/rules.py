"""The rules-version gate: which rules this software executes, and when it must stop.

A store written under rules this software does not replay is refused at start
(IncompatibleState); a planned upgrade to rules it does not support stops the node before
the plan's block (UpgradeRequired). Application calls these; chain/modules/upgrade holds the
plans and the active version in the state.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from careledger.chain.faults import LocalFault
from careledger.chain.modules.upgrade import MODULE as UPGRADE
from careledger.chain.modules.upgrade import Plan, UpgradeKeeper
from careledger.chain.modules.upgrade import handler as upgrade
from careledger.chain.state import KV, Overlay
from careledger.chain.store import StateStore

log = logging.getLogger("careledger.chain.app")

# The version of the rules. Any change to what a transaction does (including the layout of a
# state value) changes what a replay computes, so it bumps this: a store written under other
# rules is refused at start rather than diverging from its own history.
# Version 2: a nonce may jump at most MAX_NONCE_JUMP (NONCE_TOO_FAR); a handler's local fault
# halts the node instead of committing INTERNAL; JSON deeper than 32 levels is MALFORMED;
# only registered identities that may act send transactions (UNKNOWN_SENDER); patients and
# applicants register with a member's one-time voucher, practitioners with their consent;
# identities keep their key history; a signing key belongs to one identity for ever; a
# removal needs two approving members; only the patient or the organisation that wrote a
# record's version 1 add versions and tombstones.
# Version 3: the consent module (grants, revocations, key wraps); a new record of a patient
# needs the patient's write consent (NO_CONSENT); scope keys are signed by the patient; an
# anchor names exactly one scope key, and a record keeps its scope; version 1 is never a
# tombstone; rotate_key carries a certificate (old key) and a proof (new key).
# Version 4: node identities (kind "node", acting for their organisation while it is a
# member; founders' nodes registered at genesis, later ones with identity/register_node);
# the audit module (audit/record_batch: access entries batched and signed by the serving
# node, the patient's access log, alerts); TxContext carries the transaction's hash and index.
# Version 5: records/anchor_batch (up to 100 anchors of one author, each checked as a
# records/anchor is, all or nothing).
# Version 6: the upgrade module (upgrade/propose, approve, cancel: a planned upgrade agreed by
# two thirds of the members); the state records the chain's active rules version
# (`upgrade/version`, written at genesis); at a scheduled plan's height the block starts by
# switching to the plan's version, or the node stops before executing it (UpgradeRequired).
# Version 7: enrolments (identity/enrol_patients: a member enrols up to 500 patients' dids in
# one transaction; identity/register_enrolled_patient: a patient registers naming the member
# that enrolled it, one signature instead of a voucher's two). Their messages carry
# `since=7`: under version 6 they are unknown types and nothing else differs, so this
# software runs version 6 as it was (tests/test_golden.py pins both versions' app hashes).
STATE_MACHINE_VERSION = 7

# The rules versions this software can execute. Software that brings new rules keeps the
# old ones beside them (it replays the chain's history) and lists both here; the chain
# switches from one to the next at a planned upgrade's height (chain/modules/upgrade).
# Version 6 is the first with planned upgrades: the oldest a running chain can move on from.
SUPPORTED_RULES_VERSIONS: frozenset[int] = frozenset({6, STATE_MACHINE_VERSION})


class IncompatibleState(RuntimeError):
    """A state store written by a different version of the rules."""


class UpgradeRequired(LocalFault):
    """The chain switches to rules this software does not support at the next block.

    Raised before the block's first transaction (finalize_block) and at start while the
    store waits at that height: nothing of the block is executed or committed, so this node
    never computes an app hash under the old rules where the chain runs the new ones. The
    drivers stop the node as for any local fault; it goes on once restarted with software
    that supports the plan's version.
    """

    def __init__(self, plan: Plan, supported: Collection[int]) -> None:
        runs = ", ".join(str(v) for v in sorted(supported))
        super().__init__(
            f"upgrade plan {plan.name!r} switches the chain to rules version {plan.version} at"
            f" height {plan.height}; this software runs rules version {runs}. The node stops"
            f" before executing block {plan.height} (nothing of it is executed or committed):"
            f" install software that supports rules version {plan.version} and start the node"
            " again (docs/operations.md, section 6)"
        )
        self.plan = plan


class RulesGate:
    """The rules versions one Application executes, checked against its store."""

    def __init__(self, store: StateStore, supported_versions: Collection[int]) -> None:
        self.store = store
        self.supported_versions = frozenset(supported_versions)

    def check_store(self) -> None:
        """Refuse a store this software cannot carry on: begun under rules it does not
        replay, now running rules it does not support, or stopped at a planned upgrade to
        such rules (UpgradeRequired: the old software restarted refuses again)."""
        if self.store.app_hash_at(0) is None:
            return  # a fresh store: init_chain records the version
        found = self.store.get_meta("state_machine_version")
        if found not in {str(v) for v in self.supported_versions}:
            raise IncompatibleState(
                f"{self.store.path} was written under state machine version {found or 'unknown'}"
                f", this code runs version {STATE_MACHINE_VERSION}: start a new chain (a new"
                " data directory) or migrate this one"
            )
        active = self.active_version()
        if active not in self.supported_versions:
            raise IncompatibleState(
                f"{self.store.path}: the chain runs rules version {active} (upgrade history:"
                f" query upgrade/history), this software runs version"
                f" {', '.join(map(str, sorted(self.supported_versions)))}: install software"
                " that supports it"
            )
        plan = UpgradeKeeper(KV(self.store, UPGRADE)).scheduled()
        next_height = self.store.last_commit().height + 1
        if plan is not None and plan.height <= next_height and not self.supports(plan):
            self.refuse(plan)

    def active_version(self) -> int:
        """The chain's active rules version, as of the last commit (of a fresh store, the
        version init_chain will record)."""
        found = upgrade.active_version(KV(self.store, UPGRADE))
        if found is None and self.store.app_hash_at(0) is None:
            return STATE_MACHINE_VERSION
        if found is None:
            raise IncompatibleState(f"{self.store.path} records no rules version")
        return found

    @staticmethod
    def version_in(state: Overlay) -> int:
        """The active rules version as `state` records it (a block's, after its switch)."""
        found = upgrade.active_version(KV(state, UPGRADE))
        if found is None:
            raise IncompatibleState("the state records no rules version")
        return found

    def supports(self, plan: Plan) -> bool:
        return plan.version in self.supported_versions

    def refuse(self, plan: Plan) -> None:
        """Stop here: the next block runs rules this software does not have."""
        required = UpgradeRequired(plan, self.supported_versions)
        log.critical("%s", required)
        raise required

    def switch(self, block_state: Overlay, height: int) -> bool:
        """Before the block's first transaction: a plan scheduled for this height switches
        the chain to its rules version (True), or stops this node when it does not support
        them. Read from the committed state only, so nothing in the block (a proposer's
        choice of transactions, a cancel in this very block) can skip or move the switch."""
        plan = upgrade.due(KV(block_state, UPGRADE), height)
        if plan is None:
            return False
        if not self.supports(plan):
            self.refuse(plan)
        upgrade.apply(KV(block_state, UPGRADE), plan)
        log.warning(
            "upgrade plan %r applied at height %d: the chain runs rules version %d from this"
            " block on",
            plan.name,
            height,
            plan.version,
        )
        return True
