// Where the chart's points, ticks and labels go: pure arithmetic, tested without a DOM.

export interface ChartGeometry {
  width: number;
  height: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
  min: number; // the data's lowest and highest value
  max: number;
  points: { x: number; y: number }[];
  yTicks: { value: number; y: number; label: string }[];
  xTicks: { time: number; x: number; label: string }[];
}

/** The drawing's size in SVG units; the SVG scales to its box, so a phone gets a narrower
 * drawing (its 12-unit labels stay readable) rather than a shrunken wide one. */
export interface ChartSize {
  width: number;
  height: number;
  xTicks: number; // intervals on the time axis
}
export const WIDE: ChartSize = { width: 640, height: 300, xTicks: 4 };
export const NARROW: ChartSize = { width: 340, height: 240, xTicks: 2 };
const MARGIN = { left: 48, right: 20, top: 24, bottom: 44 };
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const DAY = 86_400_000;

export function chartGeometry(points: { time: number; value: number }[], size: ChartSize = WIDE): ChartGeometry {
  const { width: WIDTH, height: HEIGHT } = size;
  const values = points.map((p) => p.value);
  const min = Math.min(...values);
  const max = Math.max(...values);
  const yTickValues = niceTicks(min, max, 5);
  const yLow = Math.min(min, yTickValues[0]!);
  const yHigh = Math.max(max, yTickValues[yTickValues.length - 1]!);
  const times = points.map((p) => p.time);
  let tLow = Math.min(...times);
  let tHigh = Math.max(...times);
  if (tHigh - tLow < DAY) {
    tLow -= 15 * DAY; // one day's measurements: a month around them, not a zero-width axis
    tHigh += 15 * DAY;
  }
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const x = (t: number) => round(MARGIN.left + ((t - tLow) / (tHigh - tLow)) * plotW);
  const y = (v: number) => round(MARGIN.top + plotH - ((v - yLow) / (yHigh - yLow || 1)) * plotH);
  const span = tHigh - tLow;
  return {
    width: WIDTH,
    height: HEIGHT,
    ...MARGIN,
    min,
    max,
    points: points.map((p) => ({ x: x(p.time), y: y(p.value) })),
    yTicks: yTickValues.map((value) => ({ value, y: y(value), label: tickLabel(value) })),
    xTicks: timeTicks(tLow, tHigh, size.xTicks).map((time) => ({ time, x: x(time), label: dateLabel(time, span) })),
  };
}

/** About `count` round values (1, 2 or 5 times a power of ten apart) covering [min, max]. */
export function niceTicks(min: number, max: number, count: number): number[] {
  if (min === max) {
    const pad = Math.abs(min) * 0.1 || 1;
    return niceTicks(min - pad, max + pad, count);
  }
  const rough = (max - min) / Math.max(1, count - 1);
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = ([1, 2, 5, 10].find((m) => m * power >= rough) ?? 10) * power;
  const ticks: number[] = [];
  const start = Math.floor(min / step);
  for (let i = 0; ticks.length === 0 || ticks[ticks.length - 1]! < max; i++) {
    ticks.push(Number(((start + i) * step).toPrecision(12)));
  }
  return ticks;
}

function timeTicks(low: number, high: number, count: number): number[] {
  const step = (high - low) / count;
  return Array.from({ length: count + 1 }, (_, i) => low + i * step);
}

/** A year when the chart spans years, else month and year. */
function dateLabel(time: number, span: number): string {
  const date = new Date(time);
  if (span > 3 * 365 * DAY) return String(date.getUTCFullYear());
  return `${MONTHS[date.getUTCMonth()]} ${date.getUTCFullYear()}`;
}

function tickLabel(value: number): string {
  return String(Number(value.toPrecision(6)));
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}
