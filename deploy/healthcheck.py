#!/usr/bin/env python3
"""The image's health check: exit 0 when the node API answers GET /status with 200, else 1.

Installed as /usr/local/bin/careledger-healthcheck. The image has no curl (it is a minimal
Debian root), so this uses the standard library only. CARELEDGER_HEALTH_URL overrides the
address for a node whose API listens elsewhere (default: the node API's port on loopback).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:26658/status"


def main() -> int:
    url = os.environ.get("CARELEDGER_HEALTH_URL", DEFAULT_URL)
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
