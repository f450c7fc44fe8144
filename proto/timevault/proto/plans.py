"""Backup plans: the settings a user creates, their validation, and what the catalog reports.

All validation lives here so the catalog, the gateway and the CLI give the same answers.
Each `validate_*` returns a normalised value or raises `ServiceError("invalid", ..., field)`.
The JSON field names are the HTTP API's (the gateway serves these Structs as they are).
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from timevault.proto.errors import ServiceError, invalid

if TYPE_CHECKING:
    from timevault.core.retention import Rules

NAME_MAX = 64
PASSWORD_MIN = 4
HOOK_TIMEOUT = 600
HOOK_TIMEOUT_MAX = 24 * 3600
COMMAND_MAX = 4096
PATTERNS_MAX = 1000
NOTIFY_MAX = 10
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
TIMEZONE_MAX = 64  # the longest IANA name has 32 characters
PATH_MAX = 4095  # bytes, as Linux counts them
PATH_PART_MAX = 255  # bytes per name in a path
# A repository never goes into these: pseudo file systems and the operating system's own trees.
SYSTEM_TREES = ("/proc", "/sys", "/dev", "/run", "/boot", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64",
                "/libx32", "/usr", "/snap")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MINUTE = re.compile(r"^:?([0-5]\d)$")


Frequency = Literal["hourly", "daily", "weekly", "monthly"]


class Schedule(msgspec.Struct, kw_only=True):
    """When a plan runs: local wall-clock time in the plan's time zone."""

    frequency: Frequency
    """``hourly``, ``daily``, ``weekly`` or ``monthly``."""
    time: str
    """Local start time ``HH:MM`` (24 h); for ``hourly`` the minute of the hour, ``:MM``."""
    weekday: int | None = None
    """ISO day of week, Monday=1 .. Sunday=7; required for weekly, absent otherwise."""
    timezone: str = "UTC"
    """IANA time zone name, e.g. ``Europe/Berlin``."""
    day_of_month: int | None = None
    """Day of the month 1..31, for monthly (a month without that day runs on its last day)."""


class ScheduleUpdate(msgspec.Struct, kw_only=True):
    """A partial schedule change; absent fields keep their value."""

    frequency: Frequency | None = None
    """New frequency."""
    time: str | None = None
    """New ``HH:MM`` (``:MM`` for hourly)."""
    weekday: int | None = None
    """New ISO weekday (1..7)."""
    timezone: str | None = None
    """New IANA time zone."""
    day_of_month: int | None = None
    """New day of the month (1..31), for monthly."""


class Retention(msgspec.Struct, kw_only=True):
    """Which snapshots a plan keeps; the services forget the others after each backup.

    ``timemachine`` keeps every snapshot of the last 24 hours, one a day for the past month and
    one a week before that; ``none`` keeps everything. Any ``keep_*`` rule makes the policy
    ``custom`` (explicit rules replace the named policy): a snapshot is kept if any rule keeps
    it, like restic's ``--keep-*``. Buckets (hours, days, …) are in the plan's time zone.
    """

    policy: Literal["timemachine", "none", "custom"] = "timemachine"
    """The named policy, or ``custom`` for the ``keep_*`` rules."""
    keep_last: int | None = None
    """Keep the newest N snapshots (-1: all)."""
    keep_hourly: int | None = None
    """Keep the newest snapshot of each of the last N hours that have one (-1: every hour)."""
    keep_daily: int | None = None
    """The same per day."""
    keep_weekly: int | None = None
    """The same per ISO week."""
    keep_monthly: int | None = None
    """The same per month."""
    keep_yearly: int | None = None
    """The same per year."""
    keep_within: str | None = None
    """Keep every snapshot within this duration of the newest one: ``1y2m3w4d5h`` (any part)."""


class Location(msgspec.Struct, kw_only=True):
    """Where the plan's repository is stored."""

    type: Literal["local", "s3", "space"]
    """``local`` (a folder on this machine's disks), ``s3`` (AWS S3 or compatible) or ``space``
    (a TimeVault Space this TimeVault is signed in to)."""
    path: str | None = None
    """Absolute folder path, for ``local``."""
    bucket: str | None = None
    """Bucket name, for ``s3``."""
    prefix: str | None = None
    """Key prefix inside the bucket, for ``s3``."""
    endpoint: str | None = None
    """Endpoint URL for S3-compatible services (absent for AWS)."""
    region: str | None = None
    """Region, for ``s3``."""
    url: str | None = None
    """The repository on a Space, for ``space``: ``space://host[:port]/repo`` (HTTPS) or
    ``space+http://127.0.0.1:port/repo`` (loopback)."""


