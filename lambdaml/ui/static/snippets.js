// The prediction in the form as code to copy: curl, lambdaml's Python client and the replicate client.
import { el } from "./dom.js";

// JSON as a Python literal (true -> True, null -> None).
function python(value, indent = "") {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") return String(value);
  if (Array.isArray(value)) return `[${value.map((item) => python(item, indent)).join(", ")}]`;
  const inner = `${indent}    `;
  const entries = Object.entries(value).map(([key, item]) => `${inner}${JSON.stringify(key)}: ${python(item, inner)},`);
  return entries.length ? `{\n${entries.join("\n")}\n${indent}}` : "{}";
}

function shellQuote(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

export function snippets(model, form, auth) {
  const blocks = el("div");
  function block(title, code) {
    const pre = el("pre", {}, el("code", { text: code }));
    const copy = el("button", { type: "button", text: "Copy", "aria-label": `Copy the ${title} snippet`, onclick: async () => {
      try { await navigator.clipboard.writeText(code); copy.textContent = "Copied"; }
      catch { const range = document.createRange(); range.selectNodeContents(pre); getSelection().removeAllRanges(); getSelection().addRange(range); }
      setTimeout(() => { copy.textContent = "Copy"; }, 1500);
    } });
    return el("div", { class: "snippet", "data-snippet": title }, el("div", { class: "row" }, el("h3", { text: title }), copy), pre);
  }
  async function refresh() {
    const input = await form.preview();
    const origin = location.origin;
    const files = Object.values(input).some((value) => typeof value === "string" && value.startsWith("@"));
    const token = auth ? ` \\\n  -H "Authorization: Bearer $LAMBDAML_API_TOKEN"` : "";
    const curl = `curl -s -X POST ${origin}/${model.name}/predictions${token} \\\n  -H 'Content-Type: application/json' \\\n  -d ${shellQuote(JSON.stringify({ input }))}`;
    const env = `# LAMBDAML_URL=${origin}${auth ? " LAMBDAML_API_TOKEN=lml_..." : ""}`;
    const lambdaml = `import lambdaml  ${env}\n\noutput = lambdaml.run(${JSON.stringify(model.name)}, input=${python(input)})\nprint(output)`;
    const replicate = `import replicate\n\nclient = replicate.Client(api_token=${auth ? '"lml_..."' : '"unused"'}, base_url=${JSON.stringify(origin)})\noutput = client.run(${JSON.stringify(`lambdaml/${model.name}`)}, input=${python(input)})\nprint(output)`;
    blocks.replaceChildren(...[
      files ? el("p", { class: "muted", text: "Inputs written @name are the files you picked: give their path (lambdaml's client and replicate's take open files or paths) or a URL." }) : null,
      block("curl", curl), block("Python (lambdaml)", lambdaml), block("Python (replicate)", replicate)].filter(Boolean));
  }
  form.element.addEventListener("input", refresh);
  form.element.addEventListener("change", refresh);
  refresh();
  return { element: el("section", { "aria-label": "API" }, blocks), refresh };
}
