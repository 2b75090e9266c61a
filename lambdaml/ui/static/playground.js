// Run a prediction from the form and watch it: status, logs live, output (a stream's text piece
// by piece), errors next to the field a 422 names. Predictions go through /v1 like any client's.
import { el, badge, seconds, shortId } from "./dom.js";
import { request, ApiError } from "./api.js";
import { buildForm } from "./form.js";
import { renderOutput, isStream } from "./output.js";

const FINAL = ["succeeded", "failed", "canceled"];
const POLL_MS = 400;

export function playground(model) {
  const doc = model.openapi;
  const outputSchema = doc.components?.schemas?.Output;
  const status = el("div", { class: "row", role: "status", "aria-live": "polite", "data-testid": "status" },
    el("span", { class: "muted", text: "Fill in the inputs and press Run." }));
  const facts = el("dl", { class: "facts", "data-testid": "facts" });
  const errorBox = el("div", { class: "error-box", role: "alert", hidden: true, "data-testid": "error" });
  const output = el("div", { class: "output", "data-testid": "output", "aria-label": "Output" });
  const logs = el("pre", { class: "logs", "data-testid": "logs", "aria-label": "Logs", tabindex: "0" });
  const cancel = el("button", { type: "button", hidden: true, text: "Cancel", onclick: () => cancelCurrent() });
  renderOutput(output, null, outputSchema);
  let current = null; // {id, timer, events}
  const form = buildForm(doc, model.limits, () => run());

  function stop() {
    if (!current) return;
    clearTimeout(current.timer);
    current.events?.close();
    current = null;
  }

  function showError(text) {
    errorBox.hidden = !text;
    errorBox.textContent = text || "";
  }

  function show(record, streamed) {
    status.replaceChildren(badge(record.status), el("code", { text: record.id, title: "Prediction id" }));
    const metrics = record.metrics || {};
    facts.replaceChildren(
      el("dt", { text: "version" }), el("dd", { class: "mono", text: shortId(record.version) }),
      el("dt", { text: "predict time" }), el("dd", { text: seconds(metrics.predict_time) }),
      el("dt", { text: "total time" }), el("dd", { text: seconds(metrics.total_time) }),
    );
    showError(record.status === "failed" || record.status === "canceled" ? record.error || record.status : "");
    logs.textContent = record.logs || "(nothing printed yet)";
    logs.scrollTop = logs.scrollHeight;
    if (streamed && !FINAL.includes(record.status)) renderOutput(output, streamed, outputSchema);
    else renderOutput(output, record.output, outputSchema);
    cancel.hidden = FINAL.includes(record.status);
    form.submit.disabled = !FINAL.includes(record.status);
  }

  async function poll(id) {
    if (!current || current.id !== id) return;
    try {
      const record = await request(`/v1/predictions/${encodeURIComponent(id)}`);
      if (!current || current.id !== id) return;
      show(record, current.streamed);
      if (FINAL.includes(record.status)) { stop(); return; }
    } catch (error) {
      showError(`Could not read the prediction: ${error.message}`);
    }
    if (current && current.id === id) current.timer = setTimeout(() => poll(id), POLL_MS);
  }

  // Follow a prediction: poll its record; a stream's pieces also arrive as Server-Sent Events.
  function follow(record) {
    stop();
    current = { id: record.id, timer: null, events: null, streamed: null };
    show(record);
    if (FINAL.includes(record.status)) { current = null; return; }
    if (record.urls?.stream && isStream(outputSchema)) {
      const events = new EventSource(record.urls.stream);  // the URL carries its own key: no token in it
      current.events = events;
      current.streamed = [];
      const mine = current;
      events.addEventListener("output", (event) => {
        let piece = event.data;
        try { if (typeof outputSchema?.items?.type !== "undefined" && outputSchema.items.type !== "string") piece = JSON.parse(event.data); } catch { /* text */ }
        mine.streamed.push(piece);
        if (current === mine) renderOutput(output, mine.streamed, outputSchema);
      });
      events.addEventListener("done", () => events.close());
      events.onerror = () => events.close();  // the polling goes on
    }
    poll(record.id);
  }

  async function run() {
    showError("");
    form.submit.disabled = true;
    stop();
    status.replaceChildren(badge("starting"), el("span", { class: "muted", text: "sending…" }));
    facts.replaceChildren();
    logs.textContent = "";
    renderOutput(output, null, outputSchema);
    try {
      const input = await form.values();  // files over the inline limit are uploaded here
      if (input === null) {
        status.replaceChildren(el("span", { class: "muted", text: "Not sent: see the fields marked." }));
        return;
      }
      const created = await request(`/v1/models/lambdaml/${encodeURIComponent(model.name)}/predictions`,
        { method: "POST", body: { input } });
      follow(created);
    } catch (error) {
      status.replaceChildren(badge("failed"), el("span", { class: "muted", text: "not started" }));
      if (error instanceof ApiError && error.status === 422) {
        const rest = form.showErrors(error.body?.invalid_fields);
        showError(rest.length || !error.body?.invalid_fields ? error.message : "Some inputs are not valid: see the fields above.");
      } else {
        showError(error.message);
      }
    } finally {
      if (!current) form.submit.disabled = false;
    }
  }

  async function cancelCurrent() {
    if (!current) return;
    try { show(await request(`/v1/predictions/${encodeURIComponent(current.id)}/cancel`, { method: "POST" })); }
    catch (error) { showError(`Could not cancel: ${error.message}`); }
  }

  const element = el("div", { class: "play" },
    el("section", { "aria-labelledby": "inputs-title" }, el("h2", { id: "inputs-title", text: "Inputs" }), form.element),
    el("section", { "aria-labelledby": "result-title" },
      el("h2", { id: "result-title", text: "Prediction" }),
      el("div", { class: "panel" }, el("div", { class: "row" }, status, cancel), facts, errorBox,
        el("h3", { class: "muted", text: "Output" }), output,
        el("h3", { class: "muted", text: "Logs" }), logs)));
  return {
    element,
    form,
    open(record) { follow(record); },
    runAgain(record) { form.fill(record.input); stop(); },
  };
}
