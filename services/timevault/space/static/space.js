// @ts-check
/** Shared helpers of the Space's pages: API calls with the session's CSRF token, sizes, sign-in. */

/** @type {string} */
let csrf = "";

/**
 * Call the Space API; resolves to the decoded JSON body (or null), rejects with an Error whose
 * message is the API's own message.
 * @param {string} method
 * @param {string} path
 * @param {unknown} [body]
 * @returns {Promise<any>}
 */
export async function api(method, path, body) {
  /** @type {Record<string, string>} */
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-Space-CSRF"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = new Error((data && data.error && data.error.message) || `HTTP ${response.status}`);
    /** @type {any} */ (error).status = response.status;
    throw error;
  }
  return data;
}

/** The signed-in account's name, or null. @returns {Promise<string|null>} */
export async function whoAmI() {
  try {
    const session = await api("GET", "/space/v1/session");
    csrf = session.csrf;
    return session.account;
  } catch {
    return null;
  }
}

/**
 * Wire the sign-in form; `onSignedIn` runs with the account name once the password is accepted.
 * @param {(account: string) => void} onSignedIn
 */
export function setUpSignIn(onSignedIn) {
  const form = /** @type {HTMLFormElement} */ (document.getElementById("signin-form"));
  const error = /** @type {HTMLElement} */ (document.getElementById("signin-error"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const user = /** @type {HTMLInputElement} */ (document.getElementById("user")).value.trim();
    const password = /** @type {HTMLInputElement} */ (document.getElementById("password")).value;
    try {
      const session = await api("POST", "/space/v1/session", { user, password });
      csrf = session.csrf;
      /** @type {HTMLInputElement} */ (document.getElementById("password")).value = "";
      onSignedIn(session.account);
    } catch (e) {
      error.textContent = /** @type {Error} */ (e).message;
    }
  });
}

/** @param {HTMLElement | null} element @param {boolean} visible */
export function show(element, visible) {
  if (element) element.hidden = !visible;
}

/** @param {number | null | undefined} n @returns {string} */
export function size(n) {
  if (n === null || n === undefined) return "unlimited";
  let value = n;
  for (const unit of ["B", "KiB", "MiB", "GiB", "TiB"]) {
    if (value < 1024 || unit === "TiB") return unit === "B" ? `${value} B` : `${value.toFixed(1)} ${unit}`;
    value /= 1024;
  }
  return `${n} B`;
}

/** @param {number | null | undefined} seconds @returns {string} */
export function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "never";
}

/** @param {string} tag @param {string} [text] @param {string} [className] @returns {HTMLElement} */
export function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}
