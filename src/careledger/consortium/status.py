"""`careledger node status`: what an operator asks of a node first.

Read from the machine the node runs on: CometBFT's RPC answers on loopback only, and the node
API's public `/status` gives the replication backlog (anchored blobs this node still lacks).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import ssl
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from careledger.consensus.cometbft.rpc import RpcError, sync_call
from careledger.consortium.home import NodeHome
from careledger.node.tls import dial

TIMEOUT = 3.0


@dataclass(frozen=True)
class NodeReport:
    name: str
    running: bool
    height: int | None
    app_hash: str | None
    catching_up: bool | None
    peers: list[str]  # connected peers' monikers
    validator_power: int | None  # 0: not (or no longer) a validator
    replication_backlog: int | None  # anchored blobs this node lacks
    api_url: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def node_report(home: NodeHome) -> NodeReport:
    member = home.member()
    config = home.config()
    rpc = config.rpc_url
    sync = _rpc(rpc, "status")
    net = _rpc(rpc, "net_info")
    validators = _rpc(rpc, "validators", per_page="100")
    api = _api_status(
        config.tls.local_url(dial(config.api_host), config.api_port), config.tls.client_context()
    )
    return NodeReport(
        name=member.name,
        running=is_running(home),
        height=int(sync["sync_info"]["latest_block_height"]) if sync else None,
        app_hash=str(sync["sync_info"]["latest_app_hash"]).lower() if sync else None,
        catching_up=bool(sync["sync_info"]["catching_up"]) if sync else None,
        peers=[str(p["node_info"]["moniker"]) for p in net.get("peers") or []] if net else [],
        validator_power=_power(validators, member.validator_pub_key) if validators else None,
        replication_backlog=_backlog(api),
        api_url=member.api_url,
    )


def is_running(home: NodeHome) -> bool:
    """A running `node start` holds the node's lock."""
    if not home.lock.exists():
        return False
    fd = os.open(home.lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _rpc(url: str, method: str, **params: str) -> dict[str, Any]:
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, RpcError):
        answer: dict[str, Any] = sync_call(url, method, timeout=TIMEOUT, **params)
        return answer
    return {}


def _api_status(url: str, verify: ssl.SSLContext | bool) -> dict[str, Any]:
    with contextlib.suppress(httpx.HTTPError, ValueError):
        answer = httpx.get(url + "/status", timeout=TIMEOUT, verify=verify)
        if answer.status_code == 200:
            body: dict[str, Any] = answer.json()
            return body
    return {}


def _power(validators: dict[str, Any], key_hex: str) -> int:
    encoded = base64.b64encode(bytes.fromhex(key_hex)).decode()
    for v in validators.get("validators") or []:
        if v["pub_key"]["value"] == encoded:
            return int(v["voting_power"])
    return 0


def _backlog(api: dict[str, Any]) -> int | None:
    replication = api.get("replication")
    return int(replication["backlog"]) if isinstance(replication, dict) else None
