// Talking to the cluster: the token (kept in localStorage, sent as a header, never in a URL)
// and one fetch wrapper that turns a 401 into the token prompt and tries once more.

const KEY = "lambdaml.token";

export function token() {
  return localStorage.getItem(KEY) || "";
}

export function authHeaders() {
  return token() ? { Authorization: `Bearer ${token()}` } : {};
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (typeof body.detail === "string" ? body.detail : body.title)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export async function request(url, options = {}, retried = false) {
  const headers = { ...authHeaders(), ...(options.headers || {}) };
  let body = options.body;
  if (body !== undefined && !(body instanceof FormData) && typeof body !== "string") {
    body = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  const answer = await fetch(url, { ...options, headers, body });
  const text = await answer.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = { detail: text }; }
  if (answer.status === 401 && !retried) {
    const saved = await askForToken(token() ? "The token was refused: it may have been revoked. Enter another." : null);
    if (saved) return request(url, options, true);
  }
  if (!answer.ok) throw new ApiError(answer.status, parsed);
  return parsed;
}

let asking = null;

// The token dialog: resolves true when a token was saved.
export function askForToken(why) {
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  if (why) document.getElementById("token-why").textContent = why;
  input.value = token();
  asking = new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      asking = null;
      if (dialog.returnValue === "save" && input.value.trim()) {
        localStorage.setItem(KEY, input.value.trim());
        resolve(true);
      } else {
        if (dialog.returnValue === "forget") localStorage.removeItem(KEY);
        resolve(false);
      }
      input.value = "";
    }, { once: true });
    dialog.showModal();
    input.focus();
  });
  return asking;
}
