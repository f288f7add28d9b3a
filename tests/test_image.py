"""The node image: built from the registries only (deploy/build_image.py), checked as an OCI
layout by this file's own reading of the spec, unpacked by umoci (which checks every digest
again) and run by runc, a real OCI runtime, in its own network namespace with no network.

Needs root (mmdebstrap's root mode, runc), Debian's mmdebstrap, umoci and runc (`make
image-tools`), the built portal and CometBFT; skips with the reason otherwise. The build
takes a minute or two (Debian's mirror, PyPI), once for the whole module.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "deploy" / "build_image.py"
NODE_HOME = "/var/lib/careledger"
NODE_UID = 10001
# Not the image's default API port (26658): the health check must find it in node.json.
API_PORT = 26700

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def missing_requirement() -> str | None:
    if os.geteuid() != 0:
        return "the image is built with mmdebstrap's root mode and run by runc: needs root"
    for tool in ("mmdebstrap", "umoci", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make image-tools: Debian's mmdebstrap umoci runc)"
    if not (REPO / "src/careledger/web/static/index.html").is_file():
        return "the portal is not built (make portal): the image carries it"
    return None


def cometbft_path() -> Path:
    return Path(os.environ.get("COMETBFT_BIN") or REPO / ".bin" / "cometbft")


@dataclass(frozen=True)
class BuiltImage:
    layout: Path
    rootfs: Path  # the root the layout was packed from (kept by --keep-rootfs)
    work: Path


# One time for every build of the module (the default, the last commit's time, moves when a
# commit lands while the tests run).
SOURCE_DATE_EPOCH = "1767225600"


def run_build(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(BUILD_SCRIPT), *map(str, arguments)]
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
    return subprocess.run(command, capture_output=True, text=True, check=False, env=env)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltImage]:
    reason = missing_requirement()
    if reason is not None:
        pytest.skip(reason)
    if not os.access(cometbft_path(), os.X_OK):
        pytest.skip(f"no CometBFT binary at {cometbft_path()} (make cometbft)")
    work = tmp_path_factory.mktemp("image")
    built = run_build(
        "--out",
        work / "layout",
        "--keep-rootfs",
        work / "rootfs",
        "--cometbft",
        cometbft_path(),
        # Fast: the level changes the sizes, not the format.
        "--gzip-level",
        "1",
    )
    assert built.returncode == 0, built.stderr
    yield BuiltImage(work / "layout", work / "rootfs", work)
    # A root, a bundle and a layout: about a gigabyte, not kept with pytest's last runs.
    shutil.rmtree(work)


# ------------------------------------------------------------------ the layout, read here


def read_json(layout: Path, name: str) -> Any:
    return json.loads((layout / name).read_bytes())


def blob(layout: Path, descriptor: dict[str, Any]) -> bytes:
    """A descriptor's blob, after checking its size and digest against the descriptor."""
    algorithm, _, hexdigest = str(descriptor["digest"]).partition(":")
    assert algorithm == "sha256"
    raw = (layout / "blobs" / "sha256" / hexdigest).read_bytes()
    assert len(raw) == descriptor["size"], descriptor
    assert hashlib.sha256(raw).hexdigest() == hexdigest, descriptor
    return raw


def manifest_of(layout: Path) -> dict[str, Any]:
    index = read_json(layout, "index.json")
    assert index["schemaVersion"] == 2
    [entry] = index["manifests"]
    assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    manifest: dict[str, Any] = json.loads(blob(layout, entry))
    return manifest


def config_of(layout: Path) -> dict[str, Any]:
    manifest = manifest_of(layout)
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    config: dict[str, Any] = json.loads(blob(layout, manifest["config"]))
    return config


def test_layout_blobs_match_their_digests_and_sizes(image: BuiltImage) -> None:
    assert read_json(image.layout, "oci-layout") == {"imageLayoutVersion": "1.0.0"}
    manifest = manifest_of(image.layout)
    config = config_of(image.layout)
    diff_ids = []
    for layer in manifest["layers"]:
        assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
        uncompressed = gzip.decompress(blob(image.layout, layer))
        diff_ids.append("sha256:" + hashlib.sha256(uncompressed).hexdigest())
    # The config names each layer by its uncompressed digest, in order.
    assert config["rootfs"] == {"type": "layers", "diff_ids": diff_ids}
    assert len(diff_ids) == 2


