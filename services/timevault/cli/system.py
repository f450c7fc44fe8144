"""CLI commands against the running system: ``up``, ``plan …``, ``backup``, ``restore``.

Everything but ``up`` talks to the HTTP gateway (``/api/v1``) with the bearer token that ``up``
wrote to ``<data-dir>/gateway.json``, or with ``TIMEVAULT_URL`` + ``TIMEVAULT_TOKEN``.
Validation uses the same `timevault.proto.plans` rules as the services, so mistakes are caught before
asking for a password. The gateway's error replies are raised as `ServiceError` with their code;
`timevault.cli.exits` turns them into exit codes.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from timevault.cli import plan_options
from timevault.cli.errors import CommandError, GatewayUnreachable, Incomplete, JobFailed, UsageError
from timevault.cli.parser import Subcommands, add_retention_flags
from timevault.cli.units import human_bytes, local_time, plural
from timevault.proto.errors import ServiceError
from timevault.proto.plans import (
    Frequency,
    Schedule,
    parse_location,
    parse_weekday,
    validate_includes,
    validate_location,
    validate_name,
    validate_schedule,
    validate_sources,
    validate_time,
    validate_timezone,
)
from timevault.services.common.paths import default_data_dir

TERMINAL = ("completed", "failed", "canceled")
EVENTS_QUIET = 20.0
# How long --wait keeps asking while TimeVault does not answer (gateway or NATS restarting): the
# services' default job timeout (60 s) plus 30 s. By then the catalog has failed a job whose
# worker went silent, so an answer that comes later could not change the outcome.
RECONNECT_FOR = 90.0


# --- finding and calling the gateway -------------------------------------------------------


class Gateway:
    def __init__(self, url: str, token: str, info_path: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.info_path = info_path  # gateway.json, when that is where url and token came from

    @classmethod
    def find(cls, data_dir: str | None) -> Gateway:
        url, token = os.environ.get("TIMEVAULT_URL"), os.environ.get("TIMEVAULT_TOKEN")
        if url and token and not data_dir:
            return cls(url, token)
        path = Path(data_dir or default_data_dir()) / "gateway.json"
        try:
            info = json.loads(path.read_text())
            return cls(info["url"], info["token"], path)
        except FileNotFoundError:
            if url and token:
                return cls(url, token)
            raise GatewayUnreachable(f"TimeVault is not running (no {path}); start it with `timevault up`") from None
        except (OSError, ValueError, KeyError) as exc:
            raise CommandError(f"cannot read {path}: {exc}") from exc

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + "/api/v1" + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                text = resp.read()
                return json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            raise _service_error(exc) from None
        except urllib.error.URLError as exc:
            raise GatewayUnreachable(f"cannot reach the TimeVault gateway at {self.url} ({exc.reason}); "
                                     "is `timevault up` running?") from None
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise GatewayUnreachable(f"gateway at {self.url} did not answer: {exc or type(exc).__name__}") from None

    def call_patiently(self, method: str, path: str, patience: float = RECONNECT_FOR) -> Any:
        """`call` (for reads), asked again while TimeVault does not answer, for up to `patience` s.

        Not answering: nobody listens (the gateway restarting), or the gateway cannot reach the
        services (``unavailable``: NATS or the catalog restarting). A 401 after a restart of `up`
        means a new token: gateway.json is read again until it has it.
        """
        deadline = time.monotonic() + patience
        while True:
            try:
                return self.call(method, path)
            except GatewayUnreachable as exc:
                if time.monotonic() >= deadline:
                    raise GatewayUnreachable(f"TimeVault did not answer for {patience:.0f} s: {exc}") from None
            except ServiceError as exc:
                if exc.code == "unauthorized" and self.info_path is not None:
                    # The token worked a moment ago: `up` restarted with a new one, which it
                    # writes to gateway.json once its gateway answers. Read the file until then.
                    if self.reload():
                        continue
                elif exc.code != "unavailable":
                    raise
                if time.monotonic() >= deadline:
                    raise GatewayUnreachable(f"TimeVault did not answer for {patience:.0f} s: {exc.message}") \
                        from None
            time.sleep(0.5)

    def reload(self) -> bool:
        """Read gateway.json again; True when it names another address or token."""
        if self.info_path is None:
            return False
        try:
            info = json.loads(self.info_path.read_text())
            url, token = str(info["url"]).rstrip("/"), str(info["token"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        changed = (url, token) != (self.url, self.token)
        self.url, self.token = url, token
        return changed

    def open_events(self, job_id: str) -> Any:
        """The job's Server-Sent Events stream (an open response), or None if it cannot be had."""
        req = urllib.request.Request(f"{self.url}/api/v1/events?job={_q(job_id)}")
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "text/event-stream")
        try:
            # Quiet for longer than the gateway's keep-alive (15 s) means the stream is dead.
            return urllib.request.urlopen(req, timeout=EVENTS_QUIET)
        except (urllib.error.URLError, OSError, http.client.HTTPException):
            return None

    def plan_id(self, name: str) -> str:
        for plan in self.call("GET", "/plans") or []:
            if plan.get("name") == name:
                return str(plan["id"])
        raise ServiceError("not_found", f"no plan named {name!r}")


