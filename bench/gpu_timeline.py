"""Where a GPU waits: idle time inside profiled steps, attributed to what the host was doing, from a Chrome trace.

A measuring instrument for the step benches (bench/dpo_step.py's `--profile`). torch.profiler's operator tables
sum device time per kernel; they do not say when the GPU ran dry. This reads the trace torch.profiler exports
(`prof.export_chrome_trace`) and, for each window labelled `window_label` (one per step, see `annotate`):
  * busy: the union of the intervals of kernels, copies and memsets (any stream) inside the window;
  * idle: the rest of the window, each gap >= `MIN_GAP_US` charged to what the thread that launched the next
    GPU work was doing between the gap's start and that launch (its innermost CPU operator or annotation at
    each moment): the host work the GPU waited for.
Used from a profiled process: wrap the functions worth naming with `annotate` before profiling, export the trace,
then call `timeline_summary(path, "bench:train_step")`.
"""

from __future__ import annotations

import bisect
import functools
import json
from collections import defaultdict
from pathlib import Path

GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
HOST_CATEGORIES = ("cpu_op", "user_annotation")
LAUNCH_CATEGORIES = ("cuda_runtime", "cuda_driver")
MIN_GAP_US = 5.0
LONG_US = 1000.0  # host events at least this long are searched everywhere, shorter ones near the gap


def annotate(owner, name: str, label: str) -> None:
    """Replace `owner.name` (a method of an instance or class) by one that runs inside record_function(label)."""
    import torch

    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapped(*args, **kwargs):
        with torch.profiler.record_function(label):
            return original(*args, **kwargs)

    setattr(owner, name, wrapped)


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def _clip(intervals: list[tuple[float, float]], start: float, end: float) -> list[tuple[float, float]]:
    return [(max(a, start), min(b, end)) for a, b in intervals if b > start and a < end]


def _gaps(busy: list[tuple[float, float]], start: float, end: float) -> list[tuple[float, float]]:
    gaps, cursor = [], start
    for a, b in busy:
        if a > cursor:
            gaps.append((cursor, a))
        cursor = max(cursor, b)
    if end > cursor:
        gaps.append((cursor, end))
    return gaps


class _Thread:
    """One host thread's operators and annotations, for "what was innermost at time t"."""

    def __init__(self, events: list[dict]):
        self.events = sorted(events, key=lambda e: (e["ts"], -e["dur"]))
        self.starts = [e["ts"] for e in self.events]
        self.long = [e for e in self.events if e["dur"] >= LONG_US]  # the outer ones, checked at every charge

    def charge(self, start: float, end: float, into: dict) -> None:
        """Split [start, end) at event boundaries and add each piece's length to its innermost event's name."""
        # an event overlapping [start, end) began after start - LONG_US, or earlier and is then a long one
        first = bisect.bisect_left(self.starts, start - LONG_US)
        earlier_long = [e for e in self.long if e["ts"] < start - LONG_US]
        candidates = [e for e in (*earlier_long, *self.events[first : bisect.bisect_left(self.starts, end)])
                      if e["ts"] + e["dur"] > start]  # fmt: skip
        cuts = sorted({start, end, *(e["ts"] for e in candidates if start < e["ts"] < end),
                       *(e["ts"] + e["dur"] for e in candidates if start < e["ts"] + e["dur"] < end)})  # fmt: skip
        for a, b in zip(cuts, cuts[1:], strict=False):
            middle = (a + b) / 2
            inside = [e for e in candidates if e["ts"] <= middle < e["ts"] + e["dur"]]
            name = max(inside, key=lambda e: (e["ts"], -e["dur"]))["name"] if inside else "(no operator)"
            into[name] += b - a


def _keep_largest(largest: list, size: float, window: int, offset: float, work: dict, keep: int) -> list:
    """The `keep` largest gaps so far, each with where it lies (window, offset) and its three largest charges."""
    top_work = sorted(work.items(), key=lambda item: -item[1])[:3]
    return sorted([*largest, (size, window, offset, top_work)], key=lambda gap: -gap[0])[:keep]


