"""The node side of the audit: every read decision journaled before the read is served
(`journal.py`), turned into access entries with a signed receipt (`observer.py`), and
committed on chain in signed batches (`batcher.py`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from starlette.routing import BaseRoute

from careledger.crypto.keyfile import KeyFile
from careledger.node.audit.batcher import AuditBatcher, BatchDriver, interval_from_env
from careledger.node.audit.journal import JOURNAL_FILE, AuditJournal
from careledger.node.audit.observer import AuditObserver
from careledger.node.audit.routes import AuditRoutes

log = logging.getLogger(__name__)


@dataclass(eq=False)
class NodeAudit:
    """A node's audit: its journal, the observer the consent guard awaits, and the batcher
    (None when the node has no key of its own, or batching is off)."""

    journal: AuditJournal
    observer: AuditObserver
    batcher: AuditBatcher | None
    why_not_batching: str = ""

    def routes(self) -> list[BaseRoute]:
        return AuditRoutes(self.journal).routes()

    def close(self) -> None:
        self.journal.close()


def node_audit(
    root: Path, key_path: Path, chain_id: str, driver: BatchDriver, interval: float | None = None
) -> NodeAudit:
    """The audit of the node whose data directory is `root`: journal `root/audit.sqlite`,
    the node's key `key_path` (DataDir.node_key) if there is one; `interval` (None:
    CARELEDGER_AUDIT_INTERVAL, default 0.25 s; 0: no batching)."""
    journal = AuditJournal(root / JOURNAL_FILE)
    node_key = KeyFile.load(key_path) if key_path.exists() else None
    seconds = interval_from_env() if interval is None else interval
    batcher = None
    why = ""
    if node_key is None:
        why = f"no node key ({key_path}): reads are refused (503), none could be committed"
    elif seconds == 0:
        why = "batching is off (CARELEDGER_AUDIT_INTERVAL=0): reads are journaled only"
    else:
        batcher = AuditBatcher(journal, driver, node_key, chain_id, seconds)
    observer = AuditObserver(journal, chain_id, node_key, chain=driver)
    return NodeAudit(journal, observer, batcher, why)


@contextlib.asynccontextmanager
async def not_batching(why: str) -> AsyncIterator[None]:
    """What runs instead of the batcher: said once, at start."""
    log.warning("the audit batcher does not run: %s", why)
    yield
