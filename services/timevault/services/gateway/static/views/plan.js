// @ts-check
/**
 * @file A plan's page (`#/plans/<id>`, the seed's "backup log"): status, Back up now, Pause,
 * live progress, facts, settings and the snapshot list; the dialogs are in edit.js, restore.js
 * and delete.js. Reloaded on live events for this plan, and every 5 s while a backup runs
 * (in case the event stream drops).
 */

import { ApiError, apiError, cancelJob, getPlan, pauseOrResume, startBackup, startPrune } from "../api.js";
import { $, $$, el, find, fromTemplate, one } from "../dom.js";
import { onEvent } from "../events.js";
import { formatDuration, formatSize, formatTime, locationText, retentionText, scheduleText } from "../format.js";
import { isActive, pill, planStatus, setPill, snapshotStatus } from "../status.js";
import { focusHeading, onLeave, show } from "../view.js";
import { busy, timeEl, toast, zonedTimeEl } from "../widgets.js";
import { wireDelete } from "./delete.js";
import { wireEdit } from "./edit.js";
import { showProgress, trackJob, updateProgress } from "./progress.js";
import { openRestore, restoreUpdate, wireRestore } from "./restore.js";
import { showSpaceNotice } from "./space.js";

/** @typedef {import("../types.js").PlanDetail} PlanDetail */
/** @typedef {import("../types.js").SnapshotInfo} SnapshotInfo */
/** @typedef {import("../types.js").Job} Job */
/** @typedef {import("../events.js").LiveEvent} LiveEvent */

/**
 * What the page and its dialogs share.
 * @typedef {object} PlanState
 * @property {PlanDetail | null} plan null until loaded, and once deleted
 * @property {Job | null} job the backup the progress card follows
 * @property {SnapshotInfo | null} restoreSnapshot the snapshot the restore dialog is for
 * @property {string | null} restoreJob the restore job the dialog follows
 * @property {{ job: Job, at: number } | null} finished the backup that just ended, shown for a while
 */

/** @typedef {() => Promise<void>} Load */

/** @param {string} planId id or name */
export async function renderPlan(planId) {
  show(fromTemplate("tpl-plan"), "Backup");
  // Set at once, not when the plan has loaded: a click before then followed the template's "#/".
  $("#btn-browse").setAttribute("href", `#/plans/${encodeURIComponent(planId)}/browse`);
  const view = $("#view");
  /** @type {PlanState} */
  const state = { plan: null, job: null, restoreSnapshot: null, restoreJob: null, finished: null };
  let left = false;
  const poll = setInterval(() => { if (state.job) load(); }, 5000);
  const unsubscribe = onEvent((event) => planEvent(state, event, load));
  onLeave(unsubscribe, () => clearInterval(poll), () => { left = true; });
  /** @type {Load} */
  const load = async () => {
    let plan;
    try {
      plan = await getPlan(planId);
    } catch (err) {
      if (left) return;
      if (err instanceof ApiError && err.status === 404) {
        view.replaceChildren(el("section", { class: "card narrow" },
          el("h1", { text: "Backup not found" }),
          el("p", { class: "muted", text: "It may have been deleted." }),
          el("p", {}, el("a", { href: "#/", text: "← All backups" }))));
        focusHeading();
        return;
      }
      showPlanError(apiError(err));
      return;
    }
    if (left) return;  // another page is shown by now
    state.plan = plan;
    fillPlan(state);
    showSpaceNotice(plan, $("#space-out"), () => left);
    if (plan.active_job) await trackJob(state, plan.active_job);
    else showProgress(state, null);
  };
  wirePlan(state, load);
  await load();
  focusHeading();
}

/** @param {Error} err */
function showPlanError(err) {
  const box = find("#plan-error");
  if (!box) return;
  box.textContent = err.message;
  box.hidden = false;
}

