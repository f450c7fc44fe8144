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
  if (job && job.kind === "backup" && !isActive(job.status) && state.job && state.job.id === job.id) {
    state.finished = { job, at: Date.now() };  // a backup of a second still shows what it did
  }
  if (!job || !isActive(job.status) || job.kind !== "backup") {
    state.job = null;
    const finished = state.finished;
    if (finished && Date.now() - finished.at < FINISHED_SHOWN_MS) {
      showFinished(finished.job);
      return;
    }
    card.hidden = true;
    return;
  }
  state.job = job;
  state.finished = null;
  card.hidden = false;
  card.classList.remove("done");
  $("#btn-cancel").hidden = false;
  $("#progress-title").textContent = job.status === "pending" ? "Waiting to start…" : "Backing up…";
  updateProgress(job);
}

/** How long the figures of a finished backup stay on the card. */
const FINISHED_SHOWN_MS = 30000;

/**
 * The card with a finished backup's final figures (they come with the job's last event).
 * @param {Job} job
 */
function showFinished(job) {
  const card = $("#progress");
  card.hidden = false;
  card.classList.add("done");
  $("#btn-cancel").hidden = true;
  const words = { completed: "Backup completed", failed: "Backup failed", canceled: "Backup canceled" };
  $("#progress-title").textContent = words[/** @type {"completed" | "failed" | "canceled"} */ (job.status)]
    || `Backup ${job.status}`;
  const bar = find("#progress-bar");
  if (bar instanceof HTMLProgressElement) bar.value = job.status === "completed" ? 100 : 0;
  const parts = [`${job.files_done.toLocaleString()} ${job.files_done === 1 ? "file" : "files"}`,
    formatSize(job.bytes_done)];
  if (job.status === "completed") parts.push(`${formatSize(job.added_size)} added`);
  if (job.started_at && job.finished_at) {
    const seconds = Math.max(0, Math.round((Date.parse(job.finished_at) - Date.parse(job.started_at)) / 1000));
    parts.push(seconds < 1 ? "in under a second" : `in ${seconds} s`);
  }
  if (job.error && job.status !== "completed") parts.push(job.error);
  one(HTMLElement, "#progress-text").textContent = parts.join(" · ");
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
