// The playground's form, generated from the model's OpenAPI document (components.schemas.Input):
// a field per input in x-order, with its description, default and constraints. The browser's own
// validation is off (novalidate): the server checks, and its 422 is shown next to the field it names.
import { el, bytes } from "./dom.js";
import { request } from "./api.js";

// A property as one plain schema: $ref and allOf (Cog's enums) followed, Optional[T] as T.
function resolve(schema, doc) {
  let current = schema || {};
  for (let guard = 0; guard < 8; guard += 1) {
    if (current.$ref) {
      const name = current.$ref.split("/").pop();
      current = { ...(doc.components?.schemas?.[name] || {}), ...withoutKeys(current, ["$ref"]) };
    } else if (current.allOf && current.allOf.length === 1) {
      current = { ...current.allOf[0], ...withoutKeys(current, ["allOf"]) };
    } else if (current.anyOf) {
      const real = current.anyOf.filter((option) => option.type !== "null");
      current = { ...(real.length === 1 ? real[0] : { type: "json" }), ...withoutKeys(current, ["anyOf"]), nullable: true };
    } else break;
  }
  return current;
}

function withoutKeys(object, keys) {
  return Object.fromEntries(Object.entries(object).filter(([key]) => !keys.includes(key)));
}

const isFile = (schema) => schema.format === "uri" || schema["x-lambdaml-file"];
const isSecret = (schema) => schema["x-cog-secret"] || schema["x-lambdaml-secret"] || schema.format === "password";

function kindOf(schema) {
  if (schema.enum) return "choice";
  if (schema.type === "boolean") return "boolean";
  if (schema.type === "integer" || schema.type === "number") return "number";
  if (schema.type === "string") return isFile(schema) ? "file" : isSecret(schema) ? "secret" : "text";
  if (schema.type === "array") {
    const items = schema.items || {};
    if (isFile(items)) return "files";
    if (["string", "integer", "number"].includes(items.type)) return "list";
  }
  return "json";
}

function typeLabel(schema, kind) {
  if (kind === "file") return "file";
  if (kind === "files") return "list of files";
  if (kind === "list") return `list of ${schema.items.type}`;
  if (kind === "secret") return "secret";
  if (kind === "json") return "JSON";
  return schema.type || "";
}

function constraints(schema) {
  const parts = [];
  const min = schema.minimum ?? schema.exclusiveMinimum;
  const max = schema.maximum ?? schema.exclusiveMaximum;
  if (min !== undefined && max !== undefined) parts.push(`${min} to ${max}`);
  else if (min !== undefined) parts.push(`at least ${min}`);
  else if (max !== undefined) parts.push(`at most ${max}`);
  if (schema.minLength) parts.push(`at least ${schema.minLength} character${schema.minLength === 1 ? "" : "s"}`);
  if (schema.maxLength) parts.push(`at most ${schema.maxLength} characters`);
  if (schema.pattern) parts.push(`matches ${schema.pattern}`);
  if (schema.minItems) parts.push(`at least ${schema.minItems} items`);
  if (schema.maxItems) parts.push(`at most ${schema.maxItems} items`);
  if (schema.default !== undefined && schema.default !== null) parts.push(`default ${JSON.stringify(schema.default)}`);
  if (schema.deprecated) parts.push("deprecated");
  return parts.join(" · ");
}

