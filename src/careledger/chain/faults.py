"""Local faults: failures of this node (disk, memory, a bug), never a rule of the chain."""

from __future__ import annotations

import logging

log = logging.getLogger("careledger.chain.app")


class LocalFault(RuntimeError):
    """Executing or committing a block failed for a reason that is not a rule of the chain.

    The block is not committed. The node must stop (the drivers do) and be restarted once
    the cause is fixed; the block is then executed again from the block store.
    """


def local_fault(where: str, exc: Exception) -> LocalFault:
    """Log the fault as the reason the node stops, and the exception to raise for it."""
    reason = f"{where}: {type(exc).__name__}: {exc}"
    log.critical(
        "%s. This is a local fault (disk, memory or a bug), not a rule of the chain: the node"
        " stops here to avoid diverging from the other validators; nothing of this block is"
        " committed. Fix the cause and restart: the block is executed again.",
        reason,
        exc_info=exc,
    )
    return LocalFault(reason)
