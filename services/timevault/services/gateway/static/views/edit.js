// @ts-check
/** @file The plan page's "Edit schedule" dialog (schedule and folders; the name is shown read-only). */

import { apiError, updatePlan } from "../api.js";
import { $, one } from "../dom.js";
import { lines } from "../format.js";
import { FIELD_IDS, clearErrors, showError } from "../forms.js";
import { busy, toast } from "../widgets.js";
import { mountSchedule, readSchedule, setSchedule } from "./schedule.js";

/** @typedef {import("./plan.js").PlanState} PlanState */

const EDIT_IDS = { ...FIELD_IDS, sources: "e-sources", name: "e-name" };

/**
 * @param {PlanState} state
 * @param {() => Promise<void>} load reloads the page after a save
 */
export function wireEdit(state, load) {
  const dialog = one(HTMLDialogElement, "#dlg-edit");
  const form = one(HTMLFormElement, "#edit-form");
  const sources = one(HTMLTextAreaElement, "#e-sources", form);
  mountSchedule(form, null);
  $("#btn-edit").addEventListener("click", () => {
    const plan = state.plan;
    if (!plan) return;
    clearErrors(form);
    one(HTMLInputElement, "#e-name", form).value = plan.name;
    setSchedule(form, plan.schedule);
    one(HTMLSelectElement, "#f-weekday", form).value = String(plan.schedule.weekday || 1);
    one(HTMLInputElement, "input[name=frequency]:checked", form).dispatchEvent(new Event("change"));
    sources.value = plan.sources.join("\n");
    dialog.showModal();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const plan = state.plan;
    if (!plan) return;
    clearErrors(form);
    const body = { schedule: readSchedule(form), sources: lines(sources.value) };
    const button = one(HTMLButtonElement, "button[type=submit]", form);
    busy(button, true, "Saving…");
    try {
      await updatePlan(plan.id, body);
      dialog.close();
      toast("Schedule saved.");
      await load();
    } catch (err) {
      showError(form, apiError(err), EDIT_IDS, "edit-error");
    } finally {
      busy(button, false);
    }
  });
}