/** @param {PlanState} state */
function fillPlan(state) {
  const plan = state.plan;
  if (!plan) return;
  document.title = `${plan.name} · TimeVault`;
  $("#plan-title").textContent = plan.name;
  setPill($("#plan-status"), planStatus(plan));
  $("#plan-schedule").textContent = scheduleText(plan.schedule);
  $("#btn-pause").textContent = plan.paused ? "Resume" : "Pause";
  $("#btn-browse").setAttribute("href", `#/plans/${encodeURIComponent(plan.id)}/browse`);
  one(HTMLButtonElement, "#btn-backup").disabled = Boolean(plan.active_job);
  $("#stat-total").textContent = formatSize(plan.total_size);
  $("#stat-last").replaceChildren(plan.last_snapshot_at ? timeEl(plan.last_snapshot_at) : "None yet");
  $("#stat-next").replaceChildren(plan.paused ? "Paused" : zonedTimeEl(plan.next_run, plan.schedule.timezone));
  $("#stat-count").textContent = String(plan.snapshot_count);
  $("#set-schedule").textContent = scheduleText(plan.schedule) + (plan.paused ? " — paused" : "");
  $("#set-retention").textContent = retentionText(plan.retention)
    + (plan.thin_when_full ? "; the oldest go first when the disk is full" : "");
  $("#set-sources").replaceChildren(...plan.sources.map((s) => el("code", { class: "path", text: s })));
  $("#set-location").replaceChildren(el("code", { class: "path", text: locationText(plan.location) }),
    ...(plan.credentials_stored ? [el("span", { class: "muted", text: "Access key kept by TimeVault" })] : []));
  fillOptions(plan);
  $("#set-created").replaceChildren(timeEl(plan.created_at));
  fillSnapshots(state, plan);
}

/**
 * What the plan leaves out, its commands and its notifications (with how the last one went).
 * @param {PlanDetail} plan
 */
function fillOptions(plan) {
  const left = plan.excludes.map((pattern) => el("code", { class: "path", text: pattern }));
  if (plan.exclude_caches) left.push(el("span", { class: "muted", text: "Cache folders (CACHEDIR.TAG)" }));
  if (plan.one_file_system) left.push(el("span", { class: "muted", text: "Other file systems" }));
  $("#set-excludes").replaceChildren(...(left.length ? left : [el("span", { class: "muted", text: "Nothing" })]));
  const hooks = [];
  if (plan.pre_command) {
    hooks.push(el("span", {}, "Before: ", el("code", { class: "path", text: plan.pre_command }),
      plan.pre_command_optional ? el("span", { class: "muted", text: " (may fail)" }) : null));
  }
  if (plan.post_command) hooks.push(el("span", {}, "After: ", el("code", { class: "path", text: plan.post_command })));
  $("#set-hooks").replaceChildren(...(hooks.length ? hooks : [el("span", { class: "muted", text: "None" })]));
  const notify = plan.notify.map((url) => el("code", { class: "path", text: url }));
  if (plan.notify.length) {
    notify.push(el("span", { class: "muted", text: plan.notify_success
      ? "On failures, missed backups and successes" : "On failures and missed backups" }));
  }
  const last = plan.notify_last;
  if (last) {
    const outcome = last.ok ? `delivered (${last.status})`
      : `not delivered (${last.status}): ${last.error || `HTTP ${last.http_status}`}`;
    notify.push(el("span", { class: last.ok ? "notify-ok" : "notify-failed", id: "notify-last" },
      "Last report ", timeEl(last.at, true), ` ${outcome}` + (last.attempts > 1 ? `, after ${last.attempts} tries` : "")));
  }
  $("#set-notify").replaceChildren(...(notify.length ? notify : [el("span", { class: "muted", text: "None" })]));
}

/**
 * Endorsed: vouched for with the password (at plan creation, attach or a restore); snapshots the
 * services wrote since are consistent with that history but not yet vouched for.
 * @param {SnapshotInfo} snap
 * @returns {HTMLElement}
 */
function endorsement(snap) {
  return snap.endorsed
    ? el("span", { class: "muted small-text endorsement", "data-endorsed": "true", text: " · verified",
      title: "Endorsed with the password: this snapshot cannot be altered unnoticed" })
    : el("span", { class: "muted small-text endorsement", "data-endorsed": "false", text: " · not yet verified",
      title: "Written since the password was last used; it is verified at the next restore" });
}

/**
 * The snapshot table, newest first.
 * @param {PlanState} state
 * @param {PlanDetail} plan
 */