class S3Credentials(msgspec.Struct, kw_only=True):
    """An S3 access key for a plan's location, kept by the catalog like the write keys.

    Write-only over the API: no reply carries it back (`Plan.credentials_stored` says it is there);
    only the services that open the location get it (`PlanSecrets`).
    """

    access_key_id: str
    """The access key id."""
    secret_access_key: str
    """The secret access key."""
    session_token: str | None = None
    """A session token, for temporary credentials."""


class PlanCreate(msgspec.Struct, kw_only=True):
    """Request to create a plan (subject ``tv.catalog.plan.create``, HTTP ``POST /api/v1/plans``)."""

    name: str
    """1..64 visible characters, unique, never changed afterwards."""
    sources: list[str]
    """Absolute paths of the folders and files to back up."""
    schedule: Schedule
    """When to run."""
    location: Location
    """Where to store the repository."""
    password: str
    """Encryption password, at least 4 characters; used once to create the repository, never stored."""
    password_confirm: str
    """Must equal `password` (the user typed it twice)."""
    excludes: list[str] = msgspec.field(default_factory=list)
    """gitignore-style patterns of paths to leave out (``*.tmp``, ``build/``, ``/cache``)."""
    exclude_files: list[str] = msgspec.field(default_factory=list)
    """Absolute paths of files with more patterns, one per line, read at every backup."""
    exclude_caches: bool = True
    """Leave out the contents of folders holding a valid ``CACHEDIR.TAG``."""
    one_file_system: bool = False
    """Stay on each source's file system (leave out mount points)."""
    pre_command: str | None = None
    """Shell command run by the snapshotter before each backup (e.g. a database dump)."""
    post_command: str | None = None
    """Shell command run after each backup, whatever its outcome (``TIMEVAULT_STATUS`` says it)."""
    pre_command_optional: bool = False
    """When true, a failing pre-command is logged and the backup goes on; else the backup fails."""
    hook_timeout: int = HOOK_TIMEOUT
    """Seconds a hook may run before it is stopped (and counts as failed)."""
    notify: list[str] = msgspec.field(default_factory=list)
    """http(s) URLs that receive a JSON POST when a backup or restore fails or a scheduled slot is missed."""
    notify_success: bool = False
    """Also notify when a backup or restore completes."""
    credentials: S3Credentials | None = None
    """For an S3 location: the access key to use (else the AWS chain of the machine running TimeVault)."""
    retention: Retention | None = None
    """Which snapshots to keep; default ``{"policy": "timemachine"}``."""
    thin_when_full: bool = False
    """When a local location has too little free space for a backup, forget the oldest
    snapshots (never the newest) and prune until it has, instead of failing the backup."""


class PlanUpdate(msgspec.Struct, kw_only=True):
    """A partial plan change (HTTP ``PATCH``). The name and location cannot change."""

    name: str | None = None
    """Only accepted when equal to the current name."""
    sources: list[str] | None = None
    """New list of absolute source paths."""
    schedule: ScheduleUpdate | None = None
    """Schedule fields to change."""
    location: Location | None = None
    """Only accepted when equal to the current location."""
    excludes: list[str] | None = None
    """New exclude patterns (``[]`` removes them all)."""
    exclude_files: list[str] | None = None
    """New exclude files."""
    exclude_caches: bool | None = None
    """Leave out folders holding a CACHEDIR.TAG."""
    one_file_system: bool | None = None
    """Stay on each source's file system."""
    pre_command: str | None = None
    """New pre-command (``""`` removes it)."""
    post_command: str | None = None
    """New post-command (``""`` removes it)."""
    pre_command_optional: bool | None = None
    """Whether a failing pre-command lets the backup go on."""
    hook_timeout: int | None = None
    """Seconds a hook may run."""
    notify: list[str] | None = None
    """New notification URLs (``[]`` removes them)."""
    notify_success: bool | None = None
    """Also notify on success."""
    credentials: S3Credentials | None = None
    """A new S3 access key for the location (replaces the one kept)."""
    retention: Retention | None = None
    """New retention (replaces the old one whole)."""
    thin_when_full: bool | None = None
    """Thin the oldest snapshots when the location is full (see `PlanCreate`)."""


class PlanUpdateRequest(msgspec.Struct, kw_only=True):
    """Subject ``tv.catalog.plan.update``: `update` applied to `plan`."""

    plan: str
    """Plan id or name."""
    update: PlanUpdate
    """The change."""


class PlanRef(msgspec.Struct, kw_only=True):
    """Names one plan (by id, or by name)."""

    plan: str
    """Plan id (``p_...``) or plan name."""


class PlanListRequest(msgspec.Struct, kw_only=True):
    """Subject ``tv.catalog.plan.list``."""