function control(name, schema, kind, id, describedBy) {
  const common = { id, name, "aria-describedby": describedBy };
  const initial = schema.default ?? "";
  switch (kind) {
    case "choice": {
      const select = el("select", common);
      if (schema.default === undefined || schema.default === null) select.append(el("option", { value: "", text: "—" }));
      for (const choice of schema.enum) {
        select.append(el("option", { value: String(choice), text: String(choice), selected: choice === schema.default }));
      }
      return select;
    }
    case "boolean":
      return el("div", { class: "switch" },
        el("input", { ...common, type: "checkbox", role: "switch", checked: Boolean(schema.default) }));
    case "number":
      return el("input", {
        ...common, type: "number", value: initial === "" ? "" : String(initial),
        step: schema.type === "integer" ? "1" : "any",
        min: schema.minimum !== undefined ? String(schema.minimum) : undefined,
        max: schema.maximum !== undefined ? String(schema.maximum) : undefined,
      });
    case "secret":
      return el("input", { ...common, type: "password", autocomplete: "off" });
    case "file":
    case "files":
      return el("div", { class: "file" },
        el("input", { ...common, type: "file", multiple: kind === "files" }),
        el("label", { class: "muted", for: `${id}-url`, text: kind === "files" ? "or URLs, one per line" : "or a URL" }),
        kind === "files"
          ? el("textarea", { id: `${id}-url`, name: `${name}-url`, rows: "2", placeholder: "https://…" })
          : el("input", { id: `${id}-url`, name: `${name}-url`, type: "url", placeholder: "https://… s3://… gs://…" }));
    case "list":
      return el("textarea", { ...common, rows: "3", placeholder: "one item per line",
        value: Array.isArray(schema.default) ? schema.default.join("\n") : "" });
    case "json":
      return el("textarea", { ...common, rows: "3", placeholder: "JSON",
        value: schema.default !== undefined && schema.default !== null ? JSON.stringify(schema.default) : "" });
    default: {
      const long = (schema.maxLength || 0) > 200 || (!schema.maxLength && /prompt|text|description/i.test(name));
      const attrs = { ...common, maxlength: schema.maxLength ? String(schema.maxLength) : undefined,
        pattern: schema.pattern, value: String(initial) };
      return long ? el("textarea", { ...attrs, rows: "3" }) : el("input", { ...attrs, type: "text" });
    }
  }
}

