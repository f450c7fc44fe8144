// @ts-check
/**
 * @file The Time Machine (`#/plans/<id>/browse`): unlock once, pick a point on the timeline, walk
 * its folders, see what changed since the snapshot before, find a name in every snapshot, and
 * restore ticked files and folders into a folder or back where they were.
 *
 * The session id lives only in this module's memory (gone on reload): the password is typed once
 * per visit, never stored. A 401 naming `session` (locked, or idle too long) brings the unlock
 * form back with a word about why.
 */

import {
  ApiError, apiError, diffSnapshots, findName, getJob, getJobLog, getPlan, listFolder, lockPlan, restoreItems,
  unlockPlan,
} from "../api.js";
import { $, el, find, fromTemplate, one } from "../dom.js";
import { onEvent } from "../events.js";
import { formatSize, formatTime, plural } from "../format.js";
import { clearErrors, showError } from "../forms.js";
import { isActive } from "../status.js";
import { focusHeading, onLeave, show } from "../view.js";
import { busy, icon, timeEl, toast, warningList } from "../widgets.js";

/** @typedef {import("../types.js").PlanDetail} PlanDetail */
/** @typedef {import("../types.js").SnapshotInfo} SnapshotInfo */
/** @typedef {import("../types.js").BrowseEntry} BrowseEntry */
/** @typedef {import("../types.js").DiffChange} DiffChange */
/** @typedef {import("../types.js").Job} Job */

/** Rows drawn at once; a folder of 10,000 files shows the rest on request. */
const PAGE_ROWS = 500;
/** Changes listed at once. */
const CHANGES_SHOWN = 200;

/** planId → session id, in memory only. */
const sessions = new Map();

/**
 * @typedef {object} BrowseState
 * @property {PlanDetail} plan
 * @property {string | null} session
 * @property {SnapshotInfo[]} snapshots completed ones, newest first
 * @property {SnapshotInfo | null} snapshot the point in time shown
 * @property {string} path the folder shown
 * @property {BrowseEntry[]} entries its entries
 * @property {number} shown rows drawn
 * @property {Set<string>} selected paths ticked
 * @property {string | null} restoreJob the restore followed
 * @property {string} home the folder a snapshot opens at
 */

/** @param {string} planId */
export async function renderBrowse(planId) {
  show(fromTemplate("tpl-browse"), "Browse snapshots");
  $("#browse-back").setAttribute("href", `#/plans/${encodeURIComponent(planId)}`);
  let plan;
  try {
    plan = await getPlan(planId);
  } catch (err) {
    const box = $("#unlock-error");
    box.textContent = apiError(err).message;
    box.hidden = false;
    return;
  }
  /** @type {BrowseState} */
  const state = {
    plan, session: sessions.get(plan.id) || null, path: "/", entries: [], shown: 0, selected: new Set(),
    snapshots: plan.snapshots.filter((s) => s.status === "completed").reverse(), snapshot: null,
    restoreJob: null, home: commonFolder(plan.sources),
  };
  document.title = `Browse ${plan.name} · TimeVault`;
  $("#browse-plan").textContent = plan.name;
  wireUnlock(state);
  wireSelection(state);
  wireFind(state);
  $("#btn-lock").addEventListener("click", () => lock(state, "Locked. The key was dropped from memory."));
  onLeave(onEvent((event) => {
    if (event.kind === "job" && event.data.job && event.data.job.id === state.restoreJob) restoreUpdate(state, event.data.job);
  }));
  if (state.session) await opened(state);
  else showUnlock(state);
  focusHeading();
}

/**
 * The deepest folder that holds every source: where a snapshot opens.
 * @param {string[]} sources
 * @returns {string}
 */
export function commonFolder(sources) {
  if (!sources.length) return "/";
  const split = sources.map((s) => s.split("/").filter(Boolean));
  const first = split[0] || [];
  let depth = 0;
  while (depth < first.length && split.every((parts) => parts[depth] === first[depth])) depth += 1;
  if (sources.length > 1 || depth === 0) return `/${first.slice(0, depth).join("/")}`;
  return `/${first.join("/")}`;
}

// --- locking --------------------------------------------------------------------------------------

