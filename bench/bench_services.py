#!/usr/bin/env python3
"""TimeVault through `timevault up` (services over NATS) beside the in-process engine and restic.

One run, one corpus, three ways, side by side for every step:
  generate corpus -> full backup -> mutate 5 % -> incremental backup -> restore latest.

* ``services``: `timevault up --data-dir TMP` as a child; `timevault plan create`, then
  `timevault backup NAME --wait` and `timevault restore NAME latest --wait` through the gateway.
  After every step each service process (children of `up`: nats-server, catalog, scheduler,
  snapshotter, uploader, restorer, gateway) is sampled from /proc: peak RSS (VmHWM) and CPU
  seconds used during the step (utime+stime delta).
* ``in-process``: `timevault repo init|backup|restore` on its own repository (bench_core).
* ``restic``: restic 0.14 on a local repository (bench_core).

The "CPU cost of the NATS hop" is nats-server's CPU seconds plus the uploader's (it only
receives blobs and writes packs), per GiB of corpus and per GiB actually sent.

    .venv/bin/python bench/bench_services.py --size-mb 1024
    .venv/bin/python bench/bench_services.py --size-mb 256 --keep
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_core
from bench_core import (
    BenchError,
    MiB,
    Restic,
    Step,
    TimeVault,
    Tool,
    ToolResult,
    corpus_script,
    drop_caches,
    last_json,
    make_corpus,
    metrics,
    save_and_print,
    tree_size,
)

REPO_ROOT = bench_core.REPO_ROOT
GiB = 1 << 30
PLAN = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
STEPS = ("full", "incr", "restore")
# Targets through `timevault up`, relative to restic (metric, comparison, bound, description).
TARGETS = [
    ("full_mbps", ">=", 1.2, "full backup throughput >= 1.2x restic"),
    ("restore_mbps", ">=", 1.2, "restore throughput >= 1.2x restic"),
    ("incr_seconds", "<=", 1.0, "incremental backup time <= restic's"),
]
RSS_LIMIT_MIB = 300


# --- measuring the service processes ---------------------------------------------------------


@dataclass
class ProcSample:
    pid: int
    cpu_s: float
    hwm_kib: int


def _service_name(pid: int) -> str | None:
    """'nats-server', a service's module name, or None for anything else."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    args = [a.decode(errors="replace") for a in argv if a]
    if args and os.path.basename(args[0]) == "nats-server":
        return "nats-server"
    if "-m" in args:
        module = args[args.index("-m") + 1] if args.index("-m") + 1 < len(args) else ""
        if module.startswith("timevault.services."):
            return module.removeprefix("timevault.services.")
    return None


