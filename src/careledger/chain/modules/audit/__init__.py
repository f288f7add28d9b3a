"""The audit module: access entries batched and signed by the serving node, the patient's
access log (newest first, break-glass alerts on top), and the alerts themselves."""

from careledger.chain.modules.audit import handler, messages, queries
from careledger.chain.modules.audit.entries import (
    ALLOWED_OUTCOMES,
    MAX_BATCH_ENTRIES,
    OUTCOMES,
    PURPOSE_CODES,
    AccessEntry,
    BadBatch,
    decode_batch,
    encode_batch,
    entries_fitting,
    fitting_batch,
)
from careledger.chain.modules.audit.events import AccessBatchRecorded, BreakGlassAlert
from careledger.chain.modules.audit.keeper import (
    DEFAULT_LOG_LIMIT,
    MAX_LOG_LIMIT,
    MODULE,
    AuditKeeper,
    LogPage,
    TxPosition,
)
from careledger.chain.modules.base import Message, Module

audit_module = Module(
    name=MODULE,
    messages={"record_batch": Message(messages.RecordBatch.parse, handler.record_batch)},
    queries={"log": queries.log, "batch": queries.batch, "last_seq": queries.last_seq},
    init_genesis=handler.init_genesis,
)

__all__ = [
    "ALLOWED_OUTCOMES",
    "DEFAULT_LOG_LIMIT",
    "MAX_BATCH_ENTRIES",
    "MAX_LOG_LIMIT",
    "MODULE",
    "OUTCOMES",
    "PURPOSE_CODES",
    "AccessBatchRecorded",
    "AccessEntry",
    "AuditKeeper",
    "BadBatch",
    "BreakGlassAlert",
    "LogPage",
    "TxPosition",
    "audit_module",
    "decode_batch",
    "encode_batch",
    "entries_fitting",
    "fitting_batch",
]
