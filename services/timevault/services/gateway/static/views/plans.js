// @ts-check
/**
 * @file The plan list (`#/`): one card per plan, refreshed on live events.
 *
 * Everything a card shows comes in the one `GET /plans` reply (last status and error, last
 * snapshot time, total size, next run), so the list makes no request per plan.
 */

import { apiError, listPlans } from "../api.js";
import { $, el, find, fromTemplate } from "../dom.js";
import { onEvent } from "../events.js";
import { formatSize, scheduleText } from "../format.js";
import { pill, planStatus } from "../status.js";
import { onLeave, show } from "../view.js";
import { timeEl, zonedTimeEl } from "../widgets.js";

/** @typedef {import("../types.js").Plan} Plan */

/** @type {ReturnType<typeof setTimeout> | undefined} */
let refreshTimer;

export async function renderPlans() {
  show(fromTemplate("tpl-plans"), "Backups");
  const list = $("#plan-list");
  let plans;
  try {
    plans = await listPlans();
  } catch (err) {
    list.replaceChildren(el("li", { class: "form-error", role: "alert", text: apiError(err).message }));
    return;
  }
  if (find("#plan-list") !== list) return;  // another page is shown by now: leave it alone
  fillList(list, plans);
  onLeave(onEvent((event) => {
    if (event.kind === "job" || (event.kind === "plan" && event.data.kind !== "job")) {
      // Several events often come together (a job's status and the plan's log): refresh once.
      clearTimeout(refreshTimer);
      refreshTimer = setTimeout(() => { if (find("#plan-list")) refreshPlans(); }, 300);
    }
  }));
}

async function refreshPlans() {
  const list = find("#plan-list");
  if (!list) return;
  try {
    const plans = await listPlans();
    if (find("#plan-list") === list) fillList(list, plans);
  } catch {
    /* keep what is shown */
  }
}

/**
 * @param {HTMLElement} list
 * @param {Plan[]} plans
 */
function fillList(list, plans) {
  list.replaceChildren(...plans.map(planCard));
  $("#plans-empty").hidden = plans.length > 0;
}

/**
 * @param {Plan} plan
 * @returns {HTMLLIElement}
 */
function planCard(plan) {
  const link = el("a", { href: `#/plans/${encodeURIComponent(plan.id)}`, class: "plan-link" },
    el("span", { class: "plan-name", text: plan.name }),
    el("span", { class: "plan-schedule muted", text: scheduleText(plan.schedule) }));
  const facts = el("dl", { class: "plan-facts" },
    el("div", {}, el("dt", { text: "Last snapshot" }),
      el("dd", {}, plan.last_snapshot_at ? timeEl(plan.last_snapshot_at, true) : "None yet")),
    el("div", {}, el("dt", { text: "Next backup" }), el("dd", {}, plan.paused ? "Paused" : zonedTimeEl(plan.next_run, plan.schedule.timezone))),
    el("div", {}, el("dt", { text: "Total size" }), el("dd", { text: formatSize(plan.total_size) })));
  const status = planStatus(plan);
  if (!plan.active_job && plan.last_status === "failed" && plan.last_error) status.title = plan.last_error;
  return el("li", { class: "plan-card", "data-plan": plan.name },
    el("div", { class: "plan-main" }, link, pill(status)), facts);
}