def _children(ppid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the ")" that closes the command name, which may contain spaces.
        if int(stat.rsplit(")", 1)[1].split()[1]) == ppid:
            pids.append(int(entry))
    return pids


def _sample(pid: int) -> ProcSample | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    # After ")": state is field 3, so utime (14) and stime (15) are at indexes 11 and 12.
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    hwm = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return ProcSample(pid=pid, cpu_s=cpu, hwm_kib=hwm)


def sample_services(up_pid: int) -> dict[str, ProcSample]:
    """CPU seconds and peak RSS of `up` itself and each service child, by name."""
    out: dict[str, ProcSample] = {}
    up = _sample(up_pid)
    if up:
        out["up"] = up
    for pid in _children(up_pid):
        name = _service_name(pid)
        sample = _sample(pid) if name else None
        if name and sample:
            out[name] = sample
    return out


def step_usage(before: dict[str, ProcSample], after: dict[str, ProcSample]) -> dict[str, dict[str, float]]:
    """Per service: CPU seconds spent between the samples and peak RSS (MiB) so far."""
    usage = {}
    for name, end in after.items():
        start = before.get(name)
        # A restarted service (new pid) counts from zero.
        cpu = end.cpu_s - (start.cpu_s if start and start.pid == end.pid else 0.0)
        usage[name] = {"cpu_s": round(cpu, 2), "peak_rss_mib": round(end.hwm_kib / 1024, 1), "pid": end.pid}
    return usage


def children_cpu() -> float:
    """CPU seconds of every waited-for child so far (the in-process and restic steps' own CPU)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# --- the services "tool" ---------------------------------------------------------------------


@dataclass
class ServiceSteps:
    usage: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    uploaded_bytes: dict[str, int] = field(default_factory=dict)
    plan_create_seconds: float = 0.0
    startup_seconds: float = 0.0


class Services(Tool):
    """`timevault up` in a private data dir, driven by the system CLI like a user would."""

    name = "services"

    def __init__(self, work: Path, password_file: Path, timeout: float, source: Path) -> None:
        super().__init__(work, password_file, timeout)
        self.source = source
        self._cli = TimeVault(work, password_file, timeout)
        self.exe = self._cli.exe
        self.data_dir = work / "services-data"
        # The services restore only under a restore root: the data dir's restores/ always is one
        # (a work folder outside /tmp, /home, /mnt, /media or /srv was refused).
        self.restore_dir = self.data_dir / "restores" / "bench"
        self.proc: subprocess.Popen[bytes] | None = None
        self.steps = ServiceSteps()
        self.snapshots: list[dict] = []

    def version(self) -> str:
        return self._cli.version()

    def cli(self, *args: str) -> list[str]:
        return [self.exe, *args, "--data-dir", str(self.data_dir)]

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with open(self.logs / "services-up.log", "wb") as log:
            self.proc = subprocess.Popen(
                [self.exe, "up", "--data-dir", str(self.data_dir), "--listen", "127.0.0.1:0"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=self.env)
        info = self.data_dir / "gateway.json"
        deadline = time.monotonic() + 60
        while not info.exists():
            if self.proc.poll() is not None:
                raise BenchError(f"`timevault up` exited {self.proc.returncode}; see {self.logs}/services-up.log")
            if time.monotonic() > deadline:
                raise BenchError("`timevault up` did not write gateway.json within 60 s")
            time.sleep(0.1)
        self.steps.startup_seconds = time.perf_counter() - start

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def init(self) -> None:
        # The gateway may need a moment after gateway.json appears; plan create retries briefly.
        deadline = time.monotonic() + 30
        while True:
            try:
                step = self.step("plan-create", self.cli(
                    "plan", "create", PLAN, "--source", str(self.source), "--daily", "--at", "03:00",
                    "--timezone", "UTC", "--location", str(self.repo), "--password-file", str(self.password_file),
                    "--json"))
                self.steps.plan_create_seconds = step.seconds
                return
            except BenchError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def _measured(self, label: str, cmd: list[str]) -> Step:
        assert self.proc is not None
        before = sample_services(self.proc.pid)
        step = self.step(label, cmd)
        self.steps.usage[label] = step_usage(before, sample_services(self.proc.pid))
        return step

    def backup(self, label: str, src: Path) -> tuple[Step, dict]:
        step = self._measured(label, self.cli("backup", PLAN, "--wait", "--json"))
        job = last_json(step.stdout)
        plan = json.loads(self.step(f"{label}-show", self.cli("plan", "show", PLAN, "--json")).stdout)
        self.snapshots = plan.get("snapshots", [])
        latest = self.snapshots[-1] if self.snapshots else {}
        self.steps.uploaded_bytes[label] = int(latest.get("added_size", 0))
        return step, {"job": job, "snapshot": latest}

    def restore(self) -> Step:
        return self._measured("restore", self.cli(
            "restore", PLAN, "latest", "--target", str(self.restore_dir),
            "--password-file", str(self.password_file), "--wait", "--json"))

    def peak_rss_kib(self, label: str) -> int:
        usage = self.steps.usage.get(label, {})
        return int(max((u["peak_rss_mib"] for u in usage.values()), default=0) * 1024)


# --- the run ---------------------------------------------------------------------------------


def timed(label: str, tools: list[Tool], fn, cold: list[bool], cpu: dict[str, dict[str, float]]) -> None:
    """bench_core.timed, plus each waited-for child's CPU seconds (in-process and restic)."""
    for tool in tools:
        cold.append(drop_caches())
        print(f"  {label:<12} {tool.name:<10}", end="", flush=True)
        before = children_cpu()
        seconds = fn(tool)
        cpu.setdefault(tool.name, {})[label] = round(children_cpu() - before, 2)
        print(f"{seconds:8.2f} s", flush=True)


class InProcess(TimeVault):
    """bench_core's TimeVault engine, named apart from the services."""

    name = "in-process"


def bench(args: argparse.Namespace) -> dict:
    script = corpus_script()
    work = Path(args.workdir).resolve()
    run_dir = work / datetime.now(UTC).strftime("services-run-%Y%m%dT%H%M%SZ")
    run_dir.mkdir(parents=True)
    password_file = run_dir / "password"
    password_file.write_text(bench_core.PASSWORD + "\n")
    password_file.chmod(0o600)
    corpus = run_dir / "corpus"

    services = Services(run_dir, password_file, args.timeout, corpus)
    tools: list[Tool] = [services, InProcess(run_dir, password_file, args.timeout),
                         Restic(run_dir, password_file, args.timeout)]
    results = {t.name: ToolResult(version=t.version()) for t in tools}
    cold: list[bool] = []
    cpu: dict[str, dict[str, float]] = {}
    try:
        print(f"generating {args.size_mb} MiB corpus in {corpus} ...", flush=True)
        gen = make_corpus(script, "--out", str(corpus), "--size-mb", str(args.size_mb), "--seed", "42")
        full_bytes, full_files = tree_size(corpus)
        print(f"  {full_files} files, {full_bytes / MiB:.1f} MiB in {gen.get('seconds', '?')} s")
        services.start()
        for tool in tools:
            tool.init()

        def backup(label: str):
            def one(tool: Tool) -> float:
                step, summary = tool.backup(label, corpus)
                r = results[tool.name]
                rss = services.peak_rss_kib(label) if tool is services else step.max_rss_kib
                if label == "full":
                    r.full_seconds, r.full_rss_kib, r.full_summary = step.seconds, rss, summary
                    r.repo_bytes_full = tree_size(tool.repo)[0]
                else:
                    r.incr_seconds, r.incr_rss_kib, r.incr_summary = step.seconds, rss, summary
                    r.repo_bytes = tree_size(tool.repo)[0]
                return step.seconds
            return one

        timed("full", tools, backup("full"), cold, cpu)
        mut = make_corpus(script, "--out", str(corpus), "--mutate", str(args.mutate), "--seed", "43")
        incr_bytes, incr_files = tree_size(corpus)
        print(f"mutated {args.mutate} %: now {incr_files} files, {incr_bytes / MiB:.1f} MiB")
        timed("incremental", tools, backup("incr"), cold, cpu)

        def restore(tool: Tool) -> float:
            step = tool.restore()
            r = results[tool.name]
            r.restore_seconds = step.seconds
            r.restore_rss_kib = services.peak_rss_kib("restore") if tool is services else step.max_rss_kib
            r.restored_bytes, r.restored_files = tree_size(tool.restore_dir)
            return step.seconds

        timed("restore", tools, restore, cold, cpu)
    finally:
        services.stop()
        if not args.keep:
            for path in [corpus, services.data_dir, *(p for t in tools for p in (t.repo, t.restore_dir))]:
                shutil.rmtree(path, ignore_errors=True)
            password_file.unlink(missing_ok=True)
            for t in tools:
                shutil.rmtree(t.env["XDG_CACHE_HOME"], ignore_errors=True)

    warnings = [
        f"{name}: restored {r.restored_files} files / {r.restored_bytes} bytes, corpus has {incr_files} / {incr_bytes}"
        for name, r in results.items() if (r.restored_bytes, r.restored_files) != (incr_bytes, incr_files)
    ]
    corpus_info = {"full_bytes": full_bytes, "full_files": full_files, "incr_bytes": incr_bytes,
                   "incr_files": incr_files, "generate": gen, "mutate": mut}
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(), "kernel": platform.release()},
        "cache": "cold (dropped before each step)" if cold and all(cold) else "warm (could not drop)",
        "size_mb": args.size_mb,
        "mutate_pct": args.mutate,
        "corpus": corpus_info,
        "tools": {name: asdict(r) | {"peak_rss_kib": r.peak_rss_kib} for name, r in results.items()},
        "cpu_s": cpu,
        "services": asdict(services.steps) | {"hop": nats_hop(services.steps, corpus_info)},
        "warnings": warnings,
        "run_dir": str(run_dir),
    }


