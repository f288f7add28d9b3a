#!/usr/bin/env python3
"""The image's health check: exit 0 when the node API answers GET /status with 200, else 1.

Installed as /usr/local/bin/careledger-healthcheck. The image has no curl (it is a minimal
Debian root), so this uses the standard library only. Where the API listens comes from the
node home's node.json (what `careledger node start` wrote: api_host, api_port, tls), so a
node started with `--api 10.1.0.5:26658` is checked there, over HTTPS when it serves TLS (the
certificate verified against the members' CA bundle the node was given; not its host name,
since the check dials the listening address, which the certificate need not name).
CARELEDGER_HEALTH_URL overrides the address (plain system verification for https then).
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

NODE_HOME = "/var/lib/careledger"
DEFAULT_URL = "http://127.0.0.1:26658/status"
# A node listening on every address is reached on loopback.
ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def status_target() -> tuple[str, ssl.SSLContext | None]:
    """The /status URL to ask, and the TLS context for it (None: plain HTTP or the default)."""
    if "CARELEDGER_HEALTH_URL" in os.environ:
        return os.environ["CARELEDGER_HEALTH_URL"], None
    config = Path(os.environ.get("CARELEDGER_HOME", NODE_HOME)) / "node.json"
    try:
        settings = json.loads(config.read_bytes())
        host, port = str(settings["api_host"]), int(settings["api_port"])
        tls = dict(settings.get("tls") or {})
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_URL, None  # not started yet, or not a node home: the default port
    host = ANY_ADDRESS.get(host, host)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if not tls.get("cert"):
        return f"http://{address}/status", None
    context = ssl.create_default_context(cafile=tls.get("ca"))
    context.check_hostname = False  # the chain is still verified (CERT_REQUIRED)
    return f"https://{address}/status", context


def main() -> int:
    try:
        url, context = status_target()
    except (OSError, ssl.SSLError) as error:  # an unreadable CA bundle
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            healthy = response.status == 200
    except (urllib.error.URLError, OSError) as error:
        print(f"unhealthy: {url}: {error}", file=sys.stderr)
        return 1
    if not healthy:
        print(f"unhealthy: {url} answered {response.status}", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
