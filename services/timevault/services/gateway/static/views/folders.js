// @ts-check
/**
 * @file The folder picker: a dialog that walks the folders this machine may back up (`GET
 * /api/v1/folders`) and adds the ticked ones to a sources textarea. Typing paths still works; the
 * picker only fills the same box.
 */

import { apiError, listFolders } from "../api.js";
import { $, $$, el, fromTemplate, one } from "../dom.js";
import { lines, plural } from "../format.js";
import { icon } from "../widgets.js";

/** @typedef {import("../types.js").FolderListing} FolderListing */

/**
 * Wire every `[data-pick-folders=<textarea id>]` button under `root` to the picker.
 * @param {HTMLElement} root
 */
export function wireFolderPicker(root) {
  for (const button of $$("[data-pick-folders]", root)) {
    button.addEventListener("click", () => {
      const target = document.getElementById(button.dataset.pickFolders || "");
      if (target instanceof HTMLTextAreaElement) openPicker(target);
    });
  }
}

/**
 * The dialog, made on first use and kept in the page.
 * @returns {HTMLDialogElement}
 */
function dialog() {
  const existing = document.getElementById("dlg-folders");
  if (existing instanceof HTMLDialogElement) return existing;
  document.body.append(fromTemplate("tpl-folders"));
  const made = one(HTMLDialogElement, "#dlg-folders");
  for (const close of $$("[data-close]", made)) close.addEventListener("click", () => made.close());
  return made;
}

/**
 * @param {HTMLTextAreaElement} target
 */
async function openPicker(target) {
  const box = dialog();
  /** @type {Set<string>} */
  const chosen = new Set(lines(target.value));
  const form = one(HTMLFormElement, "#folders-form", box);
  /** @type {string | null} */
  let parent = null;
  const up = one(HTMLButtonElement, "#folders-up", box);
  const count = () => {
    $("#folders-chosen", box).textContent = chosen.size ? `${plural(chosen.size, "folder")} chosen` : "";
  };

  /** @param {string | undefined} path */
  const show = async (path) => {
    let listing;
    const error = $("#folders-error", box);
    try {
      listing = await listFolders(path);
    } catch (err) {
      error.textContent = apiError(err).message;
      error.hidden = false;
      return;
    }
    error.hidden = true;
    parent = listing.parent;
    up.disabled = listing.path === null;
    $("#folders-path", box).textContent = listing.path || "Folders you can back up";
    const items = listing.folders.map((folder) => {
      const tick = el("input", { type: "checkbox", "aria-label": `Back up ${folder.path}` });
      tick.checked = chosen.has(folder.path);
      tick.addEventListener("change", () => {
        if (tick.checked) chosen.add(folder.path);
        else chosen.delete(folder.path);
        count();
      });
      return el("li", { "data-folder": folder.name }, tick,
        el("button", { type: "button", class: "entry-link", onclick: () => show(folder.path) },
          icon("dir"), listing.path ? folder.name : folder.path));
    });
    if (!items.length) items.push(el("li", { class: "muted", text: "No folders in here." }));
    if (listing.truncated) items.push(el("li", { class: "muted", text: "Only the first folders are shown." }));
    $("#folders-list", box).replaceChildren(...items);
    count();
  };

  up.onclick = () => show(parent || undefined);
  form.onsubmit = (event) => {
    event.preventDefault();
    const typed = lines(target.value);  // kept in their order, unless unticked here
    target.value = [...typed.filter((path) => chosen.has(path)), ...[...chosen].filter((path) => !typed.includes(path))]
      .join("\n");
    target.dispatchEvent(new Event("input", { bubbles: true }));
    box.close();
    target.focus();
  };
  await show(undefined);
  box.showModal();
}
