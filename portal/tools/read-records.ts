// The page's record reader (wallet/records.ts) against a real node, under Node.js:
// tests/portal/test_records_read.py runs
//   node tools/run.mjs tools/read-records.ts NODE_URL KEYFILE OUT.json [GRANTEE_KEYFILE]
// and checks what it opened and what it reported. With one key file it reads as that patient
// (its own keys); with a grantee's key file too it reads that patient's records as the grantee
// (the scope keys its grants wrapped to it, consent.ts). It signs with the page's own request
// signing and opens with the page's own crypto, knowing no FHIR id: nothing of Python's.
import { readFileSync, writeFileSync } from "node:fs";
import { parseKeyFile } from "../src/crypto/keyfile";
import { grantedKeySource } from "../src/wallet/consent";
import { NodeClient } from "../src/wallet/node";
import { PatientWallet } from "../src/wallet/patient";
import { readRecords } from "../src/wallet/records";

export async function main(args: string[]): Promise<void> {
  const [url, keyPath, outPath, granteePath] = args;
  if (!url || !keyPath || !outPath) throw new Error("usage: read-records.ts NODE_URL KEYFILE OUT.json [GRANTEE_KEYFILE]");
  const ring = parseKeyFile(readFileSync(keyPath, "utf8"));
  let result;
  if (granteePath) {
    const reader = parseKeyFile(readFileSync(granteePath, "utf8"));
    const node = new NodeClient(reader.current, reader.did, url);
    result = await readRecords(node, ring.did, grantedKeySource(node, { did: reader.did, ring: reader }), "TREAT");
  } else {
    const wallet = new PatientWallet(ring.did, ring.name, ring, new NodeClient(ring.current, ring.did, url));
    result = await readRecords(wallet.node, wallet.did, wallet);
  }
  writeFileSync(outPath, JSON.stringify(result));
}
