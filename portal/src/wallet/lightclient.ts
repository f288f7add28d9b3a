// CometBFT v0.38 light-client checks, as protocol/cometbft/ does them in Python: header
// hashes, vote sign bytes, validator-set hashes and a block certified by the next block's
// commit. Pure: no I/O. The JSON is CometBFT's RPC shape (`/block`, `/commit`, `/validators`).
import { sha256 } from "@noble/hashes/sha2.js";
import { concat, equalBytes, fromB64, fromHex, hex, utf8 } from "../crypto/bytes";
import { verify } from "../crypto/identity";
import { merkleRoot } from "./merkle";
import { bytesField, sfixed64Field, uvarint, varintField } from "./protobuf";

export class LightClientError extends Error {
  override name = "LightClientError";
}

const PRECOMMIT_TYPE = 2n;
export const FLAG_ABSENT = 1;
export const FLAG_COMMIT = 2;
export const FLAG_NIL = 3;
const ED25519_JSON_TYPE = "tendermint/PubKeyEd25519";
const TIME = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z$/;

type Json = Record<string, unknown>;

function obj(value: unknown, what: string): Json {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new LightClientError(`${what} is not a JSON object`);
  }
  return value as Json;
}

function intValue(value: unknown, what: string): bigint {
  if (typeof value === "number" && Number.isSafeInteger(value)) return BigInt(value);
  if (typeof value === "string" && /^-?[0-9]{1,20}$/.test(value)) return BigInt(value);
  throw new LightClientError(`${what} is not an integer`);
}

function hexValue(value: unknown, what: string): Uint8Array {
  try {
    return fromHex(String(value ?? ""));
  } catch {
    throw new LightClientError(`${what} is not hex`);
  }
}

function b64Value(value: unknown, what: string): Uint8Array {
  try {
    return fromB64(String(value ?? ""));
  } catch {
    throw new LightClientError(`${what} is not base64`);
  }
}

/** RFC 3339 UTC as CometBFT writes it -> [seconds, nanos]. */
export function parseTime(text: string): [bigint, bigint] {
  const found = TIME.exec(text);
  if (!found) throw new LightClientError(`time ${JSON.stringify(text)} is not RFC 3339 UTC`);
  const [year, month, day, hour, minute, second] = found.slice(1, 7).map(Number) as number[];
  const millis = Date.UTC(year!, month! - 1, day!, hour!, minute!, second!);
  return [BigInt(millis / 1000), BigInt((found[7] ?? "0").padEnd(9, "0"))];
}

function timestampBytes([seconds, nanos]: [bigint, bigint]): Uint8Array {
  return concat(varintField(1, seconds), varintField(2, nanos));
}

// --- block ids and headers -----------------------------------------------------------------

export interface BlockID {
  hash: Uint8Array;
  partsTotal: bigint;
  partsHash: Uint8Array;
}

export function blockIdFromJson(data: unknown): BlockID {
  const json = obj(data, "a block id");
  const parts = obj(json.parts ?? {}, "a part set header");
  return {
    hash: hexValue(json.hash, "block id hash"),
    partsTotal: intValue(parts.total ?? 0, "part set total"),
    partsHash: hexValue(parts.hash, "part set hash"),
  };
}

function isZero(id: BlockID): boolean {
  return id.hash.length === 0 && id.partsTotal === 0n && id.partsHash.length === 0;
}

function encodeBlockId(id: BlockID): Uint8Array {
  const partSet = concat(varintField(1, id.partsTotal), bytesField(2, id.partsHash));
  return concat(bytesField(1, id.hash), bytesField(2, partSet, true));
}

function sameBlockId(a: BlockID, b: BlockID): boolean {
  return equalBytes(a.hash, b.hash) && a.partsTotal === b.partsTotal && equalBytes(a.partsHash, b.partsHash);
}

const HASH_FIELDS = [
  "last_commit_hash",
  "data_hash",
  "validators_hash",
  "next_validators_hash",
  "consensus_hash",
  "app_hash",
  "last_results_hash",
  "evidence_hash",
  "proposer_address",
] as const;
type HashField = (typeof HASH_FIELDS)[number];

export interface Header {
  versionBlock: bigint;
  versionApp: bigint;
  chainId: string;
  height: bigint;
  time: [bigint, bigint];
  lastBlockId: BlockID;
  hashes: Record<HashField, Uint8Array>;
}