class SnapshotInfo(msgspec.Struct, kw_only=True):
    """One backup run as shown in the plan's log: a snapshot, or a failed/canceled attempt."""

    id: str
    """Repository snapshot id for completed backups; the job id for failed or canceled ones."""
    started_at: datetime | None = None
    """When the backup started (UTC)."""
    finished_at: datetime | None = None
    """When it ended (UTC)."""
    size: int = 0
    """Logical size in bytes of the files in the snapshot."""
    added_size: int = 0
    """Bytes newly stored by this snapshot (after dedup and compression)."""
    files: int = 0
    """Number of files in the snapshot."""
    status: Literal["completed", "failed", "canceled"] = "completed"
    """Outcome of the run."""
    error: str | None = None
    """Why it failed, when it did."""
    job_id: str | None = None
    """The job that produced it."""
    plan_id: str | None = None
    """The plan it belongs to."""
    endorsed: bool = False
    """True when the password holder has vouched for this snapshot (an endorsement signed with a
    key only the password opens, made whenever the password was used); False for snapshots the
    services wrote since the password was last used."""
    kept_by: list[str] = msgspec.field(default_factory=list)
    """The retention rules that keep this snapshot, as of the plan's last prune (e.g.
    ``["last", "daily"]``); empty until a prune judged it."""


class NotifyDelivery(msgspec.Struct, kw_only=True):
    """How the latest notification of a plan went (shown on the plan page)."""

    at: datetime
    """When it was delivered, or given up (UTC)."""
    status: str
    """The status it told of: ``completed``, ``failed``, ``canceled`` or ``missed``."""
    ok: bool
    """True when every URL accepted it (a 2xx answer)."""
    attempts: int = 1
    """Tries of the URL that needed the most."""
    job_id: str | None = None
    """The job it was about, if any."""
    target: str | None = None
    """The URL that failed (or the last one), without its path or query."""
    http_status: int | None = None
    """The HTTP status of the last answer, when there was one."""
    error: str | None = None
    """Why it failed."""


class Plan(msgspec.Struct, kw_only=True):
    """A plan's settings and state, as listed (``GET /api/v1/plans``)."""

    id: str
    """Stable id, ``p_`` + hex."""
    name: str
    """The plan's name."""
    sources: list[str]
    """Absolute source paths."""
    schedule: Schedule
    """When it runs."""
    location: Location
    """Where it stores."""
    paused: bool = False
    """True while the schedule is paused (manual backups still work)."""
    created_at: datetime | None = None
    """When the plan was created (UTC)."""
    updated_at: datetime | None = None
    """Last settings change (UTC)."""
    total_size: int = 0
    """Bytes stored in the location for this plan (sum of added sizes)."""
    next_run: datetime | None = None
    """Next scheduled run (UTC), absent while paused."""
    active_job: str | None = None
    """Id of the plan's pending or running backup job, if any."""
    last_status: str | None = None
    """Status of the most recent backup, if any."""
    last_error: str | None = None
    """Why the most recent backup failed, when it did."""
    last_snapshot_at: datetime | None = None
    """When the most recent completed snapshot finished (UTC), if any."""
    snapshot_count: int = 0
    """How many completed snapshots the plan has."""
    excludes: list[str] = msgspec.field(default_factory=list)
    """gitignore-style patterns of paths left out."""
    exclude_files: list[str] = msgspec.field(default_factory=list)
    """Files with more patterns, read at every backup."""
    exclude_caches: bool = True
    """Folders holding a valid CACHEDIR.TAG are left out (but for the tag)."""
    one_file_system: bool = False
    """Mount points below the sources are left out."""
    pre_command: str | None = None
    """Run before each backup."""
    post_command: str | None = None
    """Run after each backup."""
    pre_command_optional: bool = False
    """A failing pre-command does not fail the backup."""
    hook_timeout: int = HOOK_TIMEOUT
    """Seconds a hook may run."""
    notify: list[str] = msgspec.field(default_factory=list)
    """URLs notified of failures and missed slots (and successes with `notify_success`)."""
    notify_success: bool = False
    """Successes are notified too."""
    notify_last: NotifyDelivery | None = None
    """The outcome of the latest notification of this plan."""
    credentials_stored: bool = False
    """True when TimeVault keeps an S3 access key for the location (the key itself is never sent)."""
    retention: Retention = msgspec.field(default_factory=Retention)
    """Which snapshots the plan keeps."""
    thin_when_full: bool = False
    """Whether a full location is made room on by forgetting the oldest snapshots."""
    last_prune_at: datetime | None = None
    """When the services last forgot and pruned for this plan (UTC), if ever."""


