"""The history of a repository: which snapshots the password holder endorsed, and which are new.

The write tier (the services) can add snapshots but must not be able to change the past unseen.
Snapshot names are keyed hashes of their content, so a snapshot rewritten or copied under
another name no longer matches its name (`Repository.load_snapshot` refuses it). What remains
is *which* snapshots belong to the history. Whenever the password is present, the client signs
an endorsement: the ids of the snapshots that exist then, and the newest of them (the head).
Only the password holder can sign (the key exists only inside password-wrapped key files);
everyone, the services too, can verify. Each snapshot records the newest endorsement at the
time it was saved (`Snapshot.endorsement`) and the newest snapshot then (`Snapshot.previous`).

With the newest valid endorsement C, a snapshot S is

- **endorsed** when C lists it;
- **unendorsed** (written since the last endorsement) when it builds on C, and is not dated
  before C (a backdated "old" snapshot is what a compromised server would forge), nor before
  its predecessor; or when it builds on the endorsement C replaced and was finished just before
  C was made (a backup that was saving while C was written);
- **contradicting** otherwise: older than C but not listed by it (put back after it was
  forgotten, or written behind the password holder's back), or building on an endorsement that
  is missing (a newer endorsement was removed). Restores refuse such snapshots unless the user
  passes `--allow-unverified`, and `check` reports them as errors.

What this cannot see: a storage provider that rolls the whole repository back to an earlier
state, endorsement included, shows a consistent (older) history. docs/security.md says more.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from timevault.core.repository.format import Endorsement, ForgetRecord, Snapshot

ENDORSED = "endorsed"
UNENDORSED = "unendorsed"
CONTRADICTS = "contradicts"
# Clocks of the machines that write a repository may disagree by this much.
CLOCK_SKEW = timedelta(hours=1)
# A backup that finished this shortly before an endorsement may have missed being listed in it.
SAVE_RACE = timedelta(minutes=10)


@dataclass
class History:
    """The verdict on every listed snapshot, and what was found on the way."""

    status: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    endorsement_id: str | None = None
    endorsement: Endorsement | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    """Endorsed snapshots that are gone without a forget record: deleted by someone who has no
    keys (storage, or by hand). Not a reason to refuse listings; `check` reports them."""

    def endorsed(self, snapshot_id: str) -> bool:
        return self.status.get(snapshot_id) == ENDORSED

    def contradicting(self) -> list[str]:
        return [snapshot_id for snapshot_id, status in self.status.items() if status == CONTRADICTS]

    def describe(self, snapshot_id: str) -> str:
        """One line on a snapshot's standing, for restores and listings."""
        status = self.status.get(snapshot_id)
        if status == ENDORSED:
            return f"snapshot {snapshot_id[:8]} is endorsed (verified with the password)"
        if status == UNENDORSED:
            since = f" on {_when(self.endorsement.time)}" if self.endorsement else ""
            return (
                f"snapshot {snapshot_id[:8]} was written since the password was last used{since}: "
                "it is consistent with the endorsed history but not endorsed itself"
            )
        return f"snapshot {snapshot_id[:8]} contradicts the endorsed history: {self.reasons.get(snapshot_id, '')}"


def _time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else None


def _when(value: str) -> str:
    parsed = _time(value)
    return f"{parsed:%Y-%m-%d %H:%M} UTC" if parsed else value


def newest(endorsements: dict[str, Endorsement]) -> tuple[str, Endorsement] | None:
    """The current endorsement: the newest by its signed time (ties: the larger id)."""
    dated = [(_time(e.time), endorsement_id, e) for endorsement_id, e in endorsements.items()]
    usable = [(when, endorsement_id, e) for when, endorsement_id, e in dated if when is not None]
    if not usable:
        return None
    _, endorsement_id, endorsement = max(usable, key=lambda item: (item[0], item[1]))
    return endorsement_id, endorsement


