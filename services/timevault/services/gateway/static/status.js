// @ts-check
/** @file How the state of a plan or of one backup run is shown: a coloured pill with a word. */

import { el } from "./dom.js";

/** @typedef {import("./types.js").Plan} Plan */

/**
 * @typedef {object} Status
 * @property {string} text
 * @property {"ok" | "error" | "running" | "paused" | "neutral"} tone the pill's CSS class
 * @property {string} [title] more detail, shown on hover
 */

const ACTIVE = new Set(["pending", "running"]);

/**
 * True while a job is pending or running.
 * @param {string} status
 * @returns {boolean}
 */
export function isActive(status) {
  return ACTIVE.has(status);
}

/**
 * The plan's state in a word, for its card and its page.
 * @param {Plan} plan
 * @returns {Status}
 */
export function planStatus(plan) {
  if (plan.active_job) return { text: "Backing up", tone: "running" };
  if (plan.paused) return { text: "Paused", tone: "paused" };
  switch (plan.last_status) {
    case "completed": return { text: "Up to date", tone: "ok" };
    case "failed": return { text: "Last backup failed", tone: "error" };
    case "canceled": return { text: "Last backup canceled", tone: "neutral" };
    default: return { text: "No backups yet", tone: "neutral" };
  }
}

/** @type {Record<string, Status>} */
const SNAPSHOT_STATUS = {
  completed: { text: "Completed", tone: "ok" },
  failed: { text: "Failed", tone: "error" },
  canceled: { text: "Canceled", tone: "neutral" },
};

/**
 * The outcome of one backup run.
 * @param {string} status
 * @returns {Status}
 */
export function snapshotStatus(status) {
  return SNAPSHOT_STATUS[status] || { text: status, tone: "neutral" };
}

/**
 * @param {Status} status
 * @returns {HTMLSpanElement}
 */
export function pill(status) {
  return el("span", { class: `pill ${status.tone}`, text: status.text, title: status.title || null });
}

/**
 * Show `status` in an existing pill.
 * @param {HTMLElement} node
 * @param {Status} status
 */
export function setPill(node, status) {
  node.className = `pill ${status.tone}`;
  node.textContent = status.text;
}