function fillSnapshots(state, plan) {
  const snapshots = [...plan.snapshots].reverse();
  $("#snapshots-empty").hidden = snapshots.length > 0;
  $("#snapshots-table").hidden = snapshots.length === 0;
  $("#snapshots-body").replaceChildren(...snapshots.map((snap) => {
    const completed = snap.status === "completed";
    const restore = completed
      ? el("button", { type: "button", class: "button small", "aria-label": `Restore snapshot of ${formatTime(snap.started_at, true)}`,
        onclick: () => openRestore(state, snap) }, "Restore")
      : null;
    const duration = formatDuration(snap.started_at, snap.finished_at);
    return el("tr", { "data-snapshot": snap.id, "data-status": snap.status },
      el("td", { "data-label": "Time" }, el("span", {}, timeEl(snap.started_at, true),
        duration ? el("span", { class: "muted small-text", text: ` · ${duration}` }) : null)),
      el("td", { "data-label": "Size", class: "num", text: completed ? formatSize(snap.size) : "—" }),
      el("td", { "data-label": "Added", class: "num", text: completed ? formatSize(snap.added_size) : "—" }),
      el("td", { "data-label": "Files", class: "num", text: completed ? snap.files.toLocaleString() : "—" }),
      el("td", { "data-label": "Status" }, pill(snapshotStatus(snap.status)),
        completed ? endorsement(snap) : null,
        snap.error ? el("span", { class: "snap-error", text: snap.error }) : null),
      el("td", { "data-label": "Kept by", class: "kept-by muted small-text",
        text: completed && snap.kept_by && snap.kept_by.length ? snap.kept_by.join(", ") : "—" }),
      el("td", { class: "row-actions" }, restore));
  }));
}

/**
 * "Cleaned up: forgot 2 backups, freed 1.2 GB."
 * @param {Job} job
 * @returns {string}
 */
function pruneText(job) {
  const summary = job.prune;
  if (!summary) return "Clean-up finished.";
  const forgot = summary.forgotten.length;
  const text = `Cleaned up: forgot ${forgot} backup${forgot === 1 ? "" : "s"}, freed ${formatSize(summary.bytes_freed)}.`;
  return summary.packs_pending ? `${text} ${formatSize(summary.bytes_pending)} more once running backups end.` : text;
}

/**
 * @param {PlanState} state
 * @param {LiveEvent} event
 * @param {Load} load
 */
function planEvent(state, event, load) {
  const plan = state.plan;
  if (!plan) return;
  if (event.kind === "progress") {
    if (state.job && event.data.job_id === state.job.id) updateProgress(event.data);
    return;
  }
  if (event.kind === "job") {
    const job = event.data.job;
    if (!job || job.plan_id !== plan.id) return;
    if (job.kind === "backup") {
      showProgress(state, job);
      if (!isActive(job.status)) load();
    }
    if (job.kind === "restore") restoreUpdate(state, job);
    if (job.kind === "prune" && !isActive(job.status)) {
      if (job.trigger === "manual") toast(job.status === "completed" ? pruneText(job) : `Clean-up ${job.status}: ${job.error || ""}`);
      load();
    }
    return;
  }
  if (event.data.plan_id !== plan.id) return;
  if (event.data.kind === "deleted") {
    toast(`Backup “${plan.name}” was deleted.`);
    location.hash = "#/";
  } else if (event.data.kind !== "job") {
    load();
  }
}

/**
 * @param {PlanState} state
 * @param {Load} load
 */
function wirePlan(state, load) {
  const backup = one(HTMLButtonElement, "#btn-backup");
  backup.addEventListener("click", async () => {
    if (!state.plan) return;
    $("#plan-error").hidden = true;
    busy(backup, true, "Starting…");
    try {
      showProgress(state, await startBackup(state.plan.id));
      toast("Backup started.");
    } catch (err) {
      showPlanError(apiError(err));
    } finally {
      busy(backup, false);
      await load();
    }
  });
  const prune = one(HTMLButtonElement, "#btn-prune");
  prune.addEventListener("click", async () => {
    if (!state.plan) return;
    $("#plan-error").hidden = true;
    busy(prune, true, "Cleaning up…");
    try {
      await startPrune(state.plan.id);
      toast("Clean-up started: backups the plan no longer keeps are forgotten and their space freed.");
    } catch (err) {
      showPlanError(apiError(err));
    } finally {
      busy(prune, false);
    }
  });
  $("#btn-pause").addEventListener("click", async () => {
    if (!state.plan) return;
    const action = state.plan.paused ? "resume" : "pause";
    try {
      await pauseOrResume(state.plan.id, action);
      toast(action === "pause" ? "Scheduled backups paused." : "Scheduled backups resumed.");
    } catch (err) {
      showPlanError(apiError(err));
    }
    await load();
  });
  $("#btn-cancel").addEventListener("click", async () => {
    if (!state.job) return;
    try {
      await cancelJob(state.job.id);
      toast("Canceling the backup…");
    } catch (err) {
      showPlanError(apiError(err));
    }
  });
  for (const button of $$("dialog [data-close]")) {
    button.addEventListener("click", () => button.closest("dialog")?.close());
  }
  wireEdit(state, load);
  wireRestore(state);
  wireDelete(state);
}
