// @ts-check
/**
 * @file Showing the API's validation errors in a form: under the field the error names, with
 * `aria-invalid` and focus on it, or in the form's banner when no field is named.
 */

import { $$ } from "./dom.js";

/** @typedef {import("./api.js").ApiError} ApiError */

/**
 * API error field → id of the input (or fieldset) it belongs to, in the create form.
 * @type {Record<string, string>}
 */
export const FIELD_IDS = {
  name: "f-name",
  sources: "f-sources",
  "schedule.frequency": "f-frequency",
  "schedule.time": "f-time",
  "schedule.weekday": "f-weekday",
  "schedule.timezone": "f-timezone",
  "schedule.day_of_month": "f-monthday",
  "retention.policy": "f-retention",
  "retention.keep_last": "f-keep_last",
  "retention.keep_hourly": "f-keep_hourly",
  "retention.keep_daily": "f-keep_daily",
  "retention.keep_weekly": "f-keep_weekly",
  "retention.keep_monthly": "f-keep_monthly",
  "retention.keep_yearly": "f-keep_yearly",
  "retention.keep_within": "f-keep_within",
  location: "f-location",
  "location.type": "f-location",
  "location.path": "f-path",
  "location.bucket": "f-bucket",
  "location.endpoint": "f-endpoint",
  "location.url": "f-space",
  password: "f-password",
  password_confirm: "f-password2",
  excludes: "f-excludes",
  exclude_files: "f-excludes",
  pre_command: "f-pre",
  post_command: "f-post",
  hook_timeout: "f-hook-timeout",
  notify: "f-notify",
  credentials: "f-access-key",
  "credentials.access_key_id": "f-access-key",
  "credentials.secret_access_key": "f-secret-key",
  "credentials.session_token": "f-secret-key",
};

/**
 * Hide every message of `form` and drop `aria-invalid`.
 * @param {HTMLElement} form
 */
export function clearErrors(form) {
  for (const node of $$(".field-error", form)) {
    node.hidden = true;
    node.textContent = "";
  }
  for (const node of $$("[aria-invalid]", form)) node.removeAttribute("aria-invalid");
  for (const node of $$(".form-error", form)) node.hidden = true;
}

/**
 * Show `err` at the input `ids[err.field]` (its `#<id>-error` box), else in `#<fallbackId>`.
 * @param {HTMLElement} form
 * @param {ApiError} err
 * @param {Record<string, string>} ids
 * @param {string} fallbackId
 */
export function showError(form, err, ids, fallbackId) {
  const targetId = err.field ? ids[err.field] : undefined;
  const input = targetId ? form.querySelector(`#${CSS.escape(targetId)}`) : null;
  const message = err.message.charAt(0).toUpperCase() + err.message.slice(1);
  if (targetId && input instanceof HTMLElement) {
    const box = form.querySelector(`#${CSS.escape(targetId)}-error`);
    if (box instanceof HTMLElement) {
      box.textContent = message;
      box.hidden = false;
    }
    input.setAttribute("aria-invalid", "true");
    const focusable = input.matches("fieldset") ? input.querySelector("input:checked, input") : input;
    if (focusable instanceof HTMLElement) focusable.focus();
    return;
  }
  const banner = form.querySelector(`#${fallbackId}`);
  if (!(banner instanceof HTMLElement)) throw new Error(`no error banner #${fallbackId}`);
  banner.textContent = message;
  banner.hidden = false;
  banner.scrollIntoView({ block: "nearest" });
}
