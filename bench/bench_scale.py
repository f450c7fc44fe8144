#!/usr/bin/env python3
"""TimeVault's repository engine against restic on a tree of many small files, in one run.

Steps, each timed and with the peak RSS of its process (os.wait4, as in bench_core.py):
  generate N files  ->  full backup (both tools)  ->  change 1 % of the files
  ->  incremental backup (both)  ->  restore latest snapshot (both)  ->  write floor.

The tree is seeded and depends only on --files, --per-folder and --seed: files of 100 B to
8 KiB, half text (compressible), half random bytes, 1000 to a folder, folders grouped 100 to a
parent. What the benchmark asks is whether cost (time and, above all, memory) stays flat as the
number of files grows, so run it at two sizes and compare.

    .venv/bin/python bench/bench_scale.py --files 200000
    .venv/bin/python bench/bench_scale.py --files 1000000 --json > scale-1m.json
    .venv/bin/python bench/bench_scale.py --make-tree /tmp/tree --files 200000   # only generate
    .venv/bin/python bench/bench_scale.py --mutate-tree /tmp/tree --files 200000 # only change 1 %
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import (
    BenchError,
    Tool,
    drop_caches,
    save_and_print,
    start_run,
    tree_size,
    write_floor,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
TOOLS = ("timevault", "restic")
MIN_SIZE, MAX_SIZE = 100, 8 * 1024
FOLDERS_PER_PARENT = 100
RSS_LIMIT_MIB = 300

# TimeVault / restic targets of issue 17 at 1,000,000 files: (step, comparison, bound, text)
TARGETS = [
    ("full", ">=", 2.0, "full backup throughput >= 2x restic"),
    ("incremental", "<=", 0.5, "incremental backup time <= 0.5x restic"),
    ("restore", ">=", 1.5, "restore throughput >= 1.5x restic"),
]


# ---- the tree -------------------------------------------------------------------------------

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but "
    "have an they you were her she there been one all we their has would when if so no will can more "
    "backup restore snapshot folder photo invoice draft report notes meeting budget project config "
    "error warning import export timevault home music mail source build cache index tree pack blob"
).split()


def _text_pool(rng: random.Random, size: int = 4 * MiB) -> bytes:
    """A seeded block of word-like text; text files are slices of it at random offsets.

    Slicing keeps generation fast (a million files in about a minute) while every file's content
    is still unique (a random offset into 4 MiB for each file) and compresses like prose.
    """
    out: list[str] = []
    n = 0
    while n < size:
        line = " ".join(rng.choices(_WORDS, k=rng.randint(4, 14))) + ".\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def _content(rng: random.Random, pool: bytes, text: bool) -> bytes:
    size = rng.randint(MIN_SIZE, MAX_SIZE)
    if text:
        offset = rng.randrange(len(pool) - size)
        return pool[offset : offset + size]
    return rng.randbytes(size)


def folder_of(index: int, per_folder: int) -> str:
    """Relative folder of file number `index`: g0003/d0042 (100 folders to a parent)."""
    folder = index // per_folder
    return f"g{folder // FOLDERS_PER_PARENT:04d}/d{folder % FOLDERS_PER_PARENT:04d}"


def file_name(index: int) -> str:
    return f"f{index:07d}.{'txt' if index % 2 == 0 else 'bin'}"


def make_tree(root: Path, files: int, per_folder: int, seed: int) -> dict:
    """Write `files` files under root (which must not exist yet); return a summary."""
    start = time.monotonic()
    rng = random.Random(seed)
    pool = _text_pool(rng)
    total = 0
    current = ""
    for i in range(files):
        folder = folder_of(i, per_folder)
        if folder != current:
            (root / folder).mkdir(parents=True)
            current = folder
        data = _content(rng, pool, text=i % 2 == 0)
        total += len(data)
        with open(root / folder / file_name(i), "wb") as f:
            f.write(data)
    return {"files": files, "bytes": total, "seconds": round(time.monotonic() - start, 2)}


def mutate_tree(root: Path, files: int, per_folder: int, seed: int, pct: float) -> dict:
    """Change pct % of the files, as a day of use might.

    Of the files picked: half are rewritten (new content and size, mtime moved on by a second so
    that even a coarse-timestamp files cache notices), a quarter deleted, a quarter renamed
    within their folder; as many new files as were deleted appear in a new folder.
    """
    start = time.monotonic()
    rng = random.Random(seed * 1_000_003 + 1)
    pool = _text_pool(rng, MiB)
    picked = rng.sample(range(files), max(1, round(files * pct / 100)))
    edited = deleted = renamed = 0
    for n, i in enumerate(picked):
        path = root / folder_of(i, per_folder) / file_name(i)
        if not path.exists():
            continue  # deleted or renamed by an earlier change of the same tree
        kind = n % 4
        if kind in (0, 1):
            st = path.stat()
            path.write_bytes(_content(rng, pool, text=i % 2 == 0))
            os.utime(path, ns=(st.st_atime_ns, max(st.st_mtime_ns, time.time_ns()) + 1_000_000_000))
            edited += 1
        elif kind == 2:
            path.unlink()
            deleted += 1
        else:
            path.rename(path.with_name("renamed-" + path.name))
            renamed += 1
    new_folder = root / "new-files"
    new_folder.mkdir(exist_ok=True)
    for k in range(deleted):
        (new_folder / f"new{k:07d}.bin").write_bytes(_content(rng, pool, text=k % 2 == 0))
    return {
        "changed_pct": pct,
        "edited": edited,
        "deleted": deleted,
        "renamed": renamed,
        "new_files": deleted,
        "seconds": round(time.monotonic() - start, 2),
    }


# ---- the run --------------------------------------------------------------------------------


@dataclass
class StepResult:
    seconds: float = 0.0
    rss_kib: int = 0


@dataclass
class ToolRun:
    version: str = ""
    full: StepResult | None = None
    incremental: StepResult | None = None
    restore: StepResult | None = None
    restored_files: int = 0
    restored_bytes: int = 0
    repo_bytes: int = 0
    full_summary: dict | None = None
    incr_summary: dict | None = None


def _timed(label: str, tools: list[Tool], fn, cold: list[bool]) -> None:
    for tool in tools:
        cold.append(drop_caches())
        print(f"  {label:<12} {tool.name:<10}", end="", flush=True)
        res: StepResult = fn(tool)
        print(f"{res.seconds:8.2f} s  {res.rss_kib / 1024:7.0f} MiB", flush=True)


def bench(args: argparse.Namespace) -> dict:
    run_dir, password_file, tools = start_run(args, "scale")
    results = {t.name: ToolRun(version=t.version()) for t in tools}
    tree = run_dir / "tree"
    cold: list[bool] = []
    floor = 0.0
    try:
        print(f"generating {args.files} files in {tree} ...", flush=True)
        gen = make_tree(tree, args.files, args.per_folder, args.seed)
        print(f"  {gen['files']} files, {gen['bytes'] / MiB:.1f} MiB in {gen['seconds']} s", flush=True)
        full_bytes = gen["bytes"]
        for tool in tools:
            tool.init()

        def full(tool: Tool) -> StepResult:
            step, summary = tool.backup("full", tree)
            r = results[tool.name]
            r.full, r.full_summary = StepResult(step.seconds, step.max_rss_kib), summary
            return r.full

        _timed("full", tools, full, cold)
        mut = mutate_tree(tree, args.files, args.per_folder, args.seed, args.mutate)
        incr_bytes, incr_files = tree_size(tree)
        print(
            f"changed {args.mutate} %: {mut['edited']} edited, {mut['deleted']} deleted, "
            f"{mut['renamed']} renamed, {mut['new_files']} new; now {incr_files} files",
            flush=True,
        )

        def incr(tool: Tool) -> StepResult:
            step, summary = tool.backup("incr", tree)
            r = results[tool.name]
            r.incremental, r.incr_summary = StepResult(step.seconds, step.max_rss_kib), summary
            r.repo_bytes = tree_size(tool.repo)[0]
            return r.incremental

        _timed("incremental", tools, incr, cold)

        def restore(tool: Tool) -> StepResult:
            step = tool.restore()
            r = results[tool.name]
            r.restore = StepResult(step.seconds, step.max_rss_kib)
            r.restored_bytes, r.restored_files = tree_size(tool.restore_dir)
            return r.restore

        # Copies are removed only after every restore and the floor: on ext4 without a journal,
        # inodes freed in the last minutes are skipped when new ones are allocated, so a restore
        # right after another tool's copy was deleted would pay for that deletion.
        _timed("restore", tools, restore, cold)
        if not args.no_floor:
            floor = write_floor(tree, run_dir / "floor", keep=True)
            print(f"  write floor  (same files, zeros) {floor:6.2f} s", flush=True)
            shutil.rmtree(run_dir / "floor", ignore_errors=True)
        for tool in tools:
            shutil.rmtree(tool.restore_dir, ignore_errors=True)
    finally:
        if not args.keep:
            for path in [tree, *(p for t in tools for p in (t.repo, t.restore_dir))]:
                shutil.rmtree(path, ignore_errors=True)
            for t in tools:
                shutil.rmtree(t.env["XDG_CACHE_HOME"], ignore_errors=True)
        password_file.unlink(missing_ok=True)

    warnings = [
        f"{name}: restored {r.restored_files} files / {r.restored_bytes} bytes, "
        f"the tree has {incr_files} / {incr_bytes}"
        for name, r in results.items()
        if (r.restored_files, r.restored_bytes) != (incr_files, incr_bytes)
    ]
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(), "kernel": platform.release()},
        "cache": "cold (dropped before each step)" if cold and all(cold) else "warm (could not drop)",
        "files": args.files,
        "per_folder": args.per_folder,
        "seed": args.seed,
        "mutate_pct": args.mutate,
        "tree": {
            "full_bytes": full_bytes,
            "incr_bytes": incr_bytes,
            "incr_files": incr_files,
            "generate": gen,
            "mutate": mut,
        },
        "tools": {name: asdict(r) for name, r in results.items()},
        "write_floor_seconds": floor,
        "warnings": warnings,
        "run_dir": str(run_dir),
    }


def _step_bytes(res: dict, step: str) -> int:
    return res["tree"]["full_bytes"] if step == "full" else res["tree"]["incr_bytes"]


def report(res: dict) -> str:
    names = list(res["tools"])
    tv, rs = res["tools"].get("timevault"), res["tools"].get("restic")
    t = res["tree"]
    lines = [
        f"tree: {res['files']} files, {t['full_bytes'] / MiB:.1f} MiB; after {res['mutate_pct']} % changed "
        f"{t['incr_files']} files, {t['incr_bytes'] / MiB:.1f} MiB; page cache: {res['cache']}",
        "",
        "| files | step | restic | TimeVault | ratio | restic RSS | TimeVault RSS |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(tool: dict | None, step: str, key: str) -> str:
        if not tool or not tool[step]:
            return "-"
        v = tool[step][key]
        return f"{v:.1f} s" if key == "seconds" else f"{v / 1024:.0f} MiB"

    for step in ("full", "incremental", "restore"):
        ratio = "-"
        if tv and rs and tv[step] and rs[step] and tv[step]["seconds"]:
            r = rs[step]["seconds"] / tv[step]["seconds"]
            # Backups and restores as throughput (higher is better), the incremental as time.
            ratio = f"{1 / r:.2f}× time" if step == "incremental" else f"{r:.2f}×"
        lines.append(
            f"| {res['files']:,} | {step} | {cell(rs, step, 'seconds')} | {cell(tv, step, 'seconds')} | "
            f"{ratio} | {cell(rs, step, 'rss_kib')} | {cell(tv, step, 'rss_kib')} |"
        )
    if tv and rs:
        lines += ["", "targets (issue 17, meant for 1,000,000 files):"]
        for step, op, bound, text in TARGETS:
            ratio = rs[step]["seconds"] / tv[step]["seconds"]
            value = 1 / ratio if op == "<=" else ratio
            ok = value <= bound if op == "<=" else value >= bound
            lines.append(f"  [{'PASS' if ok else 'FAIL'}] {text}: {value:.2f}x")
    if tv:
        peak = max(tv[s]["rss_kib"] for s in ("full", "incremental", "restore") if tv[s]) / 1024
        lines.append(
            f"  [{'PASS' if peak < RSS_LIMIT_MIB else 'FAIL'}] TimeVault peak RSS < {RSS_LIMIT_MIB} MiB: "
            f"{peak:.0f} MiB"
        )
    floor = res.get("write_floor_seconds")
    if floor:
        per = ", ".join(
            f"{n} {res['tools'][n]['restore']['seconds'] / floor:.2f}x"
            for n in names
            if res["tools"][n]["restore"]
        )
        lines.append(f"write floor (the same files, zeros): {floor:.2f} s; restore / floor: {per}")
    for w in res["warnings"]:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=200_000, help="number of files in the tree (default 200000)")
    ap.add_argument("--per-folder", type=int, default=1000, help="files per folder (default 1000)")
    ap.add_argument("--seed", type=int, default=42, help="seed of the tree and its change (default 42)")
    ap.add_argument("--mutate", type=float, default=1, help="percent of files changed before the incremental")
    ap.add_argument(
        "--workdir", default=str(REPO_ROOT / "bench-output"), help="where runs go (default bench-output/)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the tree and the repositories")
    ap.add_argument("--only", choices=TOOLS, help="benchmark one tool only")
    ap.add_argument("--timeout", type=float, default=7200, help="seconds allowed per step (default 7200)")
    ap.add_argument(
        "--no-floor", action="store_true", help="skip the write floor (writing the tree with zeros)"
    )
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    ap.add_argument("--make-tree", metavar="DIR", help="only generate the tree into DIR (must not exist)")
    ap.add_argument(
        "--mutate-tree", metavar="DIR", help="only change --mutate %% of DIR's files (same knobs)"
    )
    args = ap.parse_args(argv)
    if args.files < 1 or args.per_folder < 1:
        ap.error("--files and --per-folder must be at least 1")
    if args.make_tree or args.mutate_tree:
        if args.make_tree:
            if os.path.exists(args.make_tree):
                ap.error(f"{args.make_tree} exists; --make-tree writes a new folder")
            out = make_tree(Path(args.make_tree), args.files, args.per_folder, args.seed)
        else:
            out = mutate_tree(Path(args.mutate_tree), args.files, args.per_folder, args.seed, args.mutate)
        print(json.dumps(out))
        return 0
    log = sys.stderr if args.json else sys.stdout
    try:
        stdout, sys.stdout = sys.stdout, log
        try:
            res = bench(args)
        finally:
            sys.stdout = stdout
    except BenchError as exc:
        print(f"\nbench_scale: {exc}", file=sys.stderr)
        return 1
    work = Path(args.workdir)
    if args.json:
        (Path(res["run_dir"]) / "results.json").write_text(json.dumps(res, indent=2) + "\n")
        (work / "latest-scale.json").write_text(json.dumps(res, indent=2) + "\n")
        print(json.dumps(res, indent=2))
    else:
        save_and_print(res, work / "latest-scale.json", report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
