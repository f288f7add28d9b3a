#!/usr/bin/env python3
"""Build CareLedger's node image as an OCI image layout, without a container engine.

    deploy/build_image.py --out build/image [--cometbft .bin/cometbft] [--tag 0.1.0]

Everything comes from the package registries: a Debian bookworm root filesystem from
Debian's mirrors (mmdebstrap, with Debian's Python 3.11 and tini), the project's wheel and
its dependencies from PyPI (pip, inside the root), and the CometBFT binary `make cometbft`
builds from the Go module proxy. The result is an OCI image layout (oci-layout, index.json,
blobs/sha256/...) that podman, skopeo, umoci and Docker 25+ (as a tar: `docker load`) take.

It runs as root (mmdebstrap's root mode: chroot, mounts). The layout is written by this
file's own code: two gzip layers (Debian's root; the application), a config, a manifest,
an index. The writer is deterministic: the same root filesystem and SOURCE_DATE_EPOCH give
byte-identical blobs (sorted entries, numeric owners, mtimes clamped to SOURCE_DATE_EPOCH,
gzip without a name or time). Debian's mirror moves, so two builds a week apart differ.

`--rootfs DIR` skips the root filesystem build and packs an existing one (`--keep-rootfs`
keeps the one it built): the test packs the same root twice and compares the digests.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"

SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# Debian's python3 is 3.11 on bookworm; tini is PID 1 (signals forwarded, children reaped).
PACKAGES = ("python3", "python3-venv", "ca-certificates", "tini")
# Documentation and translations are not needed to run a node (copyright files are kept).
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)

# The wheels pip downloads: binary ones for the image's Python (bookworm: CPython 3.11 on
# glibc 2.36), whatever Python runs this script. pip does not widen a --platform to the older
# manylinux tags it implies, so every tag glibc 2.36 runs is named.
MANYLINUX = [f"manylinux_2_{minor}_x86_64" for minor in range(5, 37)]
MANYLINUX += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
WHEEL_TARGET = (
    "--only-binary=:all:",
    "--implementation=cp",
    "--python-version=3.11",
    "--abi=cp311",
    "--abi=abi3",
    "--abi=none",
    *(f"--platform={tag}" for tag in MANYLINUX),
    "--platform=any",
)

NODE_HOME = "/var/lib/careledger"
NODE_USER = "careledger"
# The application layer: what install-in-root.sh adds on top of Debian's root.
APP_PATHS = ("opt/careledger", "usr/local/bin")
# Contents the engine provides at run time; an image carries only the empty folders.
RUNTIME_MOUNTS = ("dev", "proc", "sys", "run", "tmp")

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class BuildError(RuntimeError):
    """A build step failed; the message says which and why."""


# ---------------------------------------------------------------------------- inputs


def build_wheel(work: Path) -> Path:
    """The project's wheel, built from a clean copy of this checkout's sources and the portal.

    A copy, because setuptools' build/ folder in the checkout keeps files that were since
    deleted from src/ and would put them into the wheel.
    """
    if not (REPO / "src/careledger/web/static/index.html").is_file():
        raise BuildError("the portal is not built: run `make portal` first (the image serves it)")
    source = work / "source"
    shutil.copytree(
        REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    dist = work / "dist"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(source)])
    wheels = sorted(dist.glob("careledger-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one careledger wheel in {dist}, found {wheels}")
    return wheels[0]


def stage_inputs(work: Path, wheel: Path, cometbft: Path) -> Path:
    """The folder copied into the root: the wheels, cometbft, the health check, the installer.

    The wheels are downloaded here, by this machine's pip as it is set up (its index, proxy
    and certificates), for the image's Python (CPython 3.11, glibc 2.36, x86_64): the root
    then installs them with no network and trusts no certificate of the build host.
    """
    inputs = work / "careledger-inputs"
    wheels = inputs / "wheels"
    wheels.mkdir(parents=True)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "-d",
            str(wheels),
            *WHEEL_TARGET,
            str(wheel),
        ]
    )
    shutil.copy2(cometbft, inputs / "cometbft")
    shutil.copy2(DEPLOY / "healthcheck.py", inputs / "healthcheck.py")
    shutil.copy2(DEPLOY / "install-in-root.sh", inputs / "install-in-root.sh")
    return inputs


def make_rootfs(root: Path, inputs: Path, epoch: int, mirrors: tuple[str, ...]) -> None:
    """Debian's root from the mirrors with the application installed (mmdebstrap, as root)."""
    command = ["mmdebstrap", "--mode=root", "--variant=minbase", "--format=directory", "-q"]
    command.append("--include=" + ",".join(PACKAGES))
    command += [f"--dpkgopt={option}" for option in DPKG_EXCLUDES]
    command += [
        f"--customize-hook=copy-in {inputs} /tmp",
        f'--customize-hook=chroot "$1" sh /tmp/{inputs.name}/install-in-root.sh /tmp/{inputs.name}',
        # The build host's name and resolver must not end up in the image.
        '--customize-hook=: > "$1/etc/resolv.conf"',
        '--customize-hook=echo careledger > "$1/etc/hostname"',
    ]
    command += [SUITE, str(root), *mirrors]
    run(command, env={**os.environ, "SOURCE_DATE_EPOCH": str(epoch)})


