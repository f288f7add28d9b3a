#!/bin/sh
# Runs inside the image's root filesystem (chroot) while it is built: by deploy/build_image.py
# (mmdebstrap's customize hook) and by deploy/Dockerfile (RUN). $1 is the folder holding the
# inputs: wheels/ (careledger-*.whl and every dependency's wheel, downloaded from PyPI before,
# outside the root), cometbft, healthcheck.py. It needs no network: pip installs from wheels/.
set -eu
inputs="$1"

# The package and its dependencies (PyPI wheels) in a virtual environment of Debian's Python.
python3 -m venv /opt/careledger
/opt/careledger/bin/pip install --no-cache-dir --no-compile --disable-pip-version-check -q \
    --no-index --find-links "$inputs/wheels" "$inputs"/wheels/careledger-*.whl
# pip and setuptools are not needed at run time: fewer files, nothing to install with.
/opt/careledger/bin/pip uninstall -q -y pip setuptools
# Byte code compiled now, with hashes instead of timestamps: the same files give the same
# .pyc (a reproducible layer), and the read-only image never has to write any at run time.
/opt/careledger/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
    /opt/careledger/lib >/dev/null
ln -s /opt/careledger/bin/careledger /usr/local/bin/careledger

install -m 0755 "$inputs/cometbft" /usr/local/bin/cometbft
install -m 0755 "$inputs/healthcheck.py" /usr/local/bin/careledger-healthcheck

# The node runs as an unprivileged user with a fixed id, so a bind-mounted node home can be
# given to it by number (chown 10001:10001) on the host.
groupadd --system --gid 10001 careledger
useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/careledger --no-create-home \
    --shell /usr/sbin/nologin careledger
install -d -o 10001 -g 10001 -m 0700 /var/lib/careledger
rm -rf /root/.cache
