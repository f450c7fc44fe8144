// @ts-check
/** @file Small pieces of UI used by several views: times, the toast, busy buttons. */

import { $, el } from "./dom.js";
import { formatFullTime, formatTime } from "./format.js";

/**
 * A `<time>` showing `iso` in words, with the full date on hover; "—" when there is none.
 * @param {string | null | undefined} iso
 * @param {boolean} [seconds] with seconds (snapshot times)
 * @returns {HTMLElement}
 */
export function timeEl(iso, seconds = false) {
  if (!iso) return el("span", { class: "muted", text: "—" });
  return el("time", { datetime: iso, title: formatFullTime(iso), text: formatTime(iso, seconds) });
}

/** @type {ReturnType<typeof setTimeout> | undefined} */
let toastTimer;

/**
 * A short message at the bottom of the page for four seconds (a polite live region).
 * @param {string} message
 */
export function toast(message) {
  const node = $("#toast");
  node.textContent = message;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { node.hidden = true; }, 4000);
}

/**
 * Disable `button` and show `label` while its action runs; restore it afterwards.
 * @param {HTMLButtonElement} button
 * @param {boolean} isBusy
 * @param {string} [label] e.g. "Saving…"
 */
export function busy(button, isBusy, label) {
  if (isBusy) {
    button.dataset.label = button.textContent || "";
    button.textContent = label || button.textContent;
    button.disabled = true;
  } else {
    button.textContent = button.dataset.label || button.textContent;
    button.disabled = false;
  }
}
