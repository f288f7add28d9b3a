// Erasing records (port of the erase flow of wallet/writing.py `Writer.erase`): one
// `records/erase` transaction signed by the patient, naming the records (or all of them).
// When its block commits, every node deletes those records' blobs: the ciphertext, its salt
// and every wrapped data key (docs/records.md, Erasure). The chain keeps only the blob
// hashes and salted commitments, which reveal nothing once the salt is gone.
import type { NodeClient, TxResult } from "./node";

/** The chain's bound on the records one erase names (records/messages.py MAX_ERASE_RECORDS). */
export const MAX_ERASE_RECORDS = 1000;

const RECORD_NAME = /^[0-9a-f]{64}$/;

export class EraseError extends Error {
  override name = "EraseError";
}

/** Erase the named records of the signed-in patient (the node client signs as the patient),
 * in transactions of at most 1,000 names; their results, in order. A name that is not a
 * record name is refused before anything is signed. */
export async function eraseRecords(node: NodeClient, names: string[]): Promise<TxResult[]> {
  const unique = [...new Set(names)];
  if (unique.length === 0) throw new EraseError("Choose at least one record to erase.");
  const bad = unique.find((name) => !RECORD_NAME.test(name));
  if (bad !== undefined) throw new EraseError(`"${bad.slice(0, 80)}" is not a record name.`);
  const results: TxResult[] = [];
  for (let start = 0; start < unique.length; start += MAX_ERASE_RECORDS) {
    results.push(await node.submit("records/erase", { records: unique.slice(start, start + MAX_ERASE_RECORDS) }));
  }
  return results;
}

/** Erase every record of the signed-in patient in one transaction (`{"all": 1}`). */
export async function eraseAllRecords(node: NodeClient): Promise<TxResult> {
  return node.submit("records/erase", { all: 1 });
}