class PlanDetail(Plan, kw_only=True):
    """A plan with its backup log (``GET /api/v1/plans/{plan_id}``)."""

    snapshots: list[SnapshotInfo] = msgspec.field(default_factory=list)
    """Backup runs, oldest first."""


class PlanList(msgspec.Struct, kw_only=True):
    """Reply to ``tv.catalog.plan.list``."""

    plans: list[Plan]
    """All plans, by name."""


class PlanDeleted(msgspec.Struct, kw_only=True):
    """Reply to ``tv.catalog.plan.delete``."""

    plan_id: str
    """The deleted plan."""
    deleted_objects: int = 0
    """How many stored objects were removed from the location."""


class PlanAttach(msgspec.Struct, kw_only=True):
    """Attach an existing repository (a new machine): rebuilds the catalog's view from the location."""

    name: str
    """Name for the plan on this machine."""
    location: Location
    """Where the existing repository is."""
    password: str
    """The repository password; used once, never stored."""
    schedule: Schedule
    """Schedule for future backups."""
    sources: list[str] = msgspec.field(default_factory=list)
    """Sources for future backups; taken from the latest snapshot when empty."""
    credentials: S3Credentials | None = None
    """For an S3 location: the access key to use."""
    retention: Retention | None = None
    """Which snapshots to keep; default ``{"policy": "timemachine"}``."""
    thin_when_full: bool = False
    """See `PlanCreate`."""


class PlanEvent(msgspec.Struct, kw_only=True):
    """An entry of a plan's event log; also published on ``tv.events.plan.<plan_id>``."""

    plan_id: str
    """The plan."""
    ts: datetime
    """When (UTC)."""
    kind: str
    """e.g. ``created``, ``updated``, ``paused``, ``resumed``, ``deleted``, ``job``, ``slot_skipped``."""
    message: str = ""
    """Human-readable detail."""
    job_id: str | None = None
    """Related job, if any."""


class PlanEventsRequest(msgspec.Struct, kw_only=True):
    """Subject ``tv.catalog.plan.events``."""

    plan: str
    """Plan id or name."""
    limit: int = 100
    """Newest `limit` events."""


class PlanEventList(msgspec.Struct, kw_only=True):
    """Reply to ``tv.catalog.plan.events``, oldest first."""

    events: list[PlanEvent]
    """The events."""


class PlanSecrets(msgspec.Struct, kw_only=True):
    """Internal reply to ``tv.catalog.plan.secrets``: what a worker needs to write a backup.

    Secret: restrict this subject to the backup services with NATS permissions; never log it.
    """

    plan_id: str
    """The plan."""
    location: str
    """Location string for `timevault.core.storage.open_location`."""
    write_keys: bytes
    """The repository's write-tier keys (base64 in JSON)."""
    credentials: S3Credentials | None = None
    """The S3 access key kept for the location, if any."""
    space_token: str | None = None
    """For a location on a TimeVault Space: the device token this TimeVault signed in with."""


class SnapshotListRequest(msgspec.Struct, kw_only=True):
    """Subject ``tv.catalog.snapshot.list``."""

    plan: str
    """Plan id or name."""


class SnapshotList(msgspec.Struct, kw_only=True):
    """Reply to ``tv.catalog.snapshot.list``, oldest first."""

    snapshots: list[SnapshotInfo]
    """Backup runs."""


class SnapshotRef(msgspec.Struct, kw_only=True):
    """Subject ``tv.catalog.snapshot.get``: a snapshot id, unique prefix, or ``latest``."""

    plan: str
    """Plan id or name."""
    snapshot: str
    """Snapshot id, unique id prefix, or ``latest`` (latest completed)."""


# --- validation ------------------------------------------------------------------------


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise invalid("name must contain at least one visible character", "name")
    if len(name) > NAME_MAX:
        raise invalid(f"name must be at most {NAME_MAX} characters", "name")
    if name != name.strip():
        raise invalid("name must not start or end with spaces", "name")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise invalid("name must not contain control characters", "name")
    return name


def validate_password(password: str, confirm: str | None) -> str:
    if len(password) < PASSWORD_MIN:
        raise invalid(f"password must be at least {PASSWORD_MIN} characters", "password")
    if confirm is not None and password != confirm:
        raise invalid("passwords do not match", "password_confirm")
    return password


# Other names of UTC: one name everywhere (browsers say "UTC", Debian's /etc/localtime "Etc/UTC").
UTC_ALIASES = frozenset({"Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu",
                         "Etc/GMT", "GMT", "Etc/GMT+0", "Etc/GMT-0", "Etc/GMT0", "GMT0", "GMT+0", "GMT-0",
                         "Etc/Greenwich", "Greenwich"})


