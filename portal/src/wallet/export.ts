// "Download all my data": the patient's decrypted records as one FHIR Bundle of type
// `collection` (https://hl7.org/fhir/R4/bundle.html), made in the page and saved through a
// Blob URL: the plaintext never goes to a server.
import type { DecryptedRecord } from "./records";

export interface FhirBundle {
  resourceType: "Bundle";
  type: "collection";
  timestamp: string;
  total?: never; // only for searchsets and histories
  entry: { resource: Record<string, unknown> }[];
}

/** The records, oldest anchor first, each resource as stored (meta.versionId set). A
 * collection's entries need no fullUrl; a relative one is not allowed, and an invented
 * absolute one would claim a server these resources do not live on. */
export function exportBundle(records: DecryptedRecord[], now: Date = new Date()): FhirBundle {
  const ordered = [...records].sort((a, b) => a.height - b.height || a.name.localeCompare(b.name));
  return {
    resourceType: "Bundle",
    type: "collection",
    timestamp: now.toISOString(),
    entry: ordered.map((rec) => ({ resource: rec.resource })),
  };
}

/** A file name for the download, e.g. "careledger-records-2026-11-24.json". */
export function exportFileName(now: Date = new Date()): string {
  return `careledger-records-${now.toISOString().slice(0, 10)}.json`;
}

/** Save `value` as a JSON file through a Blob URL (no data: URL: the CSP allows none). */
export function downloadJson(fileName: string, value: unknown): void {
  downloadText(fileName, JSON.stringify(value, null, 2), "application/fhir+json");
}

/** Saves `text` as a file: the object URL lives only for the click, so nothing (a key file
 * included) stays fetchable from the tab afterwards. */
export function downloadText(fileName: string, text: string, type: string): void {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = fileName;
  link.rel = "noopener";
  document.body.append(link);
  link.click();
  link.remove();
  // the browser has taken its copy once click() returns; revoke on the next turn to be safe
  setTimeout(() => URL.revokeObjectURL(url), 0);
}
