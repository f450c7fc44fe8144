#!/usr/bin/env python3
"""A TimeVault Space on loopback against the local-folder location, in one run on one corpus.

Steps, each timed with the peak RSS of its process (os.wait4, as in bench_core.py):
  generate corpus  ->  start a Space (folder storage), add an account, sign in (device flow)
  ->  full backup to a local folder  ->  full backup to the Space
  ->  restore from the local folder  ->  restore from the Space  ->  stop the Space.

Both backups are ``timevault repo backup --no-cache`` of the same corpus into fresh repositories,
so the two differ only in where the packs go. The page cache is dropped before each timed step
when that is possible. The Space server's peak RSS is its whole life's (os.wait4 when it exits).

    .venv/bin/python bench/bench_space.py --size-mb 1024
    .venv/bin/python bench/bench_space.py --size-mb 100 --keep
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import (
    PASSWORD,
    BenchError,
    Step,
    corpus_script,
    drop_caches,
    last_json,
    make_corpus,
    run,
    tree_size,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
TARGET_RATIO = 0.7  # Space throughput / local throughput, both ways
RSS_LIMIT_MIB = 200  # the Space server's peak RSS
SPACE_USER = "bench"


@dataclass
class Result:
    corpus_bytes: int = 0
    corpus_files: int = 0
    cold_cache: bool = False
    local_backup_s: float = 0.0
    local_backup_rss_kib: int = 0
    space_backup_s: float = 0.0
    space_backup_rss_kib: int = 0
    local_restore_s: float = 0.0
    local_restore_rss_kib: int = 0
    space_restore_s: float = 0.0
    space_restore_rss_kib: int = 0
    space_server_rss_kib: int = 0
    local_repo_bytes: int = 0
    space_stored_bytes: int = 0

    def mbps(self, seconds: float) -> float:
        return self.corpus_bytes / MiB / seconds if seconds else 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Space:
    """`timevault space serve` as a child process, reaped with os.wait4 for its peak RSS."""

    def __init__(self, exe: str, data_dir: Path, log: Path) -> None:
        self.exe = exe
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [self.exe, "space", "serve", "--data-dir", str(self.data_dir), "--listen", f"127.0.0.1:{self.port}",
                 "--device-interval", "1"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the Space exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/space/v1/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise BenchError("the Space did not start within 30 s")

    def stop(self) -> int:
        """Stop it; returns its peak RSS in KiB."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        _, _, usage = os.wait4(self.proc.pid, 0)
        self.proc = None
        return int(usage.ru_maxrss)


