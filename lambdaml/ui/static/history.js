// The model's recent predictions, from the records (newest first), each openable in the
// playground or run again with the same inputs.
import { el, badge, ago, seconds, shortId } from "./dom.js";
import { request } from "./api.js";

export function history(model, { onOpen, onRunAgain }) {
  const body = el("tbody");
  const more = el("button", { type: "button", hidden: true, text: "Older predictions" });
  const note = el("p", { class: "muted", hidden: true, text: "No predictions yet: run one from the playground." });
  const table = el("table", { "data-testid": "history" },
    el("caption", { class: "muted", text: "Recent predictions, newest first" }),
    el("thead", {}, el("tr", {}, ...["created", "id", "status", "predict time", "version", ""].map((name) => el("th", { scope: "col", text: name })))),
    body);
  let next = null;

  function row(record) {
    const removed = record.data_removed || record.input === null;
    return el("tr", { "data-id": record.id },
      el("td", { title: record.created_at || "", text: ago(record.created_at) }),
      el("td", { class: "mono", text: shortId(record.id) }),
      el("td", {}, badge(record.status)),
      el("td", { text: seconds(record.metrics?.predict_time) }),
      el("td", { class: "mono", text: shortId(record.version) }),
      el("td", {}, el("span", { class: "row" },
        el("button", { type: "button", text: "Open", "aria-label": `Open prediction ${record.id}`, onclick: () => onOpen(record) }),
        el("button", { type: "button", text: "Run again", disabled: removed,
          title: removed ? "Its inputs were removed (retention)" : "", "aria-label": `Run again with the inputs of ${record.id}`,
          onclick: () => onRunAgain(record) }))));
  }

  async function load(url, append) {
    const page = await request(url);
    if (!append) body.replaceChildren();
    for (const record of page.results) body.append(row(record));
    next = page.next;
    more.hidden = !next;
    note.hidden = body.children.length > 0;
  }

  more.addEventListener("click", () => next && load(next, true));
  return {
    element: el("section", { "aria-label": "History" }, note, table, more),
    refresh: () => load(`/v1/predictions?model=${encodeURIComponent(model.name)}`, false),
  };
}
