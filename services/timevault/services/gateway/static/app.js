// TimeVault web UI: plain JavaScript, no build step. Talks only to /api/v1 with the bearer token.
//
// The token arrives once in the URL fragment (#token=…, printed by `timevault up`) or through the
// sign-in form; it is kept in sessionStorage (gone when the tab closes) and sent as a header.
// Live progress is read from /api/v1/events with fetch() streaming, so the token never goes in a URL.
"use strict";

const TOKEN_KEY = "timevault.token";
const API = "/api/v1";
const ACTIVE = new Set(["pending", "running"]);

// --- small helpers -------------------------------------------------------------------------

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function fromTemplate(id) {
  return document.getElementById(id).content.cloneNode(true);
}

const SIZE_UNITS = ["bytes", "KB", "MB", "GB", "TB", "PB"];

function formatSize(bytes) {
  let value = Number(bytes) || 0;
  if (value < 1000) return value === 1 ? "1 byte" : `${value} bytes`;
  let unit = 0;
  while (value >= 1000 && unit < SIZE_UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value >= 100 ? value.toFixed(0) : value.toFixed(1)} ${SIZE_UNITS[unit]}`;
}

const WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateFmt = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short" });
const yearFmt = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric" });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });

function dayDiff(date, now = new Date()) {
  const a = new Date(date.getFullYear(), date.getMonth(), date.getDate());
  const b = new Date(now.getFullYear(), now.getMonth(), now.getDate());
  return Math.round((a - b) / 86400000);
}

function formatTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  const diff = dayDiff(date);
  const time = timeFmt.format(date);
  if (diff === 0) return `Today, ${time}`;
  if (diff === -1) return `Yesterday, ${time}`;
  if (diff === 1) return `Tomorrow, ${time}`;
  if (Math.abs(diff) < 180) return `${dateFmt.format(date)}, ${time}`;
  return `${yearFmt.format(date)}, ${time}`;
}

function timeEl(iso) {
  if (!iso) return el("span", { class: "muted", text: "—" });
  return el("time", { datetime: iso, title: fullFmt.format(new Date(iso)), text: formatTime(iso) });
}

function formatDuration(start, end) {
  if (!start || !end) return "";
  const secs = Math.max(0, Math.round((new Date(end) - new Date(start)) / 1000));
  if (secs < 1) return "under 1 s";
  if (secs < 60) return `${secs} s`;
  if (secs < 3600) return `${Math.floor(secs / 60)} min ${secs % 60} s`;
  return `${Math.floor(secs / 3600)} h ${Math.floor((secs % 3600) / 60)} min`;
}

function scheduleText(schedule) {
  if (!schedule) return "";
  const when = schedule.frequency === "weekly" && schedule.weekday
    ? `Every ${WEEKDAYS[schedule.weekday - 1]}` : "Every day";
  return `${when} at ${schedule.time} (${schedule.timezone || "UTC"})`;
}

function locationText(location) {
  if (!location) return "";
  if (location.type === "local") return location.path || "";
  const prefix = location.prefix ? `/${location.prefix}` : "";
  const where = location.endpoint ? ` at ${location.endpoint}` : (location.region ? ` (${location.region})` : "");
  return `s3://${location.bucket}${prefix}${where}`;
}

function planStatus(plan) {
  if (plan.active_job) return { text: "Backing up", tone: "running" };
  if (plan.paused) return { text: "Paused", tone: "paused" };
  switch (plan.last_status) {
    case "completed": return { text: "Up to date", tone: "ok" };
    case "failed": return { text: "Last backup failed", tone: "error" };
    case "canceled": return { text: "Last backup canceled", tone: "neutral" };
    default: return { text: "No backups yet", tone: "neutral" };
  }
}

const SNAPSHOT_STATUS = {
  completed: { text: "Completed", tone: "ok" },
  failed: { text: "Failed", tone: "error" },
  canceled: { text: "Canceled", tone: "neutral" },
};

function pill(status) {
  return el("span", { class: `pill ${status.tone}`, text: status.text });
}

function setPill(node, status) {
  node.className = `pill ${status.tone}`;
  node.textContent = status.text;
}

