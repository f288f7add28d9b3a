// The interop commands: the page's crypto against Python's, both ways. Each takes one JSON
// object and answers one; bytes travel as hex. Run under Node by tools/interop.ts and in
// Chromium by tools/browser-check/ (tests/portal/test_crypto_interop.py). Test keys only,
// made at run time by the test; no I/O here, so the same code runs in both.
import { b64, fromHex, hex, utf8 } from "../src/crypto/bytes";
import { binding, openRecord, openRecordByName, sealRecord } from "../src/crypto/envelope";
import { Identity } from "../src/crypto/identity";
import { KeyRing, parseKeyFile } from "../src/crypto/keyfile";
import { recordName } from "../src/crypto/naming";
import { identityFromPhrase } from "../src/crypto/phrase";
import { SCOPES, recipientLabel, scopePublic, unwrapNamingKey, unwrapScopeKey, wrapNamingKey, wrapScopeKey } from "../src/crypto/scopekeys";
import { openClaimPackage } from "../src/crypto/claim";
import { authorizationHeader } from "../src/crypto/requestsig";
import { scopeKeyPayload } from "../src/crypto/statements";
import { signTx } from "../src/crypto/tx";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = Record<string, any>;

/** An error's class name, for the test to compare (or "" when nothing was thrown). */
async function failure(action: () => Promise<unknown>): Promise<string> {
  try {
    await action();
    return "";
  } catch (e) {
    return (e as Error).name;
  }
}

// A record sealed by the page, for Python to open; plus grants of its scope key and naming key.
async function seal(input: Json): Promise<Json> {
  const ring = parseKeyFile(input.keyfile);
  const resource = input.resource as Json;
  const b = binding(ring.did, resource.resourceType, resource.id, input.version);
  const record = recordName(ring.namingKey, b.resourceType, b.resourceId);
  const label = recipientLabel(input.scope, input.epoch);
  const sealed = await sealRecord(resource, b, [{ label, publicKey: ring.scopePublicKey(input.scope, input.epoch) }], { patient: ring.did, record });
  const granteePublic = fromHex(input.grantee_public);
  const scopeGrant = await wrapScopeKey(ring.scopeKey(input.scope, input.epoch), ring.did, input.scope, input.epoch, input.grantee, granteePublic);
  const namingGrant = await wrapNamingKey(ring.namingKey, ring.did, input.grantee, granteePublic);
  return {
    blob: hex(sealed.blob),
    blob_hash: sealed.blobHash,
    commitment: sealed.commitment,
    labels: sealed.labels,
    record,
    scope_grant: hex(scopeGrant),
    naming_grant: hex(namingGrant),
  };
}

// A record sealed by Python, opened by the patient (key file) and by a grantee (its grant).
async function open(input: Json): Promise<Json> {
  const ring = parseKeyFile(input.keyfile);
  const blob = fromHex(input.blob);
  const b = binding(ring.did, input.type, input.id, input.version);
  const anchor = { blobHash: input.blob_hash, commitment: input.commitment, record: input.record };
  const byPatient = await openRecord(blob, b, input.label, ring.scopeKey(input.scope, input.epoch), anchor);
  const grantee = Identity.fromMaster(fromHex(input.grantee_master));
  const scopeSk = await unwrapScopeKey(fromHex(input.scope_grant), ring.did, input.scope, input.epoch, scopePublic(ring.scopeKey(input.scope, input.epoch)), grantee.did, grantee.encryptionPrivate);
  const byGrantee = await openRecord(blob, b, input.label, scopeSk, anchor);
  const naming = await unwrapNamingKey(fromHex(input.naming_grant), ring.did, grantee.did, grantee.encryptionPrivate);
  const flipped = blob.slice();
  flipped[flipped.length - 1]! ^= 1;
  const moved = binding(ring.did, input.type, input.id, input.version + 1);
  // Knowing only the record's name (as the chain lists it): the grantee learns type and id
  // from the wrap (v2) and checks the name with the granted naming key.
  const named = { blobHash: input.blob_hash, commitment: input.commitment, resourceType: input.type, version: input.version };
  const byName = await openRecordByName(blob, { patient: ring.did, record: input.record }, input.label, scopeSk, named, naming);
  return {
    by_patient: byPatient,
    by_grantee: byGrantee,
    by_name: { type: byName.binding.resourceType, id: byName.binding.resourceId, resource: byName.resource },
    record_name: recordName(naming, input.type, input.id),
    flipped: await failure(() => openRecord(flipped, b, input.label, scopeSk)),
    moved: await failure(() => openRecord(blob, moved, input.label, scopeSk)),
    other_anchor: await failure(() => openRecord(blob, b, input.label, scopeSk, { commitment: "00".repeat(32) })),
  };
}

async function claim(input: Json): Promise<Json> {
  const opened = await openClaimPackage(input.package, input.code);
  const tampered = JSON.parse(input.package);
  tampered.chain_id = tampered.chain_id + "-x";
  return {
    did: opened.did,
    chain_id: opened.chainId,
    name: opened.name,
    master: hex(opened.masterSecret),
    wrong: await failure(() => openClaimPackage(input.package, input.wrong_code)),
    tampered: await failure(() => openClaimPackage(tampered, input.code)),
  };
}

async function phrase(input: Json): Promise<Json> {
  return { did: identityFromPhrase(input.phrase).did };
}

interface Prepared {
  method: string;
  target: string;
  body: string;
  authorization: string;
}

function prepare(identity: Identity, did: string, audience: { chainId: string; nodeId: string }, method: string, target: string, body = ""): Prepared {
  return { method, target, body, authorization: authorizationHeader(identity, did, audience, method, target, utf8(body)) };
}

// Requests and transactions signed in the page, for Python to send to a real node: a query
// as the organisation (and the same signed for another node), a patient's registration with
// the organisation's voucher, and the patient's six signed scope keys of epoch 1.
async function node(input: Json): Promise<Json> {
  const org = parseKeyFile(input.org_keyfile);
  const audience = { chainId: input.chain_id, nodeId: input.node_id };
  const patient = Identity.fromMaster(fromHex(input.patient_master));
  const members = prepare(org.current, org.did, audience, "GET", "/query/identity/members");
  const elsewhere = prepare(org.current, org.did, { ...audience, nodeId: "f".repeat(32) }, "GET", "/query/identity/members");
  const tx = (nonce: number, type: string, payload: Json) =>
    b64(signTx(patient, { chainId: input.chain_id, type, sender: patient.did, nonce, payload }));
  const register = tx(1, "identity/register_patient", { encryption_key: hex(patient.encryptionPublic), voucher: input.voucher });
  const ring = KeyRing.fromIdentity(patient);
  const scopeTxs = SCOPES.map((s, i) =>
    tx(2 + i, "records/publish_scope_key", scopeKeyPayload(patient, input.chain_id, s, 1, hex(ring.scopePublicKey(s, 1)))),
  );
  return {
    patient: patient.did,
    members,
    elsewhere,
    register: prepare(patient, patient.did, audience, "POST", "/tx", JSON.stringify({ tx: register, wait: true })),
    scope_keys: prepare(patient, patient.did, audience, "POST", "/txs", JSON.stringify({ txs: scopeTxs, wait: true })),
  };
}

export const COMMANDS: Record<string, (input: Json) => Promise<Json>> = { seal, open, claim, phrase, node };