/**
 * @param {BrowseState} state
 * @param {string} [message] why the form is shown again
 */
function showUnlock(state, message) {
  state.session = null;
  sessions.delete(state.plan.id);
  $("#browser").hidden = true;
  $("#btn-lock").hidden = true;
  $("#unlock-card").hidden = false;
  const note = $("#unlock-note");
  note.textContent = message || "";
  note.hidden = !message;
  one(HTMLInputElement, "#u-password").focus();
}

/** @param {BrowseState} state */
function wireUnlock(state) {
  const form = one(HTMLFormElement, "#unlock-form");
  const password = one(HTMLInputElement, "#u-password", form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    if (!password.value) {
      showError(form, new ApiError(400, { code: "invalid", message: "Enter the backup password", field: "password" }),
        { password: "u-password" }, "unlock-error");
      return;
    }
    const button = one(HTMLButtonElement, "#unlock-submit");
    busy(button, true, "Unlocking…");
    try {
      const session = await unlockPlan(state.plan.id, password.value);
      password.value = "";  // the restorer holds the key now; the page keeps no password
      state.session = session.session;
      sessions.set(state.plan.id, session.session);
      await opened(state);
    } catch (err) {
      const error = apiError(err);
      if (error.field === "password" && error.code === "unauthorized") error.message = "Wrong password";
      showError(form, error, { password: "u-password" }, "unlock-error");
    } finally {
      busy(button, false);
    }
  });
}

/**
 * @param {BrowseState} state
 * @param {string} message
 */
async function lock(state, message) {
  const session = state.session;
  showUnlock(state, message);
  if (session) {
    try {
      await lockPlan(state.plan.id, session);
    } catch {
      // It may have ended already; either way nothing of it is left here.
    }
  }
}

/**
 * Every browsing call goes through here: an ended session shows the unlock form again.
 * @template T
 * @param {BrowseState} state
 * @param {(session: string) => Promise<T>} call
 * @returns {Promise<T | null>}
 */
async function withSession(state, call) {
  if (!state.session) return null;
  try {
    return await call(state.session);
  } catch (err) {
    const error = apiError(err);
    if (error.status === 401 && error.field === "session") {
      showUnlock(state, "The snapshots were locked after a while without use. Enter the password to look again.");
      return null;
    }
    throw error;
  }
}

// --- the timeline ------------------------------------------------------------------------------------

/** @param {BrowseState} state */
async function opened(state) {
  $("#unlock-card").hidden = true;
  $("#browser").hidden = false;
  $("#btn-lock").hidden = false;
  const timeline = $("#timeline");
  if (!state.snapshots.length) {
    timeline.replaceChildren(el("li", { class: "muted", text: "No snapshots yet." }));
    return;
  }
  timeline.replaceChildren(...state.snapshots.map((snap, index) => el("li", {},
    el("button", {
      type: "button", class: "point", "data-snapshot": snap.id, "aria-pressed": "false",
      onclick: () => pick(state, snap, state.path),
    }, el("span", { class: "point-time" }, timeEl(snap.started_at, true)),
    el("span", { class: "point-facts muted", text: `${formatSize(snap.size)} · ${plural(snap.files, "file")}` +
      (index === 0 ? " · latest" : "") })))));
  await pick(state, state.snapshot || state.snapshots[0] || null, state.path === "/" ? state.home : state.path);
}

/**
 * Show the point in time `snap`, at folder `path` (or the nearest one it has).
 * @param {BrowseState} state
 * @param {SnapshotInfo | null} snap
 * @param {string} path
 */
async function pick(state, snap, path) {
  if (!snap) return;
  state.snapshot = snap;
  state.selected.clear();
  for (const button of document.querySelectorAll("#timeline .point")) {
    if (button instanceof HTMLElement) button.setAttribute("aria-pressed", String(button.dataset.snapshot === snap.id));
  }
  $("#folder-title").textContent = `Files on ${formatTime(snap.started_at, true)}`;
  await Promise.all([openFolder(state, path, true), showChanges(state)]);
}

// --- folders --------------------------------------------------------------------------------------------

/**
 * @param {BrowseState} state
 * @param {string} path
 * @param {boolean} [fallBack] when the folder is not in this snapshot, show the nearest parent
 */
