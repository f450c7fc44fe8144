"""The engine's errors form one tree: every exception class the core defines is a TimeVaultError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import timevault.core
from timevault.core import errors


def _core_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(timevault.core.__path__, "timevault.core.")]


def test_every_core_exception_is_a_timevault_error() -> None:
    outside: list[str] = []
    for name in _core_modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__.startswith(
                "timevault.core"
            ):
                if not issubclass(value, errors.TimeVaultError):
                    outside.append(f"{name}.{attr}")
    assert outside == []


def test_errors_are_defined_in_one_module() -> None:
    """Raisers import their errors from timevault.core.errors, so the tree there is complete."""
    defined_elsewhere = sorted(
        f"{name}.{attr}"
        for name in _core_modules()
        for attr, value in vars(importlib.import_module(name)).items()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == name
        and name != "timevault.core.errors"
    )
    assert defined_elsewhere == []


def test_old_import_paths_still_work() -> None:
    from timevault.core.archiver import BackupCanceled, BackupError
    from timevault.core.crypto import Unauthenticated
    from timevault.core.repository import RepositoryError, RepositoryNotFound, WeakPassword, WrongPassword
    from timevault.core.repository.blobs import CorruptBlob
    from timevault.core.repository.index import CorruptIndex
    from timevault.core.repository.pack import CorruptPack
    from timevault.core.restorer import RestoreCanceled, RestoreError
    from timevault.core.storage import LocationError, LocationNotFound, ObjectNotFound, StorageError

    for cls in (BackupCanceled, BackupError, Unauthenticated, RepositoryError, RepositoryNotFound,
                WeakPassword, WrongPassword, CorruptBlob, CorruptIndex, CorruptPack, RestoreCanceled,
                RestoreError, LocationError, LocationNotFound, ObjectNotFound, StorageError):
        assert cls is getattr(errors, cls.__name__)
    assert issubclass(WeakPassword, ValueError) and issubclass(LocationError, ValueError)
    assert issubclass(RepositoryNotFound, errors.NotARepository)
