// @ts-check
/**
 * @file Hash routes → views: `#/` the plan list, `#/new` the create form, `#/plans/<id>` a plan,
 * `#/plans/<id>/browse` its snapshots (the Time Machine).
 *
 * A `#token=…` fragment (the link `timevault up` prints) is stored and removed from the address
 * bar at once; without a token every route shows the sign-in form.
 */

import { $, $$ } from "./dom.js";
import { runEventStream } from "./events.js";
import { setToken, token } from "./session.js";
import { renderBrowse } from "./views/browse.js";
import { renderCreate } from "./views/create.js";
import { renderLogin } from "./views/login.js";
import { renderPlan } from "./views/plan.js";
import { renderPlans } from "./views/plans.js";

/** Show the view for the current address. */
export function route() {
  const hash = location.hash || "#/";
  if (hash.startsWith("#token=")) {
    const value = decodeURIComponent(hash.slice("#token=".length));
    if (value) setToken(value);
    history.replaceState(null, "", `${location.pathname}#/`);
    route();
    return;
  }
  if (!token()) {
    renderLogin(undefined, route);
    return;
  }
  $("#topnav").hidden = false;
  runEventStream();
  for (const link of $$("[data-nav]")) link.removeAttribute("aria-current");
  const browseId = hash.match(/^#\/plans\/([^/]+)\/browse$/)?.[1];
  const planId = hash.match(/^#\/plans\/([^/]+)$/)?.[1];
  if (browseId) {
    renderBrowse(decodeURIComponent(browseId));
  } else if (planId) {
    renderPlan(decodeURIComponent(planId));
  } else if (hash === "#/new") {
    $("[data-nav=new]").setAttribute("aria-current", "page");
    renderCreate();
  } else {
    $("[data-nav=plans]").setAttribute("aria-current", "page");
    renderPlans();
  }
}
