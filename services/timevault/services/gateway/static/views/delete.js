// @ts-check
/** @file The plan page's delete dialog, which says that every snapshot and all stored data go too. */

import { apiError, deletePlan } from "../api.js";
import { $, one } from "../dom.js";
import { formatSize, locationText } from "../format.js";
import { busy, toast } from "../widgets.js";

/** @typedef {import("./plan.js").PlanState} PlanState */

/** @param {PlanState} state */
export function wireDelete(state) {
  const dialog = one(HTMLDialogElement, "#dlg-delete");
  const form = one(HTMLFormElement, "#delete-form");
  const error = $("#delete-error");
  $("#btn-delete").addEventListener("click", () => {
    const plan = state.plan;
    if (!plan) return;
    const count = plan.snapshot_count;
    const snapshots = count === 0 ? "its stored data" : count === 1 ? "its only snapshot"
      : `all ${count.toLocaleString()} snapshots`;
    $("#delete-warning").textContent =
      `Deleting “${plan.name}” also removes ${snapshots} and ` +
      `${formatSize(plan.total_size)} of backup data stored in ${locationText(plan.location)}. ` +
      "Make sure your data is safe elsewhere. This cannot be undone.";
    error.hidden = true;
    dialog.showModal();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const plan = state.plan;
    if (!plan) return;
    const button = one(HTMLButtonElement, "#delete-confirm");
    busy(button, true, "Deleting…");
    try {
      await deletePlan(plan.id);
      dialog.close();
      toast(`Backup “${plan.name}” and its snapshots were deleted.`);
      state.plan = null;
      location.hash = "#/";
    } catch (err) {
      error.textContent = apiError(err).message;
      error.hidden = false;
    } finally {
      busy(button, false);
    }
  });
}
