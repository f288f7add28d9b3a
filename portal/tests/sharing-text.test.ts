// The sentences a patient reads before signing, and the grant form's rules.
import { describe, expect, it } from "vitest";
import {
  dayInWords,
  describeGrant,
  endOfDay,
  grantState,
  grantSummary,
  hasErrors,
  lastDay,
  scopesInWords,
  validateGrantForm,
  type GrantForm,
  type GrantRow,
} from "../src/wallet/sharing-text";

const CLINIC = "did:key:z6MkClinic";
const NOW = Date.UTC(2026, 10, 24, 12) / 1000; // 24 November 2026, noon UTC

function form(change: Partial<GrantForm> = {}): GrantForm {
  return { grantee: CLINIC, access: "read", scopes: ["diagnostics"], purpose: "TREAT", until: "2027-03-31", ...change };
}

describe("the summary before signing", () => {
  it("says who, what, why and until when, as the issue's example", () => {
    const summary = grantSummary("Northside Clinic", form({ scopes: ["diagnostics", "medications"] }));
    expect(summary).toBe("Northside Clinic will be able to read your lab results and medications for treatment until 31 March 2027.");
  });

  it("names scopes in the form's order whatever the order ticked, and lists three with commas", () => {
    expect(scopesInWords(["medications", "clinical", "diagnostics"])).toBe("medical history, lab results and medications");
  });

  it("says 'all your records' for every broad scope, and whether sensitive ones are in", () => {
    const broad = ["clinical", "diagnostics", "medications", "administrative", "financial"];
    expect(grantSummary("A", form({ scopes: broad }))).toContain("read all your records (not the sensitive ones) for");
    expect(grantSummary("A", form({ scopes: [...broad, "sensitive"] }))).toContain("read all your records (sensitive ones included) for treatment");
  });

  it("says 'add' for write access and leaves the purpose out (writes are not limited by purpose)", () => {
    const summary = grantSummary("Dr. Northside (Northside Clinic)", form({ access: "write", scopes: ["clinical"] }));
    expect(summary).toBe(
      "Dr. Northside (Northside Clinic) will be able to add new records to your medical history until 31 March 2027.",
    );
  });

  it("says the purpose in words", () => {
    expect(grantSummary("A", form({ purpose: "HRESCH" }))).toContain("for research until");
    expect(grantSummary("A", form({ purpose: "ETREAT" }))).toContain("for emergency treatment until");
  });
});

describe("the grant form's rules", () => {
  const parties = [CLINIC];
  const check = (change: Partial<GrantForm>) => validateGrantForm(form(change), parties, NOW);

  it("accepts a complete form", () => {
    expect(check({})).toEqual({});
    expect(hasErrors(check({}))).toBe(false);
  });

  it("asks for a grantee, and one from the list", () => {
    expect(check({ grantee: "" }).grantee).toBe("Choose who to share with.");
    expect(check({ grantee: "did:key:z6MkSomeoneElse" }).grantee).toMatch(/from the list/);
  });

  it("asks for at least one scope", () => {
    expect(check({ scopes: [] }).scopes).toBe("Choose at least one kind of record.");
    expect(check({ scopes: ["everything"] }).scopes).toMatch(/Unknown kind of record/);
  });

  it("refuses write access with sensitive records", () => {
    expect(check({ access: "write", scopes: ["clinical", "sensitive"] }).scopes).toMatch(/for reading only/);
    expect(check({ access: "read", scopes: ["clinical", "sensitive"] })).toEqual({});
  });

  it("asks why for a read, not for a write", () => {
    expect(check({ purpose: "" }).purpose).toMatch(/why/);
    expect(check({ purpose: "NOPE" }).purpose).toMatch(/why/);
    expect(check({ access: "write", purpose: "" })).toEqual({});
  });

  it("refuses an end date that is missing, not a day, or past; today is fine", () => {
    expect(check({ until: "" }).until).toMatch(/last day/);
    expect(check({ until: "2027-02-30" }).until).toMatch(/real date/);
    expect(check({ until: "31/03/2027" }).until).toMatch(/real date/);
    expect(check({ until: "2026-11-23" }).until).toMatch(/passed/);
    expect(check({ until: "2026-11-24" })).toEqual({});
  });

  it("reports every problem at once, by field", () => {
    const errors = validateGrantForm({ grantee: "", access: "", scopes: [], purpose: "", until: "" }, parties, NOW);
    expect(Object.keys(errors).sort()).toEqual(["access", "grantee", "scopes", "until"]);
  });
});

describe("dates", () => {
  it("ends a grant at the end of its last day, UTC, as the CLI's --until", () => {
    expect(endOfDay("2027-03-31")).toBe(Date.UTC(2027, 3, 1) / 1000);
    expect(lastDay(Date.UTC(2027, 3, 1) / 1000)).toBe("2027-03-31");
    expect(dayInWords("2027-03-31")).toBe("31 March 2027");
  });
});

describe("grants in words", () => {
  const row = (change: Partial<GrantRow>): GrantRow => ({
    id: "a".repeat(32), patient: "did:key:z6MkPatient", grantee: CLINIC, action: "read",
    scopes: ["clinical", "diagnostics"], records: [], purposes: ["TREAT"],
    start: NOW - 10, end: Date.UTC(2027, 3, 1) / 1000, org: CLINIC, grantor: "did:key:z6MkPatient",
    delegation: "", height: 4, revoked_at: 0, ...change,
  });

  it("says who may read what, why and until when", () => {
    expect(describeGrant(row({}), "Northside Clinic", NOW)).toBe(
      "Northside Clinic may read your medical history and lab results for treatment until 31 March 2027.",
    );
  });

  it("says who may add what", () => {
    expect(describeGrant(row({ action: "write", scopes: ["medications"], purposes: [] }), "Demo Hospital", NOW)).toBe(
      "Demo Hospital may add new records to your medications until 31 March 2027.",
    );
  });

  it("knows active, not started, ended and revoked", () => {
    expect(grantState(row({}), NOW)).toBe("active");
    expect(grantState(row({ start: NOW + 100 }), NOW)).toBe("not started");
    expect(grantState(row({ end: NOW }), NOW)).toBe("ended");
    expect(grantState(row({ revoked_at: 9 }), NOW)).toBe("revoked");
  });
});
