// @ts-check
/**
 * @file The JSON the UI exchanges with /api/v1, as JSDoc types; this module has no code.
 *
 * Each type mirrors the `timevault.proto` Struct of the same name (RestoreBody: the gateway's
 * `bodies.py`), field for field: tests/gateway/test_ui_types.py compares the names. Times are
 * RFC 3339 strings in UTC; a field the server has no value for is `null`.
 */

/**
 * When a plan runs: local wall-clock time in the plan's time zone.
 * @typedef {object} Schedule
 * @property {"hourly" | "daily" | "weekly" | "monthly"} frequency
 * @property {string} time "HH:MM", 24 h; hourly: ":MM", the minute of the hour
 * @property {number | null} [weekday] ISO day of week, Monday = 1 … Sunday = 7 (weekly only)
 * @property {string} timezone IANA name, e.g. "Europe/Berlin"
 * @property {number | null} [day_of_month] 1 … 31 (monthly only; a month without it runs on its last day)
 */

/**
 * Which snapshots a plan keeps (the services forget the others after each backup).
 * @typedef {object} Retention
 * @property {"timemachine" | "none" | "custom"} policy
 * @property {number | null} [keep_last]
 * @property {number | null} [keep_hourly]
 * @property {number | null} [keep_daily]
 * @property {number | null} [keep_weekly]
 * @property {number | null} [keep_monthly]
 * @property {number | null} [keep_yearly]
 * @property {string | null} [keep_within] e.g. "36h", "2w", "1y2m"
 */

/**
 * Where a plan's repository is stored.
 * @typedef {object} Location
 * @property {"local" | "s3" | "space"} type
 * @property {string | null} [path] local: absolute folder
 * @property {string | null} [bucket] s3
 * @property {string | null} [prefix] s3: key prefix
 * @property {string | null} [endpoint] s3: endpoint URL of an S3-compatible service
 * @property {string | null} [region] s3
 * @property {string | null} [url] space: "space://host[:port]/repo" (or "space+http://" on loopback)
 */

/**
 * This TimeVault's sign-in to one TimeVault Space (`GET /spaces/status?space=URL`).
 * @typedef {object} SpaceStatus
 * @property {string} space the Space's base URL
 * @property {"pending" | "signed_in" | "signed_out" | "denied" | "expired" | "failed"} status
 * @property {string | null} [account]
 * @property {number | null} [quota] bytes; null: unlimited or unknown
 * @property {number | null} [used] bytes, trash included
 * @property {number | null} [free] bytes left under the quota
 * @property {string | null} [message] why not signed in, or why the numbers are missing
 * @property {string | null} [user_code] while pending
 * @property {string | null} [verification_uri_complete] while pending
 */

/**
 * A started sign-in (`POST /spaces/login`): what to show, and the QR code as SVG.
 * @typedef {object} SpaceLoginReply
 * @property {string} space
 * @property {string} user_code e.g. "WDJB-MJHT"
 * @property {string} verification_uri
 * @property {string} verification_uri_complete
 * @property {number} expires_in seconds
 * @property {number} interval seconds
 * @property {string} qr_svg an SVG document of the QR code for verification_uri_complete
 */

/**
 * A plan as listed (`GET /plans`): settings plus everything its card shows, so the list needs
 * no request per plan.
 * @typedef {object} Plan
 * @property {string} id
 * @property {string} name
 * @property {string[]} sources
 * @property {Schedule} schedule
 * @property {Location} location
 * @property {boolean} paused
 * @property {string | null} created_at
 * @property {string | null} updated_at
 * @property {number} total_size bytes stored for this plan
 * @property {string | null} next_run null while paused
 * @property {string | null} active_job id of the pending or running backup
 * @property {string | null} last_status status of the most recent backup run
 * @property {string | null} last_error why the most recent run failed, when it did
 * @property {string | null} last_snapshot_at when the latest completed snapshot finished
 * @property {number} snapshot_count completed snapshots
 * @property {string[]} excludes gitignore-style patterns of paths left out
 * @property {string[]} exclude_files files with more patterns, read at every backup
 * @property {boolean} exclude_caches folders holding a CACHEDIR.TAG are left out
 * @property {boolean} one_file_system mount points below the sources are left out
 * @property {string | null} pre_command run by the snapshotter before each backup
 * @property {string | null} post_command run after each backup, whatever its outcome
 * @property {boolean} pre_command_optional a failing pre-command does not fail the backup
 * @property {number} hook_timeout seconds a hook may run
 * @property {string[]} notify URLs that get a JSON POST on failures and missed slots
 * @property {boolean} notify_success successes are notified too
 * @property {NotifyDelivery | null} notify_last how the latest notification went
 * @property {boolean} credentials_stored TimeVault keeps an S3 access key for the location
 * @property {Retention} retention
 * @property {boolean} thin_when_full forget the oldest snapshots when the location is too full
 * @property {string | null} last_prune_at when the services last forgot and pruned
 */

/**
 * An S3 access key for a plan's location; sent, never read back.
 * @typedef {object} S3Credentials
 * @property {string} access_key_id
 * @property {string} secret_access_key
 * @property {string | null} [session_token]
 */