def validate_timezone(tz: str) -> str:
    """An IANA time zone name; the many names of UTC become ``UTC``."""
    shown = tz[:TIMEZONE_MAX] + ("..." if isinstance(tz, str) and len(tz) > TIMEZONE_MAX else "")
    try:
        if not isinstance(tz, str) or not tz or len(tz) > TIMEZONE_MAX or tz.startswith("/") or ".." in tz:
            raise ValueError
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError) as exc:  # OSError: e.g. a name too long
        raise invalid(f"unknown time zone {shown!r}", "schedule.timezone") from exc
    return "UTC" if tz in UTC_ALIASES else tz


def parse_weekday(day: str) -> int:
    """``monday``..``sunday`` (or a unique prefix like ``mon``, or 1..7) to ISO 1..7."""
    text = day.strip().lower()
    if text.isdigit() and 1 <= int(text) <= 7:
        return int(text)
    matches = [i for i, name in enumerate(WEEKDAYS, 1) if len(text) >= 3 and name.startswith(text)]
    if len(matches) != 1:
        raise invalid(f"unknown day {day!r}; use monday..sunday", "schedule.weekday")
    return matches[0]


def validate_time(value: str) -> str:
    if not isinstance(value, str) or not _TIME.match(value):
        raise invalid(f"time must be HH:MM (00:00..23:59), got {value!r}", "schedule.time")
    return value


def validate_minute(value: str) -> str:
    """An hourly schedule's ``:MM`` (``MM`` and ``HH:MM`` are read as their minute)."""
    text = value.strip() if isinstance(value, str) else ""
    match = _MINUTE.match(text) or _TIME.match(text)
    if not match:
        raise invalid(f"an hourly schedule runs at a minute of the hour, :MM (:00..:59), got {value!r}",
                      "schedule.time")
    return f":{match.group(match.lastindex or 1)}"


def validate_schedule(schedule: Schedule) -> Schedule:
    timezone = validate_timezone(schedule.timezone)
    if timezone != schedule.timezone:
        schedule = msgspec.structs.replace(schedule, timezone=timezone)
    if schedule.weekday is not None and not 1 <= schedule.weekday <= 7:
        raise invalid("weekday must be 1 (Monday) .. 7 (Sunday)", "schedule.weekday")
    if schedule.day_of_month is not None and not 1 <= schedule.day_of_month <= 31:
        raise invalid("day_of_month must be 1..31 (a month without that day runs on its last day)",
                      "schedule.day_of_month")
    if schedule.frequency == "hourly":
        return msgspec.structs.replace(schedule, time=validate_minute(schedule.time), weekday=None,
                                       day_of_month=None)
    validate_time(schedule.time)
    if schedule.frequency == "weekly":
        if schedule.weekday is None:
            raise invalid("a weekly schedule needs a day of week", "schedule.weekday")
        if not 1 <= schedule.weekday <= 7:
            raise invalid("weekday must be 1 (Monday) .. 7 (Sunday)", "schedule.weekday")
        return msgspec.structs.replace(schedule, day_of_month=None)
    if schedule.frequency == "monthly":
        if schedule.day_of_month is None:
            raise invalid("a monthly schedule needs a day of the month (1..31)", "schedule.day_of_month")
        if not 1 <= schedule.day_of_month <= 31:
            raise invalid("day_of_month must be 1..31 (a month without that day runs on its last day)",
                          "schedule.day_of_month")
        return msgspec.structs.replace(schedule, weekday=None)
    if schedule.frequency == "daily":
        return msgspec.structs.replace(schedule, weekday=None, day_of_month=None)
    raise invalid("frequency must be hourly, daily, weekly or monthly", "schedule.frequency")


def apply_schedule_update(current: Schedule, update: ScheduleUpdate) -> Schedule:
    frequency = update.frequency or current.frequency
    time = update.time if update.time is not None else current.time
    if update.time is None and current.frequency == "hourly" and frequency != "hourly":
        raise invalid(f"a {frequency} schedule needs a start time HH:MM", "schedule.time")
    merged = Schedule(
        frequency=frequency,
        time=time,
        weekday=update.weekday if update.weekday is not None else current.weekday,
        timezone=update.timezone if update.timezone is not None else current.timezone,
        day_of_month=update.day_of_month if update.day_of_month is not None else current.day_of_month,
    )
    return validate_schedule(merged)


