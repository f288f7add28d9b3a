// The Timeline's order and filters: pure, tested without a DOM.
import { describe, formatDate, timeOf, typeLabel, type Category, type Display } from "../../wallet/fhir-display";
import type { DecryptedRecord, ReadResult } from "../../wallet/records";

export interface Shown extends Display {
  name: string;
  record: DecryptedRecord;
}

export function shownRecords(records: DecryptedRecord[]): Shown[] {
  const shown = records.map((record) => ({ ...describe(record.resource), name: record.name, record }));
  return shown.sort((a, b) => (timeOrMin(b.date) - timeOrMin(a.date)) || a.name.localeCompare(b.name));
}

function timeOrMin(date: string | null): number {
  const t = timeOf(date);
  return Number.isNaN(t) ? Number.MIN_SAFE_INTEGER : t; // undated records go last
}

export interface Filters {
  category: Category | "";
  from: string; // yyyy-mm-dd or ""
  to: string;
}

/** The records the filters keep; `to` includes its whole day. */
export function applyFilters(items: Shown[], filters: Filters): Shown[] {
  const from = filters.from ? Date.parse(`${filters.from}T00:00:00Z`) : Number.NEGATIVE_INFINITY;
  const to = filters.to ? Date.parse(`${filters.to}T23:59:59.999Z`) : Number.POSITIVE_INFINITY;
  const dated = Boolean(filters.from || filters.to);
  return items.filter((item) => {
    if (filters.category && item.category !== filters.category) return false;
    if (!dated) return true;
    const t = timeOf(item.date);
    return !Number.isNaN(t) && t >= from && t <= to;
  });
}

/** Consecutive records of one day under one heading (the list is newest first already). */
export function byDay(items: Shown[]): { day: string | null; items: Shown[] }[] {
  const groups: { day: string | null; items: Shown[] }[] = [];
  for (const item of items) {
    const day = item.date ? item.date.slice(0, 10) : null;
    const last = groups[groups.length - 1];
    if (last && last.day === day) last.items.push(item);
    else groups.push({ day, items: [item] });
  }
  return groups;
}

export interface Erasable {
  name: string; // the on-chain record name, what records/erase takes
  title: string;
  detail: string;
}

/** What the patient may erase: every record not erased yet, the ones this page opened
 * (newest first, described) and the ones it could not open (by type: the right to erase
 * does not depend on the page reading a record). */
export function erasable(result: ReadResult): Erasable[] {
  const opened = shownRecords(result.records).map((s) => ({
    name: s.name,
    title: s.title,
    detail: `${s.category}, ${formatDate(s.date)}`,
  }));
  const closed = result.failures
    .filter((f) => f.kind !== "erased")
    .map((f) => ({
      name: f.name,
      title: `${typeLabel(f.resourceType)} record`,
      detail: f.kind === "deleted" ? "deleted; its earlier versions remain" : `could not be opened, ${f.name.slice(0, 8)}…`,
    }));
  return [...opened, ...closed];
}
