/**
 * A small SVG line chart of the metrics a job reports.
 *
 * One chart per metric name (loss and accuracy seldom share a scale), each
 * a line of value against step, with the range of both axes and the last
 * value written out. No chart library: a few dozen SVG elements.
 */
import { IMetricRecord } from './api';

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 320;
const HEIGHT = 120;
const PAD = { left: 44, right: 8, top: 8, bottom: 20 };

/** A metric's points, sorted by step. */
export interface ISeries {
  name: string;
  points: [number, number][];
}

/**
 * The series in the records: `{step, values: {name: v}}` lines (as
 * `log_metric` writes them) or flat `{step, name: v}` ones. A record
 * without a step takes its position in the file.
 */
export function seriesOf(records: IMetricRecord[]): ISeries[] {
  const byName = new Map<string, [number, number][]>();
  records.forEach((record, index) => {
    const step = typeof record.step === 'number' ? record.step : index;
    let values: { [name: string]: unknown } = {};
    if (record.values && typeof record.values === 'object') {
      values = record.values;
    } else {
      for (const [k, v] of Object.entries(record)) {
        if (!['step', 'time', 'rank'].includes(k)) {
          values[k] = v;
        }
      }
    }
    for (const [name, value] of Object.entries(values)) {
      if (typeof value !== 'number' || !Number.isFinite(value)) {
        continue;
      }
      if (!byName.has(name)) {
        byName.set(name, []);
      }
      byName.get(name)!.push([step, value]);
    }
  });
  return [...byName.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, points]) => ({ name, points: points.sort((p, q) => p[0] - q[0]) }));
}

/** A number short enough for an axis label. */
export function formatNumber(value: number): string {
  if (value === 0) {
    return '0';
  }
  const abs = Math.abs(value);
  if (abs >= 1e5 || abs < 1e-3) {
    return value.toExponential(2);
  }
  return Number(value.toPrecision(4)).toString();
}

function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: { [name: string]: string | number }
): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) {
    el.setAttribute(k, String(v));
  }
  return el;
}

/** The SVG path (`d`) of points in a box, with each axis scaled to its range. */
export function linePath(points: [number, number][], width: number, height: number): string {
  if (points.length === 0) {
    return '';
  }
  const xs = points.map(p => p[0]);
  const ys = points.map(p => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x: number) => (x1 === x0 ? width / 2 : ((x - x0) / (x1 - x0)) * width);
  const sy = (y: number) => (y1 === y0 ? height / 2 : height - ((y - y0) / (y1 - y0)) * height);
  return points
    .map(([x, y], i) => `${i === 0 ? 'M' : 'L'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`)
    .join(' ');
}

/** One chart: an `<figure>` holding the metric's name, last value and SVG. */
export function renderSeries(series: ISeries): HTMLElement {
  const figure = document.createElement('figure');
  figure.className = 'jp-KubeAI-chart';
  figure.dataset.kubeaiMetric = series.name;
  const caption = document.createElement('figcaption');
  const last = series.points[series.points.length - 1];
  caption.textContent = `${series.name}: ${formatNumber(last[1])} (step ${last[0]})`;
  figure.appendChild(caption);

  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const root = svg('svg', {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    width: '100%',
    role: 'img',
    'aria-label': `${series.name} by step`
  });
  const ys = series.points.map(p => p[1]);
  const xs = series.points.map(p => p[0]);
  const axis = svg('g', { class: 'jp-KubeAI-chart-axis' });
  axis.append(
    svg('line', { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: PAD.top + plotH }),
    svg('line', { x1: PAD.left, y1: PAD.top + plotH, x2: PAD.left + plotW, y2: PAD.top + plotH })
  );
  const label = (text: string, x: number, y: number, anchor: string) => {
    const t = svg('text', { x, y, 'text-anchor': anchor });
    t.textContent = text;
    axis.appendChild(t);
  };
  label(formatNumber(Math.max(...ys)), PAD.left - 4, PAD.top + 8, 'end');
  label(formatNumber(Math.min(...ys)), PAD.left - 4, PAD.top + plotH, 'end');
  label(String(Math.min(...xs)), PAD.left, HEIGHT - 4, 'start');
  label(`step ${Math.max(...xs)}`, PAD.left + plotW, HEIGHT - 4, 'end');
  root.appendChild(axis);

  const group = svg('g', { transform: `translate(${PAD.left},${PAD.top})` });
  group.appendChild(
    svg('path', {
      d: linePath(series.points, plotW, plotH),
      class: 'jp-KubeAI-chart-line',
      fill: 'none'
    })
  );
  if (series.points.length === 1) {
    // One point draws no line: show it as a dot.
    const [x, y] = [plotW / 2, plotH / 2];
    group.appendChild(svg('circle', { cx: x, cy: y, r: 3, class: 'jp-KubeAI-chart-dot' }));
  }
  root.appendChild(group);
  figure.appendChild(root);
  return figure;
}

/** All charts of the records, or a line saying there are none yet. */
export function renderMetrics(records: IMetricRecord[], empty: string): HTMLElement {
  const box = document.createElement('div');
  box.className = 'jp-KubeAI-charts';
  const all = seriesOf(records);
  if (all.length === 0) {
    const p = document.createElement('p');
    p.className = 'jp-KubeAI-muted';
    p.textContent = empty;
    box.appendChild(p);
    return box;
  }
  for (const series of all) {
    box.appendChild(renderSeries(series));
  }
  return box;
}
