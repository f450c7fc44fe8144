// @ts-check
/**
 * @file TimeVault Space in the UI: the location chooser's "Sign in" (a QR code to scan with a
 * phone, and the user code), and the "signed out of Space" notice of a plan whose device token
 * the Space no longer accepts, with a way to sign in again. The catalog does the sign-in; this
 * module starts it and follows `GET /spaces/status` until it is approved, denied or expired.
 */

import { apiError, spaceLogin, spaceStatus } from "../api.js";
import { el } from "../dom.js";
import { formatSize } from "../format.js";

/** @typedef {import("../types.js").SpaceStatus} SpaceStatus */
/** @typedef {import("../types.js").PlanDetail} PlanDetail */

const POLL_MS = 1500;

/**
 * The Space's own address for a Space location: `space://h/r` → `https://h`.
 * @param {string} url
 * @returns {string}
 */
export function spaceBase(url) {
  const match = /^(space|space\+http):\/\/([^/?#]+)/.exec(url);
  if (!match) return url;
  return `${match[1] === "space+http" ? "http" : "https"}://${match[2]}`;
}

/**
 * The location of repository `repo` on the Space at `base` (`https://h` → `space://h/repo`).
 * @param {string} base
 * @param {string} repo
 * @returns {string}
 */
export function spaceLocation(base, repo) {
  const trimmed = base.trim().replace(/\/+$/, "");
  const match = /^(https?):\/\/([^/?#]+)/.exec(trimmed);
  if (!match) return trimmed;
  return `${match[1] === "http" ? "space+http" : "space"}://${match[2]}/${repo}`;
}

/**
 * A repository name from a backup's name: "My documents" → "my-documents".
 * @param {string} name
 * @returns {string}
 */
export function repoName(name) {
  const slug = name.toLowerCase().replace(/[^a-z0-9._-]+/g, "-").replace(/^[-._]+|[-._]+$/g, "").slice(0, 64);
  return slug || "backup";
}

/**
 * One line about a sign-in, as the person should read it.
 * @param {SpaceStatus} status
 * @returns {string}
 */
export function statusText(status) {
  switch (status.status) {
    case "signed_in": {
      const who = `Signed in as ${status.account || "?"}`;
      if (status.free !== null && status.free !== undefined) return `${who} · ${formatSize(status.free)} free`;
      if (status.used !== null && status.used !== undefined) return `${who} · ${formatSize(status.used)} used, no quota`;
      return status.message ? `${who} (${status.message})` : who;
    }
    case "pending": return "Waiting for approval…";
    case "denied": return "The sign-in was denied on the Space.";
    case "expired": return "The code expired before it was approved. Sign in again.";
    case "signed_out": return status.message && status.message.startsWith("signed out of Space")
      ? "Signed out of Space. Sign in again." : "Not signed in.";
    default: return status.message || "The sign-in failed.";
  }
}

/**
 * Start a sign-in and show its QR code and user code in `panel`; resolves to how it ended.
 * @param {string} space the Space's URL
 * @param {HTMLElement} panel
 * @param {() => boolean} gone true once the page was left (stops polling)
 * @returns {Promise<SpaceStatus>}
 */
export async function signIn(space, panel, gone) {
  const login = await spaceLogin(space);
  const svg = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(login.qr_svg)}`;
  panel.replaceChildren(
    el("img", { class: "space-qr", src: svg, alt: "QR code: scan it with your phone to sign in" }),
    el("div", { class: "space-steps" },
      el("p", {}, "Scan the QR code with your phone, or open ",
        el("a", { href: login.verification_uri_complete, target: "_blank", rel: "noopener noreferrer",
          text: login.verification_uri })),
      el("p", {}, "and enter the code ", el("strong", { class: "user-code", id: "space-user-code",
        text: login.user_code })),
      el("p", { class: "muted", role: "status", text: "Waiting for approval on the Space…" })));
  panel.hidden = false;
  try {
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      if (gone()) return { space: login.space, status: "failed", message: "left the page" };
      const status = await spaceStatus(login.space);
      if (status.status !== "pending") return status;
    }
  } finally {
    panel.hidden = true;
  }
}

/**
 * Wire the create form's Space fields: the address, the name on the Space (from the backup's
 * name until edited), the sign-in state and the Sign in button.
 * @param {HTMLFormElement} form
 * @param {() => boolean} gone
 */
export function mountSpaceChooser(form, gone) {
  const address = /** @type {HTMLInputElement} */ (form.querySelector("#f-space"));
  const repo = /** @type {HTMLInputElement} */ (form.querySelector("#f-space-repo"));
  const name = /** @type {HTMLInputElement} */ (form.querySelector("#f-name"));
  const state = /** @type {HTMLElement} */ (form.querySelector("#space-state"));
  const button = /** @type {HTMLButtonElement} */ (form.querySelector("#btn-space-signin"));
  const panel = /** @type {HTMLElement} */ (form.querySelector("#space-signin"));
  let repoEdited = false;
  repo.addEventListener("input", () => { repoEdited = repo.value.trim() !== ""; });
  name.addEventListener("input", () => { if (!repoEdited) repo.placeholder = repoName(name.value); });

  /** @param {SpaceStatus} status */
  const showStatus = (status) => {
    state.textContent = statusText(status);
    state.dataset.status = status.status;
    button.textContent = status.status === "signed_in" ? "Sign in again" : "Sign in";
  };
  const refresh = async () => {
    if (!address.value.trim()) return;
    try {
      showStatus(await spaceStatus(address.value.trim()));
    } catch (err) {
      state.textContent = apiError(err).message;
    }
  };
  address.addEventListener("change", refresh);
  button.addEventListener("click", async () => {
    if (!address.value.trim()) {
      state.textContent = "Enter the Space's address first.";
      address.focus();
      return;
    }
    button.disabled = true;
    state.textContent = "Signing in…";
    try {
      showStatus(await signIn(address.value.trim(), panel, gone));
    } catch (err) {
      state.textContent = apiError(err).message;
    } finally {
      button.disabled = false;
    }
  });
}

/**
 * The Space location the create form describes.
 * @param {HTMLElement} form
 * @returns {string}
 */
export function readSpaceLocation(form) {
  const address = /** @type {HTMLInputElement} */ (form.querySelector("#f-space")).value;
  const repoInput = /** @type {HTMLInputElement} */ (form.querySelector("#f-space-repo"));
  const repo = repoInput.value.trim() || repoInput.placeholder || "backup";
  return spaceLocation(address, repo);
}

/**
 * On a plan page: when the plan's Space no longer accepts this TimeVault, say "signed out of
 * Space" and offer to sign in again.
 * @param {PlanDetail} plan
 * @param {HTMLElement} box
 * @param {() => boolean} gone
 */
export async function showSpaceNotice(plan, box, gone) {
  if (plan.location.type !== "space" || !plan.location.url) {
    box.hidden = true;
    return;
  }
  const space = spaceBase(plan.location.url);
  let status;
  try {
    status = await spaceStatus(space);
  } catch {
    return;  // the notice is a help, not the page: errors show elsewhere
  }
  if (gone() || status.status === "signed_in" || status.status === "pending") {
    box.hidden = true;
    return;
  }
  const panel = el("div", { class: "space-signin", hidden: true });
  const again = el("button", { type: "button", class: "button small", id: "btn-space-again", text: "Sign in again" });
  const text = el("p", { class: "space-out-text", text: `Signed out of Space: ${space} no longer accepts this `
    + "TimeVault, so its backups stop. Sign in again to go on." });
  again.addEventListener("click", async () => {
    again.disabled = true;
    try {
      const result = await signIn(space, panel, gone);
      text.textContent = statusText(result);
      if (result.status === "signed_in") again.hidden = true;
    } catch (err) {
      text.textContent = apiError(err).message;
    } finally {
      again.disabled = false;
    }
  });
  box.replaceChildren(text, again, panel);
  box.hidden = false;
}
