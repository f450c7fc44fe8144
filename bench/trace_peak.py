#!/usr/bin/env python3
"""Run one `timevault` command in this process and record what holds its memory at its peak.

A thread samples the process every EVERY seconds: RSS (`/proc/self/statm`), and with --trace the
total that `tracemalloc` follows; whenever that total rises by 2 %, it keeps a `tracemalloc`
snapshot, so the last one kept is the peak's. Tracing makes the command many times slower (a
snapshot walks every traced block), so time the command without it.

    .venv/bin/python bench/trace_peak.py --out /tmp/incr -- repo backup REPO TREE --password-file F
    .venv/bin/python bench/trace_peak.py --trace --out /tmp/incr -- repo backup ...
    .venv/bin/python bench/trace_peak.py --compare /tmp/small.snap /tmp/large.snap

Writes OUT.samples (seconds, RSS MiB, traced MiB per sample) and, with --trace, OUT.snap.
--compare prints the largest allocation sites of two snapshots side by side.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import tracemalloc


def _rss_mib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20


class Sampler(threading.Thread):
    def __init__(self, every: float, trace: bool) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.trace = trace
        self.samples: list[tuple[float, int, int]] = []
        self.peak = 0
        self.snapshot: tracemalloc.Snapshot | None = None
        self.done = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.done.is_set():
            traced = tracemalloc.get_traced_memory()[0] if self.trace else 0
            self.samples.append((round(time.monotonic() - start, 2), _rss_mib(), traced >> 20))
            if self.trace and traced > self.peak * 1.02:
                self.peak = traced
                self.snapshot = tracemalloc.take_snapshot()
            self.done.wait(self.every)


def compare(small: str, large: str, top: int = 15) -> None:
    snaps = [tracemalloc.Snapshot.load(path) for path in (small, large)]
    stats = [{stat.traceback[0]: stat for stat in snap.statistics("lineno")} for snap in snaps]
    totals = [sum(stat.size for stat in snap.statistics("filename")) >> 20 for snap in snaps]
    print(f"traced: {totals[0]} MiB, {totals[1]} MiB")
    sites = sorted(
        set(stats[0]) | set(stats[1]), key=lambda site: -max(s[site].size if site in s else 0 for s in stats)
    )
    for site in sites[:top]:
        sizes = [
            f"{s[site].size >> 10:9d} KiB {s[site].count:8d}" if site in s else f"{'-':>22}" for s in stats
        ]
        print(f"{sizes[0]}  {sizes[1]}  {site.filename.rsplit('/timevault/', 1)[-1]}:{site.lineno}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/trace-peak", help="prefix of the files written")
    ap.add_argument("--trace", action="store_true", help="follow allocations with tracemalloc (slow)")
    ap.add_argument("--frames", type=int, default=8, help="frames kept per traced allocation")
    ap.add_argument("--every", type=float, default=0.25, help="seconds between samples")
    ap.add_argument("--compare", nargs=2, metavar="SNAP", help="compare two .snap files and exit")
    ap.add_argument(
        "command", nargs=argparse.REMAINDER, help="-- then the timevault command and its arguments"
    )
    args = ap.parse_args()
    if args.compare:
        compare(*args.compare)
        return 0
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the timevault command after --")
    if args.trace:
        tracemalloc.start(args.frames)
    sampler = Sampler(args.every, args.trace)
    sampler.start()
    from timevault.cli.main import main as timevault

    try:
        code = timevault(command)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    sampler.done.set()
    sampler.join()
    with open(args.out + ".samples", "w") as out:
        for sample in sampler.samples:
            print(*sample, file=out)
    if sampler.snapshot is not None:
        sampler.snapshot.dump(args.out + ".snap")
    print(
        f"trace_peak: RSS at most {max(s[1] for s in sampler.samples)} MiB (sampled), "
        f"traced peak {sampler.peak >> 20} MiB; {args.out}.samples"
        + (f", {args.out}.snap" if args.trace else ""),
        file=sys.stderr,
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
