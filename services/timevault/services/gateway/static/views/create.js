// @ts-check
/** @file Create a backup (`#/new`): the form, and the API's validation messages at their fields. */

import { apiError, createPlan } from "../api.js";
import { $$, fromTemplate, one } from "../dom.js";
import { lines } from "../format.js";
import { FIELD_IDS, clearErrors, showError } from "../forms.js";
import { focusHeading, onLeave, show } from "../view.js";
import { busy, toast } from "../widgets.js";
import { checkLocalPath, checkName, checkPassword, checkSources, checkTime, checkTimezone, clearWhenFixed,
  showAll } from "../validate.js";
import { wireFolderPicker } from "./folders.js";
import { mountOptions, optionChecks, readOptions } from "./options.js";
import { mountRetention, readRetention, readThinWhenFull } from "./retention.js";
import { mountSchedule, readSchedule } from "./schedule.js";
import { mountSpaceChooser, readSpaceLocation } from "./space.js";

/** @typedef {import("../types.js").Location} Location */

export function renderCreate() {
  show(fromTemplate("tpl-create"), "Create a backup");
  const form = one(HTMLFormElement, "#create-form");
  mountSchedule(form, null);
  mountOptions(form, null);
  mountRetention(form, null, false);
  wireFolderPicker(form);
  clearWhenFixed(form, createChecks(form));
  let left = false;
  onLeave(() => { left = true; });
  mountSpaceChooser(form, () => left);
  const syncLocation = () => {
    const type = locationType(form);
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

/**
 * @param {HTMLElement} form
 * @returns {Location["type"]}
 */
function locationType(form) {
  const value = one(HTMLInputElement, "input[name=location_type]:checked", form).value;
  return value === "s3" || value === "space" ? value : "local";
}

/**
 * @param {HTMLElement} form
 * @param {string} selector
 * @returns {string}
 */
function text(form, selector) {
  const node = form.querySelector(selector);
  if (node instanceof HTMLInputElement || node instanceof HTMLTextAreaElement) return node.value;
  throw new Error(`no input matches ${selector}`);
}

/**
 * The location the form describes (S3's optional fields only when filled in).
 * @param {HTMLElement} form
 * @returns {Location}
 */
function readLocation(form) {
  const type = locationType(form);
  if (type === "local") return { type, path: text(form, "#f-path").trim() };
  if (type === "space") return { type, url: readSpaceLocation(form) };
  /** @type {Location} */
  const loc = { type, bucket: text(form, "#f-bucket").trim() };  // the access key goes apart (credentials)
  for (const key of /** @type {const} */ (["prefix", "endpoint", "region"])) {
    const value = text(form, `#f-${key}`).trim();
    if (value) loc[key] = value;
  }
  return loc;
}

/**
 * Every rule of the form the browser can check itself, field by field in the form's order.
 * @param {HTMLElement} form
 * @returns {Record<string, import("../validate.js").Check>}
 */
function createChecks(form) {
  const sources = () => lines(text(form, "#f-sources"));
  return {
    "f-name": () => checkName(text(form, "#f-name")),
    "f-sources": () => checkSources(sources()),
    ...optionChecks(form),
    "f-time": () => checkTime(text(form, "#f-time")),
    "f-timezone": () => checkTimezone(text(form, "#f-timezone").trim()),
    "f-path": () => locationType(form) === "local" ? checkLocalPath(text(form, "#f-path").trim(), sources()) : null,
    "f-space": () => locationType(form) === "space" && !/^https?:\/\/\S+$/.test(text(form, "#f-space").trim())
      ? "Enter the Space's address, like https://space.example.org" : null,
    "f-bucket": () => locationType(form) === "s3" && !text(form, "#f-bucket").trim() ? "An S3 location needs a bucket"
      : null,
    "f-secret-key": () => locationType(form) === "s3" && Boolean(text(form, "#f-access-key").trim())
      !== Boolean(text(form, "#f-secret-key")) ? "Give both the access key ID and the secret, or neither" : null,
    "f-password": () => checkPassword(text(form, "#f-password")),
    "f-password2": () => text(form, "#f-password").length >= 4 && text(form, "#f-password") !== text(form, "#f-password2")
      ? "Passwords do not match" : null,
  };
}

/** @param {HTMLFormElement} form */
async function submitCreate(form) {
  clearErrors(form);
  if (showAll(form, createChecks(form))) return;  // every mistake at once, nothing sent
  const options = readOptions(form);
  /** @type {import("../types.js").PlanCreate} */
  const body = {
    name: text(form, "#f-name"),
    sources: lines(text(form, "#f-sources")),
    schedule: readSchedule(form),
    location: readLocation(form),
    password: text(form, "#f-password"),
    password_confirm: text(form, "#f-password2"),
    ...options,
    pre_command: options.pre_command || null,
    post_command: options.post_command || null,
    retention: readRetention(form),
    thin_when_full: readThinWhenFull(form),
  };
  const keyId = text(form, "#f-access-key").trim();
  if (locationType(form) === "s3" && keyId) {
    body.credentials = { access_key_id: keyId, secret_access_key: text(form, "#f-secret-key") };
  }
  const button = one(HTMLButtonElement, "#create-submit", form);
  busy(button, true, "Creating…");
  try {
    const plan = await createPlan(body);
    toast(`Backup “${plan.name}” created.`);
    location.hash = `#/plans/${encodeURIComponent(plan.id)}`;
  } catch (err) {
    showError(form, apiError(err), FIELD_IDS, "create-error");
  } finally {
    busy(button, false);
  }
}
