// Small SVG charts for the monitoring panel and the overview's sparklines. Hand-written rather
// than a charting library: bars and lines over evenly spaced buckets are all the page draws.
import { el, svg } from "./dom.js";

const WIDTH = 400;
const HEIGHT = 140;
const PAD = { left: 44, right: 8, top: 8, bottom: 20 };

export function sparkline(values, label) {
  const max = Math.max(1, ...values);
  const step = 120 / Math.max(1, values.length - 1);
  const points = values.map((value, index) => `${(index * step).toFixed(1)},${(24 - (value / max) * 22).toFixed(1)}`);
  return svg("svg", { class: "sparkline", viewBox: "0 0 120 26", role: "img", "aria-label": label },
    svg("polyline", { points: points.join(" "), fill: "none", stroke: "#1f4f8a", "stroke-width": "1.5" }));
}

function axes(max, format, start, end) {
  const plotBottom = HEIGHT - PAD.bottom;
  const label = (text, x, y, anchor) => {
    const node = svg("text", { x, y, "text-anchor": anchor, "font-size": "10", fill: "#5b6570" });
    node.textContent = text;
    return node;
  };
  const time = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return [
    svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: plotBottom, y2: plotBottom, stroke: "#d5dbe1" }),
    svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: PAD.top, y2: PAD.top, stroke: "#eef1f4" }),
    label(format(max), PAD.left - 4, PAD.top + 8, "end"),
    label(format(0), PAD.left - 4, plotBottom, "end"),
    label(time(start), PAD.left, HEIGHT - 4, "start"),
    label(time(end), WIDTH - PAD.right, HEIGHT - 4, "end"),
  ];
}

// series: [{name, values, color, kind: "bar" | "line"}]; values may hold nulls (no data in that bucket).
export function chart({ title, series, format = (v) => String(v), start, end, summary, testId }) {
  const all = series.flatMap((one) => one.values).filter((value) => value !== null && value !== undefined);
  const max = Math.max(...all, 0) || 1;
  const count = series[0]?.values.length || 1;
  const plotWidth = WIDTH - PAD.left - PAD.right;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const x = (index) => PAD.left + (index + 0.5) * (plotWidth / count);
  const y = (value) => PAD.top + plotHeight - (value / max) * plotHeight;
  const shapes = [];
  for (const one of series) {
    if (one.kind === "bar") {
      const width = Math.max(1, plotWidth / count - 1);
      one.values.forEach((value, index) => {
        if (!value) return;
        const bar = svg("rect", { x: (x(index) - width / 2).toFixed(1), y: y(value).toFixed(1), width: width.toFixed(1),
          height: (PAD.top + plotHeight - y(value)).toFixed(1), fill: one.color });
        const tip = svg("title");
        tip.textContent = `${one.name}: ${format(value)}`;
        bar.append(tip);
        shapes.push(bar);
      });
    } else {
      let path = "";
      one.values.forEach((value, index) => {
        if (value === null || value === undefined) return;
        path += `${path ? "L" : "M"}${x(index).toFixed(1)},${y(value).toFixed(1)} `;
      });
      if (path) shapes.push(svg("path", { d: path, fill: "none", stroke: one.color, "stroke-width": "2" }));
      const present = one.values.filter((value) => value !== null && value !== undefined).length;
      if (present <= 12) {  // sparse data: a dot for each value, so a lone one shows
        one.values.forEach((value, index) => {
          if (value !== null && value !== undefined) shapes.push(svg("circle", { cx: x(index), cy: y(value), r: "2", fill: one.color }));
        });
      }
    }
  }
  const picture = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": `${title}: ${summary}` },
    ...axes(max, format, start, end), ...shapes);
  const legend = series.length > 1
    ? el("div", { class: "legend" }, ...series.map((one) => el("span", { class: one.name, text: one.name })))
    : null;
  return el("figure", { class: "chart", "data-chart": testId },
    el("figcaption", {}, title, el("span", { class: "muted", text: ` — ${summary}` })), picture, legend);
}