async function openFolder(state, path, fallBack = false) {
  const snap = state.snapshot;
  if (!snap) return;
  let listing = null;
  for (let candidate = path; ; candidate = parentOf(candidate)) {
    try {
      listing = await withSession(state, (session) => listFolder(state.plan.id, session, snap.id, candidate));
      break;
    } catch (err) {
      const error = apiError(err);
      if (!(fallBack && error.status === 404 && candidate !== "/")) {
        showBrowseError(error.message);
        return;
      }
    }
  }
  if (!listing || state.snapshot !== snap) return;
  state.path = listing.path;
  state.entries = listing.entries;
  state.shown = 0;
  $("#browse-error").hidden = true;
  drawBreadcrumb(state);
  $("#files-body").replaceChildren();
  drawRows(state);
  $("#files-empty").hidden = listing.entries.length > 0;
  const files = listing.entries.filter((e) => e.type === "file");
  $("#folder-summary").textContent = `${plural(listing.entries.length - files.length, "folder")}, ` +
    `${plural(files.length, "file")}, ${formatSize(files.reduce((sum, e) => sum + e.size, 0))}`;
  syncSelection(state);
}

/**
 * @param {string} path
 * @returns {string}
 */
function parentOf(path) {
  const parts = path.split("/").filter(Boolean);
  parts.pop();
  return `/${parts.join("/")}`;
}

/** @param {string} message */
function showBrowseError(message) {
  const box = find("#browse-error");
  if (!box) return;
  box.textContent = message;
  box.hidden = false;
}

/** @param {BrowseState} state */
function drawBreadcrumb(state) {
  const parts = state.path.split("/").filter(Boolean);
  const items = [el("li", {}, el("button", { type: "button", class: "crumb", onclick: () => openFolder(state, "/") },
    "/"))];
  parts.forEach((part, i) => {
    const target = `/${parts.slice(0, i + 1).join("/")}`;
    const last = i === parts.length - 1;
    items.push(el("li", {}, last
      ? el("span", { class: "crumb current", "aria-current": "location", text: part })
      : el("button", { type: "button", class: "crumb", onclick: () => openFolder(state, target) }, part)));
  });
  $("#breadcrumb").replaceChildren(...items);
  one(HTMLButtonElement, "#btn-up").disabled = state.path === "/";
}

/**
 * Draw the next PAGE_ROWS rows (and a button for more).
 * @param {BrowseState} state
 */
function drawRows(state) {
  const body = $("#files-body");
  const upto = Math.min(state.entries.length, state.shown + PAGE_ROWS);
  const rows = state.entries.slice(state.shown, upto).map((entry) => row(state, entry));
  body.append(...rows);
  state.shown = upto;
  const more = $("#btn-more");
  more.hidden = state.shown >= state.entries.length;
  more.textContent = `Show ${plural(state.entries.length - state.shown, "more entry", "more entries")}`;
}

/**
 * @param {BrowseState} state
 * @param {BrowseEntry} entry
 * @returns {HTMLTableRowElement}
 */
function row(state, entry) {
  const box = el("input", { type: "checkbox", "aria-label": `Select ${entry.name}`, "data-path": entry.path });
  box.checked = state.selected.has(entry.path);
  box.addEventListener("change", () => {
    if (box.checked) state.selected.add(entry.path);
    else state.selected.delete(entry.path);
    syncSelection(state);
  });
  const name = entry.type === "dir"
    ? el("button", { type: "button", class: "entry-link", onclick: () => openFolder(state, entry.path) },
      icon("dir"), `${entry.name}/`)
    : el("span", { class: "entry-name" }, icon(entry.type), entry.name,
      entry.target ? el("span", { class: "muted", text: ` → ${entry.target}` }) : null);
  return el("tr", { "data-entry": entry.name, "data-type": entry.type },
    el("td", { class: "pick" }, box),
    el("td", { "data-label": "Name" }, name),
    el("td", { "data-label": "Size", class: "num", text: entry.type === "file" ? formatSize(entry.size) : "—" }),
    el("td", { "data-label": "Modified", class: "num" }, timeEl(entry.mtime, true)));
}

// --- what changed ------------------------------------------------------------------------------------

