// The page's consent code against a real node, driven by tests/portal/test_consent_interop.py
// (which starts the node, makes the identities and checks with Python what this signed). Without
// its environment this file is skipped. Steps (CARELEDGER_CONSENT_STEP):
//   grant:  the patient grants the practitioner read access (as the Sharing page does), and
//           the organisation's GrantedKeys unwraps what the grant wrapped to it;
//   revoke: the patient revokes that grant (new epochs, shared with the remaining grants).
import { readFileSync, writeFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { hex } from "../src/crypto/bytes";
import { parseKeyFile } from "../src/crypto/keyfile";
import { grant, grantableParties, grantedKeySource, listGrants, revoke } from "../src/wallet/consent";
import { NodeClient } from "../src/wallet/node";

const STEP = process.env.CARELEDGER_CONSENT_STEP ?? "";
const env = (name: string) => process.env[name] ?? "";

describe.skipIf(!STEP)("consent against a real node", () => {
  const patient = STEP ? parseKeyFile(readFileSync(env("CARELEDGER_CONSENT_PATIENT"), "utf8")) : null;
  const node = patient ? new NodeClient(patient.current, patient.did, env("CARELEDGER_CONSENT_NODE")) : null;
  const grantor = patient && node ? { did: patient.did, keys: patient, node } : null;

  it.runIf(STEP === "grant")("grants as the Sharing page does, and the grantee's organisation unwraps the keys", async () => {
    const practitioner = env("CARELEDGER_CONSENT_GRANTEE");
    const parties = await grantableParties(node!);
    expect(parties.map((p) => p.did)).toContain(practitioner);
    const id = await grant(grantor!, {
      grantee: practitioner,
      action: "read",
      scopes: ["clinical", "diagnostics"],
      purposes: ["TREAT"],
      until: "2099-12-31",
    });
    const listed = await listGrants(node!, patient!.did);
    expect(listed.find((g) => g.id === id)?.grantee).toBe(practitioner);
    // The organisation (the cryptographic boundary) opens what the grant carries.
    const org = parseKeyFile(readFileSync(env("CARELEDGER_CONSENT_ORG"), "utf8"));
    const doctor = parseKeyFile(readFileSync(env("CARELEDGER_CONSENT_PRACTITIONER"), "utf8"));
    const doctorNode = new NodeClient(doctor.current, doctor.did, env("CARELEDGER_CONSENT_NODE"));
    // The practitioner's view (grants to it and to its organisation), opened with the
    // organisation's keys (the patient wrapped to those).
    const keys = grantedKeySource(doctorNode, doctor, org);
    const clinical = await keys.scopeKey(patient!.did, "clinical", 1);
    const diagnostics = await keys.scopeKey(patient!.did, "diagnostics", 1);
    const medications = await keys.scopeKey(patient!.did, "medications", 1);
    const naming = await keys.namingKey(patient!.did);
    writeFileSync(
      env("CARELEDGER_CONSENT_OUT"),
      JSON.stringify({
        grant: id,
        clinical: clinical ? hex(clinical) : null,
        diagnostics: diagnostics ? hex(diagnostics) : null,
        medications: medications ? hex(medications) : null,
        naming: naming ? hex(naming) : null,
      }),
    );
  });

  it.runIf(STEP === "revoke")("revokes, starting new epochs of the grant's scopes", async () => {
    const rotated = await revoke(grantor!, env("CARELEDGER_CONSENT_GRANT"));
    writeFileSync(env("CARELEDGER_CONSENT_OUT"), JSON.stringify({ rotated }));
  });
});
