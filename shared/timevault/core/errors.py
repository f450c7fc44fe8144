"""Everything the engine reports as an error, in one tree under `TimeVaultError`.

A caller that wants to tell cases apart (the command line picks its exit code, a service its
error reply) catches these classes; anything that is not a `TimeVaultError` is a bug or an
operating-system error (`OSError`) passed through unchanged. The classes are also importable
from the module that raises them (`timevault.core.repository`, `timevault.core.storage`, ...).

    TimeVaultError
    ├── RepositoryError              a problem with a repository, e.g. no such snapshot
    │   ├── NotARepository           the location holds no usable repository (damaged config, ...)
    │   │   └── RepositoryNotFound   ... because there is none: no config at the location
    │   ├── RepositoryLocked         another process holds a conflicting lock
    │   ├── NotEmpty                 `init` found objects that are not a repository's
    │   ├── ReadAccessRequired       the operation needs the password, not just the write keys
    │   ├── ConfigError              config is not authentic, or holds values this version cannot use
    │   ├── HistoryError             a snapshot contradicts the history endorsed with the password
    │   ├── BackupError, RestoreError
    │   │                └── TargetError    the restore target is not allowed, or unsafe to reach
    │   └── BrowseError              a path that is not in the snapshot, or not a folder
    ├── WrongPassword                no key of the repository opens with the password
    ├── WeakPassword                 a new password breaks the rules (also a ValueError)
    ├── DamagedData                  stored bytes fail authentication or do not decode
    │   └── CorruptBlob, CorruptPack, CorruptIndex
    ├── Unauthenticated              one ciphertext failed authentication (wrong key or changed)
    ├── StorageError                 a storage operation failed
    │   ├── LocationNotFound         the location itself (folder, bucket) does not exist (or is gone)
    │   ├── LocationFull             no room left at the location ("location is full: ...")
    │   ├── LocationReadOnly         the location refuses writes ("location is read-only: ...")
    │   ├── ObjectNotFound           one object does not exist
    │   ├── ObjectExists             a write-once put found the name taken
    │   ├── TransientStorageError    may succeed when tried again (throttling, 5xx, timeouts)
    │   ├── SpaceSignedOut           a TimeVault Space refused the device token: sign in again
    │   ├── SpaceQuotaExceeded       a write to a TimeVault Space is over the account's quota
    │   └── InvalidObjectName, InvalidRange   a caller's mistake (also ValueErrors)
    ├── LocationError                the location string cannot be understood (also a ValueError)
    ├── RetentionError               a retention rule or duration is malformed (also a ValueError)
    ├── ExcludeError                 an exclude pattern or file cannot be used (also a ValueError)
    └── Canceled                     the caller asked to stop
        └── BackupCanceled, RestoreCanceled, PruneCanceled

This module imports nothing, so a caller can map errors without loading the engine.
"""

from __future__ import annotations


class TimeVaultError(Exception):
    """The root of every error the engine raises on purpose; the message is for people."""


# --- repositories ------------------------------------------------------------------------------


class RepositoryError(TimeVaultError):
    """A clear, user-facing problem with a repository."""


class NotARepository(RepositoryError):
    """The location holds no usable repository: its config is damaged or of an unknown format."""


class RepositoryNotFound(NotARepository):
    """There is no repository at the location (no config object)."""


class RepositoryLocked(RepositoryError):
    """Another process holds a lock that conflicts with the one asked for."""


class ReadAccessRequired(RepositoryError):
    """The operation reads backed-up data or trees: it needs the password, not the write keys."""


class ConfigError(RepositoryError):
    """`config` is not authentic (its signature fails), names an algorithm this version lacks, or
    holds a value out of range: nothing writes with it."""


class HistoryError(RepositoryError):
    """A snapshot contradicts the history the password holder endorsed (see
    `timevault.core.repository.history`): refused unless the caller allows unverified ones."""


