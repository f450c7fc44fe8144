// @ts-check
/**
 * @file A plan's options in the create form and the edit dialog: what to leave out, commands
 * before and after each backup, notifications. The same fields (template `tpl-options`) in both.
 */

import { $, fromTemplate, one } from "../dom.js";
import { lines } from "../format.js";
import { checkPatterns, checkTimeout, checkUrls } from "../validate.js";

/** @typedef {import("../types.js").Plan} Plan */
/** @typedef {import("../validate.js").Check} Check */

/**
 * The option fields a create or update request carries.
 * @typedef {object} OptionFields
 * @property {string[]} excludes
 * @property {boolean} exclude_caches
 * @property {boolean} one_file_system
 * @property {string} pre_command "" for none
 * @property {string} post_command
 * @property {boolean} pre_command_optional
 * @property {number} hook_timeout
 * @property {string[]} notify
 * @property {boolean} notify_success
 */

/**
 * Put the fields into `root`'s `[data-options]` slot, filled from `plan` (or the defaults).
 * @param {HTMLElement} root
 * @param {Plan | null} plan
 */
export function mountOptions(root, plan) {
  $("[data-options]", root).replaceWith(fromTemplate("tpl-options"));
  if (plan) setOptions(root, plan);
}

/**
 * @param {HTMLElement} root
 * @param {Plan} plan
 */
export function setOptions(root, plan) {
  one(HTMLTextAreaElement, "#f-excludes", root).value = plan.excludes.join("\n");
  one(HTMLInputElement, "#f-exclude-caches", root).checked = plan.exclude_caches;
  one(HTMLInputElement, "#f-one-fs", root).checked = plan.one_file_system;
  one(HTMLInputElement, "#f-pre", root).value = plan.pre_command || "";
  one(HTMLInputElement, "#f-post", root).value = plan.post_command || "";
  one(HTMLInputElement, "#f-pre-optional", root).checked = plan.pre_command_optional;
  one(HTMLInputElement, "#f-hook-timeout", root).value = String(plan.hook_timeout);
  one(HTMLTextAreaElement, "#f-notify", root).value = plan.notify.join("\n");
  one(HTMLInputElement, "#f-notify-success", root).checked = plan.notify_success;
  one(HTMLDetailsElement, "#f-hooks-box", root).open = Boolean(plan.pre_command || plan.post_command);
  one(HTMLDetailsElement, "#f-notify-box", root).open = plan.notify.length > 0;
}

/**
 * @param {HTMLElement} root
 * @returns {OptionFields}
 */
export function readOptions(root) {
  return {
    excludes: lines(one(HTMLTextAreaElement, "#f-excludes", root).value),
    exclude_caches: one(HTMLInputElement, "#f-exclude-caches", root).checked,
    one_file_system: one(HTMLInputElement, "#f-one-fs", root).checked,
    pre_command: one(HTMLInputElement, "#f-pre", root).value.trim(),
    post_command: one(HTMLInputElement, "#f-post", root).value.trim(),
    pre_command_optional: one(HTMLInputElement, "#f-pre-optional", root).checked,
    hook_timeout: Number(one(HTMLInputElement, "#f-hook-timeout", root).value.trim()),
    notify: lines(one(HTMLTextAreaElement, "#f-notify", root).value),
    notify_success: one(HTMLInputElement, "#f-notify-success", root).checked,
  };
}

/**
 * The fields' checks (field id → check); a failing one also opens its folded section.
 * @param {HTMLElement} root
 * @returns {Record<string, Check>}
 */
export function optionChecks(root) {
  const opened = (/** @type {string} */ box, /** @type {string | null} */ message) => {
    if (message) one(HTMLDetailsElement, box, root).open = true;
    return message;
  };
  return {
    "f-excludes": () => checkPatterns(lines(one(HTMLTextAreaElement, "#f-excludes", root).value)),
    "f-hook-timeout": () => opened("#f-hooks-box",
      checkTimeout(one(HTMLInputElement, "#f-hook-timeout", root).value.trim())),
    "f-notify": () => opened("#f-notify-box", checkUrls(lines(one(HTMLTextAreaElement, "#f-notify", root).value))),
  };
}