export function headerFromJson(data: unknown): Header {
  const json = obj(data, "a CometBFT header");
  const version = obj(json.version, "a header's version");
  if (typeof json.chain_id !== "string") throw new LightClientError("not a CometBFT header: no chain_id");
  const hashes = {} as Record<HashField, Uint8Array>;
  for (const name of HASH_FIELDS) {
    if (!(name in json)) throw new LightClientError(`not a CometBFT header: no ${name}`);
    hashes[name] = hexValue(json[name], name);
  }
  return {
    versionBlock: intValue(version.block ?? 0, "version.block"),
    versionApp: intValue(version.app ?? 0, "version.app"),
    chainId: json.chain_id,
    height: intValue(json.height, "height"),
    time: parseTime(String(json.time)),
    lastBlockId: blockIdFromJson(json.last_block_id),
    hashes,
  };
}

/** CometBFT's Header.Hash: the Merkle root over the 14 proto-encoded fields. */
export function headerHash(header: Header): Uint8Array {
  return merkleRoot([
    concat(varintField(1, header.versionBlock), varintField(2, header.versionApp)),
    bytesField(1, utf8(header.chainId)), // StringValue
    varintField(1, header.height), // Int64Value
    timestampBytes(header.time),
    encodeBlockId(header.lastBlockId),
    ...HASH_FIELDS.map((name) => bytesField(1, header.hashes[name])), // BytesValue
  ]);
}

// --- validators ----------------------------------------------------------------------------

export interface Validator {
  pubKey: Uint8Array;
  power: bigint;
  address: Uint8Array; // SHA-256(pub_key)[:20]
}

export function validatorFromJson(data: unknown): Validator {
  const json = obj(data, "a validator");
  const pub = obj(json.pub_key ?? {}, "a validator's pub_key");
  if (pub.type !== ED25519_JSON_TYPE) throw new LightClientError(`validator key type ${String(pub.type)} is not Ed25519`);
  const pubKey = b64Value(pub.value, "validator public key");
  if (pubKey.length !== 32) throw new LightClientError("a validator's Ed25519 key is 32 bytes");
  const power = intValue(json.voting_power ?? json.power, "voting power");
  if (power <= 0n) throw new LightClientError("a validator's voting power is positive");
  const address = sha256(pubKey).slice(0, 20);
  if ("address" in json && !equalBytes(hexValue(json.address, "address"), address)) {
    throw new LightClientError("a validator's address is not its key's address");
  }
  return { pubKey, power, address };
}

export function validatorSetFromJson(data: unknown): Validator[] {
  if (!Array.isArray(data) || data.length === 0) throw new LightClientError("a validator set is a non-empty list");
  const set = data.map(validatorFromJson);
  if (new Set(set.map((v) => hex(v.address))).size !== set.length) {
    throw new LightClientError("a validator appears twice in the set");
  }
  return set;
}

export function validatorSetHash(set: Validator[]): Uint8Array {
  return merkleRoot(
    set.map((v) => concat(bytesField(1, bytesField(1, v.pubKey, true), true), varintField(2, v.power))),
  );
}

function totalPower(set: Validator[]): bigint {
  return set.reduce((sum, v) => sum + v.power, 0n);
}

// --- commits -------------------------------------------------------------------------------

export interface CommitSig {
  flag: number;
  validatorAddress: Uint8Array;
  time: [bigint, bigint];
  signature: Uint8Array;
}

export interface Commit {
  height: bigint;
  round: bigint;
  blockId: BlockID;
  signatures: CommitSig[];
}

export function commitFromJson(data: unknown): Commit {
  const json = obj(data, "a CometBFT commit");
  if (!Array.isArray(json.signatures)) throw new LightClientError("not a CometBFT commit: no signatures");
  return {
    height: intValue(json.height, "commit height"),
    round: intValue(json.round, "commit round"),
    blockId: blockIdFromJson(json.block_id),
    signatures: json.signatures.map((s: unknown) => {
      const sig = obj(s, "a commit signature");
      const flag = Number(intValue(sig.block_id_flag, "block_id_flag"));
      if (![FLAG_ABSENT, FLAG_COMMIT, FLAG_NIL].includes(flag)) throw new LightClientError(`unknown block_id_flag ${flag}`);
      if (flag === FLAG_ABSENT) return { flag, validatorAddress: new Uint8Array(), time: [0n, 0n], signature: new Uint8Array() };
      return {
        flag,
        validatorAddress: hexValue(sig.validator_address, "validator address"),
        time: parseTime(String(sig.timestamp)),
        signature: b64Value(sig.signature, "signature"),
      };
    }),
  };
}