def classify(
    snapshots: dict[str, Snapshot],
    endorsements: dict[str, Endorsement],
    forgotten: Mapping[str, ForgetRecord] | None = None,
) -> History:
    """Judge every snapshot against the newest valid endorsement (see the module docstring).

    `snapshots` and `endorsements` must already be authentic (names and signatures checked);
    `forgotten` maps the snapshots that forget records name to their record.
    """
    forgotten = forgotten or {}
    history = History()
    current = newest(endorsements)
    if current is None:
        for snapshot_id in snapshots:
            history.status[snapshot_id] = CONTRADICTS
            history.reasons[snapshot_id] = (
                "the repository has no valid endorsement (every one was removed), so no snapshot can be verified"
            )
        if snapshots:
            history.problems.append("the repository has no valid endorsement: its history cannot be verified")
        return history
    current_id, endorsement = current
    history.endorsement_id, history.endorsement = current_id, endorsement
    endorsed_at = _time(endorsement.time)
    assert endorsed_at is not None  # newest() only returns dated ones
    listed = set(endorsement.snapshots)
    for snapshot_id, snapshot in snapshots.items():
        if snapshot_id in listed:
            history.status[snapshot_id] = ENDORSED
            continue
        reason = _why_not_consistent(snapshot, snapshots, current_id, endorsement, endorsed_at, endorsements)
        if reason is None:
            history.status[snapshot_id] = UNENDORSED
        else:
            history.status[snapshot_id] = CONTRADICTS
            history.reasons[snapshot_id] = reason
    gone = listed - set(snapshots)
    recorded = sorted(gone & set(forgotten))
    if recorded:
        reasons = sorted({forgotten[snapshot_id].reason for snapshot_id in recorded} - {""})
        why = f" ({'; '.join(reasons)})" if reasons else ""
        history.notes.append(
            f"{len(recorded)} snapshot(s) endorsed on {_when(endorsement.time)} were forgotten since "
            f"without the password{why}"
        )
    history.removed = sorted(gone - set(forgotten))
    return history


def describe_removed(history: History) -> list[str]:
    """One line per endorsed snapshot that is gone without a forget record (for `check`)."""
    when = _when(history.endorsement.time) if history.endorsement else "?"
    return [
        f"snapshot {snapshot_id[:8]}, endorsed on {when}, is gone and no forget record explains it: "
        "it was deleted by someone without the keys (storage, or by hand)"
        for snapshot_id in history.removed
    ]


def _why_not_consistent(
    snapshot: Snapshot,
    snapshots: dict[str, Snapshot],
    current_id: str,
    endorsement: Endorsement,
    endorsed_at: datetime,
    endorsements: dict[str, Endorsement],
) -> str | None:
    started, finished = _time(snapshot.time), _time(snapshot.finished)
    if started is None or finished is None:
        return "its times are not valid"
    if snapshot.endorsement == current_id:
        if started < endorsed_at - CLOCK_SKEW:
            return (
                f"it claims to be from {_when(snapshot.time)}, before the endorsement of "
                f"{_when(endorsement.time)} it builds on (backdated)"
            )
        previous = snapshots.get(snapshot.previous) if snapshot.previous else None
        previous_time = _time(previous.time) if previous is not None else None
        if previous_time is not None and started < previous_time - CLOCK_SKEW:
            return f"it claims to be from {_when(snapshot.time)}, before the snapshot it follows"
        return None
    if (
        snapshot.endorsement is not None
        and snapshot.endorsement == endorsement.previous
        and finished >= endorsed_at - SAVE_RACE
    ):
        return None  # saved while the current endorsement was being written
    if snapshot.endorsement is None or snapshot.endorsement not in endorsements:
        return (
            "it builds on an endorsement that is missing: a newer endorsement was removed, or the "
            "snapshot was put back after it had been forgotten"
        )
    return (
        f"the endorsement of {_when(endorsement.time)} does not list it although it is older: it was put "
        "back after being forgotten, or written behind the password holder's back"
    )
