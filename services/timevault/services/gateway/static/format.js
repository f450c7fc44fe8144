// @ts-check
/** @file Text for sizes, times, durations, schedules, retention and locations, as the UI shows them. */

/** @typedef {import("./types.js").Schedule} Schedule */
/** @typedef {import("./types.js").Location} Location */
/** @typedef {import("./types.js").Retention} Retention */

const SIZE_UNITS = ["bytes", "KB", "MB", "GB", "TB", "PB"];

/**
 * Decimal units with three significant figures at most: "1 byte", "999 bytes", "1.2 KB", "123 KB".
 * @param {number | null | undefined} bytes
 * @returns {string}
 */
export function formatSize(bytes) {
  let value = Number(bytes) || 0;
  if (value < 1000) return value === 1 ? "1 byte" : `${value} bytes`;
  let unit = 0;
  while (value >= 1000 && unit < SIZE_UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value >= 100 ? value.toFixed(0) : value.toFixed(1)} ${SIZE_UNITS[unit]}`;
}

export const WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const secondsFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const dateFmt = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short" });
const yearFmt = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric" });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });

/**
 * Calendar days from `now` to `date` in local time (-1 = yesterday).
 * @param {Date} date
 * @param {Date} [now]
 * @returns {number}
 */
function dayDiff(date, now = new Date()) {
  const a = new Date(date.getFullYear(), date.getMonth(), date.getDate());
  const b = new Date(now.getFullYear(), now.getMonth(), now.getDate());
  return Math.round((a.getTime() - b.getTime()) / 86400000);
}

/**
 * "Today, 14:05", "Yesterday, …", "Tomorrow, …", "Mon 3 Mar, …" within half a year, else with the year.
 * @param {string | null | undefined} iso
 * @param {boolean} [seconds] "Today, 14:05:09": for snapshots, which may be seconds apart
 * @returns {string}
 */
export function formatTime(iso, seconds = false) {
  if (!iso) return "—";
  const date = new Date(iso);
  const diff = dayDiff(date);
  const time = (seconds ? secondsFmt : timeFmt).format(date);
  if (diff === 0) return `Today, ${time}`;
  if (diff === -1) return `Yesterday, ${time}`;
  if (diff === 1) return `Tomorrow, ${time}`;
  if (Math.abs(diff) < 180) return `${dateFmt.format(date)}, ${time}`;
  return `${yearFmt.format(date)}, ${time}`;
}

/**
 * The full local date and time, for a tooltip.
 * @param {string} iso
 * @returns {string}
 */
export function formatFullTime(iso) {
  return fullFmt.format(new Date(iso));
}

/**
 * "under 1 s", "42 s", "3 min 5 s", "2 h 7 min"; "" without both ends.
 * @param {string | null | undefined} start
 * @param {string | null | undefined} end
 * @returns {string}
 */
export function formatDuration(start, end) {
  if (!start || !end) return "";
  const secs = Math.max(0, Math.round((new Date(end).getTime() - new Date(start).getTime()) / 1000));
  if (secs < 1) return "under 1 s";
  if (secs < 60) return `${secs} s`;
  if (secs < 3600) return `${Math.floor(secs / 60)} min ${secs % 60} s`;
  return `${Math.floor(secs / 3600)} h ${Math.floor((secs % 3600) / 60)} min`;
}

/**
 * "Every day at 03:00 (UTC)", "Every Friday at 22:15 (Europe/Berlin)".
 * @param {Schedule | null | undefined} schedule
 * @returns {string}
 */
export function scheduleText(schedule) {
  if (!schedule) return "";
  const zone = schedule.timezone || "UTC";
  if (schedule.frequency === "hourly") return `Every hour at ${schedule.time} (${zone})`;
  let when = "Every day";
  if (schedule.frequency === "weekly" && schedule.weekday) when = `Every ${WEEKDAYS[schedule.weekday - 1]}`;
  if (schedule.frequency === "monthly" && schedule.day_of_month) when = `Monthly on day ${schedule.day_of_month}`;
  return `${when} at ${schedule.time} (${zone})`;
}

/**
 * "Like Time Machine: …", "Everything", or the custom rules ("the newest 2; one a day for 7 days").
 * @param {Retention | null | undefined} retention
 * @returns {string}
 */
export function retentionText(retention) {
  if (!retention || retention.policy === "timemachine") {
    return "Like Time Machine: every backup of the last 24 hours, one a day for a month, one a week before that";
  }
  if (retention.policy === "none") return "Everything";
  /** @type {string[]} */
  const parts = [];
  /** @param {number | null | undefined} n @param {string} unit */
  const each = (n, unit) => {
    if (n === null || n === undefined) return;
    parts.push(n === -1 ? `one every ${unit}` : `one a ${unit} for ${n} ${unit}${n === 1 ? "" : "s"}`);
  };
  if (retention.keep_last !== null && retention.keep_last !== undefined) {
    parts.push(retention.keep_last === -1 ? "every backup" : `the newest ${retention.keep_last}`);
  }
  each(retention.keep_hourly, "hour");
  each(retention.keep_daily, "day");
  each(retention.keep_weekly, "week");
  each(retention.keep_monthly, "month");
  each(retention.keep_yearly, "year");
  if (retention.keep_within) parts.push(`everything within ${retention.keep_within}`);
  return parts.join("; ");
}

/**
 * A local folder as its path; S3 as "s3://bucket/prefix at endpoint" or "… (region)".
 * @param {Location | null | undefined} location
 * @returns {string}
 */
export function locationText(location) {
  if (!location) return "";
  if (location.type === "local") return location.path || "";
  if (location.type === "space") return location.url || "";
  const prefix = location.prefix ? `/${location.prefix}` : "";
  const where = location.endpoint ? ` at ${location.endpoint}` : (location.region ? ` (${location.region})` : "");
  return `s3://${location.bucket}${prefix}${where}`;
}

