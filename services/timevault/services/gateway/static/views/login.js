// @ts-check
/** @file The sign-in form: checks the access token with one API call before keeping it. */

import { ApiError, listPlans } from "../api.js";
import { $, one, fromTemplate } from "../dom.js";
import { setToken } from "../session.js";
import { show } from "../view.js";

/**
 * @param {string | undefined} message shown under the field (why the user must sign in again)
 * @param {() => void} signedIn shows the page the address names
 */
export function renderLogin(message, signedIn) {
  $("#topnav").hidden = true;
  show(fromTemplate("tpl-login"), "Sign in");
  const form = $("#login-form");
  const input = one(HTMLInputElement, "#login-token");
  const error = $("#login-token-error");
  if (message) {
    error.textContent = message;
    error.hidden = false;
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (!value) {
      error.textContent = "Enter the access token.";
      error.hidden = false;
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    setToken(value);
    try {
      await listPlans();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        renderLogin("That token is not accepted.", signedIn);
        return;
      }
    }
    location.hash = "#/";
    signedIn();
  });
  input.focus();
}