def path_problem(path: object) -> str | None:
    """Why `path` cannot be an absolute path on this machine (type, NUL and control characters,
    length), or None."""
    if not isinstance(path, str):
        return "must be a string"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return "must not contain NUL or control characters"
    if not os.path.isabs(path):
        return "must be an absolute path"
    try:
        encoded = os.fsencode(path)
    except UnicodeEncodeError:
        return "is not valid text"
    if len(encoded) > PATH_MAX:
        return f"is longer than {PATH_MAX} bytes"
    if any(len(part) > PATH_PART_MAX for part in encoded.split(b"/")):
        return f"has a name longer than {PATH_PART_MAX} bytes"
    return None


def _shown(path: object) -> str:
    text = repr(path)
    return text if len(text) <= 80 else text[:77] + "..."


_KEEP_COUNTS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")


def validate_retention(retention: Retention | None) -> Retention:
    """Normalise: no retention is ``timemachine``; any ``keep_*`` rule makes the policy ``custom``."""
    from timevault.core.errors import RetentionError
    from timevault.core.retention import UNLIMITED, Duration

    if retention is None:
        return Retention()
    counts = {name: getattr(retention, name) for name in _KEEP_COUNTS}
    for name, value in counts.items():
        if value is not None and (not isinstance(value, int) or value == 0 or value < UNLIMITED):
            raise invalid(f"{name} must be a positive number, or -1 for no limit", f"retention.{name}")
    within = retention.keep_within
    if within is not None:
        try:
            within = str(Duration.parse(within))
        except RetentionError as exc:
            raise invalid(str(exc), "retention.keep_within") from exc
    if any(value is not None for value in counts.values()) or within is not None:
        return msgspec.structs.replace(retention, policy="custom", keep_within=within)
    if retention.policy == "custom":
        raise invalid("a custom retention needs at least one keep_* rule", "retention.policy")
    if retention.policy not in ("timemachine", "none"):
        raise invalid("retention policy must be timemachine, none or custom", "retention.policy")
    return Retention(policy=retention.policy)


def describe_retention(retention: Retention) -> str:
    """The retention as a user writes it: ``timemachine``, ``none`` or ``keep-last 2, keep-daily 7``."""
    if retention.policy != "custom":
        return retention.policy
    parts = [f"{name.replace('_', '-')} {'all' if value == -1 else value}"
             for name in _KEEP_COUNTS if (value := getattr(retention, name)) is not None]
    if retention.keep_within:
        parts.append(f"keep-within {retention.keep_within}")
    return ", ".join(parts)


def retention_rules(retention: Retention) -> Rules:
    """The core's rules for a (validated) retention."""
    from timevault.core.retention import TIMEMACHINE, Duration, Rules

    if retention.policy == "timemachine":
        return TIMEMACHINE
    if retention.policy == "none":
        return Rules()
    return Rules(
        last=retention.keep_last, hourly=retention.keep_hourly, daily=retention.keep_daily,
        weekly=retention.keep_weekly, monthly=retention.keep_monthly, yearly=retention.keep_yearly,
        within=Duration.parse(retention.keep_within) if retention.keep_within else None,
    )


def validate_sources(sources: list[str]) -> list[str]:
    if not sources:
        raise invalid("at least one source path is needed", "sources")
    result: list[str] = []
    for src in sources:
        problem = path_problem(src)
        if problem is not None:
            raise invalid(f"source {_shown(src)} {problem}", "sources")
        norm = os.path.normpath(src)
        if norm not in result:
            result.append(norm)
    return result


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


_S3_FIELDS = ("bucket", "prefix", "endpoint", "region")


def validate_location(location: Location, sources: list[str], *, blame: str = "location.path") -> Location:
    """A normalised location. A local folder may neither lie inside a source (each backup would
    back up the last one) nor contain one (deleting the plan would then reach the source); both
    are refused naming `blame` (``sources`` when the sources are what changed). Paths are compared
    as given and with symlinks resolved."""
    if location.type == "local":
        for name in _S3_FIELDS:
            if getattr(location, name) is not None:
                raise invalid(f"a local location has no {name} (that is for s3)", f"location.{name}")
        if not location.path:
            raise invalid("a local location needs an absolute folder path", "location.path")
        problem = path_problem(location.path)
        if problem is not None:
            raise invalid(f"the location path {problem}", "location.path")
        path = os.path.normpath(location.path)
        _check_local_folder(path)
        for src in sources:
            for where, source in ((path, src), (os.path.realpath(path), os.path.realpath(src))):
                if _inside(where, source):
                    raise invalid(f"the location {path} must not be inside the source {src}", blame)
                if _inside(source, where):
                    raise invalid(f"the location {path} must not contain the source {src}", blame)
        return Location(type="local", path=path)
    if location.type == "s3":
        if location.path is not None:
            raise invalid("an s3 location has no path (use prefix)", "location.path")
        if not location.bucket:
            raise invalid("an s3 location needs a bucket", "location.bucket")
        if not _BUCKET.match(location.bucket) or ".." in location.bucket:
            raise invalid("an s3 bucket name is 3..63 lowercase letters, digits, dots and hyphens",
                          "location.bucket")
        if location.prefix is not None and (any(ord(c) < 32 for c in location.prefix) or len(location.prefix) > 512):
            raise invalid("the s3 prefix must be at most 512 characters, without control characters",
                          "location.prefix")
        if location.endpoint is not None and not re.match(r"^https?://[^\s/?#]+(/[^\s]*)?$", location.endpoint):
            raise invalid("the s3 endpoint must be an http:// or https:// URL", "location.endpoint")
        if location.region is not None and not re.match(r"^[a-z0-9-]{1,32}$", location.region):
            raise invalid("the s3 region is a name such as eu-central-1", "location.region")
        return location
    if location.type == "space":
        from timevault.core.storage.base import LocationError
        from timevault.core.storage.space_url import parse_space_location

        try:
            parse_space_location(location.url or "")
        except LocationError as exc:
            raise invalid(str(exc), "location.url") from exc
        return Location(type="space", url=location.url)
    raise invalid("location type must be local, s3 or space", "location.type")


