// The monitoring panel: predictions per minute, predict and total time (p50, p95), error rate,
// cold starts, replicas and GPU memory over the last hour or day, computed by the cluster from
// the records (/ui/api/models/NAME/stats), so it needs nothing else installed.
import { el, bytes, percent, seconds, shortId } from "./dom.js";
import { request } from "./api.js";
import { chart } from "./charts.js";

const REFRESH_MS = 10000;

function card(name, value, key) {
  return el("div", { class: "card", "data-figure": key }, el("div", { class: "value", text: value }), el("div", { class: "name", text: name }));
}

export function monitor(model, links) {
  let window_ = "1h";
  let timer = null;
  const cards = el("div", { class: "cards", "data-testid": "figures" });
  const charts = el("div", { class: "charts" });
  const versions = el("div");
  const buttons = ["1h", "24h"].map((name) => el("button", { type: "button", "aria-pressed": String(name === window_),
    text: name === "1h" ? "Last hour" : "Last 24 hours", onclick: () => { window_ = name; refresh(); } }));
  const more = el("p", { class: "muted" }, "More: ",
    links.dashboard ? el("a", { href: `${links.dashboard}/#/serve/applications/${encodeURIComponent(model.name)}`, text: "this model in the Ray dashboard" }) : "the Ray dashboard",
    links.grafana ? [", ", el("a", { href: links.grafana, text: "Grafana" })] : ", and Grafana with lambdaml's dashboard (docs/monitoring.md)",
    ". Figures come from the prediction records; GPU memory from the replicas' own measurements.");

  function draw(stats) {
    const points = stats.points;
    const totals = stats.totals;
    const range = { start: stats.start, end: stats.end };
    const values = (key) => points.map((point) => point[key]);
    cards.replaceChildren(
      card("predictions", String(totals.count), "count"),
      card("per minute", totals.per_minute.toFixed(totals.per_minute < 10 ? 2 : 0), "per_minute"),
      card("error rate", percent(totals.error_rate), "error_rate"),
      card("failed", String(totals.failed), "failed"),
      card("p50 / p95 predict", `${seconds(totals.predict_time_p50)} / ${seconds(totals.predict_time_p95)}`, "predict_time"),
      card("p50 / p95 total", `${seconds(totals.total_time_p50)} / ${seconds(totals.total_time_p95)}`, "total_time"),
      card("cold starts", String(totals.cold_starts), "cold_starts"),
      card("replicas now", String(totals.replicas_now), "replicas_now"),
    );
    const minute = stats.bucket_s / 60;
    const gpu = values("gpu_peak");
    charts.replaceChildren(
      chart({ title: "Predictions per minute", testId: "per_minute", ...range, summary: `${totals.count} in all`,
        format: (v) => v.toFixed(v < 10 ? 1 : 0), series: [{ name: "per minute", kind: "bar", color: "#1f4f8a", values: values("count").map((c) => c / minute) }] }),
      chart({ title: "Predict time", testId: "predict_time", ...range, summary: `p50 ${seconds(totals.predict_time_p50)}, p95 ${seconds(totals.predict_time_p95)}`,
        format: seconds, series: [{ name: "p50", kind: "line", color: "#1f4f8a", values: values("predict_time_p50") },
          { name: "p95", kind: "line", color: "#d08a1b", values: values("predict_time_p95") }] }),
      chart({ title: "Total time", testId: "total_time", ...range, summary: `p50 ${seconds(totals.total_time_p50)}, p95 ${seconds(totals.total_time_p95)}`,
        format: seconds, series: [{ name: "p50", kind: "line", color: "#1f4f8a", values: values("total_time_p50") },
          { name: "p95", kind: "line", color: "#d08a1b", values: values("total_time_p95") }] }),
      chart({ title: "Error rate", testId: "error_rate", ...range, summary: `${percent(totals.error_rate)} (${totals.failed} failed)`,
        format: percent, series: [{ name: "error rate", kind: "bar", color: "#b42318", values: values("error_rate") }] }),
      chart({ title: "Cold starts", testId: "cold_starts", ...range, summary: `${totals.cold_starts} replicas started`,
        format: (v) => String(Math.round(v)), series: [{ name: "cold starts", kind: "bar", color: "#9a6700", values: values("cold_starts") }] }),
      chart({ title: "Replicas", testId: "replicas", ...range, summary: `${totals.replicas_now} now`,
        format: (v) => String(Math.round(v)), series: [{ name: "replicas", kind: "line", color: "#1a7f37", values: values("replicas") }] }),
      gpu.some((v) => v !== null)
        ? chart({ title: "GPU memory (peak per prediction)", testId: "gpu", ...range, summary: bytes(Math.max(...gpu.filter((v) => v !== null))),
          format: bytes, series: [{ name: "GPU memory", kind: "line", color: "#6f42c1", values: gpu }] })
        : el("figure", { class: "chart", "data-chart": "gpu" }, el("figcaption", { text: "GPU memory" }),
          el("p", { class: "muted", text: "No GPU memory was reported: the model ran no CUDA work in this window." })),
    );
    const served = Object.entries(totals.versions || {});
    versions.replaceChildren(el("h3", { text: "Versions that served them" }), served.length
      ? el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "version" }), el("th", { text: "predictions" }))),
        el("tbody", {}, ...served.map(([version, count]) => el("tr", {}, el("td", { class: "mono", text: shortId(version) }), el("td", { text: String(count) })))))
      : el("p", { class: "muted", text: "None in this window." }));
    if (stats.capped) versions.append(el("p", { class: "muted", text: "Computed from the newest 20,000 predictions of the window." }));
  }

  async function refresh() {
    clearTimeout(timer);
    buttons.forEach((button, index) => button.setAttribute("aria-pressed", String(["1h", "24h"][index] === window_)));
    try { draw(await request(`/ui/api/models/${encodeURIComponent(model.name)}/stats?window=${window_}`)); }
    catch (error) { cards.replaceChildren(el("p", { class: "error-box", text: `Could not read the figures: ${error.message}` })); }
    timer = setTimeout(() => { if (element.isConnected && !element.closest("[hidden]")) refresh(); }, REFRESH_MS);
  }

  const element = el("section", { "aria-label": "Monitoring" }, el("div", { class: "row" }, ...buttons), cards, charts, versions, more);
  return { element, refresh };
}