def test_config_runs_the_node_as_an_unprivileged_user(image: BuiltImage) -> None:
    settings = config_of(image.layout)["config"]
    assert settings["Entrypoint"][2:5] == ["careledger", "node", "start"]
    assert settings["Entrypoint"][-2:] == ["--data-dir", NODE_HOME]
    assert settings["User"] == "careledger:careledger"
    assert settings["ExposedPorts"] == {"26656/tcp": {}, "26658/tcp": {}}
    assert settings["Volumes"] == {NODE_HOME: {}}
    assert settings["Healthcheck"]["Test"] == ["CMD", "/usr/local/bin/careledger-healthcheck"]
    passwd = (image.rootfs / "etc/passwd").read_text().splitlines()
    [entry] = [line for line in passwd if line.startswith("careledger:")]
    assert entry.split(":")[2:4] == [str(NODE_UID), str(NODE_UID)]


def layer_members(layout: Path) -> dict[str, tarfile.TarInfo]:
    """Every path of every layer, the later layer's entry winning (as an unpacker does)."""
    members: dict[str, tarfile.TarInfo] = {}
    for layer in manifest_of(layout)["layers"]:
        path = layout / "blobs" / "sha256" / layer["digest"].split(":")[1]
        with tarfile.open(path, "r:gz") as tar:
            members.update({member.name: member for member in tar.getmembers()})
    return members


def test_image_carries_no_keys_and_nothing_of_the_build_host(image: BuiltImage) -> None:
    members = layer_members(image.layout)
    home = members["var/lib/careledger"]
    assert (home.uid, home.gid, home.mode) == (NODE_UID, NODE_UID, 0o700)
    # Keys are made by `node init` in the operator's volume, never baked into the image.
    assert [name for name in members if name.startswith("var/lib/careledger/")] == []
    assert members["etc/resolv.conf"].size == 0
    assert not [name for name in members if name.startswith(("tmp/", "root/.cache"))]
    assert "usr/local/bin/cometbft" in members and "opt/careledger/bin/careledger" in members


def test_packing_the_same_root_twice_gives_the_same_image(image: BuiltImage) -> None:
    again = image.work / "layout-again"
    packed = run_build("--out", again, "--rootfs", image.rootfs, "--gzip-level", "1")
    assert packed.returncode == 0, packed.stderr
    assert read_json(again, "index.json") == read_json(image.layout, "index.json")
    assert sorted(os.listdir(again / "blobs/sha256")) == sorted(
        os.listdir(image.layout / "blobs/sha256")
    )


def test_a_missing_cometbft_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "layout"
    refused = run_build("--out", out, "--cometbft", tmp_path / "no-such-cometbft")
    assert refused.returncode == 1
    assert "no CometBFT binary" in refused.stderr
    assert not out.exists() and os.listdir(tmp_path) == []


def dockerfile_instructions() -> dict[str, str]:
    """The final stage's instructions of deploy/Dockerfile (continuations joined), by name."""
    text = (REPO / "deploy" / "Dockerfile").read_text().replace("\\\n", " ")
    final = text.split("\nFROM ")[-1]
    instructions: dict[str, str] = {}
    for line in final.splitlines()[1:]:
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, rest = line.strip().partition(" ")
            instructions[name] = " ".join(rest.split())
    return instructions