def run(command: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(
            f"{command[0]} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )


# ---------------------------------------------------------------------------- layers


def in_app_layer(relative: str) -> bool:
    return any(relative == path or relative.startswith(path + "/") for path in APP_PATHS)


def walk(root: Path) -> Iterator[str]:
    """Paths under root relative to it, sorted (the order of the tar), parents first."""
    for directory, subdirectories, files in os.walk(root):
        subdirectories.sort()
        relative_dir = os.path.relpath(directory, root)
        prefix = "" if relative_dir == "." else relative_dir + "/"
        if prefix and prefix.rstrip("/") in RUNTIME_MOUNTS:
            subdirectories.clear()
            continue
        for name in sorted(
            files + [d for d in subdirectories if os.path.islink(Path(directory, d))]
        ):
            yield prefix + name
        for name in subdirectories:
            if not os.path.islink(Path(directory, name)):
                yield prefix + name


def tar_entry(
    root: Path, relative: str, epoch: int, links: dict[tuple[int, int], str]
) -> tuple[tarfile.TarInfo, Path | None] | None:
    """The tar header of one path (numeric owners, clamped mtime), and the file to read."""
    path = root / relative
    status = path.lstat()
    info = tarfile.TarInfo(relative)
    info.mode = stat.S_IMODE(status.st_mode)
    info.uid, info.gid = status.st_uid, status.st_gid
    info.uname = info.gname = ""
    info.mtime = min(int(status.st_mtime), epoch)
    if stat.S_ISDIR(status.st_mode):
        info.type = tarfile.DIRTYPE
        return info, None
    if stat.S_ISLNK(status.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
        return info, None
    if not stat.S_ISREG(status.st_mode):
        return None  # device nodes, sockets and fifos: the engine makes /dev, nothing else has any
    key = (status.st_dev, status.st_ino)
    if status.st_nlink > 1 and key in links:
        info.type, info.linkname = tarfile.LNKTYPE, links[key]
        return info, None
    links[key] = relative
    info.size = status.st_size
    return info, path


class HashingWriter(io.RawIOBase):
    """Passes bytes on to a file while hashing them and counting them."""

    def __init__(self, target: IO[bytes] | gzip.GzipFile) -> None:
        self.target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.target.write(chunk)
        self.sha256.update(chunk)
        self.size += len(chunk)
        return len(chunk)


@dataclasses.dataclass(frozen=True)
class Layer:
    digest: str  # sha256 of the gzip blob (the manifest's)
    size: int
    diff_id: str  # sha256 of the uncompressed tar (the config's)


def write_layer(blobs: Path, root: Path, paths: list[str], epoch: int, level: int) -> Layer:
    """One tar+gzip layer of the given paths, stored in blobs/ under its digest."""
    links: dict[tuple[int, int], str] = {}
    with tempfile.NamedTemporaryFile(dir=blobs, delete=False) as temporary:
        compressed = HashingWriter(temporary)
        with gzip.GzipFile("", "wb", level, compressed, mtime=0) as zipped:
            uncompressed = HashingWriter(zipped)
            with tarfile.open(fileobj=uncompressed, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for relative in paths:
                    entry = tar_entry(root, relative, epoch, links)
                    if entry is None:
                        continue
                    info, source = entry
                    if source is None:
                        tar.addfile(info)
                    else:
                        with source.open("rb") as content:
                            tar.addfile(info, content)
    digest = "sha256:" + compressed.sha256.hexdigest()
    os.chmod(temporary.name, 0o644)
    os.replace(temporary.name, blobs / compressed.sha256.hexdigest())
    return Layer(digest, compressed.size, "sha256:" + uncompressed.sha256.hexdigest())


# ---------------------------------------------------------------------------- layout


def image_config(layers: list[Layer], epoch: int, version: str) -> dict[str, Any]:
    created = datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": f"{NODE_USER}:{NODE_USER}",
            "Env": [
                "PATH=/opt/careledger/bin:/usr/local/bin:/usr/bin:/bin",
                "LANG=C.UTF-8",
                "PYTHONUNBUFFERED=1",
                "PYTHONDONTWRITEBYTECODE=1",
                "COMETBFT_BIN=/usr/local/bin/cometbft",
            ],
            "Entrypoint": [
                "/usr/bin/tini",
                "--",
                "careledger",
                "node",
                "start",
                "--data-dir",
                NODE_HOME,
            ],
            "Cmd": ["--genesis", f"{NODE_HOME}/genesis.json"],
            "WorkingDir": NODE_HOME,
            "ExposedPorts": {"26656/tcp": {}, "26658/tcp": {}},
            "Volumes": {NODE_HOME: {}},
            "StopSignal": "SIGTERM",
            # Docker reads this extension of the config (OCI engines ignore it).
            "Healthcheck": {
                "Test": ["CMD", "/usr/local/bin/careledger-healthcheck"],
                "Interval": 30_000_000_000,
                "Timeout": 10_000_000_000,
                "StartPeriod": 60_000_000_000,
                "Retries": 3,
            },
            "Labels": labels(version, created),
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [
            {"created": created, "created_by": f"mmdebstrap {SUITE} minbase + Debian packages"},
            {"created": created, "created_by": "deploy/install-in-root.sh (careledger wheel)"},
        ],
    }


def labels(version: str, created: str) -> dict[str, str]:
    return {
        "org.opencontainers.image.title": "careledger",
        "org.opencontainers.image.description": "One CareLedger consortium node",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.licenses": "see the package",
    }


def write_blob(blobs: Path, document: dict[str, Any]) -> tuple[str, int]:
    """A JSON blob in canonical form (sorted keys, no spaces): its digest and size."""
    raw = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(raw).hexdigest()
    (blobs / digest).write_bytes(raw)
    return "sha256:" + digest, len(raw)


def write_layout(root: Path, out: Path, epoch: int, version: str, level: int) -> str:
    """The OCI image layout of a root filesystem in out/ (made anew); the manifest's digest.

    Written beside out/ and renamed into place at the end: a failed build leaves no
    half-written layout where a complete one is expected.
    """
    staging = out.with_name(f".{out.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    digest = write_layout_into(root, staging, epoch, version, level)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return digest


def write_layout_into(root: Path, out: Path, epoch: int, version: str, level: int) -> str:
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    every = list(walk(root))
    layers = [
        write_layer(blobs, root, [p for p in every if not in_app_layer(p)], epoch, level),
        write_layer(blobs, root, [p for p in every if in_app_layer(p)], epoch, level),
    ]
    config_digest, config_size = write_blob(blobs, image_config(layers, epoch, version))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [
            {"mediaType": MEDIA_LAYER, "digest": layer.digest, "size": layer.size}
            for layer in layers
        ],
    }
    manifest_digest, manifest_size = write_blob(blobs, manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"org.opencontainers.image.ref.name": version},
            }
        ],
    }
    (out / "index.json").write_text(json.dumps(index, sort_keys=True, indent=2) + "\n")
    (out / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return manifest_digest


# ---------------------------------------------------------------------------- command


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH, else the time of the checkout's last commit (same commit, same time)."""
    if "SOURCE_DATE_EPOCH" in os.environ:
        return int(os.environ["SOURCE_DATE_EPOCH"])
    result = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%ct"],
        capture_output=True,
        text=True,
        check=False,
    )
    return int(result.stdout.strip()) if result.returncode == 0 and result.stdout.strip() else 0