def sign_in(exe: str, space: Space, password_file: Path, token_file: Path, env: dict[str, str]) -> None:
    """The real device flow: `space login --token-file` approved by `space approve`."""
    login = subprocess.Popen([exe, "space", "login", space.url, "--token-file", str(token_file), "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             stdin=subprocess.DEVNULL)
    assert login.stdout is not None
    code = json.loads(login.stdout.readline())["user_code"]
    subprocess.run([exe, "space", "approve", code, "--url", space.url, "--user", SPACE_USER, "--password-file",
                    str(password_file)], check=True, capture_output=True, env=env)
    _, err = login.communicate(timeout=60)
    if login.returncode != 0:
        raise BenchError(f"signing in to the Space failed: {err}")


def bench(args: argparse.Namespace) -> dict:
    exe = str(REPO_ROOT / ".venv" / "bin" / "timevault")
    if not Path(exe).exists():
        raise BenchError(f"{exe} not found: run scripts/setup.sh")
    work = Path(args.workdir).resolve()
    run_dir = work / datetime.now(UTC).strftime("space-%Y%m%dT%H%M%SZ")
    run_dir.mkdir(parents=True)
    password_file = run_dir / "password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    token_file = run_dir / "space-token"
    env = dict(os.environ, TIMEVAULT_PASSWORD_FILE=str(password_file), TIMEVAULT_SPACE_TOKEN_FILE=str(token_file),
               XDG_CACHE_HOME=str(run_dir / "cache"))
    logs = run_dir / "logs"
    result = Result()
    corpus = run_dir / "corpus"
    print(f"generating a {args.size_mb} MiB corpus in {corpus}", flush=True)
    make_corpus(corpus_script(), "--out", str(corpus), "--size-mb", str(args.size_mb), "--seed", str(args.seed))
    result.corpus_bytes, result.corpus_files = tree_size(corpus)

    space = Space(exe, run_dir / "space", logs / "space-serve.log")
    subprocess.run([exe, "space", "user", "add", SPACE_USER, "--data-dir", str(space.data_dir), "--password-file",
                    str(password_file)], check=True, capture_output=True)
    space.start()
    cold: list[bool] = []
    try:
        sign_in(exe, space, password_file, token_file, env)
        local, remote = str(run_dir / "repo-local"), f"space+http://127.0.0.1:{space.port}/bench"
        for location in (local, remote):
            run([exe, "repo", "init", location], env=env, log=logs / f"init-{'space' if '://' in location else 'local'}",
                timeout=args.timeout)

        def step(label: str, cmd: list[str]) -> Step:
            cold.append(drop_caches())
            print(f"  {label:<16}", end="", flush=True)
            done = run(cmd, env=env, log=logs / label, timeout=args.timeout)
            print(f"{done.seconds:8.2f} s  {done.max_rss_kib / 1024:6.0f} MiB RSS", flush=True)
            return done

        for name, location in (("local", local), ("space", remote)):
            done = step(f"backup-{name}", [exe, "repo", "backup", location, str(corpus), "--json", "--no-cache"])
            summary = last_json(done.stdout)
            if summary.get("files") != result.corpus_files:
                raise BenchError(f"{name} backup saw {summary.get('files')} files, the corpus has {result.corpus_files}")
            setattr(result, f"{name}_backup_s", done.seconds)
            setattr(result, f"{name}_backup_rss_kib", done.max_rss_kib)
        for name, location in (("local", local), ("space", remote)):
            target = run_dir / f"restore-{name}"
            done = step(f"restore-{name}", [exe, "repo", "restore", location, "latest", "--target", str(target)])
            restored_bytes, restored_files = tree_size(target / str(corpus).lstrip("/"))
            if (restored_bytes, restored_files) != (result.corpus_bytes, result.corpus_files):
                raise BenchError(f"{name} restore gave {restored_files} files / {restored_bytes} bytes")
            setattr(result, f"{name}_restore_s", done.seconds)
            setattr(result, f"{name}_restore_rss_kib", done.max_rss_kib)
        result.local_repo_bytes = tree_size(Path(local))[0]
        result.space_stored_bytes = tree_size(space.data_dir / "objects")[0]
    finally:
        result.space_server_rss_kib = space.stop()
    result.cold_cache = bool(cold) and all(cold)
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "kernel": platform.release()},
        "size_mb": args.size_mb,
        "result": asdict(result),
        "ratios": {
            "backup": ratio(result.local_backup_s, result.space_backup_s),
            "restore": ratio(result.local_restore_s, result.space_restore_s),
        },
    }
    (run_dir / "result.json").write_text(json.dumps(report, indent=2) + "\n")
    if not args.keep:
        for name in ("corpus", "repo-local", "restore-local", "restore-space", "space"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
    print_table(result, report["ratios"], run_dir)
    return report


def ratio(local_seconds: float, space_seconds: float) -> float:
    """Space throughput / local throughput for the same bytes."""
    return local_seconds / space_seconds if space_seconds else 0.0


def print_table(r: Result, ratios: dict[str, float], run_dir: Path) -> None:
    print()
    print(f"corpus: {r.corpus_bytes / MiB:.0f} MiB, {r.corpus_files} files; page cache "
          f"{'dropped before each step' if r.cold_cache else 'warm'}")
    print(f"{'step':<10} {'local MiB/s':>12} {'Space MiB/s':>12} {'Space/local':>12} {'target':>8}")
    for label, local_s, space_s, key in (("backup", r.local_backup_s, r.space_backup_s, "backup"),
                                         ("restore", r.local_restore_s, r.space_restore_s, "restore")):
        ok = "ok" if ratios[key] >= TARGET_RATIO else "MISSED"
        print(f"{label:<10} {r.mbps(local_s):>12.1f} {r.mbps(space_s):>12.1f} {ratios[key]:>11.2f}x "
              f"{'>=' + str(TARGET_RATIO):>6} {ok}")
    rss = r.space_server_rss_kib / 1024
    print(f"Space server peak RSS: {rss:.0f} MiB (target < {RSS_LIMIT_MIB} MiB: "
          f"{'ok' if rss < RSS_LIMIT_MIB else 'MISSED'})")
    print(f"client peak RSS: backup local {r.local_backup_rss_kib / 1024:.0f} / Space "
          f"{r.space_backup_rss_kib / 1024:.0f} MiB, restore local {r.local_restore_rss_kib / 1024:.0f} / Space "
          f"{r.space_restore_rss_kib / 1024:.0f} MiB")
    print(f"stored: local repository {r.local_repo_bytes / MiB:.1f} MiB, Space {r.space_stored_bytes / MiB:.1f} MiB")
    print(f"result: {run_dir / 'result.json'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=float, default=1024)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", default=str(REPO_ROOT / "bench-output"))
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--keep", action="store_true", help="keep the corpus, repositories and restores")
    args = parser.parse_args()
    try:
        bench(args)
    except BenchError as exc:
        print(f"bench_space: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
