// A clinician's session shows no key in its string or JSON (an error report, a log line).
import { describe, expect, it } from "vitest";
import { hex } from "../src/crypto/bytes";
import { Identity } from "../src/crypto/identity";
import { KeyRing } from "../src/crypto/keyfile";
import { encryptionKeysOf, grantedKeySource } from "../src/wallet/consent";
import { NodeClient } from "../src/wallet/node";
import { KeyPractitioner } from "../src/wallet/practitioner";

function ring(seed: number, kind: "organisation" | "practitioner"): KeyRing {
  return KeyRing.fromIdentity(Identity.fromMaster(new Uint8Array(32).fill(seed)), kind, `${kind} ${seed}`);
}

describe("a key-file clinician's session", () => {
  it("shows no private key of the organisation in its JSON or string", () => {
    const organisation = ring(7, "organisation");
    const practitioner = ring(9, "practitioner");
    const node = new NodeClient(practitioner.current, practitioner.did);
    const keySource = grantedKeySource(node, { did: practitioner.did, ring: practitioner }, { did: organisation.did, ring: organisation });
    const session = new KeyPractitioner(practitioner.did, "Dr. Test", practitioner, node, organisation, keySource);

    const secrets = [...encryptionKeysOf(organisation), ...encryptionKeysOf(practitioner)];
    for (const shown of [JSON.stringify(session), JSON.stringify(keySource), String(session), String(keySource), JSON.stringify({ session })]) {
      for (const key of secrets) {
        expect(shown).not.toContain(hex(key));
        expect(shown).not.toContain(JSON.stringify(key)); // a Uint8Array's JSON: {"0":..,"1":..}
        expect(shown).not.toContain(Array.from(key).join(","));
      }
    }
    expect(JSON.stringify(keySource)).toContain(organisation.did);
  });
});
