// Keyed record names (docs/crypto.md 7.1; crypto/naming.py):
//   name = hex(HMAC-SHA256(naming_key, "careledger-record-name-v2" || lp(type) || lp(id)))
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { concat, hex, lp, utf8 } from "./bytes";

const RECORD_NAME_LABEL = utf8("careledger-record-name-v2");
export const NAMING_KEY_LABEL = "naming-key"; // Identity.secret() label of the naming key

export function recordName(namingKey: Uint8Array, resourceType: string, resourceId: string): string {
  if (namingKey.length !== 32) throw new Error("a naming key is 32 bytes");
  return hex(hmac(sha256, namingKey, concat(RECORD_NAME_LABEL, lp(resourceType), lp(resourceId))));
}
