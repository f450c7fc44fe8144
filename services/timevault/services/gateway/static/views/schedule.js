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
    const chosen = frequency(root);
    $("[data-weekly]", root).hidden = chosen !== "weekly";
    $("[data-monthly]", root).hidden = chosen !== "monthly";
    $("[data-hourly]", root).hidden = chosen !== "hourly";
  };
  for (const radio of $$("input[name=frequency]", root)) radio.addEventListener("change", sync);
  sync();
}

/**
 * Show `schedule` in mounted fields (the time zone too). An hourly ":MM" shows as "00:MM".
 * @param {HTMLElement} root
 * @param {Schedule} schedule
 */
export function setSchedule(root, schedule) {
  one(HTMLInputElement, `input[name=frequency][value=${schedule.frequency}]`, root).checked = true;
  one(HTMLInputElement, "#f-time", root).value = schedule.time.startsWith(":") ? `00${schedule.time}` : schedule.time;
  if (schedule.weekday) one(HTMLSelectElement, "#f-weekday", root).value = String(schedule.weekday);
  if (schedule.day_of_month) one(HTMLInputElement, "#f-monthday", root).value = String(schedule.day_of_month);
  one(HTMLInputElement, "#f-timezone", root).value = schedule.timezone;
}

/**
 * @param {HTMLElement} root
 * @returns {Schedule["frequency"]}
 */
function frequency(root) {
  const value = one(HTMLInputElement, "input[name=frequency]:checked", root).value;
  return value === "hourly" || value === "weekly" || value === "monthly" ? value : "daily";
}

/**
 * The schedule the fields show (a weekday only when weekly, a day of the month only when
 * monthly; hourly sends the minute, ":MM").
 * @param {HTMLElement} root
 * @returns {Schedule}
 */
export function readSchedule(root) {
  const time = one(HTMLInputElement, "#f-time", root).value;
  /** @type {Schedule} */
  const schedule = {
    frequency: frequency(root),
    time,
    timezone: one(HTMLInputElement, "#f-timezone", root).value.trim(),
  };
  if (schedule.frequency === "hourly" && time.includes(":")) schedule.time = `:${time.split(":")[1]}`;
  if (schedule.frequency === "weekly") schedule.weekday = Number(one(HTMLSelectElement, "#f-weekday", root).value);
  if (schedule.frequency === "monthly") schedule.day_of_month = Number(one(HTMLInputElement, "#f-monthday", root).value);
  return schedule;
}
