"""Record the ABCI bytes of a live CometBFT v0.38.25 network into recorded.jsonl.

Two validators run CometBFT's own example application (`abci-cli kvstore`, Go) behind a
recording proxy, so both directions are bytes written by CometBFT's Go code: requests by the
node, responses by the Go ABCI server. Vote extensions are switched on so that ExtendVote and
VerifyVoteExtension travel too; `abci-cli echo` supplies an Echo. Messages a live network
does not send (state sync) come from gen/main.go into generated.jsonl.

Run from the project root (needs Go for abci-cli, or ABCI_CLI=/path/to/abci-cli):
    .venv/bin/python tests/vectors/abci/record.py
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from careledger.consensus.cometbft.codec import REQUEST_TYPES, RESPONSE_TYPES, FrameReader
from careledger.consensus.cometbft.config import edit_config_toml
from careledger.consensus.cometbft.protowire import decode_uvarint, encode_uvarint
from careledger.consensus.cometbft.rpc import sync_call
from careledger.localnet.network import (
    Network,
    cometbft_binary,
    create_network,
    wait_for_rpc,
)

HERE = Path(__file__).resolve().parent
SOURCE = "live CometBFT v0.38.25 node <-> abci-cli kvstore (record.py)"
KEEP_PER_TYPE = 3


def abci_cli(workdir: Path) -> str:
    if os.environ.get("ABCI_CLI"):
        return os.environ["ABCI_CLI"]
    gobin = workdir / "gobin"
    subprocess.run(
        ["go", "install", "github.com/cometbft/cometbft/abci/cmd/abci-cli@v0.38.25"],
        env={**os.environ, "GOBIN": str(gobin)},
        check=True,
    )
    return str(gobin / "abci-cli")


# --- the recording proxy -------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.frames: list[tuple[str, bytes]] = []  # (direction, length-prefixed frame)
        self._lock = threading.Lock()

    async def pipe(
        self, direction: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        frames = FrameReader()
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(1 << 16):
                writer.write(chunk)
                for body in frames.feed(chunk):
                    with self._lock:
                        self.frames.append((direction, encode_uvarint(len(body)) + body))
                await writer.drain()
        writer.close()


async def proxy(listen: str, upstream: str, recorder: Recorder) -> asyncio.AbstractServer:
    async def connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(upstream)
        await asyncio.gather(
            recorder.pipe("request", reader, up_writer),
            recorder.pipe("response", up_reader, writer),
        )

    return await asyncio.start_unix_server(connect, path=listen)


def run_proxies(pairs: list[tuple[str, str]], recorder: Recorder) -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        for listen, upstream in pairs:
            loop.run_until_complete(proxy(listen, upstream, recorder))
        started.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    started.wait(10)
    return loop


# --- the network ---------------------------------------------------------------------------


def prepare(network: Network) -> list[tuple[str, str]]:
    """Point each node at its proxy and switch vote extensions on from height 2."""
    pairs = []
    for node in network.nodes:
        node_dir = network.node_dir(node.index)
        listen, upstream = str(node_dir / "proxy.sock"), str(node_dir / "kv.sock")
        config = network.home(node.index) / "config"
        edit_config_toml(config / "config.toml", {("", "proxy_app"): f"unix://{listen}"})
        genesis = orjson.loads((config / "genesis.json").read_bytes())
        genesis["consensus_params"]["abci"]["vote_extensions_enable_height"] = "2"
        (config / "genesis.json").write_bytes(orjson.dumps(genesis))
        pairs.append((listen, upstream))
    return pairs


@contextlib.contextmanager
def processes(commands: list[tuple[list[str], Path]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        for command, log in commands:
            with open(log, "ab") as out:
                started.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT))
            time.sleep(0.5)
        yield started
    finally:
        for process in reversed(started):
            process.terminate()
            process.wait(10)


def drive(network: Network, cli: str, recorder_socket: str) -> None:
    for node in network.nodes:
        wait_for_rpc(node.rpc_url, 60)
    for i in range(4):
        node = network.nodes[i % len(network.nodes)]
        tx = base64.b64encode(f"key{i}=value{i}".encode()).decode()
        sync_call(node.rpc_url, "broadcast_tx_commit", timeout=30, tx=tx)
    sync_call(network.nodes[0].rpc_url, "abci_query", path="/key", data="6b657931")
    sync_call(network.nodes[0].rpc_url, "abci_info")
    subprocess.run([cli, "echo", "hello", "--address", f"unix://{recorder_socket}"], check=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = sync_call(network.nodes[0].rpc_url, "status")
        if int(status["sync_info"]["latest_block_height"]) >= 6:
            return
        time.sleep(0.5)


def select(frames: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """A few distinct frames of each message type, preferring those that carry transactions."""
    chosen: dict[tuple[str, str], list[bytes]] = {}
    ranked = sorted(frames, key=lambda f: -len(f[1]))
    for direction, data in ranked:
        name = _type_name(direction, data)
        kept = chosen.setdefault((direction, name), [])
        if data not in kept and len(kept) < KEEP_PER_TYPE:
            kept.append(data)
    return [
        {"source": SOURCE, "direction": d, "type": name, "frame": data.hex()}
        for (d, name), datas in sorted(chosen.items())
        for data in datas
    ]


def _type_name(direction: str, data: bytes) -> str:
    _, pos = decode_uvarint(data, 0)
    key, _ = decode_uvarint(data, pos)
    types = REQUEST_TYPES if direction == "request" else RESPONSE_TYPES
    cls = types.get(key >> 3)
    return cls.__name__ if cls else f"unknown-{key >> 3}"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="abci-rec-", dir="/tmp") as tmp:
        root = Path(tmp)
        cli = abci_cli(root)
        network = create_network(root / "net", 2, base_port=random.randrange(30000, 40000, 10))
        pairs = prepare(network)
        recorder = Recorder()
        run_proxies(pairs, recorder)
        commands = [
            ([cli, "kvstore", "--address", f"unix://{up}"], Path(up).parent / "kv.log")
            for _, up in pairs
        ]
        commands += [
            (
                [cometbft_binary(), "start", "--home", str(network.home(n.index))],
                network.node_dir(n.index) / "cometbft.log",
            )
            for n in network.nodes
        ]
        with processes(commands):
            drive(network, cli, pairs[0][0])
        vectors = select(recorder.frames)
    out = HERE / "recorded.jsonl"
    out.write_bytes(b"".join(orjson.dumps(v) + b"\n" for v in vectors))
    print(f"{len(vectors)} vectors of {len({v['type'] for v in vectors})} types -> {out}")


if __name__ == "__main__":
    main()
