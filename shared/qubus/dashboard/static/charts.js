// Small SVG charts drawn by hand (no chart library): lines, a waterfall, grouped bars.

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#2b6cb0", "#dd6b20", "#2f855a", "#805ad5", "#c53030", "#319795", "#b7791f", "#d53f8c"];

export function colour(i) {
  return COLOURS[i % COLOURS.length];
}

function el(name, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  return node;
}

function scale(lo, hi, outLo, outHi) {
  const span = hi - lo || 1;
  return (v) => outLo + ((v - lo) / span) * (outHi - outLo);
}

// Lines of [x, y] points; series: [{points, colour, dashed, name}]; fixed y range if given;
// few points are also drawn as dots; named series get a legend on the right.
export function lines(series, { width = 260, height = 60, yMin = null, yMax = null } = {}) {
  const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}` });
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) {
    svg.append(el("text", { x: 4, y: height / 2 }, "no data yet"));
    return svg;
  }
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const x = scale(Math.min(...xs), Math.max(...xs), 4, width - 4);
  const y = scale(yMin ?? Math.min(...ys), yMax ?? Math.max(...ys), height - 4, 4);
  svg.append(el("line", { class: "axis", x1: 0, x2: width, y1: height - 4, y2: height - 4 }));
  for (const s of series) {
    if (s.points.length === 0) continue;
    const d = s.points.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
    const attrs = { d, fill: "none", stroke: s.colour, "stroke-width": 1.5 };
    if (s.dashed) attrs["stroke-dasharray"] = "4 3";
    svg.append(el("path", attrs));
    if (s.points.length < 30) {
      for (const p of s.points) svg.append(el("circle", { cx: x(p[0]), cy: y(p[1]), r: 2.5, fill: s.colour }));
    }
  }
  series.filter((s) => s.name).forEach((s, i) => {
    svg.append(el("rect", { x: width - 96, y: 4 + i * 13, width: 9, height: 9, fill: s.colour }));
    svg.append(el("text", { x: width - 84, y: 12 + i * 13 }, s.name));
  });
  return svg;
}

// A trace waterfall: spans [{label, start, end}] in seconds, one row each.
export function waterfall(spans, { width = 820, row = 20 } = {}) {
  const left = 230;
  const height = spans.length * row + 24;
  const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "waterfall" });
  const t0 = Math.min(...spans.map((s) => s.start));
  const t1 = Math.max(...spans.map((s) => s.end));
  const x = scale(t0, t1, left, width - 60);
  spans.forEach((s, i) => {
    const y = i * row + 4;
    const w = Math.max(2, x(s.end) - x(s.start));
    const g = el("g", { class: "span", "data-event": s.event });
    g.append(el("text", { x: 4, y: y + 13 }, s.label));
    g.append(el("rect", { x: x(s.start), y, width: w, height: row - 6, fill: colour(i), rx: 2 }));
    g.append(el("text", { x: x(s.start) + w + 4, y: y + 13 }, `${((s.end - s.start) * 1000).toFixed(1)} ms`));
    svg.append(g);
  });
  svg.append(el("text", { x: left, y: height - 4 }, "0"));
  svg.append(el("text", { x: width - 110, y: height - 4 }, `${((t1 - t0) * 1000).toFixed(1)} ms`));
  return svg;
}

// Grouped bars from zero (negative values downwards): groups [{label, values: [v per series]}], series names,
// with the legend on the right.
export function bars(groups, names, { width = 820, height = 180 } = {}) {
  const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}` });
  const values = groups.flatMap((g) => g.values);
  const base = height - 30;
  const y = scale(Math.min(0, ...values), Math.max(1e-9, ...values), base, 10);
  const legend = 160;
  const slot = (width - legend - 20) / Math.max(1, groups.length);
  const bw = Math.max(2, (slot - 6) / names.length);
  groups.forEach((g, i) => {
    g.values.forEach((v, j) => {
      const x0 = 10 + i * slot + j * bw;
      const top = y(Math.max(v, 0));
      svg.append(el("rect", { x: x0, y: top, width: bw - 1, height: y(Math.min(v, 0)) - top, fill: colour(j) }));
    });
    svg.append(el("text", { x: 10 + i * slot, y: height - 16 }, g.label));
  });
  names.forEach((name, j) => {
    svg.append(el("rect", { x: width - 150, y: 6 + j * 14, width: 10, height: 10, fill: colour(j) }));
    svg.append(el("text", { x: width - 136, y: 15 + j * 14 }, name));
  });
  return svg;
}
