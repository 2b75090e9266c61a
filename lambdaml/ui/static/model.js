// A model's page: its header, then four tabs: the playground, its history, monitoring and API snippets.
import { el, modelBadge, shortId } from "./dom.js";
import { playground } from "./playground.js";
import { history as historyView } from "./history.js";
import { monitor } from "./monitor.js";
import { snippets } from "./snippets.js";
import { request } from "./api.js";

const STATE_REFRESH_MS = 5000;

export function modelPage(model) {
  const links = model.links || {};
  const play = playground(model);
  const panels = {};
  const tabs = {};
  const list = el("div", { role: "tablist", "aria-label": "Model views" });
  const names = [["playground", "Playground"], ["history", "History"], ["monitoring", "Monitoring"], ["api", "API"]];

  function select(name, focus = false) {
    for (const [key] of names) {
      tabs[key].setAttribute("aria-selected", String(key === name));
      tabs[key].tabIndex = key === name ? 0 : -1;
      panels[key].hidden = key !== name;
    }
    if (focus) tabs[name].focus();
    if (name !== "playground") views[name].refresh();
    window.history.replaceState(null, "", name === "playground" ? location.pathname : `${location.pathname}#${name}`);
  }

  const views = {
    playground: play,
    history: historyView(model, {
      onOpen: (record) => { select("playground"); play.open(record); },
      onRunAgain: (record) => { play.runAgain(record); select("playground"); },
    }),
    monitoring: monitor(model, links),
    api: snippets(model, play.form, model.auth),
  };
  names.forEach(([key, title], index) => {
    tabs[key] = el("button", { type: "button", role: "tab", id: `tab-${key}`, "aria-controls": `panel-${key}`, text: title,
      onclick: () => select(key),
      onkeydown: (event) => {
        const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
        if (step) select(names[(index + step + names.length) % names.length][0], true);
      } });
    panels[key] = el("div", { role: "tabpanel", id: `panel-${key}`, "aria-labelledby": `tab-${key}` }, views[key].element);
    list.append(tabs[key]);
  });

  const state = el("span", { class: "row", "data-testid": "state" });
  function showState(now) {
    state.replaceChildren(
      el("span", { class: "mono muted", title: now.version, text: `version ${shortId(now.version)}` }), modelBadge(now),
      el("span", { class: "muted", "data-testid": "replicas", text: `${now.replicas} of ${now.target} replicas running` }));
  }
  async function refreshState() {  // the version and replicas change as the model scales and rolls out
    if (!page.isConnected) return;
    try { showState(await request(`/ui/api/models/${encodeURIComponent(model.name)}`)); } catch { /* shown again next time */ }
    setTimeout(refreshState, STATE_REFRESH_MS);
  }
  showState(model);
  const header = el("div", { class: "header" },
    el("h1", { text: model.name }), state,
    el("span", { class: "links" },
      el("a", { href: `/${model.name}/openapi.json`, text: "OpenAPI" }),
      links.dashboard ? el("a", { href: `${links.dashboard}/#/serve/applications/${encodeURIComponent(model.name)}`, text: "Ray dashboard" }) : null,
      links.grafana ? el("a", { href: links.grafana, text: "Grafana" }) : null));
  const page = el("div", {}, header, list, ...Object.values(panels));
  const initial = names.some(([key]) => `#${key}` === location.hash) ? location.hash.slice(1) : "playground";
  queueMicrotask(() => select(initial));
  setTimeout(refreshState, STATE_REFRESH_MS);
  return page;
}