/**
 * How the latest notification of a plan went.
 * @typedef {object} NotifyDelivery
 * @property {string} at
 * @property {string} status the status it told of: "completed", "failed", "canceled" or "missed"
 * @property {boolean} ok every URL accepted it
 * @property {number} attempts tries of the URL that needed the most
 * @property {string | null} job_id
 * @property {string | null} target the URL that failed, without path or query
 * @property {number | null} http_status
 * @property {string | null} error
 */

/**
 * What a plan page adds to a listed plan.
 * @typedef {object} PlanDetailFields
 * @property {SnapshotInfo[]} snapshots backup runs, oldest first
 */

/**
 * A plan with its backup log (`GET /plans/{id}`).
 * @typedef {Plan & PlanDetailFields} PlanDetail
 */

/**
 * One backup run: a snapshot, or a failed or canceled attempt.
 * @typedef {object} SnapshotInfo
 * @property {string} id snapshot id (the job id for a run that did not complete)
 * @property {string | null} started_at
 * @property {string | null} finished_at
 * @property {number} size logical bytes of the files in the snapshot
 * @property {number} added_size bytes newly stored by it
 * @property {number} files
 * @property {"completed" | "failed" | "canceled"} status
 * @property {string | null} error
 * @property {string | null} job_id
 * @property {string | null} plan_id
 * @property {boolean} [endorsed] vouched for with the password (false: written since it was last used)
 * @property {string[]} [kept_by] the retention rules that keep it, as of the last prune
 */

/**
 * @typedef {"pending" | "running" | "completed" | "failed" | "canceled"} JobStatus
 */

/**
 * What a prune did (`Job.prune`).
 * @typedef {object} PruneSummary
 * @property {string[]} forgotten ids of the snapshots forgotten
 * @property {Record<string, string[]>} kept_by snapshot id → the rules that keep it
 * @property {string} retention the rules applied, e.g. "timemachine", "keep-last 2"
 * @property {number} packs_deleted
 * @property {number} packs_repacked
 * @property {number} bytes_freed
 * @property {number} blobs_removed
 * @property {number} packs_pending marked, deleted once running backups end
 * @property {number} bytes_pending
 * @property {string[]} notes
 * @property {string[]} present
 * @property {string | null} listed_at
 */

/**
 * A backup, restore or prune run (`GET /jobs/{id}`).
 * @typedef {object} Job
 * @property {string} id
 * @property {string} plan_id
 * @property {"backup" | "restore" | "prune"} kind
 * @property {JobStatus} status
 * @property {string} created_at
 * @property {string | null} started_at
 * @property {string | null} finished_at
 * @property {"manual" | "schedule" | "backup"} trigger
 * @property {number} files_done
 * @property {number} files_total 0 while unknown
 * @property {number} bytes_done
 * @property {number} bytes_total 0 while unknown
 * @property {number} rate bytes per second, recently
 * @property {string | null} error
 * @property {string | null} snapshot_id
 * @property {string | null} target restore: the target folder
 * @property {string[]} includes restore: the chosen paths
 * @property {string | null} worker
 * @property {number} attempt
 * @property {string | null} slot
 * @property {number} added_size
 * @property {string[]} warnings what a completed job could not do (a restore's lost files)
 * @property {boolean} original_place restore: the items went back where they were backed up from
 * @property {PruneSummary | null} [prune] prune (or a backup that thinned a full location): what was removed
 */

/**
 * Live progress of a running job (event `progress`).
 * @typedef {object} JobProgress
 * @property {string} job_id
 * @property {string} worker
 * @property {string} ts
 * @property {number} files_done
 * @property {number} files_total
 * @property {number} bytes_done
 * @property {number} bytes_total
 * @property {number} rate
 * @property {number} added_size
 */

/**
 * A job's status changed (event `job`).
 * @typedef {object} JobEvent
 * @property {Job} job
 */

/**
 * An entry of a plan's event log (event `plan`).
 * @typedef {object} PlanEvent
 * @property {string} plan_id
 * @property {string} ts
 * @property {string} kind e.g. "created", "updated", "paused", "deleted", "job"
 * @property {string} message
 * @property {string | null} job_id
 */

/**
 * `POST /plans`.
 * @typedef {object} PlanCreate
 * @property {string} name
 * @property {string[]} sources
 * @property {Schedule} schedule
 * @property {Location} location
 * @property {string} password
 * @property {string} password_confirm
 * @property {string[]} [excludes] gitignore-style patterns of paths left out
 * @property {string[]} [exclude_files] files with more patterns, read at every backup
 * @property {boolean} [exclude_caches] folders holding a CACHEDIR.TAG are left out
 * @property {boolean} [one_file_system] mount points below the sources are left out
 * @property {string | null} [pre_command] run by the snapshotter before each backup
 * @property {string | null} [post_command] run after each backup, whatever its outcome
 * @property {boolean} [pre_command_optional] a failing pre-command does not fail the backup
 * @property {number} [hook_timeout] seconds a hook may run
 * @property {string[]} [notify] URLs that get a JSON POST on failures and missed slots
 * @property {boolean} [notify_success] successes are notified too
 * @property {S3Credentials | null} [credentials] for an S3 location
 * @property {Retention} [retention] default: timemachine
 * @property {boolean} [thin_when_full]
 */