def test_dockerfile_and_the_engineless_build_make_the_same_image_config() -> None:
    """The two recipes must not drift: what an engine builds from deploy/Dockerfile runs
    like the layout this file tests (entrypoint, command, user, env, ports, volume, check)."""
    spec = importlib.util.spec_from_file_location("build_image", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    build_image = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = build_image  # its dataclasses look their module up
    spec.loader.exec_module(build_image)
    config = build_image.image_config([], 0, "0")["config"]
    docker = dockerfile_instructions()
    assert json.loads(docker["ENTRYPOINT"]) == config["Entrypoint"]
    assert json.loads(docker["CMD"]) == config["Cmd"]
    assert docker["USER"] == config["User"]
    assert docker["WORKDIR"] == config["WorkingDir"]
    assert json.loads(docker["VOLUME"]) == list(config["Volumes"])
    assert [f"{port}/tcp" for port in docker["EXPOSE"].split()] == list(config["ExposedPorts"])
    assert docker["STOPSIGNAL"] == config["StopSignal"]
    assert docker["ENV"].split() == config["Env"]
    check = docker["HEALTHCHECK"].split(" CMD ", 1)[1]
    assert ["CMD", *json.loads(check)] == config["Healthcheck"]["Test"]
    # Both install with the same script (the last RUN is the final stage's install).
    assert "install-in-root.sh" in docker["RUN"]


# ------------------------------------------------------------------ run by runc


class Container:
    """The image unpacked by umoci into an OCI bundle, run by runc with a host folder as the
    node's volume. runc gives every run its own network namespace holding only loopback."""

    def __init__(self, layout: Path, work: Path) -> None:
        self.bundle = work / "bundle"
        self.volume = work / "volume"
        self.volume.mkdir()
        os.chown(self.volume, NODE_UID, NODE_UID)
        self.volume.chmod(0o700)
        unpack = ["umoci", "--log", "error", "unpack", "--image", f"{layout}:0.1.0"]
        result = subprocess.run([*unpack, str(self.bundle)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr  # umoci checks every digest itself
        self.spec = json.loads((self.bundle / "config.json").read_text())

    def write_spec(self, args: list[str] | None) -> None:
        spec = json.loads(json.dumps(self.spec))
        process = spec["process"]
        process["terminal"] = False
        if args is not None:
            process["args"] = args
        mount = {"destination": NODE_HOME, "type": "bind", "source": str(self.volume)}
        spec["mounts"].append({**mount, "options": ["rbind", "rw"]})
        # The image's root read-only (docker run --read-only --tmpfs /tmp): the node writes
        # only to its volume, so a compromised process cannot change the installed code.
        spec["root"]["readonly"] = True
        tmp = {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}
        spec["mounts"].append({**tmp, "options": ["nosuid", "nodev", "mode=1777"]})
        (self.bundle / "config.json").write_text(json.dumps(spec))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """One command in a new container from the image (the image's user, env, cwd)."""
        self.write_spec(list(args))
        name = f"careledger-test-{uuid.uuid4().hex[:12]}"
        try:
            return subprocess.run(
                ["runc", "run", "--bundle", str(self.bundle), name],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=300,
            )
        finally:
            subprocess.run(["runc", "delete", "--force", name], capture_output=True)


@pytest.fixture(scope="module")
def container(image: BuiltImage) -> Container:
    return Container(image.layout, image.work)


def test_a_tampered_layer_is_refused_by_the_unpacker(image: BuiltImage, tmp_path: Path) -> None:
    """The layout is content-addressed: a layer changed after the build (on a mirror, in
    transit), here a valid gzip of a valid tar whose health check dials another address,
    no longer matches the digest its manifest names, and umoci refuses it."""
    tampered = tmp_path / "layout"
    shutil.copytree(image.layout, tampered, copy_function=os.link)
    app_layer = manifest_of(tampered)["layers"][-1]["digest"].split(":")[1]
    path = tampered / "blobs" / "sha256" / app_layer
    content = bytearray(gzip.decompress(path.read_bytes()))
    with tarfile.open(fileobj=io.BytesIO(content)) as tar:
        script = tar.getmember("usr/local/bin/careledger-healthcheck")
    start = content.index(b"127.0.0.1", script.offset_data)
    content[start : start + 9] = b"127.6.6.6"
    path.unlink()  # a hard link to the built blob: replace it, do not write through it
    path.write_bytes(gzip.compress(bytes(content), compresslevel=1, mtime=0))
    unpack = ["umoci", "--log", "error", "unpack", "--image", f"{tampered}:0.1.0"]
    refused = subprocess.run([*unpack, str(tmp_path / "bundle")], capture_output=True, text=True)
    assert refused.returncode != 0
    assert "digest mismatch" in refused.stderr, refused.stderr


def test_unpacked_image_runs_careledger_as_the_node_user(container: Container) -> None:
    ran = container.run("careledger", "--help")
    assert ran.returncode == 0, ran.stderr
    assert "careledger" in ran.stdout.lower() and "verify" in ran.stdout
    who = container.run("id", "-u")
    assert who.stdout.strip() == str(NODE_UID)


def test_container_has_no_network_but_loopback(container: Container) -> None:
    interfaces = container.run("cat", "/proc/net/dev")
    names = [line.split(":")[0].strip() for line in interfaces.stdout.splitlines() if ":" in line]
    assert names == ["lo"]


def careledger(container: Container, *args: str) -> subprocess.CompletedProcess[str]:
    ran = container.run("careledger", *args)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran


def make_single_member_network(container: Container) -> dict[str, Any]:
    """`node init` in the volume, then a genesis naming that one member, as an operator would
    with `docker run --entrypoint careledger`: the image's own entrypoint then starts it."""
    careledger(
        container,
        *("node", "init", "--data-dir", NODE_HOME, "--name", "Image Hospital"),
        *("--p2p", "127.0.0.1:26656", "--api", f"127.0.0.1:{API_PORT}"),
    )
    member_file = f"{NODE_HOME}/member.json"
    genesis = f"{NODE_HOME}/genesis.json"
    careledger(
        container,
        "consortium",
        "genesis",
        member_file,
        "--chain-id",
        "image-test",
        "--out",
        genesis,
    )
    careledger(container, "consortium", "verify-genesis", genesis, "--data-dir", NODE_HOME)
    member: dict[str, Any] = json.loads((container.volume / "member.json").read_text())
    return member


class RunningNode:
    """The container started with the image's own entrypoint and command (`careledger node
    start --data-dir /var/lib/careledger --genesis /var/lib/careledger/genesis.json`)."""

    def __init__(self, container: Container, log: Path) -> None:
        container.write_spec(None)
        self.name = f"careledger-node-{uuid.uuid4().hex[:12]}"
        self.log = log.open("w")
        self.process = subprocess.Popen(
            ["runc", "run", "--bundle", str(container.bundle), self.name],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def exec(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = ["runc", "exec", self.name, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    def wait_for(self, check: Callable[[], bool], what: str) -> None:
        # Bounded by a count, not a clock: the node needs a few seconds on a quiet machine.
        for _ in range(240):
            if self.process.poll() is not None:
                raise AssertionError(f"the node exited ({self.process.returncode}) before {what}")
            if check():
                return
            time.sleep(0.5)
        raise AssertionError(f"no {what} after 240 checks")

    def stop(self) -> int:
        subprocess.run(["runc", "kill", self.name, "TERM"], capture_output=True)
        try:
            return self.process.wait(timeout=120)
        finally:
            subprocess.run(["runc", "delete", "--force", self.name], capture_output=True)
            self.log.close()


def test_image_entrypoint_runs_a_validator_node(container: Container, tmp_path: Path) -> None:
    member = make_single_member_network(container)
    assert member["name"] == "Image Hospital" and member["did"].startswith("did:key:")
    # The keys are made in the volume, owned by the node's user, private.
    key = container.volume / "app" / "keys" / "organisation.json"
    assert key.stat().st_uid == NODE_UID and key.stat().st_mode & 0o077 == 0
    node = RunningNode(container, tmp_path / "node.log")
    try:
        node.wait_for(lambda: node.exec("careledger-healthcheck").returncode == 0, "health")
        node.wait_for(lambda: height(node) >= 2, "second block")
        status = json.loads(node.exec(*STATUS).stdout)
        assert status["validator_power"] == 10, status
        # The installed package serves the portal with its bundles (the wheel carries them).
        portal = node.exec("python3", "-c", PORTAL_PROBE.replace("API_PORT", str(API_PORT)))
        assert portal.returncode == 0, portal.stdout + portal.stderr
        assert "/assets/" in portal.stdout
    finally:
        code = node.stop()
    # tini passed SIGTERM on; the node stopped CometBFT and itself cleanly.
    assert code == 0, (tmp_path / "node.log").read_text()[-3000:]


# Inside the container: GET the portal's page and every /assets/ file it names; 200 each.
PORTAL_PROBE = """
import re, urllib.request
base = "http://127.0.0.1:API_PORT"
page = urllib.request.urlopen(base + "/").read().decode()
assets = re.findall(r'(?:src|href)="(/assets/[^"]+)"', page)
assert assets, page
for asset in assets:
    assert urllib.request.urlopen(base + asset).status == 200, asset
    print(asset)
"""

STATUS = ("careledger", "node", "status", "--data-dir", NODE_HOME, "--json")


def height(node: RunningNode) -> int:
    ran = node.exec(*STATUS)
    if ran.returncode != 0:
        return 0
    return int(json.loads(ran.stdout)["height"] or 0)
