#!/usr/bin/env python3
"""The image's health check: exit 0 when the node API answers GET /status with 200, else 1.

Installed as /usr/local/bin/careledger-healthcheck. The image has no curl (it is a minimal
Debian root), so this uses the standard library only. Where the API listens comes from the
node home's node.json (what `careledger node start` wrote: api_host, api_port), so a node
started with `--api 10.1.0.5:26658` is checked there; CARELEDGER_HEALTH_URL overrides it.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

NODE_HOME = "/var/lib/careledger"
DEFAULT_URL = "http://127.0.0.1:26658/status"
# A node listening on every address is reached on loopback.
ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def status_url() -> str:
    if "CARELEDGER_HEALTH_URL" in os.environ:
        return os.environ["CARELEDGER_HEALTH_URL"]
    config = Path(os.environ.get("CARELEDGER_HOME", NODE_HOME)) / "node.json"
    try:
        settings = json.loads(config.read_bytes())
        host, port = str(settings["api_host"]), int(settings["api_port"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_URL  # not started yet, or not a node home: the default port
    host = ANY_ADDRESS.get(host, host)
    return f"http://[{host}]:{port}/status" if ":" in host else f"http://{host}:{port}/status"


def main() -> int:
    url = status_url()
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            healthy = response.status == 200
    except (urllib.error.URLError, OSError) as error:
        print(f"unhealthy: {url}: {error}", file=sys.stderr)
        return 1
    if not healthy:
        print(f"unhealthy: {url} answered {response.status}", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
