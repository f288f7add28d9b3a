// zstd for record plaintexts (docs/crypto.md 4). Reading: fzstd, after refusing a frame that
// declares more than 64 MiB (or that grows past it when it declares nothing). Writing needs no
// compressor: any valid single frame will do, so we write raw (stored) blocks with the content
// size in the header and no checksum. Records are small; compression would save little next
// to the ciphertext's fixed costs, and the commitment is over the canonical bytes anyway.
import { Decompress, decompress } from "fzstd";
import { concat } from "./bytes";

export const MAX_RESOURCE_BYTES = 64 * 1024 * 1024;
const MAGIC = [0x28, 0xb5, 0x2f, 0xfd];
const MAX_BLOCK = 128 * 1024;

export class ZstdFrameError extends Error {
  override name = "ZstdFrameError";
}

/** One zstd frame of raw blocks holding `content` (single segment, content size declared). */
export function rawFrame(content: Uint8Array): Uint8Array {
  if (content.length > MAX_RESOURCE_BYTES) {
    throw new ZstdFrameError(`resource of ${content.length} bytes exceeds ${MAX_RESOURCE_BYTES}`);
  }
  const parts: Uint8Array[] = [new Uint8Array(MAGIC), frameHeader(content.length)];
  let offset = 0;
  do {
    const size = Math.min(MAX_BLOCK, content.length - offset);
    const last = offset + size === content.length ? 1 : 0;
    const header = (size << 3) | (0 << 1) | last; // block type 0: raw
    parts.push(new Uint8Array([header & 0xff, (header >> 8) & 0xff, (header >> 16) & 0xff]));
    parts.push(content.subarray(offset, offset + size));
    offset += size;
  } while (offset < content.length);
  return concat(...parts);
}

// Frame header descriptor: FCS flag (bits 7-6), single segment (bit 5); no checksum, no
// dictionary. Single segment: no window descriptor, the window is the content size.
function frameHeader(size: number): Uint8Array {
  if (size < 256) return new Uint8Array([0x20, size]);
  if (size < 65536 + 256) {
    const v = size - 256;
    return new Uint8Array([0x60, v & 0xff, v >> 8]);
  }
  return new Uint8Array([0xa0, size & 0xff, (size >>> 8) & 0xff, (size >>> 16) & 0xff, (size >>> 24) & 0xff]);
}

/** The content size a frame declares, or -1 when it declares none. */
export function declaredContentSize(frame: Uint8Array): number {
  if (frame.length < 5 || MAGIC.some((b, i) => frame[i] !== b)) throw new ZstdFrameError("not a zstd frame");
  const descriptor = frame[4]!;
  const fcsFlag = descriptor >> 6;
  const singleSegment = (descriptor >> 5) & 1;
  const dictBytes = [0, 1, 2, 4][descriptor & 3]!;
  const fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag]!;
  if (fcsBytes === 0) return -1;
  const start = 5 + (singleSegment ? 0 : 1) + dictBytes;
  if (frame.length < start + fcsBytes) throw new ZstdFrameError("zstd frame header is truncated");
  let value = 0;
  for (let i = fcsBytes - 1; i >= 0; i--) value = value * 256 + frame[start + i]!;
  return fcsFlag === 1 ? value + 256 : value;
}

/** The frame's content; ZstdFrameError for a frame over 64 MiB or one that does not decode. */
export function readFrame(frame: Uint8Array): Uint8Array {
  const declared = declaredContentSize(frame);
  if (declared > MAX_RESOURCE_BYTES) {
    throw new ZstdFrameError(`record declares ${declared} bytes, over ${MAX_RESOURCE_BYTES}`);
  }
  try {
    if (declared >= 0) {
      const out = decompress(frame, new Uint8Array(declared));
      if (out.length !== declared) throw new ZstdFrameError("zstd frame is shorter than it declares");
      return out;
    }
    return readBounded(frame);
  } catch (cause) {
    if (cause instanceof ZstdFrameError) throw cause;
    throw new ZstdFrameError(`not a zstd frame: ${(cause as Error).message}`, { cause });
  }
}

function readBounded(frame: Uint8Array): Uint8Array {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const stream = new Decompress((chunk) => {
    total += chunk.length;
    if (total > MAX_RESOURCE_BYTES) throw new ZstdFrameError(`record grows past ${MAX_RESOURCE_BYTES} bytes`);
    chunks.push(chunk);
  });
  stream.push(frame, true);
  return concat(...chunks);
}
