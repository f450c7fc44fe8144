// @ts-check
/** @file The plan page's progress card for a pending or running backup. */

import { getJob } from "../api.js";
import { $, find, one } from "../dom.js";
import { formatSize } from "../format.js";
import { isActive } from "../status.js";

/** @typedef {import("../types.js").Job} Job */
/** @typedef {import("./plan.js").PlanState} PlanState */

/**
 * The counters a job and a progress event both carry.
 * @typedef {Pick<Job, "files_done" | "files_total" | "bytes_done" | "bytes_total" | "rate">} Counters
 */

/**
 * Show the card for `jobId` as it is now (hidden when it cannot be read).
 * @param {PlanState} state
 * @param {string} jobId
 */
export async function trackJob(state, jobId) {
  try {
    showProgress(state, await getJob(jobId));
  } catch {
    showProgress(state, null);
  }
}

/**
 * Show the card for an active backup `job`; hide it for anything else.
 * @param {PlanState} state
 * @param {Job | null} job
 */
export function showProgress(state, job) {
  const card = find("#progress");
  if (!card) return;
  if (!job || !isActive(job.status) || job.kind !== "backup") {
    state.job = null;
    card.hidden = true;
    return;
  }
  state.job = job;
  card.hidden = false;
  $("#progress-title").textContent = job.status === "pending" ? "Waiting to start…" : "Backing up…";
  updateProgress(job);
}

/**
 * Bar and "x of y · n of m files · rate" line.
 * @param {Counters} progress
 */
export function updateProgress(progress) {
  const bar = find("#progress-bar");
  if (!(bar instanceof HTMLProgressElement)) return;
  const text = one(HTMLElement, "#progress-text");
  const total = progress.bytes_total || 0;
  if (total > 0) {
    const pct = Math.min(100, (100 * (progress.bytes_done || 0)) / total);
    bar.value = pct;
    bar.textContent = `${pct.toFixed(0)}%`;
  } else {
    bar.removeAttribute("value");  // indeterminate while the size is unknown
  }
  const parts = [];
  if (total > 0) parts.push(`${formatSize(progress.bytes_done)} of ${formatSize(total)}`);
  else if (progress.bytes_done) parts.push(formatSize(progress.bytes_done));
  if (progress.files_total) {
    parts.push(`${(progress.files_done || 0).toLocaleString()} of ${progress.files_total.toLocaleString()} files`);
  }
  if (progress.rate) parts.push(`${formatSize(progress.rate)}/s`);
  text.textContent = parts.join(" · ") || "Preparing…";
}