/** @param {BrowseState} state */
async function showChanges(state) {
  const snap = state.snapshot;
  if (!snap) return;
  const index = state.snapshots.indexOf(snap);
  const before = state.snapshots[index + 1];
  const list = $("#changes-list");
  const summary = $("#changes-summary");
  if (!before) {
    summary.textContent = "The first snapshot: everything in it was new.";
    list.replaceChildren();
    return;
  }
  summary.textContent = "Comparing…";
  let diff;
  try {
    diff = await withSession(state, (session) => diffSnapshots(state.plan.id, session, before.id, snap.id));
  } catch (err) {
    summary.textContent = apiError(err).message;
    return;
  }
  if (!diff || state.snapshot !== snap) return;
  const changed = diff.changed.filter((c) => c.what === "content");
  summary.textContent = `Since ${formatTime(before.started_at, true)}: ${diff.added.length.toLocaleString()} added ` +
    `(${formatSize(diff.added_size)}), ${diff.removed.length.toLocaleString()} removed, ` +
    `${changed.length.toLocaleString()} changed.`;
  /** @type {[DiffChange, string][]} */
  const rows = [
    ...diff.added.map((c) => /** @type {[DiffChange, string]} */ ([c, "Added"])),
    ...changed.map((c) => /** @type {[DiffChange, string]} */ ([c, "Changed"])),
    ...diff.removed.map((c) => /** @type {[DiffChange, string]} */ ([c, "Removed"])),
  ];
  const items = rows.slice(0, CHANGES_SHOWN).map(([change, word]) => el("li", { "data-what": change.what },
    el("span", { class: `change-mark ${change.what}`, text: word }),
    el("button", { type: "button", class: "entry-link path", title: "Show its folder",
      onclick: () => openFolder(state, parentOf(change.path), true) }, change.path + (change.type === "dir" ? "/" : "")),
    change.type === "file" ? el("span", { class: "muted num", text: change.what === "content"
      ? `${formatSize(change.old_size)} → ${formatSize(change.size)}` : formatSize(change.size) }) : null));
  if (rows.length > CHANGES_SHOWN) {
    items.push(el("li", { class: "muted", text: `… and ${(rows.length - CHANGES_SHOWN).toLocaleString()} more` }));
  }
  list.replaceChildren(...items);
}

// --- find ------------------------------------------------------------------------------------------

/** @param {BrowseState} state */
function wireFind(state) {
  const form = one(HTMLFormElement, "#find-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const pattern = one(HTMLInputElement, "#find-pattern", form).value.trim();
    const out = $("#find-results");
    if (!pattern) return;
    out.replaceChildren(el("li", { class: "muted", text: "Searching every snapshot…" }));
    let result;
    try {
      result = await withSession(state, (session) => findName(state.plan.id, session, pattern));
    } catch (err) {
      out.replaceChildren(el("li", { class: "field-error", text: apiError(err).message }));
      return;
    }
    if (!result) return;
    if (!result.matches.length) {
      out.replaceChildren(el("li", { class: "muted", text: `Nothing called “${pattern}” in any snapshot.` }));
      return;
    }
    out.replaceChildren(...result.matches.map((match) => el("li", { "data-path": match.path },
      el("code", { class: "path", text: match.path + (match.type === "dir" ? "/" : "") }),
      el("ul", { class: "versions" }, ...[...match.versions].reverse().map((version) => el("li", {},
        el("button", { type: "button", class: "button small",
          onclick: () => {
            const snap = state.snapshots.find((s) => s.id === version.snapshot) || null;
            pick(state, snap, parentOf(match.path));
          } }, timeEl(version.time, true)),
        match.type === "file" ? el("span", { class: "muted", text: ` ${formatSize(version.size)}` } ) : null))))),
    ...(result.truncated ? [el("li", { class: "muted", text: "More matched; type more of the name." })] : []));
  });
}

// --- selection and restore --------------------------------------------------------------------------------

/** @param {BrowseState} state */
function syncSelection(state) {
  const count = state.selected.size;
  $("#selection-bar").hidden = count === 0 && !state.restoreJob && $("#items-status").hidden;
  $("#selection-count").textContent = count ? `${plural(count, "item")} selected` : "";
  $("#btn-clear").hidden = count === 0;
  for (const id of ["#btn-restore-original", "#btn-restore-to"]) one(HTMLButtonElement, id).disabled = count === 0;
}