/**
 * `PATCH /plans/{id}`: absent fields keep their value.
 * @typedef {object} PlanUpdate
 * @property {string} [name] only the current one is accepted
 * @property {string[]} [sources]
 * @property {Partial<Schedule>} [schedule]
 * @property {Location} [location] only the current one is accepted
 * @property {string[]} [excludes]
 * @property {string[]} [exclude_files]
 * @property {boolean} [exclude_caches]
 * @property {boolean} [one_file_system]
 * @property {string} [pre_command] "" removes it
 * @property {string} [post_command] "" removes it
 * @property {boolean} [pre_command_optional]
 * @property {number} [hook_timeout]
 * @property {string[]} [notify]
 * @property {boolean} [notify_success]
 * @property {S3Credentials} [credentials] replaces the kept S3 access key
 * @property {Retention} [retention] replaces the old one whole
 * @property {boolean} [thin_when_full]
 */

/**
 * `DELETE /plans/{id}`.
 * @typedef {object} PlanDeleted
 * @property {string} plan_id
 * @property {number} deleted_objects
 */

/**
 * `POST /plans/{id}/snapshots/{snapshot_id}/restore`.
 * @typedef {object} RestoreBody
 * @property {string} target
 * @property {string} password
 * @property {string[]} includes
 * @property {boolean} [allow_unverified] restore even a snapshot that contradicts the endorsed history
 * @property {boolean} [keep_setid] keep set-user-ID and set-group-ID bits (dropped by default)
 */

/**
 * `POST /plans/{id}/unlock`.
 * @typedef {object} UnlockBody
 * @property {string} password
 * @property {number} [idle_timeout] seconds, 60..3600
 */

/**
 * An open browsing session; its id goes in the `X-Timevault-Session` header.
 * @typedef {object} BrowseSession
 * @property {string} session
 * @property {string} plan_id
 * @property {string} expires_at
 * @property {number} idle_timeout
 */

/**
 * One entry of a folder in a snapshot.
 * @typedef {object} BrowseEntry
 * @property {string} name
 * @property {string} path absolute, as backed up
 * @property {"file" | "dir" | "symlink"} type
 * @property {number} size
 * @property {number} mode permission bits
 * @property {string} mtime
 * @property {string | null} target a symlink's target
 */

/**
 * `GET /plans/{id}/snapshots/{snapshot_id}/ls?path=`.
 * @typedef {object} BrowseListing
 * @property {string} snapshot
 * @property {string} path
 * @property {BrowseEntry[]} entries
 * @property {number} total
 * @property {number} offset
 */

/**
 * One path that differs between two snapshots.
 * @typedef {object} DiffChange
 * @property {string} path
 * @property {"file" | "dir" | "symlink"} type
 * @property {number} size after (before, for removed paths)
 * @property {number} old_size
 * @property {"added" | "removed" | "content" | "metadata"} what
 */

/**
 * `GET /plans/{id}/diff?from=&to=`.
 * @typedef {object} SnapshotDiff
 * @property {string} from_snapshot
 * @property {string} to_snapshot
 * @property {DiffChange[]} added
 * @property {DiffChange[]} removed
 * @property {DiffChange[]} changed
 * @property {number} added_size
 * @property {number} removed_size
 */

/**
 * A snapshot holding a found path.
 * @typedef {object} FindVersion
 * @property {string} snapshot
 * @property {string} time
 * @property {number} size
 * @property {string} mtime
 */

/**
 * @typedef {object} FindMatch
 * @property {string} path
 * @property {"file" | "dir" | "symlink"} type
 * @property {FindVersion[]} versions
 */

/**
 * `GET /plans/{id}/find?pattern=`.
 * @typedef {object} FindResult
 * @property {string} pattern
 * @property {FindMatch[]} matches
 * @property {boolean} truncated
 */

/**
 * `POST /plans/{id}/snapshots/{snapshot_id}/restore-items` (with a session).
 * @typedef {object} RestoreItemsBody
 * @property {string[]} paths
 * @property {string | null} [target] absent: back to the original place
 */

/**
 * A folder the server may back up.
 * @typedef {object} FolderEntry
 * @property {string} name
 * @property {string} path absolute
 */

/**
 * `GET /folders?path=`: the folders below `path`, or the roots when `path` is null.
 * @typedef {object} FolderListing
 * @property {string | null} path
 * @property {string | null} parent null at a root (and for the roots)
 * @property {string[]} roots the folders the server may back up
 * @property {FolderEntry[]} folders by name
 * @property {boolean} truncated more folders than were sent
 */

/**
 * The body of every error reply: `{"error": ErrorInfo}`.
 * @typedef {object} ErrorInfo
 * @property {string} code
 * @property {string} message
 * @property {string | null} [field] the input at fault, e.g. "schedule.time"
 */

export {};
