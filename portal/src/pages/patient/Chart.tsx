// A numeric measurement over time, drawn by our own SVG (no chart library: one more
// dependency in the page that decrypts health records is one more to trust). The chart has an
// accessible name and description, and the same values are in a table for those who cannot
// see it.
import { useEffect, useMemo, useState } from "preact/hooks";
import { Field } from "../../app/ui";
import { formatDate, measurementSeries, number, type Resource, type Series } from "../../wallet/fhir-display";
import { chartGeometry, NARROW, WIDE, type ChartGeometry } from "./chart-geometry";

/** What a patient most likely wants to see first, when it was measured. */
const PREFERRED = ["29463-7", "8480-6", "4548-4", "39156-5", "8462-4"]; // weight, systolic, HbA1c, BMI, diastolic

export function defaultSeries(all: Series[]): Series | undefined {
  for (const code of PREFERRED) {
    const found = all.find((s) => s.code === code && s.points.length > 1);
    if (found) return found;
  }
  return all[0];
}

/** True on a phone-wide screen (the chart then draws a narrower picture). */
function useNarrow(): boolean {
  const query = "(max-width: 40rem)";
  const [narrow, setNarrow] = useState(() => window.matchMedia(query).matches);
  useEffect(() => {
    const list = window.matchMedia(query);
    const onChange = () => setNarrow(list.matches);
    list.addEventListener("change", onChange);
    onChange(); // a change between the first render and this (later) effect fired no listener
    return () => list.removeEventListener("change", onChange);
  }, []);
  return narrow;
}

function seriesName(s: Series): string {
  return s.unit ? `${s.label} (${s.unit})` : s.label;
}

export function Chart(props: { resources: Resource[] }) {
  const all = useMemo(() => measurementSeries(props.resources), [props.resources]);
  const [chosen, setChosen] = useState<string | null>(null);
  const narrow = useNarrow();
  const series = all.find((s) => s.key === chosen) ?? defaultSeries(all);
  if (!series) return null;
  const geometry = chartGeometry(series.points, narrow ? NARROW : WIDE);
  const first = series.points[0]!;
  const last = series.points[series.points.length - 1]!;
  const description =
    series.points.length === 1
      ? `One measurement: ${number(first.value)} ${series.unit} on ${formatDate(first.date)}.`
      : `${series.points.length} measurements from ${formatDate(first.date)} to ${formatDate(last.date)}, ` +
        `between ${number(geometry.min)} and ${number(geometry.max)} ${series.unit}; the latest is ${number(last.value)} ${series.unit}.`;
  return (
    <figure class="chart card" data-testid="chart" aria-labelledby="chart-caption">
      <figcaption id="chart-caption">
        <h2 class="chart-heading">Measurements over time</h2>
      </figcaption>
      <Field id="measurement" label="Measurement">
        <select id="measurement" value={series.key} onChange={(e) => setChosen((e.target as HTMLSelectElement).value)}>
          {all.map((s) => (
            <option key={s.key} value={s.key}>
              {seriesName(s)}, {s.points.length} {s.points.length === 1 ? "value" : "values"}
            </option>
          ))}
        </select>
      </Field>
      <ChartSvg series={series} geometry={geometry} description={description} />
      <p class="chart-summary">{description}</p>
      <details class="chart-table">
        <summary>Show the values as a table</summary>
        <div class="table-wrap">
          <table>
            <caption>{seriesName(series)}</caption>
            <thead>
              <tr>
                <th scope="col">Date</th>
                <th scope="col">Value{series.unit ? ` (${series.unit})` : ""}</th>
              </tr>
            </thead>
            <tbody>
              {[...series.points].reverse().map((p, i) => (
                <tr key={i}>
                  <td>{formatDate(p.date)}</td>
                  <td>{number(p.value)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </details>
    </figure>
  );
}

function ChartSvg(props: { series: Series; geometry: ChartGeometry; description: string }) {
  const { series, geometry: g } = props;
  const title = `${seriesName(series)} over time`;
  return (
    <svg
      class="chart-svg"
      viewBox={`0 0 ${g.width} ${g.height}`}
      role="img"
      aria-labelledby="chart-svg-title chart-svg-desc"
      preserveAspectRatio="xMidYMid meet"
    >
      <title id="chart-svg-title">{title}</title>
      <desc id="chart-svg-desc">{props.description}</desc>
      <g class="chart-grid" aria-hidden="true">
        {g.yTicks.map((t) => (
          <line key={`y${t.value}`} x1={g.left} x2={g.width - g.right} y1={t.y} y2={t.y} />
        ))}
      </g>
      <g class="chart-axis" aria-hidden="true">
        <line x1={g.left} x2={g.left} y1={g.top} y2={g.height - g.bottom} />
        <line x1={g.left} x2={g.width - g.right} y1={g.height - g.bottom} y2={g.height - g.bottom} />
        {g.yTicks.map((t) => (
          <text key={`yl${t.value}`} x={g.left - 6} y={t.y} class="chart-label chart-label-y">
            {t.label}
          </text>
        ))}
        {g.xTicks.map((t) => (
          <text key={`xl${t.time}`} x={t.x} y={g.height - g.bottom + 18} class="chart-label chart-label-x">
            {t.label}
          </text>
        ))}
        <text x={g.left} y={g.top - 6} class="chart-label chart-unit">
          {series.unit || series.label}
        </text>
        <text x={g.width - g.right} y={g.height - 6} class="chart-label chart-label-end">
          Date
        </text>
      </g>
      <g aria-hidden="true">
        {g.points.length > 1 ? <polyline class="chart-line" points={g.points.map((p) => `${p.x},${p.y}`).join(" ")} /> : null}
        {g.points.map((p, i) => (
          <circle key={i} class="chart-point" cx={p.x} cy={p.y} r={g.points.length > 60 ? 2 : 3.5} />
        ))}
      </g>
    </svg>
  );
}
