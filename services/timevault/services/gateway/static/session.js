// @ts-check
/**
 * @file The access token of this tab, and signing out.
 *
 * The token is kept in sessionStorage (gone when the tab closes) and only ever sent as a header.
 * Signing out is announced to whoever registered with `onSignOut` (app.js), so that the modules
 * that notice an expired token (api.js, events.js) need not know about views.
 */

const TOKEN_KEY = "timevault.token";

/** @type {Set<(message: string | undefined) => void>} */
const handlers = new Set();

/** @returns {string | null} */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** @param {string} value */
export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

/**
 * Forget the token and tell the handlers (which show the sign-in form with `message`).
 * @param {string} [message]
 */
export function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  for (const handler of handlers) handler(message);
}

/** @param {(message: string | undefined) => void} handler */
export function onSignOut(handler) {
  handlers.add(handler);
}

export const EXPIRED = "Your session is not valid any more. Please sign in again.";
