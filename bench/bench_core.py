#!/usr/bin/env python3
"""TimeVault's repository engine against restic on one generated corpus, in one run.

Steps, each timed and with the peak RSS of its process (from os.wait4, as GNU time reports it):
  generate corpus  ->  full backup (both tools)  ->  mutate 5 %  ->  incremental backup (both)
  ->  restore latest snapshot (both)  ->  compare with targets.

Both tools see the same corpus state for every step. The page cache is dropped before each
timed step when /proc/sys/vm/drop_caches is writable; otherwise every step runs warm and the
result says so.

    .venv/bin/python bench/bench_core.py --size-mb 1024
    .venv/bin/python bench/bench_core.py --size-mb 50 --only restic
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS_SCRIPT = REPO_ROOT.parent / "shared" / "bench" / "make_corpus.py"
MiB = 1 << 20
PASSWORD = "bench-password-not-secret"
TOOLS = ("timevault", "restic")

# TimeVault / restic targets: (metric, comparison, bound, description)
TARGETS = [
    ("full_mbps", ">=", 1.5, "full backup throughput >= 1.5x restic"),
    ("restore_mbps", ">=", 1.5, "restore throughput >= 1.5x restic"),
    ("incr_seconds", "<=", 0.8, "incremental backup time <= 0.8x restic"),
    ("repo_bytes", "<=", 1.05, "repository size <= 1.05x restic"),
]
RSS_LIMIT_MIB = 300


class BenchError(Exception):
    """A precondition or a step failed; the message says what to do."""


@dataclass
class Step:
    seconds: float
    max_rss_kib: int
    stdout: str


@dataclass
class ToolResult:
    version: str = ""
    full_seconds: float = 0.0
    full_rss_kib: int = 0
    incr_seconds: float = 0.0
    incr_rss_kib: int = 0
    restore_seconds: float = 0.0
    restore_rss_kib: int = 0
    repo_bytes_full: int = 0
    repo_bytes: int = 0
    restored_bytes: int = 0
    restored_files: int = 0
    full_summary: dict = field(default_factory=dict)
    incr_summary: dict = field(default_factory=dict)

    @property
    def peak_rss_kib(self) -> int:
        return max(self.full_rss_kib, self.incr_rss_kib, self.restore_rss_kib)


def run(cmd: list[str], *, env: dict[str, str] | None = None, log: Path, timeout: float) -> Step:
    """Run cmd to completion; wall time and the child's own peak RSS (os.wait4, not RUSAGE_CHILDREN)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log.with_suffix(".out"), log.with_suffix(".err")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        timer = threading.Timer(timeout, lambda: os.kill(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout = out_path.read_text(errors="replace")
    if proc.returncode != 0:
        tail = err_path.read_text(errors="replace")[-2000:] or stdout[-2000:]
        raise BenchError(f"{' '.join(cmd)} exited {proc.returncode} after {seconds:.1f}s:\n{tail}")
    return Step(seconds=seconds, max_rss_kib=usage.ru_maxrss, stdout=stdout)


def tree_size(root: Path) -> tuple[int, int]:
    """(bytes, regular files) under root, symlinks not followed."""
    total = files = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
                files += 1
    return total, files


