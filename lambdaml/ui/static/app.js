// The pages' entry point: /ui/ is the overview of the cluster's models, /ui/NAME a model's page.
// Both read only the catalog, the records and Serve's status, so opening them wakes no replica.
import { el, modelBadge, shortId } from "./dom.js";
import { request, askForToken, ApiError } from "./api.js";
import { sparkline } from "./charts.js";
import { modelPage } from "./model.js";

const main = document.getElementById("main");
const REFRESH_MS = 5000;

function setLinks(links) {
  const dashboard = document.getElementById("dashboard-link");
  if (links?.dashboard) { dashboard.href = links.dashboard; dashboard.hidden = false; }
}

function failure(error) {
  const text = error instanceof ApiError && error.status === 401
    ? "This cluster needs an API token to show its models."
    : `Could not reach the cluster: ${error.message}`;
  return el("div", { class: "empty" }, el("p", { text }),
    el("button", { type: "button", class: "primary", text: "Enter a token", onclick: async () => { if (await askForToken()) route(); } }));
}

const lastHour = (model) => model.sparkline.reduce((sum, count) => sum + count, 0);

function overviewTable(data) {
  if (!data.models.length) {
    return el("div", { class: "empty" },
      el("p", { text: data.role === "anonymous" && data.auth ? "No public models. Enter an API token to see the others." : "No models are deployed yet." }),
      el("p", {}, "Deploy one: ", el("code", { text: "lambdaml deploy examples/hello.py" })));
  }
  return el("table", { "data-testid": "models" },
    el("caption", { class: "muted", text: "Models on this cluster. The sparkline is the last hour's predictions." }),
    el("thead", {}, el("tr", {}, ...["model", "version", "status", "replicas", "last hour", "predictions (1 h)", ""].map((name) => el("th", { scope: "col", text: name })))),
    el("tbody", {}, ...data.models.map((model) => el("tr", { "data-model": model.name },
      el("td", {}, el("a", { href: `/ui/${model.name}`, text: model.name })),
      el("td", { class: "mono", title: model.version, text: shortId(model.version) }),
      el("td", {}, modelBadge(model)),
      el("td", { text: `${model.replicas} / ${model.target}` }),
      el("td", {}, sparkline(model.sparkline, `${lastHour(model)} predictions in the last hour`)),
      el("td", { text: String(lastHour(model)) }),
      el("td", {}, el("span", { class: "row" },
        el("a", { href: `/ui/${model.name}`, text: "Playground" }),
        el("a", { href: `/ui/${model.name}#monitoring`, text: "Monitoring" }),
        el("a", { href: `/${model.name}/openapi.json`, text: "OpenAPI" })))))));
}

async function overview() {
  document.title = "Models · lambdaml";
  const body = el("div");
  main.replaceChildren(el("h1", { text: "Models" }), body);
  async function refresh() {
    try {
      const data = await request("/ui/api/models");
      setLinks(data.links);
      body.replaceChildren(overviewTable(data));
      if (data.auth && data.role === "anonymous") {
        body.prepend(el("p", { class: "muted" }, "Showing public models only. ",
          el("button", { type: "button", class: "link", text: "Enter an API token", onclick: async () => { if (await askForToken()) refresh(); } }),
          " to see the rest."));
      }
    } catch (error) {
      body.replaceChildren(failure(error));
      return;
    }
    setTimeout(() => { if (body.isConnected) refresh(); }, REFRESH_MS);
  }
  await refresh();
}

async function model(name) {
  document.title = `${name} · lambdaml`;
  try {
    const data = await request(`/ui/api/models/${encodeURIComponent(name)}`);
    setLinks(data.links);
    if (!data.openapi) {
      main.replaceChildren(el("h1", { text: name }), el("p", { class: "empty", text: "This version was deployed by an older lambdaml and has no schema here: deploy it again." }));
      return;
    }
    main.replaceChildren(modelPage(data));
  } catch (error) {
    main.replaceChildren(el("h1", { text: name }), error instanceof ApiError && error.status === 404
      ? el("div", { class: "empty" }, el("p", { text: error.message }), el("a", { href: "/ui/", text: "All models" }))
      : failure(error));
  }
}

function route() {
  const name = location.pathname.replace(/^\/ui\/?/, "").replace(/\/$/, "");
  return name ? model(decodeURIComponent(name)) : overview();
}

document.getElementById("token-button").addEventListener("click", async () => { await askForToken(); route(); });
route();
