// @ts-check
/**
 * @file The HTTP API (/api/v1) as functions, one per operation the UI uses.
 *
 * Every call sends the bearer token as a header and resolves to the reply's JSON, or rejects with
 * an `ApiError` carrying the API's `{code, message, field}`. A 401 without a field (the token,
 * not a backup password, was refused) signs out.
 */

import { EXPIRED, signOut, token } from "./session.js";

/** @typedef {import("./types.js").Plan} Plan */
/** @typedef {import("./types.js").PlanDetail} PlanDetail */
/** @typedef {import("./types.js").PlanCreate} PlanCreate */
/** @typedef {import("./types.js").PlanUpdate} PlanUpdate */
/** @typedef {import("./types.js").PlanDeleted} PlanDeleted */
/** @typedef {import("./types.js").Job} Job */
/** @typedef {import("./types.js").RestoreBody} RestoreBody */
/** @typedef {import("./types.js").ErrorInfo} ErrorInfo */
/** @typedef {import("./types.js").BrowseSession} BrowseSession */
/** @typedef {import("./types.js").BrowseListing} BrowseListing */
/** @typedef {import("./types.js").SnapshotDiff} SnapshotDiff */
/** @typedef {import("./types.js").FindResult} FindResult */
/** @typedef {import("./types.js").PlanEvent} PlanEvent */
/** @typedef {import("./types.js").FolderListing} FolderListing */
/** @typedef {import("./types.js").SpaceStatus} SpaceStatus */
/** @typedef {import("./types.js").SpaceLoginReply} SpaceLoginReply */

export const API = "/api/v1";

/** An error reply of the API, or "cannot reach TimeVault" (status 0). */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status, 0 when there was no reply
   * @param {Partial<ErrorInfo>} error
   */
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "internal";
    /** @type {string | null} */
    this.field = error.field || null;
  }
}

/**
 * `err` as an ApiError, so that a view can show any failure the same way.
 * @param {unknown} err
 * @returns {ApiError}
 */
export function apiError(err) {
  if (err instanceof ApiError) return err;
  return new ApiError(0, { code: "internal", message: err instanceof Error ? err.message : String(err) });
}

/**
 * @param {string} method
 * @param {string} path below /api/v1, with its parts already encoded
 * @param {unknown} [body] sent as JSON
 * @param {Record<string, string>} [extra] more request headers
 * @returns {Promise<unknown>}
 */
async function request(method, path, body, extra = {}) {
  /** @type {Record<string, string>} */
  const headers = { Accept: "application/json", Authorization: `Bearer ${token() || ""}`, ...extra };
  /** @type {RequestInit} */
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(API + path, init);
  } catch {
    throw new ApiError(0, { code: "unavailable", message: "Cannot reach TimeVault. Is it running?" });
  }
  const text = await response.text();
  /** @type {any} */
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    /** @type {Partial<ErrorInfo>} */
    const error = (data && data.error) || { code: "internal", message: `HTTP ${response.status}` };
    if (response.status === 401 && !error.field) signOut(EXPIRED);
    throw new ApiError(response.status, error);
  }
  return data;
}

const enc = encodeURIComponent;

/** @returns {Promise<Plan[]>} every plan, by name, with what its card shows */
export function listPlans() {
  return /** @type {Promise<Plan[]>} */ (request("GET", "/plans"));
}

/**
 * @param {string} planId id or name
 * @returns {Promise<PlanDetail>}
 */
export function getPlan(planId) {
  return /** @type {Promise<PlanDetail>} */ (request("GET", `/plans/${enc(planId)}`));
}

/**
 * @param {PlanCreate} body
 * @returns {Promise<Plan>}
 */
export function createPlan(body) {
  return /** @type {Promise<Plan>} */ (request("POST", "/plans", body));
}

/**
 * @param {string} planId
 * @param {PlanUpdate} body
 * @returns {Promise<Plan>}
 */
export function updatePlan(planId, body) {
  return /** @type {Promise<Plan>} */ (request("PATCH", `/plans/${enc(planId)}`, body));
}

/**
 * @param {string} planId
 * @returns {Promise<PlanDeleted>}
 */
export function deletePlan(planId) {
  return /** @type {Promise<PlanDeleted>} */ (request("DELETE", `/plans/${enc(planId)}`));
}

/**
 * Pause or resume the plan's schedule.
 * @param {string} planId
 * @param {"pause" | "resume"} action
 * @returns {Promise<Plan>}
 */
export function pauseOrResume(planId, action) {
  return /** @type {Promise<Plan>} */ (request("POST", `/plans/${enc(planId)}/${action}`));
}

/**
 * Back up now.
 * @param {string} planId
 * @returns {Promise<Job>}
 */
export function startBackup(planId) {
  return /** @type {Promise<Job>} */ (request("POST", `/plans/${enc(planId)}/backups`));
}