# For an error reply without the JSON body (a proxy in between, say): the code its status means.
_STATUS_CODES = {400: "invalid", 401: "unauthorized", 404: "not_found", 409: "conflict", 503: "unavailable"}


def _service_error(exc: urllib.error.HTTPError) -> ServiceError:
    """The gateway's ``{"error": {"code", "message", "field"}}`` as the ServiceError it was."""
    try:
        error = json.loads(exc.read())["error"]
        field = error.get("field")
        return ServiceError(str(error["code"]), str(error["message"]), str(field) if field else None)
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        code = _STATUS_CODES.get(exc.code, "internal" if exc.code >= 500 else "invalid")
        return ServiceError(code, f"gateway answered HTTP {exc.code} {exc.reason}")


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


# --- output ----------------------------------------------------------------------------------


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _size(n: int | None) -> str:
    """Decimal units, as the web UI shows them (`timevault.cli.units`)."""
    return human_bytes(n)


def _schedule_text(schedule: dict[str, Any]) -> str:
    from timevault.proto.plans import WEEKDAYS

    when = "daily"
    frequency = schedule.get("frequency")
    if frequency == "weekly" and schedule.get("weekday"):
        when = f"weekly on {WEEKDAYS[int(schedule['weekday']) - 1]}"
    elif frequency == "hourly":
        return f"hourly at {schedule.get('time')} past the hour ({schedule.get('timezone', 'UTC')})"
    elif frequency == "monthly" and schedule.get("day_of_month"):
        when = f"monthly on day {schedule['day_of_month']}"
    return f"{when} at {schedule.get('time')} ({schedule.get('timezone', 'UTC')})"


_POLICIES = {
    "timemachine": "timemachine (every snapshot of the last 24 hours, one a day for the past month, one a week "
                   "before that)",
    "none": "none (every snapshot is kept)",
}


def _retention_text(retention: dict[str, Any] | None) -> str:
    from timevault.proto.plans import Retention, describe_retention

    if not retention:
        return "-"
    policy = str(retention.get("policy", ""))
    if policy in _POLICIES:
        return _POLICIES[policy]
    import msgspec

    return describe_retention(msgspec.convert(retention, Retention))


def _location_text(location: dict[str, Any]) -> str:
    if location.get("type") == "local":
        return str(location.get("path"))
    if location.get("type") == "space":
        return str(location.get("url"))
    prefix = f"/{location['prefix']}" if location.get("prefix") else ""
    return f"s3://{location.get('bucket')}{prefix}"


def _show_plan(plan: dict[str, Any]) -> None:
    print(f"name:       {plan['name']}")
    print(f"id:         {plan['id']}")
    print(f"sources:    {', '.join(plan.get('sources', []))}")
    print(f"schedule:   {_schedule_text(plan.get('schedule', {}))}{'  [paused]' if plan.get('paused') else ''}")
    print(f"location:   {_location_text(plan.get('location', {}))}")
    plan_options.show(plan)
    print(f"retention:  {_retention_text(plan.get('retention'))}"
          f"{'; thins the oldest snapshots when the location is full' if plan.get('thin_when_full') else ''}")
    print(f"total size: {_size(plan.get('total_size'))}")
    zone = plan.get("schedule", {}).get("timezone")
    print(f"next run:   {local_time(plan.get('next_run'), zone) if plan.get('next_run') else '-'}")
    print(f"last prune: {local_time(plan.get('last_prune_at'), zone) if plan.get('last_prune_at') else '-'}")
    snapshots = plan.get("snapshots", [])
    print(f"snapshots:  {len(snapshots)}")
    for snap in snapshots:
        error = f"  {snap['error']}" if snap.get("error") else ""
        endorsed = "  (not yet endorsed)" if snap.get("status") == "completed" and not snap.get("endorsed") else ""
        kept = f"  kept by: {', '.join(snap['kept_by'])}" if snap.get("kept_by") else ""
        print(f"  {snap['id'][:12]}  {local_time(snap.get('started_at')):27}  {snap.get('status', ''):9}  "
              f"{_size(snap.get('size')):>10}  +{_size(snap.get('added_size')):>10}  "
              f"{plural(int(snap.get('files', 0)), 'file')}{endorsed}{kept}{error}")