function lines(text) {
  return text.split("\n").map((line) => line.trim()).filter(Boolean);
}

let toastTimer = null;

function toast(message) {
  const node = $("#toast");
  node.textContent = message;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { node.hidden = true; }, 4000);
}

// --- API -------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "internal";
    this.field = error.field || null;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(method, path, body) {
  const headers = { Accept: "application/json", Authorization: `Bearer ${token() || ""}` };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(API + path, init);
  } catch (err) {
    throw new ApiError(0, { code: "unavailable", message: "Cannot reach TimeVault. Is it running?" });
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (err) {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || { code: "internal", message: `HTTP ${response.status}` };
    if (response.status === 401 && !error.field) {
      signOut("Your session is not valid any more. Please sign in again.");
    }
    throw new ApiError(response.status, error);
  }
  return data;
}

const enc = encodeURIComponent;

// --- live events (fetch streaming of text/event-stream) -------------------------------------------

const listeners = new Set();
let eventAbort = null;

function onEvent(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

async function runEventStream() {
  if (eventAbort) return;
  const controller = new AbortController();
  eventAbort = controller;
  let delay = 1000;
  while (!controller.signal.aborted && token()) {
    try {
      const response = await fetch(`${API}/events`, {
        headers: { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" },
        signal: controller.signal,
        cache: "no-store",
      });
      if (response.status === 401) {
        signOut("Your session is not valid any more. Please sign in again.");
        return;
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      delay = 1000;
      await readEvents(response.body);
    } catch (err) {
      if (controller.signal.aborted) return;
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

async function readEvents(stream) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      dispatchFrame(frame);
    }
  }
}

function dispatchFrame(frame) {
  let kind = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (line.startsWith("event:")) kind = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return;
  let message;
  try {
    message = JSON.parse(data.join("\n"));
  } catch (err) {
    return;
  }
  for (const fn of listeners) fn(kind, message);
}

function stopEventStream() {
  if (eventAbort) eventAbort.abort();
  eventAbort = null;
}

// --- routing ---------------------------------------------------------------------------------

let cleanup = [];

function leaveView() {
  for (const fn of cleanup) fn();
  cleanup = [];
}

function show(fragment, title) {
  leaveView();
  const view = $("#view");
  view.replaceChildren(fragment);
  document.title = `${title} · TimeVault`;
}

function focusHeading() {
  const heading = $("#view h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: false });
  }
}

function route() {
  const hash = location.hash || "#/";
  if (hash.startsWith("#token=")) {
    const value = decodeURIComponent(hash.slice("#token=".length));
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    history.replaceState(null, "", `${location.pathname}#/`);
    return route();
  }
  if (!token()) return renderLogin();
  $("#topnav").hidden = false;
  runEventStream();
  for (const link of $$("[data-nav]")) link.removeAttribute("aria-current");
  const match = hash.match(/^#\/plans\/([^/]+)$/);
  if (match) return renderPlan(decodeURIComponent(match[1]));
  if (hash === "#/new") {
    $("[data-nav=new]").setAttribute("aria-current", "page");
    return renderCreate();
  }
  $("[data-nav=plans]").setAttribute("aria-current", "page");
  return renderPlans();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopEventStream();
  renderLogin(message);
}

// --- form errors -------------------------------------------------------------------------------

// API error field → the input (or group) it belongs to, per form prefix.
const FIELD_IDS = {
  name: "f-name",
  sources: "f-sources",
  "schedule.frequency": "f-frequency",
  "schedule.time": "f-time",
  "schedule.weekday": "f-weekday",
  "schedule.timezone": "f-timezone",
  location: "f-location",
  "location.type": "f-location",
  "location.path": "f-path",
  "location.bucket": "f-bucket",
  "location.endpoint": "f-endpoint",
  password: "f-password",
  password_confirm: "f-password2",
};

function clearErrors(form) {
  for (const node of $$(".field-error", form)) {
    node.hidden = true;
    node.textContent = "";
  }
  for (const node of $$("[aria-invalid]", form)) node.removeAttribute("aria-invalid");
  for (const node of $$(".form-error", form)) node.hidden = true;
}

function showError(form, err, ids, fallbackId) {
  const targetId = err.field && ids[err.field];
  const input = targetId && form.querySelector(`#${CSS.escape(targetId)}`);
  const message = err.message.charAt(0).toUpperCase() + err.message.slice(1);
  if (input) {
    const box = form.querySelector(`#${CSS.escape(targetId)}-error`);
    if (box) {
      box.textContent = message;
      box.hidden = false;
    }
    input.setAttribute("aria-invalid", "true");
    const focusable = input.matches("fieldset") ? input.querySelector("input:checked, input") : input;
    if (focusable) focusable.focus();
    return;
  }
  const banner = form.querySelector(`#${fallbackId}`);
  banner.textContent = message;
  banner.hidden = false;
  banner.scrollIntoView({ block: "nearest" });
}

function busy(button, isBusy, label) {
  if (isBusy) {
    button.dataset.label = button.textContent;
    button.textContent = label;
    button.disabled = true;
  } else {
    button.textContent = button.dataset.label || button.textContent;
    button.disabled = false;
  }
}

// --- sign in ---------------------------------------------------------------------------------

function renderLogin(message) {
  $("#topnav").hidden = true;
  show(fromTemplate("tpl-login"), "Sign in");
  const form = $("#login-form");
  const input = $("#login-token");
  const error = $("#login-token-error");
  if (message) {
    error.textContent = message;
    error.hidden = false;
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (!value) {
      error.textContent = "Enter the access token.";
      error.hidden = false;
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, value);
    try {
      await api("GET", "/plans");
    } catch (err) {
      if (err.status === 401) {
        renderLogin("That token is not accepted.");
        return;
      }
    }
    location.hash = "#/";
    route();
  });
  input.focus();
}

// --- plans list --------------------------------------------------------------------------------

async function renderPlans() {
  show(fromTemplate("tpl-plans"), "Backups");
  const list = $("#plan-list");
  let plans;
  try {
    plans = await api("GET", "/plans");
  } catch (err) {
    list.replaceChildren(el("li", { class: "form-error", role: "alert", text: err.message }));
    return;
  }
  $("#plans-empty").hidden = plans.length > 0;
  const rows = await Promise.all(plans.map(async (plan) => {
    let snapshots = [];
    try {
      snapshots = await api("GET", `/plans/${enc(plan.id)}/snapshots`);
    } catch (err) {
      snapshots = [];
    }
    return planCard(plan, snapshots);
  }));
  list.replaceChildren(...rows);
  const unsubscribe = onEvent((kind, message) => {
    if (kind === "job" || (kind === "plan" && message.kind !== "job")) {
      clearTimeout(refreshTimer);
      refreshTimer = setTimeout(() => { if ($("#plan-list")) refreshPlans(); }, 300);
    }
  });
  cleanup.push(unsubscribe);
}

let refreshTimer = null;

async function refreshPlans() {
  const list = $("#plan-list");
  if (!list) return;
  try {
    const plans = await api("GET", "/plans");
    const rows = await Promise.all(plans.map(async (plan) => planCard(
      plan, await api("GET", `/plans/${enc(plan.id)}/snapshots`).catch(() => []))));
    if ($("#plan-list") === list) {
      list.replaceChildren(...rows);
      $("#plans-empty").hidden = plans.length > 0;
    }
  } catch (err) {
    /* keep what is shown */
  }
}

function planCard(plan, snapshots) {
  const last = [...snapshots].reverse().find((s) => s.status === "completed");
  const latest = snapshots[snapshots.length - 1];
  const link = el("a", { href: `#/plans/${enc(plan.id)}`, class: "plan-link" },
    el("span", { class: "plan-name", text: plan.name }),
    el("span", { class: "plan-schedule muted", text: scheduleText(plan.schedule) }));
  const facts = el("dl", { class: "plan-facts" },
    el("div", {}, el("dt", { text: "Last snapshot" }), el("dd", {}, last ? timeEl(last.finished_at || last.started_at) : "None yet")),
    el("div", {}, el("dt", { text: "Next backup" }), el("dd", {}, plan.paused ? "Paused" : timeEl(plan.next_run))),
    el("div", {}, el("dt", { text: "Total size" }), el("dd", { text: formatSize(plan.total_size) })));
  const status = planStatus(plan);
  if (!plan.active_job && latest && latest.status === "failed") status.title = latest.error || "";
  return el("li", { class: "plan-card", "data-plan": plan.name },
    el("div", { class: "plan-main" }, link, pill(status)), facts);
}

// --- schedule fields -------------------------------------------------------------------------

function mountSchedule(root, schedule) {
  const slot = $("[data-schedule]", root);
  slot.replaceWith(fromTemplate("tpl-schedule"));
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const list = $("#timezones", root);
  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [zone];
  list.replaceChildren(...["UTC", ...zones].map((z) => el("option", { value: z })));
  const tz = $("#f-timezone", root);
  tz.value = (schedule && schedule.timezone) || zone;
  if (schedule) {
    $(`input[name=frequency][value=${schedule.frequency}]`, root).checked = true;
    $("#f-time", root).value = schedule.time;
    if (schedule.weekday) $("#f-weekday", root).value = String(schedule.weekday);
  }
  const sync = () => {
    const weekly = $("input[name=frequency]:checked", root).value === "weekly";
    $("[data-weekly]", root).hidden = !weekly;
  };
  for (const radio of $$("input[name=frequency]", root)) radio.addEventListener("change", sync);
  sync();
}

function readSchedule(root) {
  const frequency = $("input[name=frequency]:checked", root).value;
  const schedule = {
    frequency,
    time: $("#f-time", root).value,
    timezone: $("#f-timezone", root).value.trim(),
  };
  if (frequency === "weekly") schedule.weekday = Number($("#f-weekday", root).value);
  return schedule;
}

// --- create a backup ---------------------------------------------------------------------------

function renderCreate() {
  const fragment = fromTemplate("tpl-create");
  show(fragment, "Create a backup");
  const form = $("#create-form");
  mountSchedule(form, null);
  const syncLocation = () => {
    const type = $("input[name=location_type]:checked", form).value;
    for (const box of $$("[data-location]", form)) box.hidden = box.dataset.location !== type;
  };
  for (const radio of $$("input[name=location_type]", form)) radio.addEventListener("change", syncLocation);
  syncLocation();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitCreate(form);
  });
  focusHeading();
}

function readLocation(form) {
  const type = $("input[name=location_type]:checked", form).value;
  if (type === "local") return { type, path: $("#f-path", form).value.trim() };
  const location = { type, bucket: $("#f-bucket", form).value.trim() };
  for (const key of ["prefix", "endpoint", "region"]) {
    const value = $(`#f-${key}`, form).value.trim();
    if (value) location[key] = value;
  }
  return location;
}

async function submitCreate(form) {
  clearErrors(form);
  const body = {
    name: $("#f-name", form).value,
    sources: lines($("#f-sources", form).value),
    schedule: readSchedule(form),
    location: readLocation(form),
    password: $("#f-password", form).value,
    password_confirm: $("#f-password2", form).value,
  };
  const button = $("#create-submit", form);
  busy(button, true, "Creating…");
  try {
    const plan = await api("POST", "/plans", body);
    toast(`Backup “${plan.name}” created.`);
    location.hash = `#/plans/${enc(plan.id)}`;
  } catch (err) {
    showError(form, err, FIELD_IDS, "create-error");
  } finally {
    busy(button, false);
  }
}

// --- plan page (the backup log) --------------------------------------------------------------

async function renderPlan(planId) {
  show(fromTemplate("tpl-plan"), "Backup");
  const view = $("#view");
  const state = { plan: null, job: null, poll: null };
  const load = async () => {
    try {
      state.plan = await api("GET", `/plans/${enc(planId)}`);
    } catch (err) {
      if (err.status === 404) {
        view.replaceChildren(el("section", { class: "card narrow" },
          el("h1", { text: "Backup not found" }),
          el("p", { class: "muted", text: "It may have been deleted." }),
          el("p", {}, el("a", { href: "#/", text: "← All backups" }))));
        focusHeading();
        return;
      }
      showPlanError(err);
      return;
    }
    fillPlan(state);
    if (state.plan.active_job) await trackJob(state, state.plan.active_job);
    else showProgress(state, null);
  };
  wirePlan(state, planId, load);
  await load();
  focusHeading();
  const unsubscribe = onEvent((kind, message) => planEvent(state, kind, message, load));
  state.poll = setInterval(() => { if (state.job) load(); }, 5000);
  cleanup.push(unsubscribe, () => clearInterval(state.poll));
}

function showPlanError(err) {
  const box = $("#plan-error");
  if (!box) return;
  box.textContent = err.message;
  box.hidden = false;
}

function fillPlan(state) {
  const plan = state.plan;
  document.title = `${plan.name} · TimeVault`;
  $("#plan-title").textContent = plan.name;
  setPill($("#plan-status"), planStatus(plan));
  $("#plan-schedule").textContent = scheduleText(plan.schedule);
  $("#btn-pause").textContent = plan.paused ? "Resume" : "Pause";
  $("#btn-backup").disabled = Boolean(plan.active_job);
  const done = plan.snapshots.filter((s) => s.status === "completed");
  const last = done[done.length - 1];
  $("#stat-total").textContent = formatSize(plan.total_size);
  $("#stat-last").replaceChildren(last ? timeEl(last.finished_at || last.started_at) : "None yet");
  $("#stat-next").replaceChildren(plan.paused ? "Paused" : timeEl(plan.next_run));
  $("#stat-count").textContent = String(done.length);
  $("#set-schedule").textContent = scheduleText(plan.schedule) + (plan.paused ? " — paused" : "");
  $("#set-sources").replaceChildren(...plan.sources.map((s) => el("code", { class: "path", text: s })));
  $("#set-location").replaceChildren(el("code", { class: "path", text: locationText(plan.location) }));
  $("#set-created").replaceChildren(timeEl(plan.created_at));
  fillSnapshots(state);
}

function fillSnapshots(state) {
  const snapshots = [...state.plan.snapshots].reverse();  // newest first
  $("#snapshots-empty").hidden = snapshots.length > 0;
  $("#snapshots-table").hidden = snapshots.length === 0;
  $("#snapshots-body").replaceChildren(...snapshots.map((snap) => {
    const status = SNAPSHOT_STATUS[snap.status] || { text: snap.status, tone: "neutral" };
    const restore = snap.status === "completed"
      ? el("button", { type: "button", class: "button small", "aria-label": `Restore snapshot of ${formatTime(snap.started_at)}`,
        onclick: () => openRestore(state, snap) }, "Restore")
      : null;
    const duration = formatDuration(snap.started_at, snap.finished_at);
    return el("tr", { "data-snapshot": snap.id, "data-status": snap.status },
      el("td", { "data-label": "Time" }, el("span", {}, timeEl(snap.started_at),
        duration ? el("span", { class: "muted small-text", text: ` · ${duration}` }) : null)),
      el("td", { "data-label": "Size", class: "num", text: snap.status === "completed" ? formatSize(snap.size) : "—" }),
      el("td", { "data-label": "Added", class: "num", text: snap.status === "completed" ? formatSize(snap.added_size) : "—" }),
      el("td", { "data-label": "Files", class: "num", text: snap.status === "completed" ? snap.files.toLocaleString() : "—" }),
      el("td", { "data-label": "Status" }, pill(status),
        snap.error ? el("span", { class: "snap-error", text: snap.error }) : null),
      el("td", { class: "row-actions" }, restore));
  }));
}

async function trackJob(state, jobId) {
  try {
    const job = await api("GET", `/jobs/${enc(jobId)}`);
    showProgress(state, job);
  } catch (err) {
    showProgress(state, null);
  }
}

function showProgress(state, job) {
  const card = $("#progress");
  if (!card) return;
  if (!job || !ACTIVE.has(job.status) || job.kind !== "backup") {
    state.job = null;
    card.hidden = true;
    return;
  }
  state.job = job;
  card.hidden = false;
  $("#progress-title").textContent = job.status === "pending" ? "Waiting to start…" : "Backing up…";
  updateProgress(job);
}

function updateProgress(progress) {
  const bar = $("#progress-bar");
  const text = $("#progress-text");
  if (!bar) return;
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
  if (progress.files_total) parts.push(`${(progress.files_done || 0).toLocaleString()} of ${progress.files_total.toLocaleString()} files`);
  if (progress.rate) parts.push(`${formatSize(progress.rate)}/s`);
  text.textContent = parts.join(" · ") || "Preparing…";
}

function planEvent(state, kind, message, load) {
  if (!state.plan) return;
  if (kind === "progress" && state.job && message.job_id === state.job.id) {
    updateProgress(message);
    return;
  }
  if (kind === "job" && message.job && message.job.plan_id === state.plan.id) {
    const job = message.job;
    if (job.kind === "backup") {
      if (ACTIVE.has(job.status)) showProgress(state, job);
      else load();
    }
    if (job.kind === "restore") restoreUpdate(state, job);
    return;
  }
  if (kind === "plan" && message.plan_id === state.plan.id) {
    if (message.kind === "deleted") {
      toast(`Backup “${state.plan.name}” was deleted.`);
      location.hash = "#/";
    } else if (message.kind !== "job") {
      load();
    }
  }
}

function wirePlan(state, planId, load) {
  $("#btn-backup").addEventListener("click", async (event) => {
    const button = event.currentTarget;
    $("#plan-error").hidden = true;
    busy(button, true, "Starting…");
    try {
      const job = await api("POST", `/plans/${enc(state.plan.id)}/backups`);
      showProgress(state, job);
      toast("Backup started.");
    } catch (err) {
      showPlanError(err);
    } finally {
      busy(button, false);
      await load();
    }
  });
  $("#btn-pause").addEventListener("click", async () => {
    const action = state.plan.paused ? "resume" : "pause";
    try {
      await api("POST", `/plans/${enc(state.plan.id)}/${action}`);
      toast(action === "pause" ? "Scheduled backups paused." : "Scheduled backups resumed.");
    } catch (err) {
      showPlanError(err);
    }
    await load();
  });
  $("#btn-cancel").addEventListener("click", async () => {
    if (!state.job) return;
    try {
      await api("POST", `/jobs/${enc(state.job.id)}/cancel`);
      toast("Canceling the backup…");
    } catch (err) {
      showPlanError(err);
    }
  });
  for (const button of $$("dialog [data-close]")) {
    button.addEventListener("click", () => button.closest("dialog").close());
  }
  wireEdit(state, load);
  wireRestore(state);
  wireDelete(state);
}

// --- edit schedule ------------------------------------------------------------------------------

const EDIT_IDS = { ...FIELD_IDS, sources: "e-sources", name: "e-name" };

function wireEdit(state, load) {
  const dialog = $("#dlg-edit");
  const form = $("#edit-form");
  mountSchedule(form, null);
  $("#btn-edit").addEventListener("click", () => {
    clearErrors(form);
    const plan = state.plan;
    $("#e-name", form).value = plan.name;
    $(`input[name=frequency][value=${plan.schedule.frequency}]`, form).checked = true;
    $("#f-time", form).value = plan.schedule.time;
    $("#f-weekday", form).value = String(plan.schedule.weekday || 1);
    $("#f-timezone", form).value = plan.schedule.timezone;
    $("input[name=frequency]:checked", form).dispatchEvent(new Event("change"));
    $("#e-sources", form).value = plan.sources.join("\n");
    dialog.showModal();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const body = { schedule: readSchedule(form), sources: lines($("#e-sources", form).value) };
    const button = $("button[type=submit]", form);
    busy(button, true, "Saving…");
    try {
      await api("PATCH", `/plans/${enc(state.plan.id)}`, body);
      dialog.close();
      toast("Schedule saved.");
      await load();
    } catch (err) {
      showError(form, err, EDIT_IDS, "edit-error");
    } finally {
      busy(button, false);
    }
  });
}

// --- restore -------------------------------------------------------------------------------------

const RESTORE_IDS = { target: "r-target", includes: "r-includes", password: "r-password" };

function openRestore(state, snap) {
  const dialog = $("#dlg-restore");
  const form = $("#restore-form");
  clearErrors(form);
  state.restoreSnapshot = snap;
  state.restoreJob = null;
  $("#restore-what").textContent =
    `Snapshot of ${formatTime(snap.started_at)} · ${formatSize(snap.size)} · ${snap.files.toLocaleString()} files`;
  $("#r-password", form).value = "";
  $("#restore-status").hidden = true;
  $("#restore-submit").hidden = false;
  dialog.showModal();
  $("#r-target", form).focus();
}

function wireRestore(state) {
  const form = $("#restore-form");
  const dialog = $("#dlg-restore");
  dialog.addEventListener("close", () => { $("#r-password", form).value = ""; });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const body = {
      target: $("#r-target", form).value.trim(),
      includes: lines($("#r-includes", form).value),
      password: $("#r-password", form).value,
    };
    const button = $("#restore-submit");
    busy(button, true, "Starting…");
    try {
      const snap = state.restoreSnapshot;
      const job = await api("POST", `/plans/${enc(state.plan.id)}/snapshots/${enc(snap.id)}/restore`, body);
      $("#r-password", form).value = "";
      state.restoreJob = job.id;
      restoreUpdate(state, job);
      pollRestore(state, job.id);
    } catch (err) {
      showError(form, err, RESTORE_IDS, "restore-error");
    } finally {
      busy(button, false);
    }
  });
}

