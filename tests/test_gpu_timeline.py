"""bench/gpu_timeline.py, the instrument that charges a profiled step's GPU idle time to host work: on a small
hand-made Chrome trace whose answer is worked out by hand (the bench itself needs a GPU)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from gpu_timeline import timeline_summary  # noqa: E402  (bench scripts are not a package)

MAIN, AUTOGRAD, STREAM = 1, 2, 7


def host(name: str, start: float, duration: float, tid: int = MAIN, category: str = "cpu_op") -> dict:
    return {"ph": "X", "cat": category, "name": name, "pid": 1, "tid": tid, "ts": start, "dur": duration}


def launch(start: float, correlation: int, tid: int = MAIN) -> dict:
    return {**host("cudaLaunchKernel", start, 5, tid, "cuda_runtime"), "args": {"correlation": correlation}}


def kernel(start: float, duration: float, correlation: int) -> dict:
    return {"ph": "X", "cat": "kernel", "name": f"k{correlation}", "pid": 0, "tid": STREAM, "ts": start,
            "dur": duration, "args": {"correlation": correlation}}  # fmt: skip


def test_idle_time_is_charged_to_the_innermost_host_work_before_each_launch(tmp_path):
    """One 1000 us step: kernels at 130-630 and 820-920 (busy 600 us), so three gaps (400 us idle):
    0-130    the GPU waits for the launch at 120: micro_batches 0-100, the step itself 100-110, aten::mm 110-120,
             then 10 us between the launch and the kernel's start;
    630-820  the next launch (810) came from the autograd thread, busy in aten::index 600-800 (charged from the
             gap's start, 630), then in nothing it recorded 800-810; 10 us launched and not started;
    920-1000 no kernel follows: the step's own thread, in the step alone."""
    events = [
        host("bench:train_step", 0, 1000, category="user_annotation"),
        # the GPU-side copy of the step's annotation that torch.profiler adds: not a second window
        {**host("bench:train_step", 130, 790, tid=STREAM, category="gpu_user_annotation"), "pid": 0},
        host("bench:micro_batches", 0, 100, category="user_annotation"),
        host("aten::mm", 110, 20),
        launch(120, 1),
        kernel(130, 500, 1),
        host("bench:backward", 590, 300, category="user_annotation"),
        host("aten::index", 600, 200, tid=AUTOGRAD),
        launch(810, 2, tid=AUTOGRAD),
        kernel(820, 100, 2),
    ]
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps({"traceEvents": events}))
    summary = timeline_summary(trace, "bench:train_step")
    assert summary["windows"] == [{"wall_ms": 1.0, "gpu_busy_ms": 0.6, "gpu_idle_ms": 0.4, "gaps": 3}]
    charged = summary["idle_ms_by_host_work"]
    expected = {"bench:micro_batches": 0.1, "bench:train_step": 0.09, "aten::mm": 0.01, "aten::index": 0.17,
                "(no operator)": 0.01, "(launched; GPU not yet started)": 0.02}  # fmt: skip
    assert charged == pytest.approx(expected, abs=1e-9)
    assert sum(charged.values()) == pytest.approx(summary["idle_ms_in_gaps"]) == pytest.approx(0.4)
    assert summary["largest_gaps_ms"] == [0.19, 0.13, 0.08] and summary["gaps_over_1ms"] == 0
    first, second, third = summary["largest_gaps"]
    assert (first["ms"], first["window"], first["at_ms"]) == (0.19, 0, 0.63)
    assert first["host_work_ms"] == pytest.approx({"aten::index": 0.17, "(no operator)": 0.01,
                                                   "(launched; GPU not yet started)": 0.01})  # fmt: skip
    assert (second["ms"], second["at_ms"], third["ms"], third["at_ms"]) == (0.13, 0.0, 0.08, 0.92)
    assert list(second["host_work_ms"]) == ["bench:micro_batches", "bench:train_step", "aten::mm"]
