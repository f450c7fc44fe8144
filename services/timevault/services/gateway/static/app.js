// @ts-check
/**
 * @file TimeVault web UI, entry module: native ES modules, no build step; talks only to /api/v1.
 *
 * The token arrives once in the URL fragment (#token=…, printed by `timevault up`) or through the
 * sign-in form; it is kept in sessionStorage and sent as a header (session.js). Live progress is
 * read from /api/v1/events with fetch() streaming, so the token never goes in a URL (events.js).
 * Module scripts run once the document is parsed, so the page's elements are there.
 */

import { $ } from "./dom.js";
import { stopEventStream } from "./events.js";
import { route } from "./router.js";
import { onSignOut, signOut } from "./session.js";
import { renderLogin } from "./views/login.js";

onSignOut((message) => {
  stopEventStream();
  renderLogin(message, route);
});
window.addEventListener("hashchange", route);
$("#signout").addEventListener("click", () => signOut());
route();