async function pollRestore(state, jobId) {
  // Events usually arrive first; polling covers a dropped stream.
  while (state.restoreJob === jobId && $("#dlg-restore")) {
    await new Promise((resolve) => setTimeout(resolve, 1500));
    if (state.restoreJob !== jobId) return;
    try {
      const job = await api("GET", `/jobs/${enc(jobId)}`);
      restoreUpdate(state, job);
      if (!ACTIVE.has(job.status)) return;
    } catch (err) {
      return;
    }
  }
}

function restoreUpdate(state, job) {
  if (job.id !== state.restoreJob) return;
  const box = $("#restore-status");
  if (!box) return;
  box.hidden = false;
  box.className = "restore-status";
  if (ACTIVE.has(job.status)) {
    const files = job.files_total ? ` · ${job.files_done} of ${job.files_total} files` : "";
    box.textContent = `Restoring into ${job.target}…${files}`;
    $("#restore-submit").hidden = true;
  } else if (job.status === "completed") {
    box.classList.add("ok");
    // Short jobs can end before their first progress report, so counts may still be zero.
    const amount = job.files_done ? `${job.files_done.toLocaleString()} files (${formatSize(job.bytes_done)}) ` : "";
    box.textContent = `Restore completed: ${amount}restored into ${job.target}.`;
    state.restoreJob = null;
  } else {
    box.classList.add("error");
    box.textContent = `Restore ${job.status}: ${job.error || "no reason given"}`;
    $("#restore-submit").hidden = false;
    state.restoreJob = null;
  }
}

