#!/usr/bin/env python3
"""Browsing a snapshot: how long listing a folder of 10,000 files takes after unlocking.

Steps: generate the home-folder-like corpus (make_corpus.py, 1 GiB by default) plus a folder of
10,000 small files; start `timevault up` in a private data dir; create a plan and back it up
through the services; then, over the HTTP API as the web UI does it:

  unlock            POST /plans/{id}/unlock (the restorer opens the repository with the password)
  ls, first         GET  …/snapshots/latest/ls?path=<the 10,000-file folder>, right after unlocking
  ls, again         the same, five more times (median)
  timevault ls      the CLI command end to end (it unlocks, lists and locks again)
  core list_folder  in-process, on a freshly opened repository (no services)

The target: the first listing after unlocking takes under a second.

    .venv/bin/python bench/bench_browse.py                 # 1 GiB corpus
    .venv/bin/python bench/bench_browse.py --size-mb 100   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "bench"))

from bench_core import BenchError, corpus_script, make_corpus  # noqa: E402

PASSWORD = "bench-password-not-secret"
FILES = 10_000
TARGET_SECONDS = 1.0


def timevault() -> list[str]:
    exe = REPO_ROOT / ".venv" / "bin" / "timevault"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "timevault.cli.main"]


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        req = urllib.request.Request(self.url + "/api/v1" + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json", **(headers or {})})
        with urllib.request.urlopen(req, timeout=600) as resp:
            return json.loads(resp.read() or b"null")


def timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def bench(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work).absolute()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    corpus = work / "corpus"
    print(f"generating a {args.size_mb} MiB corpus in {corpus}", flush=True)
    info = make_corpus(corpus_script(), "--out", str(corpus), "--size-mb", str(args.size_mb), "--seed", "42")
    many = corpus / "many-files"
    many.mkdir()
    for i in range(FILES):
        (many / f"file-{i:05d}.txt").write_bytes(b"%d\n" % i * 10)
    password_file = work / "password"
    password_file.write_text(PASSWORD + "\n")
    data = work / "data"
    env = {**os.environ, "TIMEVAULT_PASSWORD_FILE": str(password_file)}
    log = open(work / "up.log", "wb")
    up = subprocess.Popen([*timevault(), "up", "--data-dir", str(data), "--listen", "127.0.0.1:0"],
                          stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 90
        while not (data / "gateway.json").exists():
            if up.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"`timevault up` did not start; see {work / 'up.log'}")
            time.sleep(0.2)
        gateway = json.loads((data / "gateway.json").read_text())
        api = Api(gateway["url"], gateway["token"])
        cli_env = {**env, "TIMEVAULT_URL": gateway["url"], "TIMEVAULT_TOKEN": gateway["token"]}
        subprocess.run([*timevault(), "plan", "create", "bench", "--source", str(corpus), "--daily", "--at", "03:00",
                        "--location", str(work / "vault"), "--password-file", str(password_file)],
                       check=True, env=cli_env, capture_output=True)
        print("backing up through the services", flush=True)
        backup_seconds, _ = timed(lambda: subprocess.run(
            [*timevault(), "backup", "bench", "--wait", "--json"], check=True, env=cli_env, capture_output=True))
        plan_id = next(p["id"] for p in api.call("GET", "/plans") if p["name"] == "bench")
        path = urllib.parse.quote(str(many), safe="")

        unlock_seconds, session = timed(lambda: api.call("POST", f"/plans/{plan_id}/unlock", {"password": PASSWORD}))
        headers = {"X-Timevault-Session": session["session"]}
        first_seconds, listing = timed(lambda: api.call(
            "GET", f"/plans/{plan_id}/snapshots/latest/ls?path={path}", headers=headers))
        if len(listing["entries"]) != FILES:
            raise BenchError(f"listed {len(listing['entries'])} entries, expected {FILES}")
        again = [timed(lambda: api.call("GET", f"/plans/{plan_id}/snapshots/latest/ls?path={path}",
                                        headers=headers))[0] for _ in range(5)]
        api.call("POST", f"/plans/{plan_id}/lock", headers=headers)
        cli_seconds, _ = timed(lambda: subprocess.run(
            [*timevault(), "ls", "bench", "latest", str(many), "--json", "--password-file", str(password_file)],
            check=True, env=cli_env, capture_output=True))
        core_open, core_first = asyncio.run(core_listing(work / "vault", str(many)))
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(60)
        log.close()
    return {
        "corpus_mib": args.size_mb, "corpus_files": info.get("files"), "folder_files": FILES,
        "backup_seconds": round(backup_seconds, 2), "unlock_seconds": round(unlock_seconds, 3),
        "ls_first_seconds": round(first_seconds, 3), "ls_again_median_seconds": round(statistics.median(again), 3),
        "cli_ls_seconds": round(cli_seconds, 3), "core_open_seconds": round(core_open, 3),
        "core_list_seconds": round(core_first, 3), "target_seconds": TARGET_SECONDS,
        "meets_target": first_seconds < TARGET_SECONDS,
    }


async def core_listing(vault: Path, folder: str) -> tuple[float, float]:
    """(open the repository, then the first listing of `folder` in the latest snapshot), in-process."""
    from timevault.core.browse import list_folder
    from timevault.core.repository import Repository
    from timevault.core.storage import LocalStorage

    started = time.perf_counter()
    repo = await Repository.open(LocalStorage(vault), PASSWORD)
    snapshot = await repo.load_snapshot(await repo.resolve_snapshot("latest"))
    opened = time.perf_counter()
    entries = await list_folder(repo, snapshot, folder)
    listed = time.perf_counter()
    await repo.close()
    assert len(entries) == FILES
    return opened - started, listed - opened


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--work", default=str(REPO_ROOT / "bench-output" / "browse"))
    args = parser.parse_args(argv)
    try:
        result = bench(args)
    except BenchError as exc:
        print(f"bench_browse: {exc}", file=sys.stderr)
        return 1
    out = Path(args.work) / "result.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"  {key:<26} {value}")
    verdict = "meets" if result["meets_target"] else "MISSES"
    print(f"listing {FILES} files after unlocking: {result['ls_first_seconds']:.3f} s ({verdict} the "
          f"{TARGET_SECONDS:.0f} s target); result in {out}")
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
