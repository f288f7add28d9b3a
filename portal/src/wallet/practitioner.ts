// The signed-in practitioner: through the organisation's gateway with SMART backend
// credentials, or with a practitioner key straight against the node (SPEC-11.md).
export interface PractitionerSession {
  readonly mode: "smart" | "key";
  readonly displayName: string;
}
