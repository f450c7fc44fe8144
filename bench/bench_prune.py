#!/usr/bin/env python3
"""Forget and prune after a month of backups: TimeVault against restic, on one generated corpus.

Steps (both tools see the same corpus state at every backup):
  generate corpus  ->  full backup  ->  30 x (mutate 5 %, incremental backup)
  ->  forget all but the newest 10 snapshots and prune   (timed, with peak RSS)
  ->  check the repository, restore the newest snapshot and compare it with the corpus.

TimeVault runs `timevault repo forget REPO --keep-last 10 --prune`, restic `restic forget
--keep-last 10 --prune`: one command each, one password derivation each. The backups are not what this measures (`bench_core.py` does): they only build the
history.

    .venv/bin/python bench/bench_prune.py --size-mb 200
    .venv/bin/python bench/bench_prune.py --size-mb 1024 --snapshots 30 --keep 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import (
    PASSWORD,
    BenchError,
    Restic,
    Step,
    TimeVault,
    Tool,
    corpus_script,
    drop_caches,
    make_corpus,
    tree_size,
)

MiB = 1 << 20
RSS_LIMIT_MIB = 300


def forget_and_prune(tool: Tool, keep: int) -> tuple[float, int, dict]:
    """(seconds, peak RSS KiB, what the tool said) of forgetting all but `keep` and pruning."""
    if isinstance(tool, TimeVault):
        ran = tool.step("forget-prune", [*tool.repo_cmd("forget", str(tool.repo), "--keep-last", str(keep)),
                                         "--prune", "--json"])
        return ran.seconds, ran.max_rss_kib, json.loads(ran.stdout)
    assert isinstance(tool, Restic)
    step: Step = tool.step("forget-prune", [tool.exe, "forget", "--keep-last", str(keep), "--prune"])
    return step.seconds, step.max_rss_kib, {"stdout_tail": step.stdout[-1500:]}


def check(tool: Tool) -> str:
    if isinstance(tool, TimeVault):
        return tool.step("check", tool.repo_cmd("check", str(tool.repo))).stdout.strip().splitlines()[-1]
    assert isinstance(tool, Restic)
    return tool.step("check", [tool.exe, "check"]).stdout.strip().splitlines()[-1]


def snapshot_count(tool: Tool) -> int:
    if isinstance(tool, TimeVault):
        return len(json.loads(tool.step("snapshots", [*tool.repo_cmd("snapshots", str(tool.repo)), "--json"]).stdout))
    assert isinstance(tool, Restic)
    return len(json.loads(tool.step("snapshots", [tool.exe, "snapshots", "--json"]).stdout))


def bench(args: argparse.Namespace) -> dict:
    script = corpus_script()
    work = Path(args.workdir).resolve()
    run_dir = work / datetime.now(UTC).strftime("prune-%Y%m%dT%H%M%SZ")
    run_dir.mkdir(parents=True)
    password_file = run_dir / "password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    tools: list[Tool] = [TimeVault(run_dir, password_file, args.timeout), Restic(run_dir, password_file, args.timeout)]
    corpus = run_dir / "corpus"
    result: dict = {"tools": {}}
    cold: list[bool] = []
    try:
        print(f"generating {args.size_mb} MiB corpus ...", flush=True)
        make_corpus(script, "--out", str(corpus), "--size-mb", str(args.size_mb), "--seed", "42")
        for tool in tools:
            tool.init()
            tool.backup("backup-00", corpus)
        for i in range(1, args.snapshots):
            make_corpus(script, "--out", str(corpus), "--mutate", str(args.mutate), "--seed", str(100 + i))
            for tool in tools:
                tool.backup(f"backup-{i:02d}", corpus)
            print(f"  snapshot {i + 1}/{args.snapshots}", flush=True)
        corpus_bytes, corpus_files = tree_size(corpus)
        for tool in tools:
            before = tree_size(tool.repo)[0]
            cold.append(drop_caches())
            seconds, rss, said = forget_and_prune(tool, args.keep)
            after = tree_size(tool.repo)[0]
            checked = check(tool)
            count = snapshot_count(tool)
            restored = tool.restore()
            restored_bytes, restored_files = tree_size(tool.restore_dir)
            result["tools"][tool.name] = {
                "version": tool.version(), "seconds": seconds, "peak_rss_kib": rss, "repo_bytes_before": before,
                "repo_bytes_after": after, "snapshots_after": count, "check": checked,
                "restore_ok": (restored_bytes, restored_files) == (corpus_bytes, corpus_files),
                "restore_seconds": restored.seconds, "report": said,
            }
            print(f"  {tool.name:<10} forget+prune {seconds:7.2f} s  peak RSS {rss / 1024:6.0f} MiB  "
                  f"repository {before / MiB:8.1f} -> {after / MiB:8.1f} MiB", flush=True)
    finally:
        if not args.keep_files:
            for path in [corpus, *(p for t in tools for p in (t.repo, t.restore_dir))]:
                shutil.rmtree(path, ignore_errors=True)
            for t in tools:
                shutil.rmtree(t.env["XDG_CACHE_HOME"], ignore_errors=True)
    result |= {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(), "kernel": platform.release()},
        "cache": "cold (dropped before each step)" if cold and all(cold) else "warm (could not drop)",
        "size_mb": args.size_mb, "snapshots": args.snapshots, "keep": args.keep, "mutate_pct": args.mutate,
        "corpus_bytes_at_end": corpus_bytes, "run_dir": str(run_dir),
    }
    (run_dir / "results.json").write_text(json.dumps(result, indent=2))
    shutil.copy(run_dir / "results.json", work / "prune-latest.json")
    return result


def table(res: dict) -> str:
    tv, rs = res["tools"]["timevault"], res["tools"]["restic"]
    rows = [
        ("forget + prune", f"{tv['seconds']:.2f} s", f"{rs['seconds']:.2f} s", tv["seconds"] / rs["seconds"]),
        ("peak RSS", f"{tv['peak_rss_kib'] / 1024:.0f} MiB", f"{rs['peak_rss_kib'] / 1024:.0f} MiB",
         tv["peak_rss_kib"] / rs["peak_rss_kib"]),
        ("repository before", f"{tv['repo_bytes_before'] / MiB:.1f} MiB", f"{rs['repo_bytes_before'] / MiB:.1f} MiB",
         tv["repo_bytes_before"] / rs["repo_bytes_before"]),
        ("repository after", f"{tv['repo_bytes_after'] / MiB:.1f} MiB", f"{rs['repo_bytes_after'] / MiB:.1f} MiB",
         tv["repo_bytes_after"] / rs["repo_bytes_after"]),
    ]
    lines = ["| | TimeVault | restic | ratio |", "|---|---|---|---|"]
    lines += [f"| {name} | {a} | {b} | {ratio:.2f} |" for name, a, b, ratio in rows]
    verdict = [
        f"time <= restic: {'PASS' if tv['seconds'] <= rs['seconds'] else 'FAIL'}",
        f"peak RSS < {RSS_LIMIT_MIB} MiB: {'PASS' if tv['peak_rss_kib'] / 1024 < RSS_LIMIT_MIB else 'FAIL'}",
        f"snapshots left: {tv['snapshots_after']} / {rs['snapshots_after']}",
        f"check: {tv['check']!r} / {rs['check']!r}",
        f"newest snapshot restores the corpus: {tv['restore_ok']} / {rs['restore_ok']}",
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {v}" for v in verdict)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=int, default=1024)
    p.add_argument("--snapshots", type=int, default=30)
    p.add_argument("--keep", type=int, default=10)
    p.add_argument("--mutate", type=float, default=5)
    p.add_argument("--workdir", default=str(Path.cwd() / "bench-output"))
    p.add_argument("--keep-files", action="store_true", help="keep corpus and repositories")
    p.add_argument("--timeout", type=float, default=3600)
    args = p.parse_args()
    try:
        res = bench(args)
    except BenchError as exc:
        print(f"bench_prune: {exc}", file=sys.stderr)
        return 1
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
