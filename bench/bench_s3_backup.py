#!/usr/bin/env python3
"""Full backup and restore to S3: TimeVault against restic, on one local moto server, in one run.

Steps, each timed, with the peak RSS of the tool's process (os.wait4, as in bench_core.py):
  start moto on a free port  ->  generate corpus  ->  TimeVault: init, backup, restore
  ->  restic: init, backup, restore  ->  verify both restores byte for byte  ->  table + JSON.

TimeVault uses ``s3://timevault-bench/repo?endpoint=http://127.0.0.1:PORT&path_style=true...``;
restic uses its own S3 backend, ``s3:http://127.0.0.1:PORT/restic-bench``, on the same server.
moto is an in-memory Python server, so both tools share its (considerable) per-request and
per-byte cost: the ratio between the tools is the number to look at, not the absolute MB/s.

    .venv/bin/python bench/bench_s3_backup.py                  # 256 MiB corpus
    .venv/bin/python bench/bench_s3_backup.py --size-mb 1024   # the 1 GiB run
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import (
    BenchError,
    Step,
    corpus_script,
    drop_caches,
    last_json,
    make_corpus,
    ratio_table,
    run,
    save_and_print,
    tree_size,
)

from tests.support.moto_server import DUMMY_AWS_ENV, create_bucket, start_moto_server

REPO_ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
PASSWORD = "bench-password-not-secret"
TOOLS = ("timevault", "restic")
BUCKETS = {"timevault": "timevault-bench", "restic": "restic-bench"}
# TimeVault / restic targets: (metric, bound, description); both are "at least".
TARGETS = [
    ("backup_mbps", 1.0, "backup throughput >= restic's"),
    ("restore_mbps", 1.0, "restore throughput >= restic's"),
]


@dataclass
class ToolResult:
    version: str = ""
    location: str = ""
    backup_seconds: float = 0.0
    backup_rss_kib: int = 0
    restore_seconds: float = 0.0
    restore_rss_kib: int = 0
    repo_bytes: int = 0
    repo_objects: int = 0
    restored_bytes: int = 0
    restored_files: int = 0
    identical: bool = False
    backup_summary: dict = field(default_factory=dict)


class Tool:
    name: str

    def __init__(self, work: Path, password_file: Path, endpoint: str, timeout: float) -> None:
        self.restore_dir = work / f"restore-{self.name}"
        self.logs = work / "logs"
        self.password_file = password_file
        self.endpoint = endpoint
        self.bucket = BUCKETS[self.name]
        self.timeout = timeout
        self.env = dict(os.environ, **DUMMY_AWS_ENV, XDG_CACHE_HOME=str(work / f"cache-{self.name}"))

    def step(self, label: str, cmd: list[str]) -> Step:
        return run(cmd, env=self.env, log=self.logs / f"{self.name}-{label}", timeout=self.timeout)

    # What each tool under test does; the subclasses say how.
    location: str

    def version(self) -> str:
        raise NotImplementedError

    def init(self) -> None:
        raise NotImplementedError

    def backup(self, src: Path) -> tuple[Step, dict]:
        raise NotImplementedError

    def restore(self) -> Step:
        raise NotImplementedError


class TimeVault(Tool):
    name = "timevault"

    def __init__(self, *args, concurrency: int) -> None:
        super().__init__(*args)
        exe = REPO_ROOT / ".venv" / "bin" / "timevault"
        if not exe.exists():
            raise BenchError(f"{exe} not found: run scripts/setup.sh")
        self.exe = str(exe)
        self.location = (
            f"s3://{self.bucket}/repo?endpoint={self.endpoint}&region=us-east-1&path_style=true"
            f"&concurrency={concurrency}"
        )

    def cmd(self, *args: str) -> list[str]:
        return [self.exe, "repo", *args, "--password-file", str(self.password_file)]

    def version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"timevault {version('timevault')}"
        except PackageNotFoundError:
            return "timevault (unknown version)"

    def init(self) -> None:
        self.step("init", self.cmd("init", self.location))

    def backup(self, src: Path) -> tuple[Step, dict]:
        step = self.step("backup", self.cmd("backup", self.location, str(src), "--json"))
        return step, last_json(step.stdout)

    def restore(self) -> Step:
        return self.step(
            "restore", self.cmd("restore", self.location, "latest", "--target", str(self.restore_dir))
        )


class Restic(Tool):
    name = "restic"

    def __init__(self, *args, concurrency: int) -> None:
        super().__init__(*args)
        exe = shutil.which("restic")
        if not exe:
            raise BenchError("restic not found: `apt-get install restic` (scripts/setup.sh installs it)")
        self.exe = exe
        self.location = f"s3:{self.endpoint}/{self.bucket}"
        self.env |= {"RESTIC_PASSWORD_FILE": str(self.password_file), "RESTIC_REPOSITORY": self.location}

    def version(self) -> str:
        return subprocess.run([self.exe, "version"], capture_output=True, text=True).stdout.strip()

    def init(self) -> None:
        self.step("init", [self.exe, "init"])

    def backup(self, src: Path) -> tuple[Step, dict]:
        step = self.step("backup", [self.exe, "backup", "--json", str(src)])
        return step, last_json(step.stdout, lambda o: o.get("message_type") == "summary")

    def restore(self) -> Step:
        return self.step("restore", [self.exe, "restore", "latest", "--target", str(self.restore_dir)])


def tree_digest(root: Path) -> dict[str, str]:
    """relative path → sha256 of a file, link target of a symlink, "dir" for a folder."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = "-> " + os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = "dir"
            else:
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    while block := f.read(4 * MiB):
                        h.update(block)
                found[rel] = h.hexdigest()
    return found