/**
 * The non-empty lines of a textarea, trimmed.
 * @param {string} text
 * @returns {string[]}
 */
export function lines(text) {
  return text.split("\n").map((line) => line.trim()).filter(Boolean);
}

/**
 * A time as the clock in `timeZone` shows it, with the zone: "Tomorrow, 02:30 (Europe/Berlin)".
 * Used for the next backup, which runs by the plan's clock, not the browser's.
 * @param {string | null | undefined} iso
 * @param {string} timeZone IANA name
 * @returns {string}
 */
export function formatInZone(iso, timeZone) {
  if (!iso) return "—";
  const date = new Date(iso);
  /** @type {Intl.DateTimeFormatOptions} */
  const zoned = { timeZone, hour: "2-digit", minute: "2-digit" };
  let time;
  let day;
  try {
    time = new Intl.DateTimeFormat(undefined, zoned).format(date);
    day = new Intl.DateTimeFormat("en-CA", { timeZone, year: "numeric", month: "2-digit", day: "2-digit" })
      .format(date);
  } catch {
    return `${formatTime(iso)} (${timeZone})`;
  }
  const today = new Intl.DateTimeFormat("en-CA", { timeZone, year: "numeric", month: "2-digit", day: "2-digit" })
    .format(new Date());
  const days = Math.round((Date.parse(day) - Date.parse(today)) / 86400000);
  const label = days === 0 ? "Today" : days === 1 ? "Tomorrow" : days === -1 ? "Yesterday"
    : new Intl.DateTimeFormat(undefined, { timeZone, weekday: "short", day: "numeric", month: "short" }).format(date);
  return `${label}, ${time} (${timeZone})`;
}

/**
 * "1 snapshot", "3 snapshots".
 * @param {number} count
 * @param {string} word
 * @param {string} [words] the plural, when not word + "s"
 * @returns {string}
 */
export function plural(count, word, words) {
  return `${count.toLocaleString()} ${count === 1 ? word : (words || `${word}s`)}`;
}
