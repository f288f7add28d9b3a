"""The genesis ceremony: assemble the genesis from the founders' member files, and check it.

The genesis file is CometBFT's genesis.json with our genesis (chain/genesis.py) as its
`app_state` and the founders' consensus keys as its validators. Whoever assembles it could slip
in a validator of their own, drop a founder or change a key: every founder runs
`verify-genesis` on the file it received before starting, which checks its own entry, that the
validators are exactly the founders' keys, and (given the member files that were agreed) that
the member list is that one; and compares the printed SHA-256 with the others out of band.
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from careledger.chain.block import parse_time_ns
from careledger.chain.genesis import Genesis, GenesisOrganisation
from careledger.consensus.cometbft.config import (
    GENESIS_POWER,
    cometbft_genesis,
    validator_address,
)
from careledger.consortium.members import ConsortiumError, MemberFile

MAX_GENESIS = 4 * 1024 * 1024
MAX_GENESIS_AHEAD_NS = 24 * 3600 * 1_000_000_000
_CHAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,49}")
_TOP_LEVEL = {
    "genesis_time",
    "chain_id",
    "initial_height",
    "consensus_params",
    "validators",
    "app_hash",
    "app_state",
}
# CometBFT's consensus parameters a genesis may set, and what this software accepts for each
# (CometBFT 0.38's defaults are the limits): the assembler could otherwise hand every founder a
# chain with 100 MB blocks, evidence that expires before it can be reported, or a consensus key
# type the application's validator updates cannot use. CometBFT encodes int64 as strings.
_MAX_BLOCK_BYTES = 22_020_096
_PARAMS: dict[str, dict[str, Any]] = {
    "block": {
        "max_bytes": lambda v: 0 < int(v) <= _MAX_BLOCK_BYTES,
        "max_gas": lambda v: v == "-1",
        "time_iota_ms": lambda v: True,  # read by older CometBFT versions only
    },
    "evidence": {
        "max_age_num_blocks": lambda v: int(v) >= 100_000,
        "max_age_duration": lambda v: int(v) >= 172_800_000_000_000,  # 48 hours
        "max_bytes": lambda v: 0 <= int(v) <= 1_048_576,
    },
    "validator": {"pub_key_types": lambda v: v == ["ed25519"]},
    "version": {"app": lambda v: v == "0"},
    "abci": {"vote_extensions_enable_height": lambda v: v == "0"},
}


def genesis_hash(raw: bytes) -> str:
    """What founders compare out of band: SHA-256 of the genesis file's exact bytes."""
    return hashlib.sha256(raw).hexdigest()


def organisation_entry(member: MemberFile) -> GenesisOrganisation:
    return GenesisOrganisation(
        did=member.did,
        name=member.name,
        encryption_key=member.encryption_key,
        validator_pub_key=member.validator_pub_key,
        node=member.node_did,
        node_encryption_key=member.node_encryption_key,
    )


def assemble_genesis(
    members: list[MemberFile], chain_id: str, template: dict[str, Any] | None = None
) -> bytes:
    """The genesis file for these founders, in the order given. `template`: a genesis.json
    from `cometbft init` for CometBFT's default consensus parameters (made here if None)."""
    if not _CHAIN_ID.fullmatch(chain_id):
        raise ConsortiumError("--chain-id: 1 to 50 letters, digits, '.', '_' or '-'")
    if not members:
        raise ConsortiumError("a genesis needs at least one member file")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    try:
        genesis = Genesis(chain_id, now, tuple(organisation_entry(m) for m in members))
    except ValueError as exc:
        raise ConsortiumError(str(exc)) from None
    doc = cometbft_genesis(template or _cometbft_template(), genesis)
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


def _cometbft_template() -> dict[str, Any]:
    from careledger.consortium.home import cometbft_command

    with tempfile.TemporaryDirectory() as home:
        subprocess.run(
            [cometbft_command(), "init", "--home", home],
            capture_output=True,
            timeout=60,
            check=True,
        )
        doc: dict[str, Any] = orjson.loads((Path(home) / "config" / "genesis.json").read_bytes())
        return doc


