// @ts-check
/**
 * @file The one view slot (`#view`): what is shown, its title, and what to undo when it goes.
 *
 * A view registers clean-ups (event subscriptions, timers) with `onLeave`; showing the next view
 * runs them, so nothing of the previous view keeps running.
 */

import { $, find } from "./dom.js";

/** @type {(() => void)[]} */
let cleanup = [];

/**
 * Run `fn` when the current view is replaced.
 * @param {...(() => void)} fns
 */
export function onLeave(...fns) {
  cleanup.push(...fns);
}

/**
 * Replace the view with `fragment` and set the document title.
 * @param {DocumentFragment | HTMLElement} fragment
 * @param {string} title
 */
export function show(fragment, title) {
  for (const fn of cleanup) fn();
  cleanup = [];
  $("#view").replaceChildren(fragment);
  document.title = `${title} · TimeVault`;
}

/** Move focus to the view's heading, so screen readers announce the new page. */
export function focusHeading() {
  const heading = find("#view h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: false });
  }
}
