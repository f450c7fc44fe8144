"""What a backup leaves out: gitignore-style patterns, ignore files, cache folders, other file systems.

- Patterns (``--exclude``, and the lines of ``--exclude-file`` files) use gitignore syntax
  (`pathspec`): ``*.tmp`` matches a name anywhere, ``build/`` only folders, ``/out`` and
  ``logs/old`` are anchored at the top of each source folder, ``!keep.log`` takes a match back.
  A pattern that starts with a source's absolute path (``/home/me/Music/cache``) is anchored
  at that source.
- A ``.timevaultignore`` file in any folder holds more patterns, relative to that folder, like a
  ``.gitignore``; deeper files win over shallower ones and over the plan's patterns.
- A folder holding a valid ``CACHEDIR.TAG`` (https://bford.info/cachedir/) is kept with only
  its tag: what it caches is not backed up.
- With ``one_file_system``, folders on another file system than their source (mount points)
  are left out.

Everything here is per folder and cheap: a folder's listing is filtered once, with the rules
of its source and of the ignore files above it; a backup without rules does none of this.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pathspec

from timevault.core.errors import ExcludeError

IGNORE_FILE = b".timevaultignore"
CACHEDIR_TAG = b"CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"
MAX_IGNORE_FILE = 1024 * 1024


@dataclass
class ExcludeOptions:
    """What to leave out of a backup; the defaults leave out only cache folders."""

    patterns: list[str] = field(default_factory=list)
    """gitignore-style patterns."""
    files: list[str] = field(default_factory=list)
    """Files with one pattern per line (``#`` comments, blank lines ignored), read at backup start."""
    caches: bool = True
    """Skip the contents of folders holding a valid CACHEDIR.TAG."""
    one_file_system: bool = False
    """Leave out folders on another file system than their source."""
    ignore_files: bool = True
    """Honour ``.timevaultignore`` files."""

    @property
    def active(self) -> bool:
        return bool(self.patterns or self.files or self.caches or self.one_file_system or self.ignore_files)


def read_pattern_file(path: str) -> list[str]:
    """The patterns of an exclude file (blank lines and ``#`` comments dropped)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read(MAX_IGNORE_FILE + 1)
    except OSError as exc:
        raise ExcludeError(f"cannot read exclude file {path}: {exc.strerror}") from exc
    if len(text) > MAX_IGNORE_FILE:
        raise ExcludeError(f"exclude file {path} is larger than {MAX_IGNORE_FILE // 1024} KiB")
    return pattern_lines(text)


def pattern_lines(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            lines.append(line.rstrip("\r"))
    return lines


def compile_patterns(patterns: Sequence[str]) -> pathspec.GitIgnoreSpec:
    """A gitignore spec; an unusable pattern is an ExcludeError naming it."""
    for pattern in patterns:
        if "\0" in pattern:
            raise ExcludeError(f"exclude pattern {pattern!r} contains a NUL character")
        try:
            pathspec.GitIgnoreSpec.from_lines([pattern])
        except (ValueError, TypeError) as exc:  # pathspec's GitWildMatchPatternError is a ValueError
            raise ExcludeError(f"invalid exclude pattern {pattern!r}: {exc}") from exc
    return pathspec.GitIgnoreSpec.from_lines(list(patterns))


def _anchor(pattern: str, source: str, sources: Sequence[str]) -> str | None:
    """`pattern` as seen from `source`: an absolute pattern naming a path inside this source is
    anchored there, one naming a path inside another source does not apply here (None), and any
    other pattern is gitignore's own (a leading '/' anchors it at the top of the source)."""
    negate = pattern.startswith("!")
    body = pattern[1:] if negate else pattern
    if body.startswith("/"):
        inside = [s for s in sources if body.startswith(s.rstrip("/") + "/")]
        if inside:
            owner = max(inside, key=len)
            if owner != source:
                return None
            body = "/" + body[len(source.rstrip("/")) + 1:]
    return ("!" if negate else "") + body


@dataclass(frozen=True)
class DirRules:
    """The rules for the entries of one folder."""

    rel: str
    """The folder's path relative to its source, '' for the source itself, else ending in '/'."""
    specs: tuple[tuple[str, pathspec.GitIgnoreSpec], ...]
    """(base folder relative to the source, spec), outermost first."""
    device: int | None
    """With one_file_system: the source's device; folders elsewhere are left out."""
    tag_only: bool = False
    """The folder holds a valid CACHEDIR.TAG: only the tag is kept."""

    def excluded(self, name: bytes, is_dir: bool) -> bool:
        if not self.specs:
            return False
        rel = self.rel + os.fsdecode(name) + ("/" if is_dir else "")
        verdict: bool | None = None
        for base, spec in self.specs:
            result = spec.check_file(rel[len(base):])
            if result.include is not None:
                verdict = result.include
        return bool(verdict)

    def other_device(self, st: os.stat_result) -> bool:
        return self.device is not None and stat.S_ISDIR(st.st_mode) and st.st_dev != self.device


class Excludes:
    """The exclude rules of one backup of `sources` (absolute byte paths)."""

    def __init__(self, options: ExcludeOptions, sources: Sequence[bytes]) -> None:
        self.options = options
        patterns = list(options.patterns)
        for path in options.files:
            patterns += read_pattern_file(path)
        compile_patterns(patterns)  # one clear error for a bad pattern, before anything is read
        names = {os.fsdecode(s).rstrip("/") or "/" for s in sources}
        # A source inside another one is backed up as part of it (see `_path_trie`): one set of rules.
        names = {s for s in names if not any(o != s and s.startswith(o.rstrip("/") + "/") for o in names)}
        self._sources = sorted(names, key=len, reverse=True)
        self._specs: dict[str, pathspec.GitIgnoreSpec | None] = {}
        self._devices: dict[str, int] = {}
        for source in self._sources:
            anchored = [p for p in (_anchor(p, source, self._sources) for p in patterns) if p is not None]
            self._specs[source] = pathspec.GitIgnoreSpec.from_lines(anchored) if anchored else None
            if options.one_file_system:
                try:
                    self._devices[source] = os.stat(source).st_dev
                except OSError:
                    pass
        # Folders (relative to their source) whose .timevaultignore was read, and its spec.
        self._ignore: dict[tuple[str, str], pathspec.GitIgnoreSpec | None] = {}
        self.warnings: list[str] = []

    def _source_of(self, path: str) -> str | None:
        for source in self._sources:  # longest first: nested sources belong to the inner one
            if path == source or path.startswith(source.rstrip("/") + "/"):
                return source
        return None

    def for_dir(self, path: bytes, names: Iterable[bytes]) -> DirRules | None:
        """The rules for the entries of the folder `path`, whose entries are named `names`;
        None when nothing is excluded there (no per-entry work at all)."""
        text = os.fsdecode(path)
        source = self._source_of(text)
        if source is None:
            return None
        rel = text[len(source):].strip("/")
        rel = rel + "/" if rel else ""
        has_tag = has_ignore = False
        for name in names:
            if name == CACHEDIR_TAG:
                has_tag = True
            elif name == IGNORE_FILE:
                has_ignore = True
        options = self.options
        if options.caches and has_tag and _valid_tag(os.path.join(path, CACHEDIR_TAG)):
            return DirRules(rel, (), None, tag_only=True)
        if options.ignore_files and has_ignore and (source, rel) not in self._ignore:
            self._ignore[(source, rel)] = self._read_ignore(os.path.join(path, IGNORE_FILE))
        specs: list[tuple[str, pathspec.GitIgnoreSpec]] = []
        top = self._specs.get(source)
        if top is not None:
            specs.append(("", top))
        if self._ignore:
            # Ignore files of this folder and the folders above it, outermost first.
            parts = rel.split("/")[:-1] if rel else []
            for depth in range(len(parts) + 1):
                base = "/".join(parts[:depth]) + "/" if depth else ""
                spec = self._ignore.get((source, base))
                if spec is not None:
                    specs.append((base, spec))
        device = self._devices.get(source)
        if not specs and device is None:
            return None
        return DirRules(rel, tuple(specs), device)

    def _read_ignore(self, path: bytes) -> pathspec.GitIgnoreSpec | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as f:
                data = f.read(MAX_IGNORE_FILE + 1)
        except OSError as exc:
            self.warnings.append(f"ignored {os.fsdecode(path)}: {exc.strerror}")
            return None
        if len(data) > MAX_IGNORE_FILE:
            self.warnings.append(f"ignored {os.fsdecode(path)}: larger than {MAX_IGNORE_FILE // 1024} KiB")
            return None
        lines = pattern_lines(data.decode("utf-8", "surrogateescape"))
        try:
            return compile_patterns(lines) if lines else None
        except ExcludeError as exc:
            self.warnings.append(f"ignored {os.fsdecode(path)}: {exc}")
            return None


def _valid_tag(path: bytes) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            return f.read(len(CACHEDIR_SIGNATURE)) == CACHEDIR_SIGNATURE
    except OSError:
        return False
