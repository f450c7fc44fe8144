// @ts-check
/**
 * @file The create and edit forms' own checks: the API's rules (timevault.proto.plans) for what
 * a browser can tell by itself, so every mistake of a form is shown at once, before a request,
 * and each message goes away as soon as its field is right. The API still decides (duplicate
 * names, unknown time zones on the server, …); its answer is shown at its field too.
 */

import { $$ } from "./dom.js";
import { lines } from "./format.js";

/**
 * A check: the message for the field's current value, or null when it is fine.
 * @typedef {() => string | null} Check
 */

/**
 * @param {string} name
 * @returns {string | null}
 */
export function checkName(name) {
  if (!name.trim()) return "Name must contain at least one visible character";
  if (name.length > 64) return "Name must be at most 64 characters";
  if (name !== name.trim()) return "Name must not start or end with spaces";
  return null;
}

/**
 * @param {string[]} paths
 * @returns {string | null}
 */
export function checkSources(paths) {
  if (!paths.length) return "At least one folder to back up is needed";
  const relative = paths.find((p) => !p.startsWith("/"));
  return relative ? `Source must be an absolute path: ${relative}` : null;
}

/**
 * @param {string} value
 * @returns {string | null}
 */
export function checkTime(value) {
  return /^([01]\d|2[0-3]):[0-5]\d$/.test(value) ? null : "Time must be HH:MM (00:00..23:59)";
}

/**
 * @param {string} zone
 * @returns {string | null}
 */
export function checkTimezone(zone) {
  if (!zone) return "Choose a time zone";
  try {
    new Intl.DateTimeFormat(undefined, { timeZone: zone });
    return null;
  } catch {
    return `Unknown time zone ${zone}`;
  }
}

/**
 * A local location: absolute, and not inside a folder it backs up.
 * @param {string} path
 * @param {string[]} sources
 * @returns {string | null}
 */
export function checkLocalPath(path, sources) {
  if (!path.startsWith("/")) return "A local location needs an absolute folder path";
  const inside = sources.find((s) => path === s || path.startsWith(`${s.replace(/\/+$/, "")}/`));
  return inside ? `The location must not be inside the source ${inside}` : null;
}

/**
 * @param {string} password
 * @returns {string | null}
 */
export function checkPassword(password) {
  return password.length >= 4 ? null : "Password must be at least 4 characters";
}

/**
 * @param {string[]} patterns
 * @returns {string | null}
 */
export function checkPatterns(patterns) {
  return patterns.length > 1000 ? "At most 1000 patterns" : null;
}

/**
 * @param {string[]} urls
 * @returns {string | null}
 */
export function checkUrls(urls) {
  if (urls.length > 10) return "At most 10 addresses";
  for (const url of urls) {
    let ok = false;
    try {
      const parsed = new URL(url);
      ok = (parsed.protocol === "http:" || parsed.protocol === "https:") && Boolean(parsed.hostname);
    } catch {
      ok = false;
    }
    if (!ok) return `Not an http:// or https:// address: ${url}`;
  }
  return null;
}

/**
 * @param {string} value
 * @returns {string | null}
 */
export function checkTimeout(value) {
  const n = Number(value);
  return /^\d+$/.test(value) && n >= 1 && n <= 86400 ? null : "Seconds, from 1 to 86400";
}

/**
 * The non-empty lines of a textarea (or an input's value as one line).
 * @param {HTMLElement} root
 * @param {string} selector
 * @returns {string[]}
 */
export function linesOf(root, selector) {
  const node = root.querySelector(selector);
  return node instanceof HTMLTextAreaElement || node instanceof HTMLInputElement ? lines(node.value) : [];
}

/**
 * Show every failing check at its field; returns how many failed (focus goes to the first).
 * @param {HTMLElement} form
 * @param {Record<string, Check>} checks field id → check
 * @returns {number}
 */
export function showAll(form, checks) {
  let first = null;
  let failed = 0;
  for (const [id, check] of Object.entries(checks)) {
    const message = check();
    if (message) {
      failed += 1;
      setFieldError(form, id, message);
      first = first || id;
    }
  }
  if (first) {
    const node = form.querySelector(`#${CSS.escape(first)}`);
    const target = node && node.matches("fieldset") ? node.querySelector("input:checked, input") : node;
    if (target instanceof HTMLElement) target.focus();
  }
  return failed;
}

/**
 * Put `message` under the field `id` (its `#<id>-error` box) and mark it invalid.
 * @param {HTMLElement} form
 * @param {string} id
 * @param {string} message
 */
export function setFieldError(form, id, message) {
  const input = form.querySelector(`#${CSS.escape(id)}`);
  const box = form.querySelector(`#${CSS.escape(id)}-error`);
  if (box instanceof HTMLElement) {
    box.textContent = message;
    box.hidden = false;
  }
  if (input instanceof HTMLElement) input.setAttribute("aria-invalid", "true");
}

/**
 * Clear each shown message as soon as its field is right (the checks run on every input), and
 * keep the message of a field that is still wrong up to date. A message the API gave for a field
 * no check covers goes when that field changes.
 * @param {HTMLElement} form
 * @param {Record<string, Check>} checks
 */
export function clearWhenFixed(form, checks) {
  const recheck = (/** @type {Event} */ event) => {
    for (const box of $$(".field-error", form)) {
      if (box.hidden || !box.id.endsWith("-error")) continue;
      const id = box.id.slice(0, -"-error".length);
      const check = checks[id];
      const changed = event.target instanceof Node && Boolean(form.querySelector(`#${CSS.escape(id)}`)?.contains(event.target));
      const message = check ? check() : null;
      if (message) {
        box.textContent = message;  // still wrong, maybe in another way: say how now
        continue;
      }
      if (check || changed) {
        box.hidden = true;
        box.textContent = "";
        form.querySelector(`#${CSS.escape(id)}`)?.removeAttribute("aria-invalid");
      }
    }
  };
  form.addEventListener("input", recheck);
  form.addEventListener("change", recheck);
}