# --- commands --------------------------------------------------------------------------------


def _local_timezone() -> str:
    env = os.environ.get("TZ", "").lstrip(":")
    if env:
        return env
    try:
        link = os.readlink("/etc/localtime")
        if "zoneinfo/" in link:
            return link.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    try:
        return Path("/etc/timezone").read_text().strip() or "UTC"
    except OSError:
        return "UTC"


def _schedule_of(args: argparse.Namespace) -> Schedule:
    """The schedule the create/attach flags describe (validated)."""
    frequency: Frequency = (
        "weekly" if args.weekly else "monthly" if args.monthly else "hourly" if args.hourly else "daily")
    weekday = parse_weekday(args.weekly) if args.weekly else None
    return validate_schedule(Schedule(frequency=frequency, time=args.at, weekday=weekday,
                                      day_of_month=_day_of_month(args.monthly) if args.monthly else None,
                                      timezone=args.timezone or _local_timezone()))


def _day_of_month(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 31:
        raise ServiceError("invalid", f"--monthly takes a day of the month 1..31, not {text!r}",
                           "schedule.day_of_month")
    return int(text)


def _schedule_body(schedule: Schedule) -> dict[str, Any]:
    return {k: v for k, v in vars_of(schedule).items() if v is not None}


_KEEP_FLAGS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly",
               "keep_within")


def _retention_body(args: argparse.Namespace) -> dict[str, Any] | None:
    """The retention the flags ask for (validated), or None when none is given.

    Explicit ``--keep-*`` rules replace the named policy."""
    from timevault.proto.plans import Retention, validate_retention

    keep = {name: getattr(args, name) for name in _KEEP_FLAGS if getattr(args, name, None) is not None}
    if not keep and not getattr(args, "retention", None):
        return None
    retention = validate_retention(Retention(**keep) if keep else Retention(policy=args.retention))
    return {k: v for k, v in vars_of(retention).items() if v is not None}


def _s3_credentials(args: argparse.Namespace, location: dict[str, Any] | None) -> dict[str, str] | None:
    """The S3 access key the flags give (the secret from a file, never from the command line,
    where `ps` would show it), or None when no key is given."""
    from timevault.cli.passwords import PasswordError, read_password_file

    key_id = getattr(args, "s3_access_key_id", None)
    secret_file = getattr(args, "s3_secret_access_key_file", None) or (
        os.environ.get("TIMEVAULT_S3_SECRET_ACCESS_KEY_FILE") if key_id else None)
    if not key_id and not secret_file:
        return None
    if location is not None and location.get("type") != "s3":
        raise UsageError("--s3-access-key-id and --s3-secret-access-key-file are for an s3:// location")
    if not key_id or not secret_file:
        raise UsageError("an S3 access key needs both --s3-access-key-id and --s3-secret-access-key-file "
                         "(or TIMEVAULT_S3_SECRET_ACCESS_KEY_FILE)")
    try:
        credentials = {"access_key_id": key_id, "secret_access_key": read_password_file(secret_file)}
        token_file = getattr(args, "s3_session_token_file", None)
        if token_file:
            credentials["session_token"] = read_password_file(token_file)
    except PasswordError as exc:
        raise UsageError(str(exc).replace("password file", "file")) from exc
    return credentials


def _s3_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--s3-access-key-id", metavar="ID",
                        help="S3 access key id for the location (else the services' own AWS credentials)")
    parser.add_argument("--s3-secret-access-key-file", metavar="F",
                        help="file whose first line is the S3 secret access key "
                             "(or set TIMEVAULT_S3_SECRET_ACCESS_KEY_FILE)")
    parser.add_argument("--s3-session-token-file", metavar="F", help="file with an S3 session token (temporary keys)")


