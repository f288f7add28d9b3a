// The record binding (docs/crypto.md 1; envelope.RecordBinding): what a record version is
// named by, and its encoding lp(patient) || lp(type) || lp(id) || u32(version).
import { concat, lp, u32, utf8 } from "./bytes";

export class InvalidBinding extends Error {
  override name = "InvalidBinding";
}

export interface RecordBinding {
  readonly patient: string;
  readonly resourceType: string;
  readonly resourceId: string;
  readonly version: number;
}

const RESOURCE_TYPE = /^[A-Z][A-Za-z]{0,63}$/;
const RESOURCE_ID = /^[A-Za-z0-9\-.]{1,64}$/;

/** 1 to 255 UTF-8 bytes, no NUL (a patient did in a binding or a blob header). */
export function validPatient(patient: unknown): patient is string {
  return typeof patient === "string" && patient.length > 0 && !patient.includes("\0") && utf8(patient).length <= 255;
}

/** A checked binding; InvalidBinding for anything the scheme cannot encode unambiguously. */
export function binding(patient: string, resourceType: string, resourceId: string, version: number): RecordBinding {
  if (!validPatient(patient)) throw new InvalidBinding("patient pseudonym must be 1 to 255 UTF-8 bytes, without NUL");
  if (!RESOURCE_TYPE.test(resourceType)) throw new InvalidBinding(`not a FHIR resource type: ${JSON.stringify(resourceType)}`);
  if (!RESOURCE_ID.test(resourceId)) throw new InvalidBinding(`not a FHIR id: ${JSON.stringify(resourceId)}`);
  if (!Number.isInteger(version) || version < 1 || version > 0xffffffff) {
    throw new InvalidBinding(`version must be an integer from 1 to 2**32-1: ${version}`);
  }
  return Object.freeze({ patient, resourceType, resourceId, version });
}

export function encodeBinding(b: RecordBinding): Uint8Array {
  const checked = binding(b.patient, b.resourceType, b.resourceId, b.version);
  return concat(lp(checked.patient), lp(checked.resourceType), lp(checked.resourceId), u32(checked.version));
}