async def bucket_usage(endpoint: str, bucket: str) -> tuple[int, int]:
    """(bytes, objects) stored in a bucket."""
    from aiobotocore.session import get_session

    total = count = 0
    async with get_session().create_client("s3", region_name="us-east-1", endpoint_url=endpoint) as s3:
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=bucket):
            for obj in page.get("Contents", ()):
                total += obj["Size"]
                count += 1
    return total, count


def bench(args: argparse.Namespace) -> dict:
    names = [args.only] if args.only else list(TOOLS)
    script = corpus_script()
    work = Path(args.workdir).resolve()
    run_dir = work / datetime.now(UTC).strftime("s3-run-%Y%m%dT%H%M%SZ")
    run_dir.mkdir(parents=True)
    password_file = run_dir / "password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    os.environ.update(DUMMY_AWS_ENV)  # for creating buckets and reading their usage here

    print("starting moto ...", flush=True)
    endpoint, stop_moto = start_moto_server()
    corpus = run_dir / "corpus"
    tools: list[Tool] = []
    cold: list[bool] = []
    try:
        classes = {"timevault": TimeVault, "restic": Restic}
        tools = [
            classes[n](run_dir, password_file, endpoint, args.timeout, concurrency=args.concurrency)
            for n in names
        ]
        results = {t.name: ToolResult(version=t.version(), location=t.location) for t in tools}
        for tool in tools:
            asyncio.run(create_bucket(endpoint, tool.bucket))
        print(f"  moto at {endpoint}")

        print(f"generating {args.size_mb} MiB corpus in {corpus} ...", flush=True)
        gen = make_corpus(script, "--out", str(corpus), "--size-mb", str(args.size_mb), "--seed", "42")
        corpus_bytes, corpus_files = tree_size(corpus)
        print(f"  {corpus_files} files, {corpus_bytes / MiB:.1f} MiB in {gen.get('seconds', '?')} s")
        expected = tree_digest(corpus)

        for tool in tools:
            r = results[tool.name]
            tool.init()
            cold.append(drop_caches())
            print(f"  backup   {tool.name:<10}", end="", flush=True)
            step, r.backup_summary = tool.backup(corpus)
            r.backup_seconds, r.backup_rss_kib = step.seconds, step.max_rss_kib
            print(f"{step.seconds:8.2f} s  peak RSS {step.max_rss_kib / 1024:6.0f} MiB", flush=True)
            r.repo_bytes, r.repo_objects = asyncio.run(bucket_usage(endpoint, tool.bucket))

            cold.append(drop_caches())
            print(f"  restore  {tool.name:<10}", end="", flush=True)
            step = tool.restore()
            r.restore_seconds, r.restore_rss_kib = step.seconds, step.max_rss_kib
            print(f"{step.seconds:8.2f} s  peak RSS {step.max_rss_kib / 1024:6.0f} MiB", flush=True)
            r.restored_bytes, r.restored_files = tree_size(tool.restore_dir)
            # Both tools restore the source's absolute path below the target.
            restored_root = tool.restore_dir / str(corpus).lstrip("/")
            r.identical = tree_digest(restored_root) == expected
            if not args.keep:
                shutil.rmtree(tool.restore_dir, ignore_errors=True)
    finally:
        stop_moto()
        if not args.keep:
            shutil.rmtree(corpus, ignore_errors=True)
            password_file.unlink(missing_ok=True)
            for t in tools:
                shutil.rmtree(t.restore_dir, ignore_errors=True)
                shutil.rmtree(t.env["XDG_CACHE_HOME"], ignore_errors=True)

    warnings = [
        f"{name}: the restored tree differs from the corpus ({r.restored_files} files, {r.restored_bytes} bytes)"
        for name, r in results.items()
        if not r.identical
    ]
    return {
        "benchmark": "bench_s3_backup",
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(), "kernel": platform.release()},
        "cache": "cold (dropped before each step)" if cold and all(cold) else "warm (could not drop)",
        "server": "moto (in-memory, local child process)",
        "size_mb": args.size_mb,
        "concurrency": args.concurrency,
        "corpus": {"bytes": corpus_bytes, "files": corpus_files, "generate": gen},
        "tools": {name: asdict(r) for name, r in results.items()},
        "warnings": warnings,
        "run_dir": str(run_dir),
    }