def cmd_plan_create(args: argparse.Namespace) -> None:
    from timevault.cli.passwords import get_password

    name = validate_name(args.name)
    sources = validate_sources([os.path.abspath(os.path.expanduser(s)) for s in args.source])
    plan_options.body(args)  # bad options are reported before the password is asked
    schedule = _schedule_of(args)
    location = validate_location(parse_location(args.location), sources)
    retention = _retention_body(args)
    location_body = {k: v for k, v in vars_of(location).items() if v is not None}
    credentials = _s3_credentials(args, location_body)
    gateway = Gateway.find(args.data_dir)
    password = get_password(args.password_file, confirm=True, prompt="Backup password")
    body: dict[str, Any] = {
        "name": name, "sources": sources,
        "schedule": _schedule_body(schedule),
        "location": location_body,
        "password": password, "password_confirm": password, **plan_options.body(args),
    }
    if credentials is not None:
        body["credentials"] = credentials
    if retention is not None:
        body["retention"] = retention
    if args.thin_when_full:
        body["thin_when_full"] = True
    plan = gateway.call("POST", "/plans", body)
    if args.json:
        _print_json(plan)
    else:
        print(f"created plan {plan['name']!r} ({plan['id']}): {_schedule_text(plan['schedule'])}")


def cmd_plan_attach(args: argparse.Namespace) -> None:
    """A new machine takes over an existing repository: snapshots and dedup index come from it."""
    from timevault.cli.passwords import get_password

    name = validate_name(args.name)
    paths = [os.path.abspath(os.path.expanduser(s)) for s in args.source or []]
    sources = validate_sources(paths) if paths else []
    schedule = _schedule_of(args)
    location = validate_location(parse_location(args.location), sources)
    retention = _retention_body(args)
    location_body = {k: v for k, v in vars_of(location).items() if v is not None}
    credentials = _s3_credentials(args, location_body)
    gateway = Gateway.find(args.data_dir)
    # The repository exists already: the password is checked against it, so one prompt suffices.
    password = get_password(args.password_file, prompt="Backup password")
    body: dict[str, Any] = {
        "name": name,
        "schedule": _schedule_body(schedule),
        "location": location_body,
        "password": password,
    }
    if credentials is not None:
        body["credentials"] = credentials
    if sources:
        body["sources"] = sources
    if retention is not None:
        body["retention"] = retention
    if args.thin_when_full:
        body["thin_when_full"] = True
    plan = gateway.call("POST", "/plans/attach", body)
    if args.json:
        _print_json(plan)
    else:
        print(f"attached plan {plan['name']!r} ({plan['id']}) with {len(plan.get('snapshots', []))} snapshots, "
              f"{_size(plan.get('total_size'))} stored: {_schedule_text(plan['schedule'])}")


def vars_of(struct: Any) -> dict[str, Any]:
    import msgspec

    return msgspec.structs.asdict(struct)


def cmd_plan_list(args: argparse.Namespace) -> None:
    plans = Gateway.find(args.data_dir).call("GET", "/plans") or []
    if args.json:
        _print_json(plans)
        return
    if not plans:
        print("no plans")
    for plan in plans:
        state = "paused" if plan.get("paused") else (plan.get("last_status") or "never run")
        print(f"{plan['name']:24}  {_schedule_text(plan['schedule']):40}  {_size(plan.get('total_size')):>10}  "
              f"{state}")


def cmd_plan_show(args: argparse.Namespace) -> None:
    gateway = Gateway.find(args.data_dir)
    plan = gateway.call("GET", f"/plans/{_q(gateway.plan_id(args.name))}")
    if args.json:
        _print_json(plan)
    else:
        _show_plan(plan)


