"""``make bench``: speed goals live here, never in timed test assertions.

Runs the bridge benchmark (bench/bridge.py) and the ingest benchmark (bench/ingest.py), prints
a short summary and writes ``bench/results.json``. Speed goals are reported, not asserted; the
exit status is non-zero when a message was lost or duplicated, or when the benchmark itself
could not run.

``--only bridge`` or ``--only ingest`` runs one part (``--only ingest --ingest-updates 500``
takes about a minute at today's speed): the other part's keys are kept from the previous
``results.json``, and ``bench.parts`` says which parts this run measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results.json"

# (key, comparison, target, what it means)
GOALS: tuple[tuple[str, str, float, str], ...] = (
    ("bridge.delivered_over_allowed", ">=", 0.95, "delivered rate / allowed rate under a burst"),
    ("bridge.added_latency_p99_ms", "<", 50.0, "p99 latency the bridge adds below the limit"),
    ("bridge.lost", "==", 0, "messages lost"),
    ("bridge.duplicated", "==", 0, "messages duplicated"),
    (
        "ingest.sqlite.unbridged.updates_per_second",
        ">=",
        2000.0,
        "queued updates handled per second, SQLite, unbridged",
    ),
    (
        "ingest.sqlite.bridged.messages_per_second",
        ">=",
        1000.0,
        "queued messages relayed to Discord per second, SQLite, limits lifted",
    ),
    ("ingest.startup_seconds", "<", 2.0, "forum-habitant run, launch to ready"),
    ("ingest.idle_rss_mib", "<", 150.0, "forum-habitant run, idle resident memory (MiB)"),
)

PARTS = ("bridge", "ingest")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "machine.cpu_count": os.cpu_count(),
        "machine.cpu_model": _cpu_model(),
        "machine.python": platform.python_version(),
        "machine.implementation": platform.python_implementation(),
        "machine.platform": platform.platform(),
        "machine.date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for package in ("discord.py", "python-telegram-bot", "sqlalchemy", "aiosqlite", "aiohttp"):
        try:
            info[f"machine.package.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[f"machine.package.{package}"] = None
    return info


class CpuWatch:
    """CPU time other processes took during the run: on two cores, their load is in our figures.

    Reads the machine's busy time from /proc/stat (Linux) and this process's own CPU time; the
    difference, divided by the wall time, is how many cores others kept busy on average.
    """

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat", encoding="ascii") as stat:
                fields = [int(v) for v in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal (guest time is already in user): busy
        # is all but idle and iowait.
        busy_ticks = sum(fields[:8]) - fields[3] - fields[4]
        busy = busy_ticks / os.sysconf("SC_CLK_TCK")
        times = os.times()
        return busy, times.user + times.system, time.monotonic()

    def result(self) -> dict[str, Any]:
        end = self._sample()
        info: dict[str, Any] = {"machine.load_average_1min_at_end": os.getloadavg()[0]}
        if self._start is None or end is None:
            return info
        busy = end[0] - self._start[0]
        own = end[1] - self._start[1]
        wall = end[2] - self._start[2]
        info["machine.bench_cpu_cores_used"] = own / wall
        info["machine.other_processes_cpu_cores"] = max(0.0, busy - own) / wall
        return info


def _met(value: Any, comparison: str, target: float) -> bool:
    if not isinstance(value, int | float) or (isinstance(value, float) and math.isnan(value)):
        return False
    if comparison == ">=":
        return value >= target
    if comparison == "<":
        return value < target
    return value == target


def _json_safe(value: Any) -> Any:
    # NaN is not JSON; a figure that could not be measured is null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _burst_lines(r: dict[str, Any], name: str, label: str) -> list[str]:
    p = f"bridge.{name}."
    if p + "posts" not in r:
        return []
    return [
        f"{label}: {r[p + 'messages']} messages of {r[p + 'message_chars']} chars in "
        f"{r[p + 'posts']} posts ({r[p + 'messages_per_post']:.1f} per post), "
        + (
            f"TIMED OUT after {r[p + 'wall_seconds']:.1f} s"
            if r[p + "timed_out"]
            else f"{r[p + 'wall_seconds']:.1f} s until all relayed "
            f"({r[p + 'messages_per_second']:.0f}/s)"
        ),
        f"  busy {r[p + 'busy_seconds']:.1f} s at {r[p + 'delivered_posts_per_second']:.1f} posts/s "
        f"of {r[p + 'allowed_posts_per_second']:.1f} allowed: delivered/allowed "
        f"{r[p + 'delivered_over_allowed']:.3f} (naive posts/busy "
        f"{r[p + 'delivered_over_allowed_naive']:.3f}); 429s {r[p + 'too_many_requests']}, "
        f"lost {r[p + 'lost']}, duplicated {r[p + 'duplicated']}",
    ]


def summary(r: dict[str, Any]) -> list[str]:
    from bench import ingest

    lines: list[str] = []
    if "bridge.runs" in r:
        lines += _bridge_summary(r)
    return lines + ingest.summary(r)


def _bridge_summary(r: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for run in range(1, int(r.get("bridge.runs", 1)) + 1):
        lines += _burst_lines(r, f"burst.{run}", f"burst Discord -> Telegram, run {run}")
        lines += _burst_lines(r, f"burst_to_discord.{run}", f"burst Telegram -> Discord, run {run}")
    lines += _burst_lines(r, "burst_long", "long burst Discord -> Telegram")
    for direction in ("to_telegram", "to_discord"):
        key = f"bridge.delivered_over_allowed.{direction}"
        lines.append(
            f"delivered/allowed {direction}: median {r[key]:.3f} "
            f"(min {r[key + '.min']:.3f}, max {r[key + '.max']:.3f}, {r['bridge.runs']} runs)"
        )
    for direction, label in (
        ("telegram_to_discord", "Telegram -> Discord"),
        ("discord_to_telegram", "Discord -> Telegram"),
        ("overall", "both ways"),
    ):
        p = f"bridge.latency.{direction}."
        lines.append(
            f"latency {label:<19} p50 {r[p + 'p50_ms']:5.1f} ms  p99 {r[p + 'p99_ms']:5.1f} ms  "
            f"max {r[p + 'max_ms']:5.1f} ms  (n={r[p + 'samples']})"
        )
    lines.append(
        f"all phases: lost {r['bridge.lost']}, duplicated {r['bridge.duplicated']}; "
        f"{r['bridge.wall_seconds']:.0f} s"
    )
    logged = {
        k.removeprefix("bridge.log."): v
        for k, v in r.items()
        if k.startswith("bridge.log.") and not k.endswith(".first")
    }
    if logged:
        lines.append(
            "bridge log records (WARNING and above): "
            + ", ".join(f"{k}: {v}" for k, v in sorted(logged.items()))
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--burst", type=int, default=3000, help="short messages in the burst")
    parser.add_argument(
        "--long-burst", type=int, default=1000, help="paragraphs in the second burst (0: skip)"
    )
    parser.add_argument("--latency", type=int, default=200, help="messages each way, one at a time")
    parser.add_argument("--runs", type=int, default=3, help="runs of each burst (median, spread)")
    parser.add_argument(
        "--scale", type=float, default=0.01, help="rate-limit windows multiplier (0.01: 100x)"
    )
    parser.add_argument("--budget", type=float, default=240.0, help="bound of the whole run, s")
    parser.add_argument(
        "--cpu",
        type=int,
        default=None,
        help="pin the benchmark (and its SQLite threads) to this CPU, to compare with the "
        "default unpinned run (see docs/PERFORMANCE.md)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--only",
        choices=PARTS,
        default=None,
        help="run one part; the other's keys are kept from the previous results file",
    )
    parser.add_argument(
        "--ingest-updates",
        type=int,
        default=2000,
        help="updates queued before the bot starts, in each ingest phase (at most 99999)",
    )
    parser.add_argument(
        "--ingest-budget",
        type=float,
        default=150.0,
        help="bound of each ingest phase, s (a phase that runs out reports its partial rate)",
    )
    parser.add_argument(
        "--ingest-backends",
        default="sqlite,postgres",
        help="comma-separated databases for the ingest phases (sqlite, postgres)",
    )
    parser.add_argument(
        "--no-ingest-bridged", action="store_true", help="skip the bridged ingest phases"
    )
    parser.add_argument(
        "--no-startup", action="store_true", help="skip forum-habitant run's start-up and memory"
    )
    parser.add_argument(
        "--ingest-profile",
        type=Path,
        default=None,
        help="cProfile the SQLite unbridged ingest phase into this file (pstats format) and "
        "print its top 15 cumulative entries; the figures of a profiled run are slower",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.ingest_updates <= 99_999:
        parser.error("--ingest-updates must be between 1 and 99999 (markers have five digits)")
    backends = tuple(b.strip() for b in args.ingest_backends.split(",") if b.strip())
    if not backends or any(b not in ("sqlite", "postgres") for b in backends):
        parser.error("--ingest-backends takes sqlite and/or postgres")
    parts = (args.only,) if args.only else PARTS

    if args.cpu is not None:
        if not hasattr(os, "sched_setaffinity"):
            parser.error("--cpu needs Linux (os.sched_setaffinity)")
        # Before any thread starts, so that aiosqlite's worker threads inherit the affinity.
        os.sched_setaffinity(0, {args.cpu})

    from bench import bridge, ingest

    def progress(line: str) -> None:
        print(line, flush=True)

    cpu = CpuWatch()
    results: dict[str, Any] = {}
    if args.only is not None and args.output.exists():
        # Keep the other part's figures (and only those) from the previous run.
        with contextlib.suppress(ValueError, OSError):
            previous = json.loads(args.output.read_text(encoding="utf-8"))
            results.update(
                {
                    k: v
                    for k, v in previous.items()
                    if k.partition(".")[0] in PARTS and k.partition(".")[0] not in parts
                }
            )
    if "bridge" in parts:
        results.update(
            asyncio.run(
                bridge.run(
                    burst_messages=args.burst,
                    long_burst_messages=args.long_burst,
                    latency_messages=args.latency,
                    runs=args.runs,
                    scale=args.scale,
                    budget=args.budget,
                    progress=progress,
                )
            )
        )
    if "ingest" in parts:
        results.update(
            asyncio.run(
                ingest.run(
                    updates=args.ingest_updates,
                    backends=backends,
                    bridged=not args.no_ingest_bridged,
                    with_startup=not args.no_startup,
                    phase_budget=args.ingest_budget,
                    profile_path=args.ingest_profile,
                    progress=progress,
                )
            )
        )
    results["bench.parts"] = list(parts)
    results.update(machine())
    results.update(cpu.result())
    results["machine.pinned_cpu"] = args.cpu
    goals: dict[str, bool] = {}
    for key, comparison, target, _meaning in GOALS:
        goals[key] = _met(results.get(key), comparison, target)
    for key, met in goals.items():
        results[f"goal.{key}.met"] = met
    args.output.write_text(
        json.dumps(_json_safe(results), indent=2, sort_keys=True, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )

    print()
    for line in summary(results):
        print(line)
    others = results.get("machine.other_processes_cpu_cores")
    if isinstance(others, float) and others > 0.2:
        print(
            f"note: other processes kept {others:.1f} of {os.cpu_count()} cores busy during "
            "the run: the figures are not comparable with an idle machine's "
            "(see docs/PERFORMANCE.md)"
        )
    print()
    for key, comparison, target, meaning in GOALS:
        value = results.get(key)
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        verdict = "met" if goals[key] else ("not measured" if value is None else "MISSED")
        print(f"goal {key} {comparison} {target:g} ({meaning}): {shown} -> {verdict}")
    print(f"\nwrote {args.output}")
    # Speed goals are reported; a lost or doubled message is a failure of the bridge itself.
    if "bridge" in parts and (results.get("bridge.lost") or results.get("bridge.duplicated")):
        print("FAILED: messages were lost or duplicated", file=sys.stderr)
        return 1
    if "ingest" in parts and (failed := ingest.failures(results)):
        print("FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