def project_version() -> str:
    for line in (REPO / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise BuildError("no version in pyproject.toml")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="the OCI layout folder")
    target.add_argument("--wheel-to", type=Path, help="only build the wheel, into this folder")
    parser.add_argument("--cometbft", type=Path, default=REPO / ".bin" / "cometbft")
    parser.add_argument("--wheel", type=Path, help="a built careledger wheel (default: build)")
    parser.add_argument("--tag", help="the image's ref name (default: the package version)")
    parser.add_argument("--mirror", action="append", help="an apt source line (repeatable)")
    parser.add_argument("--rootfs", type=Path, help="pack this root instead of building one")
    parser.add_argument("--keep-rootfs", type=Path, help="keep the built root here")
    parser.add_argument(
        "--gzip-level",
        type=int,
        choices=range(1, 10),
        default=6,
        help="layer compression, 1 (fast, larger) to 9 (default 6)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    epoch = source_date_epoch()
    version = arguments.tag or project_version()
    try:
        if arguments.wheel_to is not None:
            return wheel_only(arguments.wheel_to)
        if arguments.rootfs is not None:
            digest = write_layout(
                arguments.rootfs, arguments.out, epoch, version, arguments.gzip_level
            )
        else:
            digest = build(arguments, epoch, version)
    except BuildError as error:
        print(f"build_image: {error}", file=sys.stderr)
        return 1
    print(f"{arguments.out} {version} manifest {digest}")
    return 0


def wheel_only(folder: Path) -> int:
    """The wheel deploy/Dockerfile installs (`make wheel`), built as the image build does."""
    with tempfile.TemporaryDirectory(prefix="careledger-wheel-") as scratch:
        wheel = build_wheel(Path(scratch))
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("careledger-*.whl"):
            stale.unlink()  # the Dockerfile copies careledger-*.whl: exactly one must be there
        shutil.copy2(wheel, folder / wheel.name)
    print(folder / wheel.name)
    return 0


def build(arguments: argparse.Namespace, epoch: int, version: str) -> str:
    if not os.access(arguments.cometbft, os.X_OK):
        raise BuildError(f"no CometBFT binary at {arguments.cometbft}: run `make cometbft`")
    if os.geteuid() != 0:
        raise BuildError("run as root: mmdebstrap's root mode needs chroot and mounts")
    if shutil.which("mmdebstrap") is None:
        raise BuildError("mmdebstrap is not installed: apt-get install mmdebstrap")
    with tempfile.TemporaryDirectory(prefix="careledger-image-") as scratch:
        work = Path(scratch)
        with step("wheel"):
            wheel = arguments.wheel or build_wheel(work)
        with step("wheels of the dependencies (PyPI)"):
            inputs = stage_inputs(work, wheel, arguments.cometbft)
        root = arguments.keep_rootfs or work / "rootfs"
        if root.exists():
            shutil.rmtree(root)
        with step("root filesystem (Debian's mirror, mmdebstrap)"):
            make_rootfs(root, inputs, epoch, tuple(arguments.mirror or MIRRORS))
        with step("OCI layout"):
            return write_layout(root, arguments.out, epoch, version, arguments.gzip_level)


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """Say on stderr what is being built and how long it took (a build takes minutes)."""
    started = time.monotonic()
    print(f"build_image: {what}...", file=sys.stderr, flush=True)
    yield
    print(f"build_image: {what}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
