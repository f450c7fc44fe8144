// @ts-check
/** @file The retention fields (which backups to keep; thinning when full), shared by the create form and the edit dialog. */

import { $, $$, fromTemplate, one } from "../dom.js";

/** @typedef {import("../types.js").Retention} Retention */

/** The `keep_*` count rules, in the order the form shows them. */
const COUNTS = /** @type {const} */ (["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly",
  "keep_yearly"]);

/**
 * Put the fields into `root`'s `[data-retention]` slot, showing `retention` (default: Time Machine).
 * @param {HTMLElement} root
 * @param {Retention | null} retention
 * @param {boolean} thinWhenFull
 */
export function mountRetention(root, retention, thinWhenFull) {
  $("[data-retention]", root).replaceWith(fromTemplate("tpl-retention"));
  for (const radio of $$("input[name=retention]", root)) radio.addEventListener("change", () => sync(root));
  setRetention(root, retention || { policy: "timemachine" }, thinWhenFull);
}

/** @param {HTMLElement} root */
function sync(root) {
  $("[data-custom-retention]", root).hidden = policy(root) !== "custom";
}

/**
 * @param {HTMLElement} root
 * @returns {Retention["policy"]}
 */
function policy(root) {
  const value = one(HTMLInputElement, "input[name=retention]:checked", root).value;
  return value === "none" || value === "custom" ? value : "timemachine";
}

/**
 * Show `retention` in mounted fields.
 * @param {HTMLElement} root
 * @param {Retention} retention
 * @param {boolean} thinWhenFull
 */
export function setRetention(root, retention, thinWhenFull) {
  one(HTMLInputElement, `input[name=retention][value=${retention.policy}]`, root).checked = true;
  for (const name of COUNTS) {
    const value = retention[name];
    one(HTMLInputElement, `#f-${name}`, root).value = value === null || value === undefined ? "" : String(value);
  }
  one(HTMLInputElement, "#f-keep_within", root).value = retention.keep_within || "";
  one(HTMLInputElement, "#f-thin", root).checked = thinWhenFull;
  sync(root);
}

/**
 * The retention the fields show: a named policy, or the custom rules that are filled in.
 * @param {HTMLElement} root
 * @returns {Retention}
 */
export function readRetention(root) {
  const chosen = policy(root);
  if (chosen !== "custom") return { policy: chosen };
  /** @type {Retention} */
  const retention = { policy: "custom" };
  for (const name of COUNTS) {
    const text = one(HTMLInputElement, `#f-${name}`, root).value.trim();
    if (text) retention[name] = Number(text);
  }
  const within = one(HTMLInputElement, "#f-keep_within", root).value.trim();
  if (within) retention.keep_within = within;
  return retention;
}

/**
 * Whether the "thin when full" box is ticked.
 * @param {HTMLElement} root
 * @returns {boolean}
 */
export function readThinWhenFull(root) {
  return one(HTMLInputElement, "#f-thin", root).checked;
}