def drop_caches() -> bool:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def last_json(stdout: str, pred=lambda obj: True) -> dict:
    """The last JSON object printed on stdout that satisfies pred (tools may print progress lines)."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and pred(obj):
                return obj
    try:
        obj = json.loads(stdout)
        return obj if isinstance(obj, dict) else {}
    except ValueError:
        return {}


class Tool:
    name: str

    def __init__(self, work: Path, password_file: Path, timeout: float) -> None:
        self.repo = work / f"repo-{self.name}"
        self.restore_dir = work / f"restore-{self.name}"
        self.logs = work / "logs"
        self.password_file = password_file
        self.timeout = timeout
        self.env = dict(os.environ, XDG_CACHE_HOME=str(work / f"cache-{self.name}"))

    def step(self, label: str, cmd: list[str]) -> Step:
        return run(cmd, env=self.env, log=self.logs / f"{self.name}-{label}", timeout=self.timeout)

    # What each tool under test does; the subclasses say how.
    def version(self) -> str:
        raise NotImplementedError

    def init(self) -> None:
        raise NotImplementedError

    def backup(self, label: str, src: Path) -> tuple[Step, dict]:
        raise NotImplementedError

    def restore(self) -> Step:
        raise NotImplementedError


class Restic(Tool):
    name = "restic"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        exe = shutil.which("restic")
        if not exe:
            raise BenchError("restic not found: `apt-get install restic` (scripts/setup.sh installs it)")
        self.exe = exe
        self.env |= {"RESTIC_PASSWORD_FILE": str(self.password_file), "RESTIC_REPOSITORY": str(self.repo)}

    def version(self) -> str:
        return subprocess.run([self.exe, "version"], capture_output=True, text=True).stdout.strip()

    def init(self) -> None:
        self.step("init", [self.exe, "init"])

    def backup(self, label: str, src: Path) -> tuple[Step, dict]:
        step = self.step(label, [self.exe, "backup", "--json", str(src)])
        return step, last_json(step.stdout, lambda o: o.get("message_type") == "summary")

    def restore(self) -> Step:
        return self.step("restore", [self.exe, "restore", "latest", "--target", str(self.restore_dir)])


class TimeVault(Tool):
    name = "timevault"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        exe = REPO_ROOT / ".venv" / "bin" / "timevault"
        if not exe.exists():
            exe = Path(shutil.which("timevault") or exe)
        if not exe.exists():
            raise BenchError(f"{exe} not found: run scripts/setup.sh (or use --only restic)")
        self.exe = str(exe)
        self.env["TIMEVAULT_PASSWORD_FILE"] = str(self.password_file)
        self.compile_bytecode(exe)

    @staticmethod
    def compile_bytecode(exe: Path) -> None:
        """Compile the checkout's modules once, as installing a wheel does.

        An editable install imports the sources; where PYTHONDONTWRITEBYTECODE is set (it is on
        these machines) every command would compile ~170 modules again (~0.1 s), a cost an
        installed TimeVault does not pay and restic, being compiled, never does."""
        python = exe.parent / "python"
        sources = [str(REPO_ROOT / d) for d in ("shared", "services", "proto") if (REPO_ROOT / d).is_dir()]
        if python.exists() and sources:
            subprocess.run([str(python), "-m", "compileall", "-q", "-j", "0", *sources],
                           capture_output=True, check=False)

    def repo_cmd(self, *args: str) -> list[str]:
        return [self.exe, "repo", *args, "--password-file", str(self.password_file)]

    def version(self) -> str:
        proc = subprocess.run([self.exe, "--version"], capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"timevault {version('timevault')}"
        except PackageNotFoundError:
            return "timevault (unknown version)"

    def init(self) -> None:
        self.step("init", self.repo_cmd("init", str(self.repo)))

    def backup(self, label: str, src: Path) -> tuple[Step, dict]:
        step = self.step(label, self.repo_cmd("backup", str(self.repo), str(src), "--json"))
        return step, last_json(step.stdout)

    def restore(self) -> Step:
        return self.step(
            "restore", self.repo_cmd("restore", str(self.repo), "latest", "--target", str(self.restore_dir))
        )


def corpus_script() -> Path:
    env = os.environ.get("TIMEVAULT_CORPUS_SCRIPT")
    path = Path(env) if env else DEFAULT_CORPUS_SCRIPT
    if not path.is_file():
        where = f"TIMEVAULT_CORPUS_SCRIPT={env}" if env else f"{DEFAULT_CORPUS_SCRIPT} (next to the repo)"
        raise BenchError(
            f"corpus generator not found at {where}; set TIMEVAULT_CORPUS_SCRIPT to make_corpus.py"
        )
    return path


def make_corpus(script: Path, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"{script} {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return last_json(proc.stdout)


def timed(label: str, tools: list[Tool], fn, cold: list[bool]) -> None:
    for tool in tools:
        cold.append(drop_caches())
        print(f"  {label:<12} {tool.name:<10}", end="", flush=True)
        seconds = fn(tool)
        print(f"{seconds:8.2f} s", flush=True)


def start_run(args: argparse.Namespace, prefix: str) -> tuple[Path, Path, list[Tool]]:
    """A new run folder, ``<workdir>/<prefix>-<UTC time>``, with the password file (0600), and
    the tools asked for (``--only``)."""
    names = [args.only] if args.only else list(TOOLS)
    run_dir = Path(args.workdir).resolve() / datetime.now(UTC).strftime(f"{prefix}-%Y%m%dT%H%M%SZ")
    run_dir.mkdir(parents=True)
    password_file = run_dir / "password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    classes = {"timevault": TimeVault, "restic": Restic}
    return run_dir, password_file, [classes[n](run_dir, password_file, args.timeout) for n in names]


def bench(args: argparse.Namespace) -> dict:
    script = corpus_script()
    run_dir, password_file, tools = start_run(args, "run")
    results = {t.name: ToolResult(version=t.version()) for t in tools}
    corpus = run_dir / "corpus"
    cold: list[bool] = []
    floor_seconds = 0.0
    try:
        print(f"generating {args.size_mb} MiB corpus in {corpus} ...", flush=True)
        gen = make_corpus(script, "--out", str(corpus), "--size-mb", str(args.size_mb), "--seed", "42")
        full_bytes, full_files = tree_size(corpus)
        print(f"  {full_files} files, {full_bytes / MiB:.1f} MiB in {gen.get('seconds', '?')} s")

        for tool in tools:
            tool.init()

        def full(tool: Tool) -> float:
            step, summary = tool.backup("full", corpus)
            r = results[tool.name]
            r.full_seconds, r.full_rss_kib, r.full_summary = step.seconds, step.max_rss_kib, summary
            r.repo_bytes_full = tree_size(tool.repo)[0]
            return step.seconds

        timed("full", tools, full, cold)

        mut = make_corpus(script, "--out", str(corpus), "--mutate", str(args.mutate), "--seed", "43")
        incr_bytes, incr_files = tree_size(corpus)
        print(
            f"mutated {args.mutate} %: {mut.get('edited', '?')} edited, {mut.get('new_files', '?')} new, "
            f"{mut.get('deleted', '?')} deleted; now {incr_files} files, {incr_bytes / MiB:.1f} MiB"
        )

        def incr(tool: Tool) -> float:
            step, summary = tool.backup("incr", corpus)
            r = results[tool.name]
            r.incr_seconds, r.incr_rss_kib, r.incr_summary = step.seconds, step.max_rss_kib, summary
            r.repo_bytes = tree_size(tool.repo)[0]
            return step.seconds

        timed("incremental", tools, incr, cold)

        def restore(tool: Tool) -> float:
            step = tool.restore()
            r = results[tool.name]
            r.restore_seconds, r.restore_rss_kib = step.seconds, step.max_rss_kib
            r.restored_bytes, r.restored_files = tree_size(tool.restore_dir)
            return step.seconds

        timed("restore", tools, restore, cold)
        floor_seconds = write_floor(corpus, run_dir / "floor")
        print(f"  write floor  (same files, zeros) {floor_seconds:6.2f} s", flush=True)
    finally:
        if not args.keep:
            for path in [corpus, *(p for t in tools for p in (t.repo, t.restore_dir))]:
                shutil.rmtree(path, ignore_errors=True)
            password_file.unlink(missing_ok=True)
            for t in tools:
                shutil.rmtree(t.env["XDG_CACHE_HOME"], ignore_errors=True)

    warnings = []
    for name, r in results.items():
        if (r.restored_bytes, r.restored_files) != (incr_bytes, incr_files):
            warnings.append(
                f"{name}: restored {r.restored_files} files / {r.restored_bytes} bytes, "
                f"corpus has {incr_files} / {incr_bytes}"
            )
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(), "kernel": platform.release()},
        "cache": "cold (dropped before each step)" if cold and all(cold) else "warm (could not drop)",
        "size_mb": args.size_mb,
        "mutate_pct": args.mutate,
        "corpus": {
            "full_bytes": full_bytes,
            "full_files": full_files,
            "incr_bytes": incr_bytes,
            "incr_files": incr_files,
            "generate": gen,
            "mutate": mut,
        },
        "tools": {name: asdict(r) | {"peak_rss_kib": r.peak_rss_kib} for name, r in results.items()},
        "warnings": warnings,
        "run_dir": str(run_dir),
        "write_floor_seconds": floor_seconds,
    }


def write_floor(corpus: Path, out: Path, keep: bool = False) -> float:
    """Seconds to create the corpus's files with zeros: what any restore pays to the file system.

    On a slow or shared disk both tools can sit on this floor, and then no ratio between them
    says anything about their own code.
    """
    zeros = bytes(8 * MiB)
    drop_caches()
    start = time.monotonic()
    for folder, _dirs, files in os.walk(corpus):
        target = out / os.path.relpath(folder, corpus)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            size = os.path.getsize(path)
            fd = os.open(target / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                for offset in range(0, size, len(zeros)):
                    os.pwrite(fd, memoryview(zeros)[: min(len(zeros), size - offset)], offset)
            finally:
                os.close(fd)
    seconds = time.monotonic() - start
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return seconds


def metrics(res: dict, name: str) -> dict[str, float]:
    t = res["tools"][name]
    c = res["corpus"]
    mbps = lambda n, s: n / MiB / s if s else 0.0  # noqa: E731
    return {
        "full_seconds": t["full_seconds"],
        "full_mbps": mbps(c["full_bytes"], t["full_seconds"]),
        "incr_seconds": t["incr_seconds"],
        "incr_mbps": mbps(c["incr_bytes"], t["incr_seconds"]),
        "restore_seconds": t["restore_seconds"],
        "restore_mbps": mbps(t["restored_bytes"], t["restore_seconds"]),
        "repo_bytes_full": t["repo_bytes_full"],
        "repo_bytes": t["repo_bytes"],
        "full_rss": t["full_rss_kib"] / 1024,
        "incr_rss": t["incr_rss_kib"] / 1024,
        "restore_rss": t["restore_rss_kib"] / 1024,
    }


ROWS = [
    ("full backup", "full_seconds", "s"),
    ("full backup", "full_mbps", "MiB/s"),
    ("incremental", "incr_seconds", "s"),
    ("incremental", "incr_mbps", "MiB/s"),
    ("restore", "restore_seconds", "s"),
    ("restore", "restore_mbps", "MiB/s"),
    ("repo after full", "repo_bytes_full", "MiB"),
    ("repo after incr", "repo_bytes", "MiB"),
    ("peak RSS full", "full_rss", "MiB"),
    ("peak RSS incr", "incr_rss", "MiB"),
    ("peak RSS restore", "restore_rss", "MiB"),
]


def ratio_table(names: list[str], rows: list[tuple[str, str, list[float]]]) -> list[str]:
    """Rows of (label, unit, one value per tool); with two tools, a first/second ratio column."""
    both = len(names) == 2
    lines = [
        f"{'step':<18}{'unit':<7}"
        + "".join(f"{n:>12}" for n in names)
        + (f"{'TV/restic':>12}" if both else "")
    ]
    for label, unit, vals in rows:
        row = f"{label:<18}{unit:<7}" + "".join(f"{v:>12.2f}" for v in vals)
        if both:
            row += f"{vals[0] / vals[1]:>12.2f}" if vals[1] else f"{'-':>12}"
        lines.append(row)
    return lines


def report(res: dict) -> str:
    names = list(res["tools"])
    m = {n: metrics(res, n) for n in names}
    both = len(names) == 2
    c = res["corpus"]
    lines = [
        f"corpus: {c['full_files']} files, {c['full_bytes'] / MiB:.1f} MiB; after {res['mutate_pct']} % "
        f"mutation {c['incr_files']} files, {c['incr_bytes'] / MiB:.1f} MiB; page cache: {res['cache']}",
        "",
        *ratio_table(
            names,
            [
                (
                    label,
                    unit,
                    [m[n][key] / (MiB if unit == "MiB" and key.startswith("repo") else 1) for n in names],
                )
                for label, key, unit in ROWS
            ],
        ),
    ]
    if "timevault" in names:
        lines.append("")
        lines.append("targets:")
        tv = m["timevault"]
        for key, op, bound, text in TARGETS:
            if not both:
                lines.append(f"  [ -- ] {text} (needs both tools)")
                continue
            ratio = tv[key] / m["restic"][key] if m["restic"][key] else float("inf")
            ok = ratio >= bound if op == ">=" else ratio <= bound
            lines.append(f"  [{'PASS' if ok else 'FAIL'}] {text}: {ratio:.2f}x")
        peak = res["tools"]["timevault"]["peak_rss_kib"] / 1024
        lines.append(
            f"  [{'PASS' if peak < RSS_LIMIT_MIB else 'FAIL'}] peak RSS < {RSS_LIMIT_MIB} MiB: {peak:.0f} MiB"
        )
    floor = res.get("write_floor_seconds")
    if floor:
        restores = ", ".join(f"{n} {m[n]['restore_seconds'] / floor:.2f}x" for n in names)
        lines.append(
            f"file-system floor for the restore (writing the same files): {floor:.2f} s; "
            f"restore time / floor: {restores}"
        )
    for w in res["warnings"]:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=float, default=1024, help="corpus size in MiB (default 1024)")
    ap.add_argument("--mutate", type=float, default=5, help="percent of files changed before the incremental")
    ap.add_argument(
        "--workdir",
        default=str(REPO_ROOT / "bench-output"),
        help="where corpus, repositories and results go (default bench-output/)",
    )
    ap.add_argument("--keep", action="store_true", help="keep corpus, repositories and restores")
    ap.add_argument("--only", choices=TOOLS, help="benchmark one tool only")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds allowed per step (default 3600)")
    args = ap.parse_args(argv)
    try:
        res = bench(args)
    except BenchError as exc:
        print(f"\nbench_core: {exc}", file=sys.stderr)
        return 1
    save_and_print(res, Path(args.workdir) / "latest.json", report(res))
    return 0


def save_and_print(res: dict, latest: Path, table: str) -> None:
    """Write results.json into the run folder and a copy to `latest`, then print the table."""
    text = json.dumps(res, indent=2) + "\n"
    out = Path(res["run_dir"]) / "results.json"
    out.write_text(text)
    latest.write_text(text)
    print()
    print(table)
    print(f"\nresults: {out}")


if __name__ == "__main__":
    sys.exit(main())