function readAsDataUri(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// A chosen file as the value the API takes: inline as a data: URI up to the inline limit, else
// uploaded to /v1/files first (kept a day), as Replicate's clients do.
async function fileValue(file, limits) {
  if (file.size <= limits.inline_bytes) return readAsDataUri(file);
  if (file.size > limits.upload_bytes) {
    throw new FieldError(`${file.name} is ${bytes(file.size)}; files up to ${bytes(limits.upload_bytes)} can be sent here. Give it as a URL instead.`);
  }
  const form = new FormData();
  form.append("content", file, file.name);
  const uploaded = await request("/v1/files", { method: "POST", body: form });
  return uploaded.urls.get;
}

class FieldError extends Error {}

function convert(text, type) {
  if (type === "integer" || type === "number") {
    const number = Number(text);
    return text.trim() === "" || Number.isNaN(number) ? text : number;
  }
  return text;
}

// The form: .element, .values() (the input object, files sent), .showErrors(invalid_fields), .fill(input).
export function buildForm(doc, limits, onSubmit) {
  const inputSchema = resolve(doc.components?.schemas?.Input || {}, doc);
  const required = new Set(inputSchema.required || []);
  const entries = Object.entries(inputSchema.properties || {})
    .sort(([, a], [, b]) => (a["x-order"] ?? 0) - (b["x-order"] ?? 0));
  const fields = new Map();
  const form = el("form", { novalidate: true, "aria-label": "Inputs" });
  for (const [name, raw] of entries) {
    const schema = resolve(raw, doc);
    const kind = kindOf(schema);
    const id = `input-${name}`;
    const help = [raw.description || schema.description, constraints(schema)].filter(Boolean).join(" — ");
    const errorNode = el("div", { class: "error", id: `${id}-error`, role: "alert", hidden: true });
    const helpNode = help ? el("div", { class: "help", id: `${id}-help`, text: help }) : null;
    const described = [helpNode && `${id}-help`, `${id}-error`].filter(Boolean).join(" ");
    const input = control(name, schema, kind, id, described);
    const main = input.matches("input, select, textarea") ? input : input.querySelector("input");
    if (required.has(name)) main.setAttribute("aria-required", "true");
    const head = el("div", { class: "head" }, el("label", { for: id, text: name }),
      required.has(name) ? el("span", { class: "required", title: "required", text: "*" }) : null,
      el("span", { class: "type", text: typeLabel(schema, kind) }));
    const wrapper = el("div", { class: "field", "data-field": name }, head, helpNode, input, errorNode);
    // main: the control that holds the value; url: a file field's URL box
    fields.set(name, { schema, kind, wrapper, errorNode, main, url: input.querySelector?.(`[name="${name}-url"]`) });
    form.append(wrapper);
  }
  if (!entries.length) form.append(el("p", { class: "muted", text: "This model takes no inputs." }));
  const submit = el("button", { type: "submit", class: "primary", text: "Run" });
  const reset = el("button", { type: "button", text: "Reset", onclick: () => { form.reset(); clearErrors(); } });
  form.append(el("div", { class: "row" }, submit, reset));
  form.addEventListener("submit", (event) => { event.preventDefault(); onSubmit(); });

  function clearErrors() {
    for (const field of fields.values()) {
      field.wrapper.classList.remove("invalid");
      field.errorNode.hidden = true;
      field.errorNode.textContent = "";
    }
  }

  function showError(name, message) {
    const field = fields.get(name);
    if (!field) return false;
    field.wrapper.classList.add("invalid");
    field.errorNode.hidden = false;
    field.errorNode.textContent = field.errorNode.textContent ? `${field.errorNode.textContent}; ${message}` : message;
    return true;
  }

  // The field's value for the input (undefined: leave it out); ``send`` turns a chosen file into one.
  async function valueOf(name, field, send) {
    const { schema, kind, main } = field;
    switch (kind) {
      case "boolean": return main.checked;
      case "choice": {
        if (main.value === "") return undefined;
        const match = schema.enum.find((choice) => String(choice) === main.value);
        return match === undefined ? main.value : match;
      }
      case "number": return main.value === "" ? undefined : convert(main.value, schema.type);
      case "file": {
        if (main.files.length) return send(main.files[0]);
        return field.url.value.trim() || undefined;
      }
      case "files": {
        const sent = await Promise.all([...main.files].map(send));
        const urls = field.url.value.split("\n").map((line) => line.trim()).filter(Boolean);
        return sent.length || urls.length ? [...sent, ...urls] : undefined;
      }
      case "list": {
        const lines = main.value.split("\n").map((line) => line.trim()).filter(Boolean);
        return lines.length || schema.default === undefined ? lines.map((line) => convert(line, schema.items.type)) : undefined;
      }
      case "json": {
        if (main.value.trim() === "") return undefined;
        try { return JSON.parse(main.value); } catch { throw new FieldError("not valid JSON"); }
      }
      default:
        return main.value === "" && (schema.default !== undefined || !required.has(name)) ? undefined : main.value;
    }
  }

  return {
    element: form,
    submit,
    clearErrors,
    // The input to send, or null when a field could not be read (its error is shown).
    async values() {
      clearErrors();
      const input = {};
      let ok = true;
      for (const [name, field] of fields) {
        try {
          const value = await valueOf(name, field, (file) => fileValue(file, limits));
          if (value !== undefined) input[name] = value;
        } catch (error) {
          ok = false;
          showError(name, error instanceof FieldError ? error.message : `could not be read: ${error.message}`);
        }
      }
      return ok ? input : null;
    },
    // The 422's invalid_fields next to their fields; those that name no field come back.
    showErrors(invalid) {
      const rest = [];
      for (const item of invalid || []) {
        const name = String(item.field || "").replace(/^input\./, "").split(".")[0];
        if (!showError(name, item.message)) rest.push(item);
      }
      const first = form.querySelector(".field.invalid input, .field.invalid select, .field.invalid textarea");
      if (first) first.focus();
      return rest;
    },
    // Put a record's input back in the form ("run again"); secrets and local files cannot come back.
    fill(input) {
      form.reset();
      clearErrors();
      for (const [name, field] of fields) {
        if (!(name in (input || {}))) continue;
        const value = input[name];
        const { main } = field;
        if (field.kind === "boolean") main.checked = Boolean(value);
        else if (field.kind === "secret") main.value = "";
        else if (field.kind === "file") field.url.value = value || "";
        else if (field.kind === "files") field.url.value = (value || []).join("\n");
        else if (field.kind === "list") main.value = (value || []).join("\n");
        else if (field.kind === "json") main.value = value === null ? "" : JSON.stringify(value);
        else main.value = value === null || value === undefined ? "" : String(value);
      }
    },
    // The current input, as far as it can be shown without sending files (for the code snippets):
    // a chosen file as @name, a secret as …, unreadable JSON as it was typed.
    async preview() {
      const input = {};
      for (const [name, field] of fields) {
        let value;
        try { value = await valueOf(name, field, (file) => `@${file.name}`); } catch { value = field.main.value; }
        if (value !== undefined) input[name] = field.kind === "secret" && value ? "…" : value;
      }
      return input;
    },
  };
}