def cmd_plan_update(args: argparse.Namespace) -> None:
    from timevault.proto.plans import validate_minute

    schedule: dict[str, Any] = {}
    if args.daily:
        schedule["frequency"] = "daily"
    if args.hourly:
        schedule["frequency"] = "hourly"
    if args.weekly:
        schedule["frequency"] = "weekly"
        schedule["weekday"] = parse_weekday(args.weekly)
    if args.monthly:
        schedule["frequency"] = "monthly"
        schedule["day_of_month"] = _day_of_month(args.monthly)
    if args.at:
        schedule["time"] = validate_minute(args.at) if args.hourly else validate_time(args.at)
    if args.timezone:
        schedule["timezone"] = validate_timezone(args.timezone)
    body: dict[str, Any] = {}
    if schedule:
        body["schedule"] = schedule
    if args.source:
        body["sources"] = validate_sources([os.path.abspath(os.path.expanduser(s)) for s in args.source])
    body.update(plan_options.body(args, update=True))
    retention = _retention_body(args)
    if retention is not None:
        body["retention"] = retention
    if args.thin_when_full is not None:
        body["thin_when_full"] = args.thin_when_full
    credentials = _s3_credentials(args, None)  # the catalog checks the plan's location is S3
    if credentials is not None:
        body["credentials"] = credentials
    if not body:
        raise UsageError("nothing to change: give --hourly, --daily, --weekly DAY, --monthly DAY, --at, --timezone, "
                         "--source, --retention, --keep-…, --[no-]thin-when-full, or an exclude, hook or notify option")
    gateway = Gateway.find(args.data_dir)
    plan = gateway.call("PATCH", f"/plans/{_q(gateway.plan_id(args.name))}", body)
    if args.json:
        _print_json(plan)
    else:
        print(f"updated plan {plan['name']!r}: {_schedule_text(plan['schedule'])}; "
              f"retention {_retention_text(plan.get('retention'))}")


def cmd_plan_delete(args: argparse.Namespace) -> None:
    if not args.yes:
        raise UsageError(f"deleting plan {args.name!r} removes all its snapshots and stored data; "
                         "add --yes to confirm")
    gateway = Gateway.find(args.data_dir)
    plan_id = gateway.plan_id(args.name)
    result = gateway.call("DELETE", f"/plans/{_q(plan_id)}") or {"plan_id": plan_id}
    if args.json:
        _print_json(result)
    else:
        print(f"deleted plan {args.name!r} and its stored data")


def _pause_resume(args: argparse.Namespace, action: str) -> None:
    gateway = Gateway.find(args.data_dir)
    plan = gateway.call("POST", f"/plans/{_q(gateway.plan_id(args.name))}/{action}")
    if args.json:
        _print_json(plan)
    else:
        print(f"plan {args.name!r} {'paused' if action == 'pause' else 'resumed'}")


def cmd_plan_pause(args: argparse.Namespace) -> None:
    _pause_resume(args, "pause")


def cmd_plan_resume(args: argparse.Namespace) -> None:
    _pause_resume(args, "resume")


def _wait(gateway: Gateway, job: dict[str, Any], as_json: bool) -> None:
    """Follow the job until it ends, with a progress bar on a terminal; JobFailed unless it completed,
    Incomplete when it completed with warnings (a restore that could not restore every file).

    The job's live events (``/events?job=ID``) say at once when it ends; polling every half
    second instead made each short job look up to 0.5 s slower. The stream is re-checked with a
    GET whenever it is quiet or drops, so a lost event or a restarted gateway costs only time.
    While nobody answers (the gateway, NATS or the catalog restarting) it keeps asking for
    `RECONNECT_FOR` seconds, so it always ends, with the job's real outcome whenever TimeVault
    comes back in time.
    """
    bar = _ProgressBar(sys.stderr.isatty() and not as_json)
    job_id = job["id"]
    while job.get("status") not in TERMINAL:
        bar.show(job)
        events = gateway.open_events(job_id)
        try:
            # The job may have ended before the stream was open: ask once it is.
            job = gateway.call_patiently("GET", f"/jobs/{_q(job_id)}")
            if job.get("status") in TERMINAL:
                break
            if events is None:
                time.sleep(0.5)  # no stream from this gateway (or none right now): plain polling
                continue
            for kind, data in _sse_events(events):
                if kind == "progress":
                    job |= {k: data[k] for k in _PROGRESS_FIELDS if k in data}
                elif kind == "job" and isinstance(data.get("job"), dict):
                    job |= data["job"]
                    if job.get("status") in TERMINAL:
                        break
                bar.show(job)
        except (OSError, ValueError, http.client.HTTPException):
            pass  # a dropped or silent stream: ask, then listen again
        finally:
            if events is not None:
                with contextlib.suppress(OSError, http.client.HTTPException):
                    events.close()
        job = gateway.call_patiently("GET", f"/jobs/{_q(job_id)}")
    bar.done()
    if job["status"] != "completed":
        raise JobFailed(f"{job['kind']} {job['id']} {job['status']}: {job.get('error') or 'no reason given'}", job)
    warnings = [str(w) for w in job.get("warnings") or []]
    if as_json:
        _print_json(job)
    elif job["kind"] == "prune" and job.get("prune"):
        print(f"prune {job['id']} completed: {_prune_text(job['prune'])}")
    else:
        extra = f" (snapshot {job['snapshot_id'][:12]})" if job.get("snapshot_id") and job["kind"] == "backup" else ""
        for warning in warnings:
            print(f"error: {warning}", file=sys.stderr)
        if not warnings:
            print(f"{job['kind']} {job['id']} completed{extra}")
    if warnings:
        raise Incomplete(f"{job['kind']} {job['id']} finished, but {len(warnings)} item(s) could not be "
                         "restored (listed above); everything else was")