/** @param {BrowseState} state */
function wireSelection(state) {
  $("#btn-up").addEventListener("click", () => openFolder(state, parentOf(state.path)));
  $("#btn-more").addEventListener("click", () => drawRows(state));
  $("#btn-clear").addEventListener("click", () => {
    state.selected.clear();
    for (const box of document.querySelectorAll("#files-body input[type=checkbox]")) {
      if (box instanceof HTMLInputElement) box.checked = false;
    }
    syncSelection(state);
  });
  $("#btn-restore-original").addEventListener("click", () => startRestore(state, null));
  const form = one(HTMLFormElement, "#restore-to-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    startRestore(state, one(HTMLInputElement, "#rt-target", form).value.trim());
  });
}

/**
 * @param {BrowseState} state
 * @param {string | null} target null: back to the original place
 */
async function startRestore(state, target) {
  const snap = state.snapshot;
  if (!snap || !state.selected.size) return;
  const form = one(HTMLFormElement, "#restore-to-form");
  clearErrors(form);
  if (target === "") {
    showError(form, new ApiError(400, { code: "invalid", message: "Enter the folder to restore into", field: "target" }),
      { target: "rt-target" }, "restore-to-error");
    return;
  }
  const button = one(HTMLButtonElement, target === null ? "#btn-restore-original" : "#btn-restore-to");
  busy(button, true, "Starting…");
  try {
    const job = await withSession(state, (session) =>
      restoreItems(state.plan.id, session, snap.id, [...state.selected], target));
    if (!job) return;
    state.restoreJob = job.id;
    state.selected.clear();  // what was ticked is on its way; start afresh
    for (const box of document.querySelectorAll("#files-body input[type=checkbox]")) {
      if (box instanceof HTMLInputElement) box.checked = false;
    }
    restoreUpdate(state, job);
    pollRestore(state, job.id);
  } catch (err) {
    showError(form, apiError(err), { target: "rt-target", paths: "rt-target" }, "restore-to-error");
  } finally {
    busy(button, false);
    syncSelection(state);
  }
}

/**
 * @param {BrowseState} state
 * @param {string} jobId
 */
async function pollRestore(state, jobId) {
  while (state.restoreJob === jobId && find("#items-status")) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    try {
      const job = await getJob(jobId);
      await restoreUpdate(state, job);
      if (!isActive(job.status)) return;
    } catch {
      return;
    }
  }
}

/**
 * @param {BrowseState} state
 * @param {Job} job
 */
async function restoreUpdate(state, job) {
  if (job.id !== state.restoreJob) return;
  const box = find("#items-status");
  if (!box) return;
  box.hidden = false;
  $("#selection-bar").hidden = false;
  box.className = "restore-status";
  const where = job.original_place ? "back to where they were" : `into ${job.target}`;
  if (isActive(job.status)) {
    box.replaceChildren(`Restoring ${plural(job.includes.length, "item")} ${where}…`);
    return;
  }
  state.restoreJob = null;
  if (job.status !== "completed") {
    box.classList.add("error");
    box.replaceChildren(`Restore ${job.status}: ${job.error || "no reason given"}`);
    return;
  }
  if (job.warnings.length) {
    box.classList.add("warn");
    box.replaceChildren(el("p", { text: `Restored ${plural(job.includes.length, "item")} ${where}, but `
      + `${plural(job.warnings.length, "file")} could not be restored:` }), warningList(job.warnings));
    toast("Restore incomplete.");
    return;
  }
  box.classList.add("ok");
  /** @type {string[]} */
  let lines = [];
  try {
    lines = (await getJobLog(job.id)).filter((e) => e.kind === "restore").map((e) => e.message);
  } catch {
    lines = [];
  }
  box.replaceChildren(el("p", { text: `Restored ${plural(job.includes.length, "item")} ${where}.` }),
    el("ul", { class: "restore-notes" }, ...lines.map((line) => el("li", { text: line }))));
  toast("Restore completed.");
}
