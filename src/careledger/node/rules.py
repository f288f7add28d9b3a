"""Which rules versions this node process executes, and the one test hook that extends them.

There is one software version, so a test of a planned upgrade must stand in for "the new
software" honestly: a process started with CARELEDGER_TEST_ONLY_ALSO_RULES_VERSION set to
exactly STATE_MACHINE_VERSION + 1 declares that it also executes that next version, whose
rules are this version's (nothing else changes). Any other value refuses to start.

Why it cannot hurt a real chain (docs/security.md, docs/chain.md): it changes only what
this one process is willing to run after a planned upgrade's height. A node that sets it on
a chain whose members upgraded to real new rules executes the old rules under the new
version number, computes other app hashes than the members' new software, and is left
behind by consensus (a validator's votes for another app hash do not count; a full node
stops on the app hash mismatch): it forks only itself off, as running any modified software
would. It cannot schedule an upgrade (that takes two thirds of the members' votes on chain),
nor skip one. The process logs a warning whenever the hook is in effect.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from careledger.chain.app import STATE_MACHINE_VERSION, SUPPORTED_RULES_VERSIONS

log = logging.getLogger(__name__)

TEST_RULES_ENV = "CARELEDGER_TEST_ONLY_ALSO_RULES_VERSION"


class BadRulesHook(ValueError):
    """The test hook is set to something other than the next rules version."""


def supported_rules_versions(environ: Mapping[str, str] = os.environ) -> frozenset[int]:
    """The rules versions this process executes: SUPPORTED_RULES_VERSIONS, plus the next
    version (rules unchanged) when the test hook asks for it."""
    value = environ.get(TEST_RULES_ENV, "")
    if not value:
        return SUPPORTED_RULES_VERSIONS
    following = STATE_MACHINE_VERSION + 1
    if value != str(following):
        raise BadRulesHook(
            f"{TEST_RULES_ENV}={value[:20]!r}: this test hook only simulates the next rules"
            f" version, {following}; unset it on a real node"
        )
    log.warning(
        "TEST HOOK %s=%d: this process claims rules version %d, whose rules are version %d's."
        " Never set this on a real node: after a real upgrade it would compute other app"
        " hashes than the members' new software and fall off the chain.",
        TEST_RULES_ENV,
        following,
        following,
        STATE_MACHINE_VERSION,
    )
    return SUPPORTED_RULES_VERSIONS | {following}
