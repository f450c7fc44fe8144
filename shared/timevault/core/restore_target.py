"""Where a restore may write, and getting there without following planted symlinks.

A restore often runs as root, into folders other users can write to (/tmp, a shared disk). A
symlink planted on the way to the target (``/tmp/restore/etc -> /etc``) must not redirect it.
So the target's folders are opened one component at a time with ``O_NOFOLLOW`` from a trusted
starting folder, created where missing, and everything after that is relative to the open
descriptors (``dir_fd``, or the ``/proc/self/fd/N`` path of one, which the kernel resolves
through the descriptor and not through the path that led there).

Two policies:

- With restore roots (the services: an API restore may only land under configured roots),
  the walk starts at the matching root and follows no symlink below it; no component below
  the root may be a dot-folder (``.ssh``, ``.config``): restoring there would plant keys or
  start-up files.
- Without roots (the command line: the user names any folder), the walk starts at ``/`` and
  follows a symlink only when root or the user running the restore owns it, like the kernel's
  ``fs.protected_symlinks`` rule for sticky folders.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Sequence

from timevault.core.errors import TargetError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY
DEFAULT_SYSTEM_ROOTS = ("/mnt", "/media", "/srv", "/home")


def default_roots(sources: Sequence[str], data_dir: str | None) -> list[str]:
    """The restore roots of a plan when none are configured: its source folders, the data
    folder's ``restores/``, the system's temporary folder, /mnt, /media, /srv and /home."""
    roots = [os.path.normpath(source) for source in sources if os.path.isabs(source)]
    if data_dir:
        roots.append(os.path.join(os.path.abspath(data_dir), "restores"))
    roots.append(tempfile.gettempdir())
    roots.extend(DEFAULT_SYSTEM_ROOTS)
    return list(dict.fromkeys(roots))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_under_roots(target: str, roots: Sequence[str]) -> str:
    """The root `target` lies in (the deepest one), or TargetError. Lexical: `open_parent` then
    makes sure no symlink below the root changes where the path leads."""
    target = os.path.normpath(target)
    matching = [os.path.normpath(root) for root in roots if os.path.isabs(root)]
    matching = [root for root in matching if _inside(target, root)]
    if not matching:
        shown = ", ".join(sorted({os.path.normpath(root) for root in roots})) or "none configured"
        raise TargetError(f"restore target {target} is not under a restore root ({shown})")
    root = max(matching, key=len)
    below = [part for part in target[len(root) :].split("/") if part]
    for part in below:
        if part.startswith("."):
            raise TargetError(f"restore target {target} is inside the hidden folder {part!r}; restores never go there")
    return root


def _trusted_link(dir_fd: int, name: str) -> bool:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    return stat.S_ISLNK(st.st_mode) and st.st_uid in (0, os.geteuid())


def _step(dir_fd: int, name: str, *, follow_trusted: bool, create: bool, shown: str) -> int:
    """Open the folder `name` in `dir_fd` without following a symlink (unless trusted)."""
    try:
        return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o755, dir_fd=dir_fd)
        return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        # ELOOP (a symlink) or ENOTDIR (a file, or a symlink on some systems).
        if follow_trusted and _trusted_link(dir_fd, name):
            return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a folder"
        raise TargetError(f"{shown} is {kind}; a restore does not go through it") from None


def open_parent(target: str, roots: Sequence[str] | None) -> tuple[int, str]:
    """Open the folder that holds the target (creating missing folders): (its fd, target's name).

    The caller closes the descriptor. Raises TargetError for a path that leaves the rules.
    """
    target = os.path.normpath(target)
    if target == "/":
        raise TargetError("cannot restore into / itself; name a folder")
    if roots is not None:
        root = check_under_roots(target, roots)
        start = root if target != root else os.path.dirname(root)
        follow_trusted = False
    else:
        root = start = "/"
        follow_trusted = True
    parts = [part for part in target[len(start) :].split("/") if part]
    *folders, name = parts
    try:
        fd = os.open(start, _DIR_FLAGS)  # the root itself is trusted configuration
    except FileNotFoundError:
        raise TargetError(f"the restore root {root} does not exist") from None
    try:
        walked = start
        for folder in folders:
            walked = os.path.join(walked, folder)
            next_fd = _step(fd, folder, follow_trusted=follow_trusted, create=True, shown=walked)
            os.close(fd)
            fd = next_fd
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return fd, name
        if stat.S_ISLNK(st.st_mode):
            if follow_trusted and st.st_uid in (0, os.geteuid()):
                real = os.path.realpath(target)
                os.close(fd)
                fd = -1
                if real == target:  # a symlink loop
                    raise TargetError(f"restore target {target} is a symlink loop")
                return open_parent(real, None)
            raise TargetError(f"restore target {target} is a symlink; a restore does not go through it")
        return fd, name
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise


def fd_path(fd: int) -> str | None:
    """A path that reaches the folder `fd` through the descriptor itself (Linux /proc)."""
    path = f"/proc/self/fd/{fd}"
    return path if os.path.isdir(path) else None


def merge_into(source_fd: int, target_fd: int, shown: str, errors: list[str]) -> None:
    """Move the restored tree into an existing target; folders merge, files are replaced.

    Never follows a symlink in the target: one where the snapshot has a folder is reported
    and left alone; one where it has a file is replaced (rename does not follow it).
    """
    for name in os.listdir(source_fd):
        try:
            target_st = os.stat(name, dir_fd=target_fd, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(name, name, src_dir_fd=source_fd, dst_dir_fd=target_fd)
            continue
        source_is_dir = stat.S_ISDIR(os.stat(name, dir_fd=source_fd, follow_symlinks=False).st_mode)
        target_is_dir = stat.S_ISDIR(target_st.st_mode)
        where = os.path.join(shown, name)
        if source_is_dir and target_is_dir:
            inner_source = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=source_fd)
            try:
                inner_target = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=target_fd)
                try:
                    merge_into(inner_source, inner_target, where, errors)
                finally:
                    os.close(inner_target)
            finally:
                os.close(inner_source)
        elif not source_is_dir and not target_is_dir:
            os.replace(name, name, src_dir_fd=source_fd, dst_dir_fd=target_fd)
        else:
            errors.append(f"{where}: left as it was; the snapshot has a {'folder' if source_is_dir else 'file'} there")
