// The patient's records, newest first, decrypted in this page; filters by category and date,
// a chart of a measurement over time, and a warning for any record that failed its checks.
import { useMemo, useState } from "preact/hooks";
import { useSession } from "../../app/session";
import { Empty, ErrorMessage, Field, Loading, Page } from "../../app/ui";
import { CATEGORIES, formatDate, type Category } from "../../wallet/fhir-display";
import type { RecordFailure } from "../../wallet/records";
import { Chart } from "./Chart";
import { SignInFirst, useMyRecords } from "./my-records";
import { applyFilters, byDay, shownRecords, type Filters, type Shown } from "./timeline-filters";
import "./records.css";

const PAGE_SIZE = 100;


export function Timeline() {
  const session = useSession();
  const wallet = session.kind === "patient" ? session.wallet : null;
  return (
    <Page title="Timeline" intro="Your records, newest first. They are stored encrypted; this page opens them with your keys.">
      {wallet ? <TimelineBody wallet={wallet} /> : <SignInFirst what="your records" />}
    </Page>
  );
}

function TimelineBody(props: { wallet: NonNullable<Parameters<typeof useMyRecords>[0]> }) {
  const { result, error, loading, progress, reload } = useMyRecords(props.wallet);
  const shown = useMemo(() => shownRecords(result?.records ?? []), [result]);
  if (loading) {
    const what = progress.total ? `Opening your records (${progress.opened} of ${progress.total})` : "Fetching your records";
    return <Loading what={what} />;
  }
  if (error) {
    return (
      <>
        <ErrorMessage error={error} title="Your records could not be read" />
        <button type="button" onClick={reload}>
          Try again
        </button>
      </>
    );
  }
  return (
    <>
      <Problems failures={result?.failures ?? []} />
      {shown.length === 0 ? (
        <Empty>
          {result?.failures.length ? "None of your records can be shown here." : "You have no records yet. When a clinic adds one, it appears here."}
        </Empty>
      ) : (
        <Records shown={shown} />
      )}
    </>
  );
}

function Records(props: { shown: Shown[] }) {
  const [filters, setFilters] = useState<Filters>({ category: "", from: "", to: "" });
  const [limit, setLimit] = useState(PAGE_SIZE);
  const kept = useMemo(() => applyFilters(props.shown, filters), [props.shown, filters]);
  const present = new Set(props.shown.map((s) => s.category));
  const invalidRange = filters.from && filters.to && filters.from > filters.to;
  const set = (change: Partial<Filters>) => {
    setFilters({ ...filters, ...change });
    setLimit(PAGE_SIZE);
  };
  const resources = useMemo(
    () => applyFilters(props.shown, { ...filters, category: "" }).map((s) => s.record.resource),
    [props.shown, filters.from, filters.to],
  );
  return (
    <>
      <form class="filters card" aria-label="Filter records" onSubmit={(e) => e.preventDefault()}>
        <Field id="filter-category" label="Category">
          <select id="filter-category" value={filters.category} onChange={(e) => set({ category: (e.target as HTMLSelectElement).value as Category | "" })}>
            <option value="">All categories</option>
            {CATEGORIES.filter((c) => present.has(c)).map((c) => (
              <option key={c} value={c}>
                {c}
              </option>
            ))}
          </select>
        </Field>
        <Field id="filter-from" label="From">
          <input id="filter-from" type="date" value={filters.from} onChange={(e) => set({ from: (e.target as HTMLInputElement).value })} />
        </Field>
        <Field id="filter-to" label="To" error={invalidRange ? "“To” is before “From”." : undefined}>
          <input
            id="filter-to"
            type="date"
            value={filters.to}
            aria-invalid={invalidRange ? "true" : undefined}
            aria-describedby={invalidRange ? "filter-to-error" : undefined}
            onChange={(e) => set({ to: (e.target as HTMLInputElement).value })}
          />
        </Field>
        <div class="filters-actions">
          <button type="button" class="secondary" onClick={() => set({ category: "", from: "", to: "" })}>
            Clear filters
          </button>
        </div>
      </form>
      <Chart resources={resources} />
      <h2 class="records-heading">Records</h2>
      <p role="status" class="records-count">
        {kept.length === props.shown.length ? `${kept.length} records` : `${kept.length} of ${props.shown.length} records`}
      </p>
      {kept.length === 0 ? (
        <Empty>No records match these filters.</Empty>
      ) : (
        <ol class="timeline">
          {byDay(kept.slice(0, limit)).map((group) => (
            <li key={`${group.day}-${group.items[0]!.name}`} class="day">
              <h3 class="day-heading">
                {group.day ? <time dateTime={group.day}>{formatDate(group.day)}</time> : "Date unknown"}
              </h3>
              <ul class="day-records">
                {group.items.map((item) => (
                  <RecordItem key={item.name} item={item} />
                ))}
              </ul>
            </li>
          ))}
        </ol>
      )}
      {kept.length > limit ? (
        <button type="button" class="secondary" onClick={() => setLimit(limit + PAGE_SIZE)}>
          Show {Math.min(PAGE_SIZE, kept.length - limit)} more
        </button>
      ) : null}
    </>
  );
}

function RecordItem(props: { item: Shown }) {
  const { item } = props;
  return (
    <li class="record" data-testid="record" data-resource-type={item.record.resourceType} data-record-name={item.name}>
      <p class="record-title">{item.title}</p>
      {item.detail ? <p class="record-detail">{item.detail}</p> : null}
      <p class="record-meta">
        <span class="badge">{item.category}</span>
      </p>
    </li>
  );
}

/** Integrity and decryption failures are warnings (someone or something altered a record, or
 * a key is missing); erased and deleted records are the patient's own doing, said quietly. */
export function Problems(props: { failures: RecordFailure[] }) {
  const serious = props.failures.filter((f) => f.kind === "integrity" || f.kind === "decryption" || f.kind === "no-key");
  const refused = props.failures.filter((f) => f.kind === "denied" || f.kind === "unavailable");
  const erased = props.failures.filter((f) => f.kind === "erased").length;
  const deleted = props.failures.filter((f) => f.kind === "deleted").length;
  return (
    <>
      {serious.length ? (
        <div class="alert alert-warning" role="alert" data-testid="integrity-warning">
          <strong>
            {serious.length === 1 ? "1 record" : `${serious.length} records`} could not be shown because {serious.length === 1 ? "it" : "they"} failed a
            check.
          </strong>{" "}
          What the node served does not match what the ledger recorded, or none of your keys opens it. Your other records are not affected.
          <FailureList failures={serious} />
        </div>
      ) : null}
      {refused.length ? (
        <div class="alert alert-info" role="status">
          {refused.length === 1 ? "1 record" : `${refused.length} records`} could not be read now.
          <FailureList failures={refused} />
        </div>
      ) : null}
      {erased || deleted ? (
        <p class="muted-note">
          {erased ? `${erased} erased ${erased === 1 ? "record is" : "records are"} not shown. ` : ""}
          {deleted ? `${deleted} deleted ${deleted === 1 ? "record is" : "records are"} not shown.` : ""}
        </p>
      ) : null}
    </>
  );
}

function FailureList(props: { failures: RecordFailure[] }) {
  const shown = props.failures.slice(0, 10);
  return (
    <details class="failures">
      <summary>Details</summary>
      <ul>
        {shown.map((f) => (
          <li key={f.name}>
            {f.resourceType} <span class="mono">{f.name.slice(0, 12)}…</span>: {f.reason}
          </li>
        ))}
        {props.failures.length > shown.length ? <li>and {props.failures.length - shown.length} more</li> : null}
      </ul>
    </details>
  );
}
