"""The records module: anchors of encrypted record versions, scope keys and erasure."""

from careledger.chain.modules.base import Message, Module
from careledger.chain.modules.records import handler, messages, queries
from careledger.chain.modules.records.keeper import MODULE, RecordsKeeper
from careledger.chain.modules.records.messages import scope_key_payload

records_module = Module(
    name=MODULE,
    messages={
        "anchor": Message(messages.Anchor.parse, handler.anchor),
        "anchor_batch": Message(messages.AnchorBatch.parse, handler.anchor_batch),
        "publish_scope_key": Message(messages.PublishScopeKey.parse, handler.publish_scope_key),
        "erase": Message(messages.Erase.parse, handler.erase),
    },
    queries={
        "versions": queries.versions,
        "records": queries.records,
        "blob": queries.blob,
        "blobs": queries.blobs,
        "scope_keys": queries.scope_keys,
        "read_access": queries.read_access,
    },
    init_genesis=handler.init_genesis,
)

__all__ = ["MODULE", "RecordsKeeper", "records_module", "scope_key_payload"]