def _check_local_folder(path: str) -> None:
    """Refuse system trees (also through symlinks) and paths that exist but are no folder."""
    for candidate in {path, os.path.realpath(path)}:
        if candidate == "/" or any(_inside(candidate, tree) for tree in SYSTEM_TREES):
            raise invalid(f"refusing to store backups in the system folder {candidate}", "location.path")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise invalid(f"{path} exists and is not a folder", "location.path")


def validate_includes(includes: list[str]) -> list[str]:
    """Paths to restore: each names a path inside the snapshot, never a way out of it."""
    for include in includes:
        if not isinstance(include, str) or not include.strip():
            raise invalid("paths to restore must be non-empty", "includes")
        if any(ord(c) < 32 or ord(c) == 127 for c in include):
            raise invalid(f"the path to restore {_shown(include)} contains control characters", "includes")
        if len(os.fsencode(include)) > PATH_MAX:
            raise invalid(f"a path to restore is longer than {PATH_MAX} bytes", "includes")
        if ".." in include.split("/"):
            raise invalid(f"the path to restore {_shown(include)} contains '..'", "includes")
    return includes


def validate_excludes(patterns: list[str]) -> list[str]:
    """gitignore-style patterns: each compiles, no NUL or line break, at most `PATTERNS_MAX`."""
    import pathspec  # small; only plan validation needs it

    if len(patterns) > PATTERNS_MAX:
        raise invalid(f"at most {PATTERNS_MAX} exclude patterns", "excludes")
    result: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern.strip():
            raise invalid("an exclude pattern must not be empty", "excludes")
        if any(c in pattern for c in "\0\n\r") or len(pattern) > COMMAND_MAX:
            raise invalid(f"exclude pattern {pattern[:80]!r} has a line break or NUL, or is too long", "excludes")
        try:
            pathspec.GitIgnoreSpec.from_lines([pattern])
        except (ValueError, TypeError) as exc:
            raise invalid(f"invalid exclude pattern {pattern!r}: {exc}", "excludes") from exc
        if pattern not in result:
            result.append(pattern)
    return result


def validate_exclude_files(paths: list[str]) -> list[str]:
    if len(paths) > NOTIFY_MAX:
        raise invalid(f"at most {NOTIFY_MAX} exclude files", "exclude_files")
    result: list[str] = []
    for path in paths:
        if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path:
            raise invalid(f"an exclude file must be an absolute path: {path!r}", "exclude_files")
        if os.path.normpath(path) not in result:
            result.append(os.path.normpath(path))
    return result


def validate_command(command: str | None, field: str) -> str | None:
    """A hook command: None or "" for none; no NUL, at most `COMMAND_MAX` characters."""
    if command is None or not command.strip():
        return None
    if "\0" in command or len(command) > COMMAND_MAX:
        raise invalid(f"the command must be at most {COMMAND_MAX} characters, without NUL", field)
    return command


def validate_hook_timeout(seconds: int) -> int:
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not 1 <= seconds <= HOOK_TIMEOUT_MAX:
        raise invalid(f"hook_timeout must be 1..{HOOK_TIMEOUT_MAX} seconds", "hook_timeout")
    return seconds