def metrics(res: dict, name: str) -> dict[str, float]:
    t = res["tools"][name]
    size = res["corpus"]["bytes"] / MiB
    return {
        "backup_seconds": t["backup_seconds"],
        "backup_mbps": size / t["backup_seconds"] if t["backup_seconds"] else 0.0,
        "restore_seconds": t["restore_seconds"],
        "restore_mbps": t["restored_bytes"] / MiB / t["restore_seconds"] if t["restore_seconds"] else 0.0,
        "repo_mib": t["repo_bytes"] / MiB,
        "repo_objects": t["repo_objects"],
        "backup_rss": t["backup_rss_kib"] / 1024,
        "restore_rss": t["restore_rss_kib"] / 1024,
    }


ROWS = [
    ("backup", "backup_seconds", "s"),
    ("backup", "backup_mbps", "MiB/s"),
    ("restore", "restore_seconds", "s"),
    ("restore", "restore_mbps", "MiB/s"),
    ("bucket size", "repo_mib", "MiB"),
    ("bucket objects", "repo_objects", ""),
    ("peak RSS backup", "backup_rss", "MiB"),
    ("peak RSS restore", "restore_rss", "MiB"),
]


def report(res: dict) -> str:
    names = list(res["tools"])
    m = {n: metrics(res, n) for n in names}
    both = len(names) == 2
    c = res["corpus"]
    lines = [
        f"corpus: {c['files']} files, {c['bytes'] / MiB:.1f} MiB; S3: {res['server']}, TimeVault "
        f"concurrency={res['concurrency']}; page cache: {res['cache']}",
        "",
        *ratio_table(names, [(label, unit, [m[n][key] for n in names]) for label, key, unit in ROWS]),
    ]
    if both:
        lines += ["", "targets:"]
        for key, bound, text in TARGETS:
            ratio = m["timevault"][key] / m["restic"][key] if m["restic"][key] else float("inf")
            lines.append(f"  [{'PASS' if ratio >= bound else 'FAIL'}] {text}: {ratio:.2f}x")
    for name in names:
        ok = res["tools"][name]["identical"]
        lines.append(f"  [{'PASS' if ok else 'FAIL'}] {name} restore is byte-identical to the corpus")
    for w in res["warnings"]:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=float, default=256, help="corpus size in MiB (default 256)")
    ap.add_argument(
        "--workdir",
        default=str(REPO_ROOT / "bench-output"),
        help="where corpus, restores and results go (default bench-output/)",
    )
    ap.add_argument(
        "--concurrency", type=int, default=4, help="TimeVault's S3 concurrency parameter (default 4)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the corpus and the restored trees")
    ap.add_argument("--only", choices=TOOLS, help="benchmark one tool only")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds allowed per step (default 3600)")
    args = ap.parse_args(argv)
    try:
        res = bench(args)
    except BenchError as exc:
        print(f"\nbench_s3_backup: {exc}", file=sys.stderr)
        return 1
    save_and_print(res, Path(args.workdir) / "latest-s3.json", report(res))
    return 0 if not res["warnings"] else 1


if __name__ == "__main__":
    sys.exit(main())