def nats_hop(steps: ServiceSteps, corpus: dict) -> dict[str, dict[str, float]]:
    """nats-server + uploader CPU seconds per step, per GiB of corpus and per GiB sent."""
    hop = {}
    for label in STEPS:
        usage = steps.usage.get(label, {})
        nats = usage.get("nats-server", {}).get("cpu_s", 0.0)
        uploader = usage.get("uploader", {}).get("cpu_s", 0.0)
        corpus_gib = corpus["incr_bytes" if label != "full" else "full_bytes"] / GiB
        sent_gib = steps.uploaded_bytes.get(label, 0) / GiB
        hop[label] = {
            "nats_cpu_s": nats, "uploader_cpu_s": uploader,
            "per_corpus_gib": round((nats + uploader) / corpus_gib, 2) if corpus_gib else 0.0,
            "per_sent_gib": round((nats + uploader) / sent_gib, 2) if sent_gib else 0.0,
            "sent_mib": round(steps.uploaded_bytes.get(label, 0) / MiB, 1),
        }
    return hop


# --- the report ------------------------------------------------------------------------------

ROWS = [
    ("full backup", "full_seconds", "s"), ("full backup", "full_mbps", "MiB/s"),
    ("incremental", "incr_seconds", "s"), ("incremental", "incr_mbps", "MiB/s"),
    ("restore", "restore_seconds", "s"), ("restore", "restore_mbps", "MiB/s"),
    ("repo after full", "repo_bytes_full", "MiB"), ("repo after incr", "repo_bytes", "MiB"),
]
LABELS = {"full": "full", "incr": "incremental", "restore": "restore"}


