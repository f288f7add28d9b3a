"""The consent module: grants of read, write and delegation by patients, their revocation,
the key wraps that come with them, and the one decision of who may read and write."""

from careledger.chain.modules.base import Message, Module
from careledger.chain.modules.consent import handler, messages, queries
from careledger.chain.modules.consent.decision import Decision, DecisionMemo
from careledger.chain.modules.consent.keeper import MAX_LIVE_GRANTS, MODULE, ConsentKeeper
from careledger.chain.modules.consent.messages import (
    ACTIONS,
    DEFAULT_EMERGENCY_SCOPES,
    ETREAT,
    MAX_BREAK_GLASS_SECONDS,
    MAX_GRANT_RECORDS,
    MAX_PERIOD_END,
    MAX_SEALED_BYTES,
    PURPOSES,
    emergency_threshold,
)

consent_module = Module(
    name=MODULE,
    messages={
        "grant": Message(messages.Grant.parse, handler.grant),
        "revoke": Message(messages.Revoke.parse, handler.revoke),
        "share_keys": Message(messages.ShareKeys.parse, handler.share_keys),
        "open_emergency": Message(messages.OpenEmergency.parse, handler.open_emergency),
        "break_glass": Message(messages.BreakGlass.parse, handler.break_glass),
    },
    queries={
        "grants": queries.grants,
        "grant": queries.grant,
        "granted": queries.granted,
        "readers": queries.readers,
        "party": queries.party,
        "emergency": queries.emergency,
        "break_glass": queries.break_glass,
        "break_glasses": queries.break_glasses,
    },
    init_genesis=handler.init_genesis,
)

__all__ = [
    "ACTIONS",
    "DEFAULT_EMERGENCY_SCOPES",
    "ETREAT",
    "MAX_BREAK_GLASS_SECONDS",
    "MAX_GRANT_RECORDS",
    "MAX_LIVE_GRANTS",
    "MAX_PERIOD_END",
    "MAX_SEALED_BYTES",
    "MODULE",
    "PURPOSES",
    "ConsentKeeper",
    "Decision",
    "DecisionMemo",
    "consent_module",
    "emergency_threshold",
]
