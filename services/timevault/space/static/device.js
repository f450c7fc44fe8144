// @ts-check
/** The verification page of the device sign-in (RFC 8628): sign in, check the code, approve or deny. */
import { api, setUpSignIn, show, whoAmI } from "./space.js";

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const codeInput = /** @type {HTMLInputElement} */ ($("user-code"));
let account = "";
let pendingCode = "";

async function start() {
  codeInput.value = new URLSearchParams(window.location.search).get("user_code") || "";
  setUpSignIn(signedIn);
  $("code-form").addEventListener("submit", (event) => {
    event.preventDefault();
    lookUp(codeInput.value);
  });
  $("approve").addEventListener("click", () => decide("approve"));
  $("deny").addEventListener("click", () => decide("deny"));
  const who = await whoAmI();
  if (who) await signedIn(who); else show($("signin"), true);
}

/** @param {string} name */
async function signedIn(name) {
  account = name;
  $("who").textContent = `Signed in as ${name}`;
  show($("signin"), false);
  if (codeInput.value.trim()) await lookUp(codeInput.value); else show($("code-entry"), true);
}

/** @param {string} code */
async function lookUp(code) {
  $("code-error").textContent = "";
  try {
    const grant = await api("GET", `/space/v1/device/lookup?user_code=${encodeURIComponent(code.trim())}`);
    pendingCode = grant.user_code;
    $("client").textContent = grant.client;
    $("decision-account").textContent = account;
    $("decision-code").textContent = grant.user_code;
    show($("code-entry"), false);
    show($("decision"), true);
  } catch (e) {
    show($("code-entry"), true);
    $("code-error").textContent = /** @type {Error} */ (e).message;
  }
}

/** @param {"approve" | "deny"} action */
async function decide(action) {
  $("decision-error").textContent = "";
  try {
    const result = await api("POST", "/space/v1/device/approve", { user_code: pendingCode, action });
    show($("decision"), false);
    show($("done"), true);
    if (result.status === "approved") {
      $("done-title").textContent = "Device approved";
      $("done-text").textContent = `${result.client} is now signed in to your Space. You can close this page.`;
    } else {
      $("done-title").textContent = "Device denied";
      $("done-text").textContent = `${result.client} was not signed in.`;
    }
  } catch (e) {
    $("decision-error").textContent = /** @type {Error} */ (e).message;
  }
}

start();
