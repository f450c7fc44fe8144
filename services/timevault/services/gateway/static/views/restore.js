// @ts-check
/**
 * @file The plan page's restore dialog: target, optional paths and the password; then it follows
 * the restore job (live events, with polling in case the stream drops).
 */

import { apiError, getJob, restoreSnapshot } from "../api.js";
import { $, el, find, one } from "../dom.js";
import { formatSize, formatTime, lines } from "../format.js";
import { clearErrors, showError } from "../forms.js";
import { isActive } from "../status.js";
import { busy, warningList } from "../widgets.js";

/** @typedef {import("../types.js").Job} Job */
/** @typedef {import("../types.js").SnapshotInfo} SnapshotInfo */
/** @typedef {import("./plan.js").PlanState} PlanState */

const RESTORE_IDS = { target: "r-target", includes: "r-includes", password: "r-password" };

/**
 * Open the dialog for `snap`.
 * @param {PlanState} state
 * @param {SnapshotInfo} snap
 */
export function openRestore(state, snap) {
  const dialog = one(HTMLDialogElement, "#dlg-restore");
  const form = one(HTMLFormElement, "#restore-form");
  clearErrors(form);
  state.restoreSnapshot = snap;
  state.restoreJob = null;
  $("#restore-what").textContent =
    `Snapshot of ${formatTime(snap.started_at)} · ${formatSize(snap.size)} · ${snap.files.toLocaleString()} files`;
  one(HTMLInputElement, "#r-password", form).value = "";
  $("#restore-status").hidden = true;
  $("#restore-submit").hidden = false;
  dialog.showModal();
  $("#r-target", form).focus();
}

/** @param {PlanState} state */
export function wireRestore(state) {
  const form = one(HTMLFormElement, "#restore-form");
  const dialog = one(HTMLDialogElement, "#dlg-restore");
  const password = one(HTMLInputElement, "#r-password", form);
  dialog.addEventListener("close", () => { password.value = ""; });  // the password lives no longer than the dialog
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const plan = state.plan;
    const snap = state.restoreSnapshot;
    if (!plan || !snap) return;
    clearErrors(form);
    const body = {
      target: one(HTMLInputElement, "#r-target", form).value.trim(),
      includes: lines(one(HTMLTextAreaElement, "#r-includes", form).value),
      password: password.value,
    };
    const button = one(HTMLButtonElement, "#restore-submit");
    busy(button, true, "Starting…");
    try {
      const job = await restoreSnapshot(plan.id, snap.id, body);
      password.value = "";
      state.restoreJob = job.id;
      restoreUpdate(state, job);
      pollRestore(state, job.id);
    } catch (err) {
      showError(form, apiError(err), RESTORE_IDS, "restore-error");
    } finally {
      busy(button, false);
    }
  });
}

/**
 * Events usually arrive first; polling covers a dropped stream.
 * @param {PlanState} state
 * @param {string} jobId
 */
async function pollRestore(state, jobId) {
  while (state.restoreJob === jobId && find("#dlg-restore")) {
    await new Promise((resolve) => setTimeout(resolve, 1500));
    if (state.restoreJob !== jobId) return;
    try {
      const job = await getJob(jobId);
      restoreUpdate(state, job);
      if (!isActive(job.status)) return;
    } catch {
      return;
    }
  }
}

/**
 * Show how the followed restore `job` is doing (other jobs are ignored).
 * @param {PlanState} state
 * @param {Job} job
 */
export function restoreUpdate(state, job) {
  if (job.id !== state.restoreJob) return;
  const box = find("#restore-status");
  if (!box) return;
  box.hidden = false;
  box.className = "restore-status";
  if (isActive(job.status)) {
    const files = job.files_total ? ` · ${job.files_done} of ${job.files_total} files` : "";
    box.textContent = `Restoring into ${job.target}…${files}`;
    $("#restore-submit").hidden = true;
  } else if (job.status === "completed") {
    // Short jobs can end before their first progress report, so counts may still be zero.
    const amount = job.files_done ? `${job.files_done.toLocaleString()} files (${formatSize(job.bytes_done)}) ` : "";
    if (job.warnings.length) {
      // Completed but incomplete: what could be read is restored, the rest is named.
      box.classList.add("warn");
      box.replaceChildren(
        el("p", { text: `Restore incomplete: ${amount}restored into ${job.target}; ${job.warnings.length} `
          + `${job.warnings.length === 1 ? "item" : "items"} could not be restored:` }),
        warningList(job.warnings));
    } else {
      box.classList.add("ok");
      box.textContent = `Restore completed: ${amount}restored into ${job.target}.`;
    }
    state.restoreJob = null;
  } else {
    box.classList.add("error");
    box.textContent = `Restore ${job.status}: ${job.error || "no reason given"}`;
    $("#restore-submit").hidden = false;
    state.restoreJob = null;
  }
}