def timeline_summary(trace_path: str | Path, window_label: str, top: int = 25, top_gaps: int = 8) -> dict:
    """Busy and idle GPU time per `window_label` window, the idle time by the host work it waited for, and the
    `top_gaps` largest gaps each with its place in its window and the host work it was charged to."""
    events = json.loads(Path(trace_path).read_text())["traceEvents"]
    complete = [e for e in events if e.get("ph") == "X" and "dur" in e]
    gpu = [e for e in complete if e.get("cat") in GPU_CATEGORIES]
    # the host's annotation only: record_function also leaves a `gpu_user_annotation` copy on the stream's row
    windows = sorted((e for e in complete if e.get("name") == window_label and e.get("cat") in HOST_CATEGORIES),
                     key=lambda e: e["ts"])  # fmt: skip
    launches = {e["args"]["correlation"]: e for e in complete
                if e.get("cat") in LAUNCH_CATEGORIES and "correlation" in e.get("args", {})}  # fmt: skip
    threads: dict = defaultdict(list)
    for event in complete:
        if event.get("cat") in HOST_CATEGORIES:
            threads[(event["pid"], event["tid"])].append(event)
    host = {key: _Thread(value) for key, value in threads.items()}
    busy_all = _union([(e["ts"], e["ts"] + e["dur"]) for e in gpu])
    gpu_by_start = sorted(gpu, key=lambda e: e["ts"])
    gpu_starts = [e["ts"] for e in gpu_by_start]
    charged: dict = defaultdict(float)
    per_window, gap_sizes, largest = [], [], []
    for number, window in enumerate(windows):
        start, end = window["ts"], window["ts"] + window["dur"]
        busy = _clip(busy_all, start, end)
        gaps = [g for g in _gaps(busy, start, end) if g[1] - g[0] >= MIN_GAP_US]
        for gap_start, gap_end in gaps:
            gap_sizes.append(gap_end - gap_start)
            this_gap: dict = defaultdict(float)
            following = bisect.bisect_left(gpu_starts, gap_end - 0.5)
            launch = None
            if following < len(gpu_by_start):
                launch = launches.get(gpu_by_start[following].get("args", {}).get("correlation"))
            if launch is None:  # the window's tail: charge the window's own thread
                thread = host[(window["pid"], window["tid"])]
            else:
                thread = host.get((launch["pid"], launch["tid"])) or host[(window["pid"], window["tid"])]
            thread.charge(gap_start, min(gap_end, launch["ts"]) if launch else gap_end, this_gap)
            if launch is not None and launch["ts"] < gap_end:  # launched, then the GPU still started later
                this_gap["(launched; GPU not yet started)"] += gap_end - max(launch["ts"], gap_start)
            for name, us in this_gap.items():
                charged[name] += us
            largest = _keep_largest(largest, gap_end - gap_start, number, gap_start - start, this_gap, top_gaps)
        busy_us = sum(b - a for a, b in busy)
        per_window.append({"wall_ms": round(window["dur"] / 1e3, 2), "gpu_busy_ms": round(busy_us / 1e3, 2),
                           "gpu_idle_ms": round((window["dur"] - busy_us) / 1e3, 2),
                           "gaps": len(gaps)})  # fmt: skip
    total_idle = sum(gap_sizes)
    ranked = sorted(charged.items(), key=lambda item: -item[1])[:top]
    sizes = sorted(gap_sizes, reverse=True)
    largest_gaps = [{"ms": round(size / 1e3, 3), "window": number, "at_ms": round(offset / 1e3, 2),
                     "host_work_ms": {name: round(us / 1e3, 3) for name, us in work}}
                    for size, number, offset, work in largest]  # fmt: skip
    return {
        "windows": per_window,
        "idle_ms_by_host_work": {name: round(us / 1e3, 2) for name, us in ranked},
        "idle_ms_in_gaps": round(total_idle / 1e3, 2),
        "largest_gaps_ms": [round(us / 1e3, 3) for us in sizes[:15]],
        "largest_gaps": largest_gaps,
        "gaps_over_1ms": sum(1 for us in sizes if us >= 1000),
        "idle_ms_in_gaps_under_100us": round(sum(us for us in sizes if us < 100) / 1e3, 2),
    }


if __name__ == "__main__":  # python bench/gpu_timeline.py TRACE.json [LABEL]
    import sys

    print(json.dumps(timeline_summary(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "bench:train_step"),
                     indent=1))  # fmt: skip