def table(res: dict) -> list[str]:
    names = list(res["tools"])
    m = {n: metrics(res, n) for n in names}
    lines = [f"{'step':<18}{'unit':<7}" + "".join(f"{n:>12}" for n in names) + f"{'svc/restic':>12}"]
    for label, key, unit in ROWS:
        vals = [m[n][key] / (MiB if unit == "MiB" else 1) for n in names]
        ratio = f"{vals[0] / vals[-1]:>12.2f}" if vals[-1] else f"{'-':>12}"
        lines.append(f"{label:<18}{unit:<7}" + "".join(f"{v:>12.2f}" for v in vals) + ratio)
    for step in STEPS:
        row = [res["cpu_s"].get(n, {}).get(LABELS[step], 0.0) for n in names]
        row[0] = sum(u["cpu_s"] for u in res["services"]["usage"].get(step, {}).values())
        lines.append(f"{'CPU ' + LABELS[step]:<18}{'s':<7}" + "".join(f"{v:>12.2f}" for v in row)
                     + (f"{row[0] / row[-1]:>12.2f}" if row[-1] else f"{'-':>12}"))
    return lines


def service_table(res: dict) -> list[str]:
    usage = res["services"]["usage"]
    names = sorted({n for step in usage.values() for n in step}, key=lambda n: (n != "nats-server", n))
    lines = ["per service: CPU s per step, peak RSS (VmHWM) MiB at the end of the run",
             f"{'service':<14}" + "".join(f"{'CPU ' + LABELS[s]:>16}" for s in STEPS) + f"{'peak RSS':>12}"]
    for name in names:
        cpus = [usage.get(s, {}).get(name, {}).get("cpu_s", 0.0) for s in STEPS]
        peak = max(usage.get(s, {}).get(name, {}).get("peak_rss_mib", 0.0) for s in STEPS)
        lines.append(f"{name:<14}" + "".join(f"{c:>16.2f}" for c in cpus) + f"{peak:>12.1f}")
    lines.append("")
    lines.append("NATS hop (nats-server + uploader CPU):")
    for step, hop in res["services"]["hop"].items():
        lines.append(f"  {LABELS[step]:<12} nats {hop['nats_cpu_s']:6.2f} s + uploader {hop['uploader_cpu_s']:6.2f} s"
                     f" = {hop['per_corpus_gib']:6.2f} s/GiB of corpus, {hop['per_sent_gib']:6.2f} s/GiB sent "
                     f"({hop['sent_mib']:.1f} MiB sent)")
    return lines


def verdicts(res: dict) -> list[str]:
    svc, restic = metrics(res, "services"), metrics(res, "restic")
    lines = ["targets (through `timevault up`):"]
    for key, op, bound, text in TARGETS:
        ratio = svc[key] / restic[key] if restic[key] else float("inf")
        ok = ratio >= bound if op == ">=" else ratio <= bound
        lines.append(f"  [{'PASS' if ok else 'FAIL'}] {text}: {ratio:.2f}x")
    usage = res["services"]["usage"]
    peak = max((u["peak_rss_mib"] for step in usage.values() for u in step.values()), default=0.0)
    lines.append(f"  [{'PASS' if peak < RSS_LIMIT_MIB else 'FAIL'}] every service's peak RSS < "
                 f"{RSS_LIMIT_MIB} MiB: {peak:.0f} MiB")
    return lines


def report(res: dict) -> str:
    c = res["corpus"]
    lines = [
        f"corpus: {c['full_files']} files, {c['full_bytes'] / MiB:.1f} MiB; after {res['mutate_pct']} % "
        f"mutation {c['incr_files']} files, {c['incr_bytes'] / MiB:.1f} MiB; page cache: {res['cache']}",
        "",
        *table(res), "", *service_table(res), "", *verdicts(res),
    ]
    lines += [f"warning: {w}" for w in res["warnings"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--size-mb", type=float, default=1024, help="corpus size in MiB (default 1024)")
    ap.add_argument("--mutate", type=float, default=5, help="percent of files changed before the incremental")
    ap.add_argument("--workdir", default=str(REPO_ROOT / "bench-output"),
                    help="where corpus, repositories and results go (default bench-output/)")
    ap.add_argument("--keep", action="store_true", help="keep corpus, repositories, restores and the data dir")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds allowed per step (default 3600)")
    args = ap.parse_args(argv)
    try:
        res = bench(args)
    except BenchError as exc:
        print(f"\nbench_services: {exc}", file=sys.stderr)
        return 1
    save_and_print(res, Path(args.workdir) / "latest-services.json", report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