/**
 * Forget what the plan's retention drops and free the space no snapshot needs, now.
 * @param {string} planId
 * @returns {Promise<Job>}
 */
export function startPrune(planId) {
  return /** @type {Promise<Job>} */ (request("POST", `/plans/${enc(planId)}/prune`));
}

/**
 * @param {string} planId
 * @param {string} snapshotId
 * @param {RestoreBody} body
 * @returns {Promise<Job>}
 */
export function restoreSnapshot(planId, snapshotId, body) {
  return /** @type {Promise<Job>} */ (
    request("POST", `/plans/${enc(planId)}/snapshots/${enc(snapshotId)}/restore`, body));
}

/**
 * @param {string} jobId
 * @returns {Promise<Job>}
 */
export function getJob(jobId) {
  return /** @type {Promise<Job>} */ (request("GET", `/jobs/${enc(jobId)}`));
}

/**
 * @param {string} jobId
 * @returns {Promise<Job>}
 */
export function cancelJob(jobId) {
  return /** @type {Promise<Job>} */ (request("POST", `/jobs/${enc(jobId)}/cancel`));
}

// --- browsing (the Time Machine): a session unlocked once with the password ---------------------

/** The header that carries a browsing session's id (never a URL: it would end up in logs). */
export const SESSION_HEADER = "X-Timevault-Session";

/**
 * Unlock the plan's snapshots: the password goes to a restorer once, which keeps the key in memory.
 * @param {string} planId
 * @param {string} password
 * @returns {Promise<BrowseSession>}
 */
export function unlockPlan(planId, password) {
  return /** @type {Promise<BrowseSession>} */ (request("POST", `/plans/${enc(planId)}/unlock`, { password }));
}

/**
 * End a browsing session at once.
 * @param {string} planId
 * @param {string} session
 * @returns {Promise<unknown>}
 */
export function lockPlan(planId, session) {
  return request("POST", `/plans/${enc(planId)}/lock`, undefined, { [SESSION_HEADER]: session });
}

/**
 * A folder of a snapshot.
 * @param {string} planId
 * @param {string} session
 * @param {string} snapshotId
 * @param {string} path absolute, as backed up
 * @returns {Promise<BrowseListing>}
 */
export function listFolder(planId, session, snapshotId, path) {
  return /** @type {Promise<BrowseListing>} */ (request("GET",
    `/plans/${enc(planId)}/snapshots/${enc(snapshotId)}/ls?path=${enc(path)}`, undefined,
    { [SESSION_HEADER]: session }));
}

/**
 * What changed from one snapshot to another.
 * @param {string} planId
 * @param {string} session
 * @param {string} from
 * @param {string} to
 * @returns {Promise<SnapshotDiff>}
 */
export function diffSnapshots(planId, session, from, to) {
  return /** @type {Promise<SnapshotDiff>} */ (request("GET",
    `/plans/${enc(planId)}/diff?from=${enc(from)}&to=${enc(to)}`, undefined, { [SESSION_HEADER]: session }));
}

/**
 * Which snapshots hold a name.
 * @param {string} planId
 * @param {string} session
 * @param {string} pattern
 * @returns {Promise<FindResult>}
 */
export function findName(planId, session, pattern) {
  return /** @type {Promise<FindResult>} */ (request("GET",
    `/plans/${enc(planId)}/find?pattern=${enc(pattern)}&limit=200`, undefined, { [SESSION_HEADER]: session }));
}

/**
 * Restore chosen items into `target`, or back to their original place (`target` null).
 * @param {string} planId
 * @param {string} session
 * @param {string} snapshotId
 * @param {string[]} paths
 * @param {string | null} target
 * @returns {Promise<Job>}
 */
export function restoreItems(planId, session, snapshotId, paths, target) {
  return /** @type {Promise<Job>} */ (request("POST",
    `/plans/${enc(planId)}/snapshots/${enc(snapshotId)}/restore-items`,
    target ? { paths, target } : { paths }, { [SESSION_HEADER]: session }));
}

/**
 * A job's own log lines (hook output, where restored items went).
 * @param {string} jobId
 * @returns {Promise<PlanEvent[]>}
 */
export function getJobLog(jobId) {
  return /** @type {Promise<PlanEvent[]>} */ (request("GET", `/jobs/${enc(jobId)}/log`));
}

/**
 * Folders the server may back up, below `path` (its roots when absent).
 * @param {string} [path]
 * @returns {Promise<FolderListing>}
 */
export function listFolders(path) {
  return /** @type {Promise<FolderListing>} */ (request("GET", path ? `/folders?path=${enc(path)}` : "/folders"));
}

/** @param {string} space the Space's URL */
export function spaceLogin(space) {
  return /** @type {Promise<SpaceLoginReply>} */ (request("POST", "/spaces/login", { space }));
}

/** @param {string} space */
export function spaceStatus(space) {
  return /** @type {Promise<SpaceStatus>} */ (request("GET", `/spaces/status?space=${enc(space)}`));
}
