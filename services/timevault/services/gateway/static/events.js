// @ts-check
/**
 * @file Live events: /api/v1/events read with fetch() streaming, handed to listeners.
 *
 * EventSource cannot send a header, and the token must never go in a URL, so the stream is read
 * with fetch(). One stream runs while signed in; it reconnects with back-off (1 s … 15 s).
 */

import { API } from "./api.js";
import { EXPIRED, signOut, token } from "./session.js";

/** @typedef {import("./types.js").JobEvent} JobEvent */
/** @typedef {import("./types.js").JobProgress} JobProgress */
/** @typedef {import("./types.js").PlanEvent} PlanEvent */

/**
 * One server-sent event, by its `event:` name.
 * @typedef {{ kind: "job", data: JobEvent } | { kind: "progress", data: JobProgress }
 *   | { kind: "plan", data: PlanEvent }} LiveEvent
 */

/** @typedef {(event: LiveEvent) => void} Listener */

const KINDS = new Set(["job", "progress", "plan"]);

/** @type {Set<Listener>} */
const listeners = new Set();
/** @type {AbortController | null} */
let eventAbort = null;

/**
 * Call `fn` for every live event until the returned function is called.
 * @param {Listener} fn
 * @returns {() => void}
 */
export function onEvent(fn) {
  listeners.add(fn);
  return () => { listeners.delete(fn); };
}

/** Start the stream unless it runs already; it ends on `stopEventStream` or sign-out. */
export async function runEventStream() {
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
        signOut(EXPIRED);
        return;
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      delay = 1000;
      await readEvents(response.body);
    } catch {
      if (controller.signal.aborted) return;
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

export function stopEventStream() {
  if (eventAbort) eventAbort.abort();
  eventAbort = null;
}

/**
 * Split the stream into frames (separated by a blank line) and dispatch each.
 * @param {ReadableStream<BufferSource>} stream
 */
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

/**
 * Parse one frame (`event:` and `data:` lines; comments and unknown kinds are ignored).
 * @param {string} frame
 */
function dispatchFrame(frame) {
  let kind = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (line.startsWith("event:")) kind = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length || !KINDS.has(kind)) return;
  let message;
  try {
    message = JSON.parse(data.join("\n"));
  } catch {
    return;
  }
  const event = /** @type {LiveEvent} */ ({ kind, data: message });
  for (const fn of listeners) fn(event);
}
