// Building the page from data. Everything a model or caller wrote goes in as text (textContent),
// never as HTML, so an output or a log line cannot run as script.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const SVG = "http://www.w3.org/2000/svg";

export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) if (value !== undefined && value !== null) node.setAttribute(key, value);
  for (const child of children.flat()) if (child) node.append(child);
  return node;
}

export function badge(status) {
  return el("span", { class: `badge ${status}`, text: String(status).toLowerCase().replace(/_/g, " ") });
}

// A model's state as Serve has it; a running application with no replicas is scaled to zero.
export function modelBadge(model) {
  return badge(model.status === "RUNNING" && !model.target ? "SCALED_TO_ZERO" : model.status);
}

export function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  return `${value.toFixed(value < 10 ? 2 : 1)} s`;
}

export function bytes(value) {
  if (value === null || value === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let index = 0;
  while (value >= 1024 && index < units.length - 1) { value /= 1024; index += 1; }
  return `${value.toFixed(index ? 1 : 0)} ${units[index]}`;
}

export function percent(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(value && value < 0.1 ? 1 : 0)}%`;
}

export function ago(iso) {
  if (!iso) return "–";
  const delta = (Date.now() - Date.parse(iso)) / 1000;
  if (delta < 60) return `${Math.max(0, Math.round(delta))} s ago`;
  if (delta < 3600) return `${Math.round(delta / 60)} min ago`;
  if (delta < 86400) return `${Math.round(delta / 3600)} h ago`;
  return new Date(iso).toLocaleString();
}

export function shortId(id) {
  return id ? String(id).slice(0, 12) : "–";
}
