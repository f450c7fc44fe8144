// @ts-check
/** The account page: usage per repository, signed-in devices (revoke), trash (restore, empty). */
import { api, el, setUpSignIn, show, size, when, whoAmI } from "./space.js";

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** @type {{id: string}[]} */
let trashShown = [];

async function start() {
  setUpSignIn(signedIn);
  $("sign-out").addEventListener("click", async () => {
    await api("DELETE", "/space/v1/session").catch(() => null);
    signedOut();
  });
  $("trash-restore-all").addEventListener("click", () => restore(trashShown.map((t) => t.id)));
  $("trash-empty").addEventListener("click", emptyTrash);
  const account = await whoAmI();
  if (account) await signedIn(account); else signedOut();
}

function signedOut() {
  $("who").textContent = "";
  show($("sign-out"), false);
  show($("account"), false);
  show($("signin"), true);
}

/** @param {string} account */
async function signedIn(account) {
  $("who").textContent = `Signed in as ${account}`;
  show($("sign-out"), true);
  show($("signin"), false);
  show($("account"), true);
  await Promise.all([loadUsage(), loadDevices(), loadTrash()]);
}

async function loadUsage() {
  const info = await api("GET", "/space/v1/account");
  const quota = info.quota;
  $("usage-summary").textContent = quota === null
    ? `${size(info.used)} used (no quota)`
    : `${size(info.used)} of ${size(quota)} used, ${size(info.free)} free (the trash counts too)`;
  $("usage-meter").style.width = quota ? `${Math.min(100, (100 * info.used) / quota).toFixed(1)}%` : "0";
  const body = /** @type {HTMLTableSectionElement} */ ($("repos").querySelector("tbody"));
  body.replaceChildren(...info.repos.map((/** @type {any} */ repo) => {
    const row = el("tr");
    row.append(el("td", repo.name), el("td", String(repo.objects), "num optional"), el("td", size(repo.size), "num"),
      el("td", repo.trash_objects ? `${size(repo.trash_size)} (${repo.trash_objects})` : "–", "num"));
    return row;
  }));
  show($("repos-empty"), info.repos.length === 0);
}

async function loadDevices() {
  const { devices } = await api("GET", "/space/v1/devices");
  const body = /** @type {HTMLTableSectionElement} */ ($("devices").querySelector("tbody"));
  body.replaceChildren(...devices.map((/** @type {any} */ device) => {
    const row = el("tr");
    const button = el("button", "Revoke", "danger");
    button.setAttribute("aria-label", `Revoke ${device.client}`);
    button.addEventListener("click", async () => {
      try {
        await api("DELETE", `/space/v1/devices/${encodeURIComponent(device.id)}`);
        await loadDevices();
      } catch (e) {
        $("devices-error").textContent = /** @type {Error} */ (e).message;
      }
    });
    const cell = el("td");
    cell.append(button);
    row.append(el("td", device.client), el("td", when(device.created), "optional"),
      el("td", when(device.last_used), "optional"), cell);
    return row;
  }));
  show($("devices-empty"), devices.length === 0);
}

async function loadTrash() {
  const info = await api("GET", "/space/v1/trash?limit=200");
  trashShown = info.objects;
  $("trash-summary").textContent = info.total
    ? `${info.total} deleted object${info.total === 1 ? "" : "s"}; each is removed for good when its time is up.`
    : "The trash is empty.";
  const body = /** @type {HTMLTableSectionElement} */ ($("trash").querySelector("tbody"));
  body.replaceChildren(...info.objects.map((/** @type {any} */ item) => {
    const row = el("tr");
    const button = el("button", "Restore");
    button.setAttribute("aria-label", `Restore ${item.repo}/${item.name}`);
    button.addEventListener("click", () => restore([item.id]));
    const cell = el("td");
    cell.append(button);
    row.append(el("td", `${item.repo}/${item.name}`), el("td", size(item.size), "num"),
      el("td", `${when(item.deleted)} (kept until ${when(item.expires)})`, "optional"), cell);
    return row;
  }));
  show($("trash-restore-all"), info.total > 0);
  show($("trash-empty"), info.total > 0);
}

/** @param {string[]} ids */
async function restore(ids) {
  const { restored } = await api("POST", "/space/v1/trash/restore", { ids });
  $("trash-message").textContent = `Restored ${restored} object${restored === 1 ? "" : "s"}.`;
  await Promise.all([loadUsage(), loadTrash()]);
}

async function emptyTrash() {
  if (!window.confirm("Remove everything in the trash for good? This cannot be undone.")) return;
  const { removed } = await api("POST", "/space/v1/trash/empty", {});
  $("trash-message").textContent = `Removed ${removed} object${removed === 1 ? "" : "s"} for good.`;
  await Promise.all([loadUsage(), loadTrash()]);
}

start();
