// Blob batch frames (port of protocol/frames.py). A fetch answer (`POST /blobs/fetch`) is
// `u16 HTTP status || u32 length || blob or UTF-8 reason`, one frame per requested hash, in
// order; an upload body (`POST /blobs`) is `u32 length || blob`, repeated.

export const MAX_BLOB_BYTES = 16 * 1024 * 1024;
export const MAX_FETCH = 5000; // hashes in one fetch request

/** A frame body that is truncated or holds a frame of an impossible length. */
export class MalformedFrames extends Error {
  override name = "MalformedFrames";
}

export interface FetchResult {
  status: number;
  body: Uint8Array;
}

export function unpackResults(body: Uint8Array): FetchResult[] {
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const results: FetchResult[] = [];
  let offset = 0;
  while (offset < body.length) {
    if (offset + 6 > body.length) throw new MalformedFrames("result frames are truncated");
    const status = view.getUint16(offset);
    const length = view.getUint32(offset + 2);
    const end = offset + 6 + length;
    if (end > body.length) throw new MalformedFrames(`result frame of ${length} bytes runs past the body`);
    results.push({ status, body: body.slice(offset + 6, end) });
    offset = end;
  }
  return results;
}

export function packResults(results: FetchResult[]): Uint8Array {
  const total = results.reduce((sum, r) => sum + 6 + r.body.length, 0);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  let offset = 0;
  for (const r of results) {
    view.setUint16(offset, r.status);
    view.setUint32(offset + 2, r.body.length);
    out.set(r.body, offset + 6);
    offset += 6 + r.body.length;
  }
  return out;
}

export function packFrames(blobs: Uint8Array[]): Uint8Array {
  const total = blobs.reduce((sum, b) => sum + 4 + b.length, 0);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  let offset = 0;
  for (const blob of blobs) {
    if (blob.length === 0 || blob.length > MAX_BLOB_BYTES) {
      throw new MalformedFrames(`a blob of ${blob.length} bytes cannot be uploaded`);
    }
    view.setUint32(offset, blob.length);
    out.set(blob, offset + 4);
    offset += 4 + blob.length;
  }
  return out;
}