/** What a precommit signs: CometBFT's VoteSignBytes (length-prefixed CanonicalVote). */
export function voteSignBytes(chainId: string, height: bigint, round: bigint, blockId: BlockID, time: [bigint, bigint]): Uint8Array {
  const canonical = concat(
    varintField(1, PRECOMMIT_TYPE),
    sfixed64Field(2, height),
    sfixed64Field(3, round),
    isZero(blockId) ? new Uint8Array() : bytesField(4, encodeBlockId(blockId), true),
    bytesField(5, timestampBytes(time), true),
    bytesField(6, utf8(chainId)),
  );
  return concat(uvarint(BigInt(canonical.length)), canonical);
}

function checkSignature(chainId: string, commit: Commit, index: number, validator: Validator): void {
  const sig = commit.signatures[index]!;
  const blockId = sig.flag === FLAG_COMMIT ? commit.blockId : { hash: new Uint8Array(), partsTotal: 0n, partsHash: new Uint8Array() };
  const message = voteSignBytes(chainId, commit.height, commit.round, blockId, sig.time);
  if (!verify(validator.pubKey, sig.signature, message)) {
    throw new LightClientError(`signature ${index} (validator ${hex(validator.address).toUpperCase()}) does not verify`);
  }
}

/** CometBFT's VerifyCommit: every present signature verifies, more than 2/3 of the power
 * signed for the block. Returns the power that signed. */
export function verifyCommit(chainId: string, set: Validator[], blockId: BlockID, height: bigint, commit: Commit): bigint {
  if (commit.height !== height) throw new LightClientError(`the commit is for height ${commit.height}, not ${height}`);
  if (!sameBlockId(commit.blockId, blockId)) throw new LightClientError("the commit signs another block id than the header's hash");
  if (commit.signatures.length !== set.length) {
    throw new LightClientError(`the commit has ${commit.signatures.length} signatures for a set of ${set.length} validators`);
  }
  let signed = 0n;
  commit.signatures.forEach((sig, index) => {
    if (sig.flag === FLAG_ABSENT) return;
    const validator = set[index]!;
    if (!equalBytes(sig.validatorAddress, validator.address)) {
      throw new LightClientError(`signature ${index} is not by validator ${index} of the set`);
    }
    checkSignature(chainId, commit, index, validator);
    if (sig.flag === FLAG_COMMIT) signed += validator.power;
  });
  const total = totalPower(set);
  if (!(signed > (total * 2n) / 3n)) {
    throw new LightClientError(`validators with ${signed} of ${total} voting power signed: not more than 2/3`);
  }
  return signed;
}

export interface CertifiedBlock {
  header: Header;
  nextHeader: Header;
  validators: Validator[];
  signedPower: bigint;
  totalPower: bigint;
  blockHash: Uint8Array; // block H's hash (its block id)
  validatorsHash: Uint8Array;
}

/** That the validators signed block H+1 and that H+1 names block H (protocol/cometbft
 * `certify`, without a separately trusted set: the page compares the block hash with the
 * node's instead). Each step throws a LightClientError naming it. */
export function certify(header: Header, nextHeader: Header, commit: Commit, set: Validator[]): CertifiedBlock {
  if (nextHeader.chainId !== header.chainId) throw new LightClientError("the two headers are of different chains");
  if (nextHeader.height !== header.height + 1n) throw new LightClientError(`header ${nextHeader.height} does not follow ${header.height}`);
  const blockHash = headerHash(header);
  if (!equalBytes(nextHeader.lastBlockId.hash, blockHash)) {
    throw new LightClientError(
      `block ${header.height}'s header does not hash to the block id that block ${nextHeader.height} names (header altered)`,
    );
  }
  if (!equalBytes(commit.blockId.hash, headerHash(nextHeader))) {
    throw new LightClientError(`the commit does not sign block ${nextHeader.height}'s header`);
  }
  const validatorsHash = validatorSetHash(set);
  if (!equalBytes(validatorsHash, nextHeader.hashes.validators_hash)) {
    throw new LightClientError("the validator set does not hash to the header's validators_hash");
  }
  const signedPower = verifyCommit(header.chainId, set, commit.blockId, nextHeader.height, commit);
  return { header, nextHeader, validators: set, signedPower, totalPower: totalPower(set), blockHash, validatorsHash };
}
