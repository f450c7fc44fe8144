// @ts-check
/** @file The schedule fields (frequency, day, time, time zone), shared by the create form and the edit dialog. */

import { $, $$, el, fromTemplate, one } from "../dom.js";

/** @typedef {import("../types.js").Schedule} Schedule */

/**
 * Put the fields into `root`'s `[data-schedule]` slot, filled from `schedule` (or the defaults,
 * with the browser's time zone).
 * @param {HTMLElement} root
 * @param {Schedule | null} schedule
 */
export function mountSchedule(root, schedule) {
  $("[data-schedule]", root).replaceWith(fromTemplate("tpl-schedule"));
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [zone];
  $("#timezones", root).replaceChildren(...["UTC", ...zones].map((z) => el("option", { value: z })));
  one(HTMLInputElement, "#f-timezone", root).value = (schedule && schedule.timezone) || zone;
  if (schedule) setSchedule(root, schedule);
  const sync = () => {
    $("[data-weekly]", root).hidden = frequency(root) !== "weekly";
  };
  for (const radio of $$("input[name=frequency]", root)) radio.addEventListener("change", sync);
  sync();
}

/**
 * Show `schedule` in mounted fields (the time zone too).
 * @param {HTMLElement} root
 * @param {Schedule} schedule
 */
export function setSchedule(root, schedule) {
  one(HTMLInputElement, `input[name=frequency][value=${schedule.frequency}]`, root).checked = true;
  one(HTMLInputElement, "#f-time", root).value = schedule.time;
  if (schedule.weekday) one(HTMLSelectElement, "#f-weekday", root).value = String(schedule.weekday);
  one(HTMLInputElement, "#f-timezone", root).value = schedule.timezone;
}

/**
 * @param {HTMLElement} root
 * @returns {"daily" | "weekly"}
 */
function frequency(root) {
  return one(HTMLInputElement, "input[name=frequency]:checked", root).value === "weekly" ? "weekly" : "daily";
}

/**
 * The schedule the fields show (a weekday only when weekly).
 * @param {HTMLElement} root
 * @returns {Schedule}
 */
export function readSchedule(root) {
  /** @type {Schedule} */
  const schedule = {
    frequency: frequency(root),
    time: one(HTMLInputElement, "#f-time", root).value,
    timezone: one(HTMLInputElement, "#f-timezone", root).value.trim(),
  };
  if (schedule.frequency === "weekly") schedule.weekday = Number(one(HTMLSelectElement, "#f-weekday", root).value);
  return schedule;
}