def read_genesis(raw: bytes) -> tuple[dict[str, Any], Genesis]:
    """The CometBFT document and our genesis inside it; ConsortiumError for anything else,
    or when the validators are not exactly the founders' consensus keys at genesis power."""
    if len(raw) > MAX_GENESIS:
        raise ConsortiumError(f"genesis: larger than {MAX_GENESIS} bytes")
    try:
        doc = orjson.loads(raw)
        genesis = Genesis.from_json(orjson.dumps(doc["app_state"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConsortiumError(f"genesis: not a CareLedger genesis file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("chain_id") != genesis.chain_id:
        raise ConsortiumError("genesis: CometBFT's chain_id differs from the app_state's")
    _check_cometbft_fields(doc, genesis)
    expected = sorted(
        (validator_address(bytes.fromhex(o.validator_pub_key)), o.validator_pub_key)
        for o in genesis.organisations
        if o.validator_pub_key
    )
    if _validators(doc) != expected:
        raise ConsortiumError(
            "genesis: the validators are not exactly the founders' consensus keys at power "
            f"{GENESIS_POWER} (a validator no member answers for, or a founder left out)"
        )
    return doc, genesis


def _check_cometbft_fields(doc: dict[str, Any], genesis: Genesis) -> None:
    """CometBFT's own fields agree with the app_state and start the chain this software runs:
    at height 1, from an empty app hash, at the app_state's genesis time, with consensus
    parameters inside _PARAMS."""
    unknown = sorted(set(doc) - _TOP_LEVEL)
    if unknown:
        raise ConsortiumError(f"genesis: unknown field {unknown[0]!r}")
    if doc.get("initial_height", "1") not in ("0", "1"):
        raise ConsortiumError('genesis: initial_height must be "1" (a chain from block 1)')
    if doc.get("app_hash", "") != "":
        raise ConsortiumError("genesis: app_hash must be empty (the application computes it)")
    if doc.get("genesis_time") != genesis.genesis_time:
        raise ConsortiumError("genesis: CometBFT's genesis_time differs from the app_state's")
    try:
        parse_time_ns(genesis.genesis_time)
    except ValueError:
        raise ConsortiumError("genesis: genesis_time is not an RFC 3339 UTC time") from None
    params = doc.get("consensus_params", {})
    if not isinstance(params, dict):
        raise ConsortiumError("genesis: consensus_params is not an object")
    for section, values in params.items():
        rules = _PARAMS.get(section)
        if rules is None or not isinstance(values, dict):
            raise ConsortiumError(f"genesis: consensus_params.{section} is unknown here")
        for key, value in values.items():
            if not _param_ok(rules.get(key), value):
                raise ConsortiumError(
                    f"genesis: consensus_params.{section}.{key} = {str(value)[:40]} is outside "
                    "what this software accepts (docs/operations.md, the genesis ceremony)"
                )


def _param_ok(rule: Any, value: object) -> bool:
    if rule is None or isinstance(value, bool | int | float):  # CometBFT wants "N" strings
        return False
    try:
        return bool(rule(value))
    except (TypeError, ValueError):
        return False


def _validators(doc: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for v in doc.get("validators") or []:
        try:
            key = base64.b64decode(v["pub_key"]["value"], validate=True)
            ok = v["pub_key"]["type"] == "tendermint/PubKeyEd25519" and len(key) == 32
            ok = ok and v["power"] == str(GENESIS_POWER)  # CometBFT refuses a bare number
            ok = ok and v.get("address", validator_address(key)) == validator_address(key)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ConsortiumError(f"genesis: malformed validator entry {str(v)[:120]}")
        found.append((validator_address(key), key.hex()))
    return sorted(found)


def verify_genesis(
    raw: bytes,
    own: MemberFile | None,
    agreed: list[MemberFile] | None = None,
    expected_hash: str | None = None,
) -> Genesis:
    """Our genesis, after checking it names `own` exactly as its member file does (None: a
    joining member, not a founder), and that its founders are exactly `agreed` (when given)."""
    if expected_hash is not None and genesis_hash(raw) != expected_hash.lower():
        raise ConsortiumError(
            f"genesis: its SHA-256 is {genesis_hash(raw)}, not the {expected_hash} agreed"
        )
    _, genesis = read_genesis(raw)
    _require_started_soon(genesis)
    if own is not None:
        _require_entry(genesis, own)
    if agreed is not None:
        listed = sorted(o.to_json().items() for o in genesis.organisations)
        wanted = sorted(organisation_entry(m).to_json().items() for m in agreed)
        if listed != wanted:
            names = ", ".join(o.name for o in genesis.organisations)
            raise ConsortiumError(
                f"genesis: its members ({names}) are not the {len(agreed)} member files agreed"
            )
    return genesis


def _require_started_soon(genesis: Genesis) -> None:
    """CometBFT sleeps until the genesis time before its first block: a genesis dated a year
    ahead would start every founder's node and commit nothing, with no error anywhere."""
    ahead = parse_time_ns(genesis.genesis_time) - time.time_ns()
    if ahead > MAX_GENESIS_AHEAD_NS:
        raise ConsortiumError(
            f"genesis: its genesis_time {genesis.genesis_time} is more than a day ahead of this "
            "machine's clock (the chain would not start until then)"
        )


def _require_entry(genesis: Genesis, own: MemberFile) -> None:
    entry = next((o for o in genesis.organisations if o.did == own.did), None)
    if entry is None:
        raise ConsortiumError(
            f"genesis: it does not name this organisation ({own.name}, {own.did}); "
            "a founder's genesis must (a joining member starts with --join)"
        )
    if entry != organisation_entry(own):
        raise ConsortiumError(
            f"genesis: its entry for {own.name} differs from this node's member file "
            "(a key or name was changed)"
        )
