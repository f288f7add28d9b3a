// The Timeline's order and filters: pure, tested without a DOM.
import { describe, timeOf, type Category, type Display } from "../../wallet/fhir-display";
import type { DecryptedRecord } from "../../wallet/records";

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
