// @ts-check
/**
 * @file The plan page's "Edit settings" dialog: schedule, folders, what to leave out, commands and
 * notifications (the name is shown read-only and takes no focus).
 */

import { apiError, updatePlan } from "../api.js";
import { $, one } from "../dom.js";
import { lines } from "../format.js";
import { FIELD_IDS, clearErrors, showError } from "../forms.js";
import { busy, toast } from "../widgets.js";
import { checkSources, checkTime, checkTimezone, clearWhenFixed, showAll } from "../validate.js";
import { wireFolderPicker } from "./folders.js";
import { mountOptions, optionChecks, readOptions, setOptions } from "./options.js";
import { mountRetention, readRetention, readThinWhenFull, setRetention } from "./retention.js";
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
  mountOptions(form, null);
  mountRetention(form, null, false);
  wireFolderPicker(form);
  const checks = {
    "e-sources": () => checkSources(lines(sources.value)),
    "f-time": () => checkTime(one(HTMLInputElement, "#f-time", form).value),
    "f-timezone": () => checkTimezone(one(HTMLInputElement, "#f-timezone", form).value.trim()),
    ...optionChecks(form),
  };
  clearWhenFixed(form, checks);
  $("#btn-edit").addEventListener("click", () => {
    const plan = state.plan;
    if (!plan) return;
    clearErrors(form);
    one(HTMLInputElement, "#e-name", form).value = plan.name;
    setSchedule(form, plan.schedule);
    one(HTMLSelectElement, "#f-weekday", form).value = String(plan.schedule.weekday || 1);
    one(HTMLInputElement, "input[name=frequency]:checked", form).dispatchEvent(new Event("change"));
    setRetention(form, plan.retention, plan.thin_when_full);
    sources.value = plan.sources.join("\n");
    setOptions(form, plan);
    dialog.showModal();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const plan = state.plan;
    if (!plan) return;
    clearErrors(form);
    if (showAll(form, checks)) return;
    const body = {
      schedule: readSchedule(form), sources: lines(sources.value), ...readOptions(form),
      retention: readRetention(form), thin_when_full: readThinWhenFull(form),
    };
    const button = one(HTMLButtonElement, "button[type=submit]", form);
    busy(button, true, "Saving…");
    try {
      await updatePlan(plan.id, body);
      dialog.close();
      toast("Settings saved.");
      await load();
    } catch (err) {
      showError(form, apiError(err), EDIT_IDS, "edit-error");
    } finally {
      busy(button, false);
    }
  });
}