def validate_notify(urls: list[str]) -> list[str]:
    """http(s) URLs with a host, at most `NOTIFY_MAX`."""
    from urllib.parse import urlsplit

    if len(urls) > NOTIFY_MAX:
        raise invalid(f"at most {NOTIFY_MAX} notification URLs", "notify")
    result: list[str] = []
    for url in urls:
        try:
            parts = urlsplit(url) if isinstance(url, str) else None
            ok = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            ok = False
        if not ok or any(c.isspace() for c in url) or len(url) > COMMAND_MAX:
            raise invalid(f"a notification URL must be http:// or https:// with a host, got {url[:80]!r}",
                          "notify")
        if url not in result:
            result.append(url)
    return result


def validate_credentials(credentials: S3Credentials | None, location: Location) -> S3Credentials | None:
    """An access key only for S3, with a key id and a secret, no control characters."""
    if credentials is None:
        return None
    if location.type != "s3":
        raise invalid("an access key is only for S3 locations", "credentials")
    for name, value, limit in (("access_key_id", credentials.access_key_id, 128),
                               ("secret_access_key", credentials.secret_access_key, 1024),
                               ("session_token", credentials.session_token or "x", 4096)):
        if not value or len(value) > limit or any(ord(c) < 32 for c in value):
            raise invalid(f"{name.replace('_', ' ')} must be 1..{limit} visible characters", f"credentials.{name}")
    return credentials


def _errors(*checks: Callable[[], object]) -> list[ServiceError]:
    found: list[ServiceError] = []
    for check in checks:
        try:
            check()
        except ServiceError as exc:
            found.append(exc)
    return found


def create_errors(req: PlanCreate) -> list[ServiceError]:
    """Every validation error of a create request, in the order of the form's fields."""
    def sources() -> list[str]:
        try:
            return validate_sources(req.sources)
        except ServiceError:
            return []

    return _errors(
        lambda: validate_name(req.name),
        lambda: validate_sources(req.sources),
        lambda: validate_excludes(req.excludes),
        lambda: validate_exclude_files(req.exclude_files),
        lambda: validate_schedule(req.schedule),
        lambda: validate_location(req.location, sources()),
        lambda: validate_password(req.password, None),
        lambda: (len(req.password) >= PASSWORD_MIN and validate_password(req.password, req.password_confirm)),
        lambda: validate_command(req.pre_command, "pre_command"),
        lambda: validate_command(req.post_command, "post_command"),
        lambda: validate_hook_timeout(req.hook_timeout),
        lambda: validate_notify(req.notify),
        lambda: validate_credentials(req.credentials, req.location),
    )


def validate_create(req: PlanCreate) -> PlanCreate:
    """Validate and normalise a create request (raises ServiceError on the first bad field)."""
    name = validate_name(req.name)
    validate_password(req.password, req.password_confirm)
    sources = validate_sources(req.sources)
    schedule = validate_schedule(req.schedule)
    location = validate_location(req.location, sources)
    return msgspec.structs.replace(
        req, name=name, sources=sources, schedule=schedule, location=location,
        excludes=validate_excludes(req.excludes), exclude_files=validate_exclude_files(req.exclude_files),
        pre_command=validate_command(req.pre_command, "pre_command"),
        post_command=validate_command(req.post_command, "post_command"),
        hook_timeout=validate_hook_timeout(req.hook_timeout), notify=validate_notify(req.notify),
        credentials=validate_credentials(req.credentials, location), retention=validate_retention(req.retention))


def location_url(location: Location) -> str:
    """The string `timevault.core.storage.open_location` understands for `location`."""
    if location.type == "local":
        return location.path or ""
    if location.type == "space":
        return location.url or ""
    query = {k: v for k, v in (("endpoint", location.endpoint), ("region", location.region)) if v}
    prefix = quote((location.prefix or "").strip("/"))
    url = f"s3://{location.bucket}/{prefix}" if prefix else f"s3://{location.bucket}"
    return f"{url}?{urlencode(query)}" if query else url


def parse_location(text: str) -> Location:
    """Parse a CLI location: a folder path, ``file:///path``, ``s3://bucket/prefix?endpoint=..&region=..``
    or a Space, ``space://host[:port]/repo``."""
    from urllib.parse import parse_qs, unquote, urlparse

    if text.startswith("s3://"):
        parsed = urlparse(text)
        query = parse_qs(parsed.query)
        return Location(
            type="s3",
            bucket=parsed.netloc or None,
            prefix=unquote(parsed.path.lstrip("/")) or None,
            endpoint=query.get("endpoint", [None])[0],
            region=query.get("region", [None])[0],
        )
    if text.startswith(("space://", "space+http://")):
        return Location(type="space", url=text)
    if text.startswith("file://"):
        text = unquote(urlparse(text).path)
    if "://" in text:
        raise invalid(f"unsupported location {text!r}; use a folder path, s3://bucket/prefix or space://host/repo", "location")
    return Location(type="local", path=os.path.abspath(os.path.expanduser(text)))
