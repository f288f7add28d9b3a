// The little of protobuf that committed results and CometBFT's signed structures need
// (chain/results.py, protocol/cometbft/encoding.py): proto3 fields, zero values left out.
import { concat } from "../crypto/bytes";

const U64 = 1n << 64n;

export function uvarint(value: bigint): Uint8Array {
  let n = ((value % U64) + U64) % U64; // int64 as two's complement, as Go writes it
  const out: number[] = [];
  while (n >= 0x80n) {
    out.push(Number(n & 0x7fn) | 0x80);
    n >>= 7n;
  }
  out.push(Number(n));
  return Uint8Array.from(out);
}

/** A varint field; left out when zero. */
export function varintField(number: number, value: bigint): Uint8Array {
  return value === 0n ? new Uint8Array() : concat(uvarint(BigInt(number << 3)), uvarint(value));
}

/** A length-delimited field; left out when empty unless it is a non-nullable message. */
export function bytesField(number: number, value: Uint8Array, always = false): Uint8Array {
  if (value.length === 0 && !always) return new Uint8Array();
  return concat(uvarint(BigInt((number << 3) | 2)), uvarint(BigInt(value.length)), value);
}

export function sfixed64Field(number: number, value: bigint): Uint8Array {
  if (value === 0n) return new Uint8Array();
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, ((value % U64) + U64) % U64, true);
  return concat(uvarint(BigInt((number << 3) | 1)), out);
}
