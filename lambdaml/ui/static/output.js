// A prediction's output, shown as what it is: images as images, audio and video with players,
// text as text (a stream's pieces joined as they arrive), JSON pretty-printed, other files as links.
import { el } from "./dom.js";

const MEDIA = [
  ["image", /^data:image\/|\.(png|jpe?g|gif|webp|bmp|avif|svg)(\?|$)/i],
  ["audio", /^data:audio\/|\.(wav|mp3|ogg|oga|flac|m4a|aac|opus)(\?|$)/i],
  ["video", /^data:video\/|\.(mp4|webm|mov|mkv|ogv)(\?|$)/i],
];
const URL_LIKE = /^(data:|https?:\/\/|s3:\/\/|gs:\/\/)/i;

export function isStream(schema) {
  return Boolean(schema && (schema["x-lambdaml-stream"] || schema["x-cog-array-type"] === "iterator"));
}

function fileName(url) {
  if (url.startsWith("data:")) return `output.${(url.slice(5).split(/[;,]/)[0].split("/")[1] || "bin").replace("+xml", "")}`;
  return decodeURIComponent(url.split("?")[0].split("/").pop() || "output");
}

function file(url) {
  const browsable = /^(data:|https?:)/i.test(url);
  for (const [kind, pattern] of MEDIA) {
    if (browsable && pattern.test(url)) {
      const media = kind === "image"
        ? el("img", { src: url, alt: `Output image ${fileName(url)}` })
        : el(kind, { src: url, controls: true, "aria-label": `Output ${kind}` });
      return el("figure", { class: `media ${kind}`, "data-kind": kind }, media,
        el("figcaption", {}, el("a", { href: url, download: fileName(url), text: `Download ${fileName(url)}` })));
    }
  }
  return browsable
    ? el("a", { href: url, download: fileName(url), "data-kind": "file", text: fileName(url) })
    : el("code", { "data-kind": "file", text: url });  // s3:// or gs://: not something a browser opens
}

// Render ``value`` into ``node`` (replacing what was there); ``schema``: components.schemas.Output.
export function renderOutput(node, value, schema) {
  node.replaceChildren();
  if (value === null || value === undefined) {
    node.append(el("span", { class: "muted", text: "No output yet." }));
    node.dataset.kind = "none";
    return;
  }
  if (Array.isArray(value) && isStream(schema) && value.every((item) => typeof item === "string" && !URL_LIKE.test(item))) {
    node.append(el("span", { "data-kind": "text", text: value.join("") }));
    node.dataset.kind = "text";
    return;
  }
  if (typeof value === "string") {
    node.append(URL_LIKE.test(value) ? file(value) : el("span", { "data-kind": "text", text: value }));
  } else if (Array.isArray(value) && value.length && value.every((item) => typeof item === "string" && URL_LIKE.test(item))) {
    for (const item of value) node.append(file(item));
  } else {
    node.append(el("pre", { "data-kind": "json", text: JSON.stringify(value, null, 2) }));
  }
  node.dataset.kind = node.firstElementChild?.dataset.kind || "text";
}