class BackupError(RepositoryError):
    """A backup cannot start or go on (e.g. a source does not exist)."""


class RestoreError(RepositoryError):
    """A restore cannot start (e.g. no path matches --include, the target is a file)."""


class TargetError(RestoreError):
    """The restore target is not allowed (outside the restore roots, in a dot-folder), or the way
    to it is not safe (a symlink planted on it)."""


class BrowseError(RepositoryError):
    """A path that is not in the snapshot, or not a folder where one is needed."""


# --- passwords ---------------------------------------------------------------------------------


class WrongPassword(TimeVaultError):
    """No key file of the repository opens with the given password."""


class WeakPassword(TimeVaultError, ValueError):
    """A new password does not meet the repository's rules."""


# --- damaged data ------------------------------------------------------------------------------


class DamagedData(TimeVaultError):
    """Stored bytes fail authentication or do not decode: damage, tampering, or a bug."""


class CorruptBlob(DamagedData):
    """A blob failed authentication, decompression, or its id did not match its content."""


class CorruptPack(DamagedData):
    """A pack's header or trailer is damaged."""


class CorruptIndex(DamagedData):
    """An index file is damaged."""


class NotAReferencesList(RepositoryError):
    """A list of references, read as a stream, is not a `References` map (damaged or foreign)."""


class Unauthenticated(TimeVaultError):
    """Ciphertext failed authentication: wrong key, or the data was changed or truncated."""


# --- storage -----------------------------------------------------------------------------------


class StorageError(TimeVaultError):
    """A storage operation failed; the message names the location and the operation."""


class LocationNotFound(StorageError):
    """The location itself (a folder, a bucket) does not exist.

    A location that vanished under a running backup says "location disappeared: ..."; it is
    never silently recreated, so the backup fails instead of writing a partial repository.
    """


class LocationFull(StorageError):
    """The location has no room left (disk full, quota reached); the message starts "location is full"."""


class LocationReadOnly(StorageError):
    """The location refuses writes (a read-only file system); the message starts "location is read-only"."""


class ObjectNotFound(StorageError):
    """The named object does not exist."""


class ObjectExists(StorageError):
    """A write-once put found an object of that name already there (it was not replaced)."""


class InvalidObjectName(StorageError, ValueError):
    """A caller passed a name that is not a valid relative object name (a programmer error)."""


class InvalidRange(StorageError, ValueError):
    """A caller passed a negative offset or length to `get` (a programmer error)."""


class TransientStorageError(StorageError):
    """A failure that may succeed when tried again: throttling, 5xx, a dropped connection, a timeout.

    Locations raise it so that `RetryingStorage` (the one place retries happen) can tell
    retryable failures from permanent ones such as access denied or a missing bucket.
    """


class SpaceSignedOut(StorageError):
    """A TimeVault Space refused the device token (none given, revoked, or its account removed):
    sign in again. Permanent: never retried."""


class SpaceQuotaExceeded(StorageError):
    """A write to a TimeVault Space does not fit in the account's quota. Permanent."""


class LocationError(TimeVaultError, ValueError):
    """The location string cannot be understood (bad scheme, parameter or value)."""


class RetentionError(TimeVaultError, ValueError):
    """A retention rule or duration is malformed."""


class ExcludeError(TimeVaultError, ValueError):
    """An exclude pattern or an exclude file cannot be used (the message says which)."""


# --- canceled ----------------------------------------------------------------------------------


class Canceled(TimeVaultError):
    """The caller asked the operation to stop (its cancel event was set)."""


class BackupCanceled(Canceled):
    """A backup stopped because it was canceled."""


class RestoreCanceled(Canceled):
    """A restore stopped because it was canceled."""


class PruneCanceled(Canceled):
    """A prune stopped at a safe point because it was canceled."""


class NotEmpty(RepositoryError):
    """A new repository was asked for in a folder (or prefix) that holds something else."""
