// @ts-check
/** @file Create a backup (`#/new`): the form, and the API's validation messages at their fields. */

import { apiError, createPlan } from "../api.js";
import { $$, fromTemplate, one } from "../dom.js";
import { lines } from "../format.js";
import { FIELD_IDS, clearErrors, showError } from "../forms.js";
import { focusHeading, show } from "../view.js";
import { busy, toast } from "../widgets.js";
import { mountSchedule, readSchedule } from "./schedule.js";

/** @typedef {import("../types.js").Location} Location */

export function renderCreate() {
  show(fromTemplate("tpl-create"), "Create a backup");
  const form = one(HTMLFormElement, "#create-form");
  mountSchedule(form, null);
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
  return one(HTMLInputElement, "input[name=location_type]:checked", form).value === "s3" ? "s3" : "local";
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
  /** @type {Location} */
  const loc = { type, bucket: text(form, "#f-bucket").trim() };
  for (const key of /** @type {const} */ (["prefix", "endpoint", "region"])) {
    const value = text(form, `#f-${key}`).trim();
    if (value) loc[key] = value;
  }
  return loc;
}

/** @param {HTMLFormElement} form */
async function submitCreate(form) {
  clearErrors(form);
  const body = {
    name: text(form, "#f-name"),
    sources: lines(text(form, "#f-sources")),
    schedule: readSchedule(form),
    location: readLocation(form),
    password: text(form, "#f-password"),
    password_confirm: text(form, "#f-password2"),
  };
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