def _prune_text(summary: dict[str, Any]) -> str:
    text = (f"forgot {len(summary.get('forgotten', []))} snapshot(s), kept {len(summary.get('kept_by', {}))}; "
            f"deleted {summary.get('packs_deleted', 0)} pack(s), repacked {summary.get('packs_repacked', 0)}, "
            f"freed {_size(summary.get('bytes_freed', 0))}")
    if summary.get("packs_pending"):
        text += (f"; {summary['packs_pending']} pack(s) ({_size(summary.get('bytes_pending'))}) are marked and go "
                 "once the backups that were running end")
    return text


_PROGRESS_FIELDS = ("files_done", "files_total", "bytes_done", "bytes_total", "rate")


def _sse_events(stream: Iterable[bytes]) -> Iterator[tuple[str, Any]]:
    """(event kind, decoded JSON data) for each Server-Sent Event on an open HTTP response."""
    kind, data = "", list[str]()  # the event being read: its kind and data lines
    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if kind and data:
                yield kind, json.loads("\n".join(data))
            kind, data = "", []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


class _ProgressBar:
    """One status line on stderr, redrawn at most ten times a second (only on a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.shown = False
        self.last = 0.0

    def show(self, job: dict[str, Any]) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < 0.1:
            return
        self.last = now
        done, total = job.get("bytes_done", 0), job.get("bytes_total", 0)
        bar = ""
        if total:
            filled = int(24 * min(done / total, 1.0))
            bar = f"[{'#' * filled}{'.' * (24 - filled)}] {100 * min(done / total, 1.0):3.0f}%  "
        sys.stderr.write(f"\r\x1b[2K{job['kind']} {job['status']}  {bar}{_size(done)}/{_size(total)}  "
                         f"{job.get('files_done', 0)}/{job.get('files_total', 0)} files  "
                         f"{_size(job.get('rate', 0))}/s")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def cmd_backup(args: argparse.Namespace) -> None:
    gateway = Gateway.find(args.data_dir)
    job = gateway.call("POST", f"/plans/{_q(gateway.plan_id(args.name))}/backups")
    if args.wait:
        _wait(gateway, job, args.json)
    elif args.json:
        _print_json(job)
    else:
        print(f"backup {job['id']} started")


def cmd_plan_prune(args: argparse.Namespace) -> None:
    gateway = Gateway.find(args.data_dir)
    job = gateway.call("POST", f"/plans/{_q(gateway.plan_id(args.name))}/prune")
    if args.wait:
        _wait(gateway, job, args.json)
    elif args.json:
        _print_json(job)
    else:
        print(f"prune {job['id']} started")


def cmd_restore(args: argparse.Namespace) -> None:
    from timevault.cli.passwords import get_password

    target = os.path.abspath(os.path.expanduser(args.target))
    validate_includes(args.include or [])
    gateway = Gateway.find(args.data_dir)
    plan_id = gateway.plan_id(args.name)
    password = get_password(args.password_file, prompt="Backup password")
    body = {"target": target, "includes": args.include or [], "password": password}
    if args.allow_unverified:
        body["allow_unverified"] = True
    if args.keep_setid:
        body["keep_setid"] = True
    job = gateway.call("POST", f"/plans/{_q(plan_id)}/snapshots/{_q(args.snapshot)}/restore", body)
    if args.wait:
        _wait(gateway, job, args.json)
    elif args.json:
        _print_json(job)
    else:
        print(f"restore {job['id']} started into {target}")


async def cmd_up(args: argparse.Namespace) -> int:
    from timevault.cli.up import up
    from timevault.proto.plans import validate_notify

    if args.allow_private_endpoints:  # inherited by every service `up` starts
        os.environ["TIMEVAULT_ALLOW_PRIVATE_ENDPOINTS"] = "1"
    if args.log_format:
        from timevault.services.common import logs

        os.environ["TIMEVAULT_LOG_FORMAT"] = args.log_format  # every service inherits it
        if args.log_format == "json":
            logs.setup("up", os.environ.get("TIMEVAULT_LOG_LEVEL", "INFO"), "json")
    extra = {"restorer": [arg for root in args.restore_root for arg in ("--restore-root", os.path.abspath(root))]}
    for url in validate_notify(args.notify or []):
        extra.setdefault("catalog", []).extend(["--notify", url])
    for root in args.root or []:
        extra.setdefault("snapshotter", []).extend(["--root", os.path.abspath(os.path.expanduser(root))])
    return await up(Path(args.data_dir or default_data_dir()), args.listen, args.nats, extra_args=extra)


# --- registration ----------------------------------------------------------------------------


def _frequency_flags(parser: argparse.ArgumentParser, *, required: bool) -> None:
    freq = parser.add_mutually_exclusive_group(required=required)
    freq.add_argument("--hourly", action="store_true", help="every hour, at the minute --at :MM")
    freq.add_argument("--daily", action="store_true")
    freq.add_argument("--weekly", metavar="DAY", help="monday..sunday")
    freq.add_argument("--monthly", metavar="DAY", help="day of the month 1..31 (a month without it: its last day)")


_retention_flags = add_retention_flags


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help="TimeVault data dir (default ~/.local/share/timevault); finds gateway.json")
    parser.add_argument("--json", action="store_true", help="print JSON")


def register(subparsers: Subcommands) -> None:
    """Add ``up``, ``plan``, ``backup`` and ``restore`` to the `timevault` command."""
    p = subparsers.add_parser("up", help="start every service on this machine")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--listen", default="127.0.0.1:7480", metavar="HOST:PORT", help="gateway address")
    p.add_argument("--nats", default=None, metavar="URL", help="use this NATS instead of a private nats-server")
    p.add_argument("--restore-root", action="append", default=[], metavar="DIR",
                   help="restores through the API may land only below DIR (repeatable; default: each plan's "
                   "sources, <data-dir>/restores, the temporary folder, /mnt, /media, /srv, /home)")
    p.add_argument("--allow-private-endpoints", action="store_true",
                   help="let plans use S3 endpoints on loopback, link-local or private addresses")
    p.add_argument("--notify", action="append", metavar="URL",
                   help="send every plan's notifications (failures, missed backups) here too (repeatable)")
    p.add_argument("--root", action="append", metavar="PATH",
                   help="a folder the web UI's folder picker may show (repeatable; default: your home, "
                        "/home, /mnt, /media, /srv, /data)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--log-format", choices=("text", "json"), default=None,
                   help="format of up's and every service's log lines (default: $TIMEVAULT_LOG_FORMAT or text)")
    p.set_defaults(func=cmd_up)

    plan = subparsers.add_parser("plan", help="manage backup plans")
    plans = plan.add_subparsers(dest="plan_command", required=True, metavar="ACTION")

    create = plans.add_parser("create", help="create a plan (asks for the password twice)")
    create.add_argument("name")
    create.add_argument("--source", action="append", required=True, metavar="PATH")
    _frequency_flags(create, required=True)
    create.add_argument("--at", required=True, metavar="HH:MM", help="start time (hourly: :MM, the minute)")
    create.add_argument("--location", required=True,
                        help="folder path, s3://bucket/prefix?endpoint=&region= or space://host/repo")
    create.add_argument("--timezone", metavar="TZ", help="IANA zone (default: this machine's)")
    create.add_argument("--password-file", metavar="F")
    plan_options.add_arguments(create)
    _retention_flags(create)
    _s3_flags(create)
    create.add_argument("--thin-when-full", action="store_true",
                        help="when the location is too full for a backup, forget the oldest snapshots (never the "
                        "newest) until it fits, instead of failing")
    _common(create)
    create.set_defaults(func=cmd_plan_create)

    attach = plans.add_parser("attach", help="attach an existing repository (a new machine, or a new data dir)")
    attach.add_argument("name")
    attach.add_argument("--location", required=True, help="folder path or s3://bucket/prefix?endpoint=&region=")
    attach.add_argument("--source", action="append", metavar="PATH",
                        help="paths for future backups (default: those of the latest snapshot)")
    _frequency_flags(attach, required=True)
    attach.add_argument("--at", required=True, metavar="HH:MM", help="start time (hourly: :MM, the minute)")
    attach.add_argument("--timezone", metavar="TZ", help="IANA zone (default: this machine's)")
    attach.add_argument("--password-file", metavar="F")
    _retention_flags(attach)
    _s3_flags(attach)
    attach.add_argument("--thin-when-full", action="store_true",
                        help="when the location is too full for a backup, forget the oldest snapshots first")
    _common(attach)
    attach.set_defaults(func=cmd_plan_attach)

    lst = plans.add_parser("list", help="list plans")
    _common(lst)
    lst.set_defaults(func=cmd_plan_list)

    show = plans.add_parser("show", help="settings, total size and snapshots of a plan")
    show.add_argument("name")
    _common(show)
    show.set_defaults(func=cmd_plan_show)

    update = plans.add_parser("update", help="change schedule, sources or retention (never the name)")
    update.add_argument("name")
    _frequency_flags(update, required=False)
    update.add_argument("--at", metavar="HH:MM", help="start time (hourly: :MM, the minute)")
    update.add_argument("--timezone", metavar="TZ")
    update.add_argument("--source", action="append", metavar="PATH")
    plan_options.add_arguments(update, update=True)
    _retention_flags(update)
    _s3_flags(update)
    thin = update.add_mutually_exclusive_group()
    thin.add_argument("--thin-when-full", dest="thin_when_full", action="store_true", default=None,
                      help="forget the oldest snapshots when the location is too full for a backup")
    thin.add_argument("--no-thin-when-full", dest="thin_when_full", action="store_false",
                      help="fail a backup that does not fit instead")
    _common(update)
    update.set_defaults(func=cmd_plan_update)

    delete = plans.add_parser("delete", help="delete a plan, its snapshots and all its stored data")
    delete.add_argument("name")
    delete.add_argument("--yes", action="store_true", help="confirm")
    _common(delete)
    delete.set_defaults(func=cmd_plan_delete)

    prune = plans.add_parser("prune", help="forget the snapshots the plan's retention drops and remove unused "
                             "data, now (the services also do this after each backup)")
    prune.add_argument("name")
    prune.add_argument("--wait", action="store_true", help="wait for the prune; exit 0 only if it completed")
    _common(prune)
    prune.set_defaults(func=cmd_plan_prune)

    for action, func in (("pause", cmd_plan_pause), ("resume", cmd_plan_resume)):
        sp = plans.add_parser(action, help=f"{action} the plan's schedule")
        sp.add_argument("name")
        _common(sp)
        sp.set_defaults(func=func)

    backup = subparsers.add_parser("backup", help="back up a plan now")
    backup.add_argument("name")
    backup.add_argument("--wait", action="store_true", help="show progress; exit 0 only if it completed")
    _common(backup)
    backup.set_defaults(func=cmd_backup)

    restore = subparsers.add_parser("restore", help="restore a snapshot of a plan into a folder")
    restore.add_argument("name")
    restore.add_argument("snapshot", help="snapshot id, unique prefix, or 'latest'")
    restore.add_argument("--target", required=True, metavar="DIR")
    restore.add_argument("--include", action="append", metavar="PATH")
    restore.add_argument("--password-file", metavar="F")
    restore.add_argument("--wait", action="store_true")
    restore.add_argument("--allow-unverified", action="store_true",
                         help="restore even a snapshot that contradicts the history endorsed with the password")
    restore.add_argument("--keep-setid", action="store_true",
                         help="keep set-user-ID and set-group-ID bits (dropped by default)")
    _common(restore)
    restore.set_defaults(func=cmd_restore)

    from timevault.cli import browse_cmds

    browse_cmds.register(subparsers, _common)