// --- delete ----------------------------------------------------------------------------------------

function wireDelete(state) {
  const dialog = $("#dlg-delete");
  const form = $("#delete-form");
  $("#btn-delete").addEventListener("click", () => {
    const plan = state.plan;
    const count = plan.snapshots.filter((s) => s.status === "completed").length;
    $("#delete-warning").textContent =
      `Deleting “${plan.name}” also removes all ${count} snapshot${count === 1 ? "" : "s"} and ` +
      `${formatSize(plan.total_size)} of backup data stored in ${locationText(plan.location)}. ` +
      "Make sure your data is safe elsewhere. This cannot be undone.";
    $("#delete-error").hidden = true;
    dialog.showModal();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("#delete-confirm");
    busy(button, true, "Deleting…");
    try {
      await api("DELETE", `/plans/${enc(state.plan.id)}`);
      dialog.close();
      toast(`Backup “${state.plan.name}” and its snapshots were deleted.`);
      state.plan = null;
      location.hash = "#/";
    } catch (err) {
      const box = $("#delete-error");
      box.textContent = err.message;
      box.hidden = false;
    } finally {
      busy(button, false);
    }
  });
}

// --- start -------------------------------------------------------------------------------------------

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  $("#signout").addEventListener("click", () => signOut());
  route();
});
