// @ts-check
/** @file Small pieces of UI used by several views: times, the toast, busy buttons. */

import { $, el } from "./dom.js";
import { formatFullTime, formatInZone, formatTime } from "./format.js";

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

/**
 * A `<time>` in the clock of `timeZone`, naming the zone: "Tomorrow, 02:30 (Europe/Berlin)".
 * @param {string | null | undefined} iso
 * @param {string} timeZone
 * @returns {HTMLElement}
 */
export function zonedTimeEl(iso, timeZone) {
  if (!iso) return el("span", { class: "muted", text: "—" });
  return el("time", { datetime: iso, title: formatFullTime(iso), text: formatInZone(iso, timeZone) });
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

/** How many of a job's warnings are listed; the rest are counted (all are in the plan's log). */
const WARNINGS_SHOWN = 5;

/**
 * What a completed job could not do (a restore's lost files), as a short list: the first few
 * lines, then "… and N more".
 * @param {string[]} warnings
 * @returns {HTMLElement}
 */
export function warningList(warnings) {
  const items = warnings.slice(0, WARNINGS_SHOWN).map((line) => el("li", { text: line }));
  if (warnings.length > WARNINGS_SHOWN) {
    items.push(el("li", { class: "muted", text: `… and ${warnings.length - WARNINGS_SHOWN} more (see the plan's log)` }));
  }
  return el("ul", { class: "job-warnings" }, ...items);
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

const ICON_PATHS = {
  dir: "M1.5 3.5h4l1.5 1.5h7.5v8.5h-13z",
  file: "M3.5 1.5h6l3 3v10h-9z M9.5 1.5v3h3",
  symlink: "M3.5 1.5h6l3 3v10h-9z M6 11l4-4 M7 7h3v3",
};

/**
 * A small line icon of a folder, file or symlink (drawn, so it needs no font or image request).
 * @param {"dir" | "file" | "symlink"} kind
 * @returns {SVGSVGElement}
 */
export function icon(kind) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 16 16");
  svg.setAttribute("class", `icon ${kind}`);
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", ICON_PATHS[kind]);
  path.setAttribute("fill", kind === "dir" ? "currentColor" : "none");
  path.setAttribute("fill-opacity", kind === "dir" ? "0.25" : "1");
  path.setAttribute("stroke", "currentColor");
  path.setAttribute("stroke-width", "1.2");
  path.setAttribute("stroke-linejoin", "round");
  svg.append(path);
  return svg;
}
