"""A tiny training loop measured through the package against a real energyd.

With torch installed, a real torch.profiler run hands its trace to
EnergyTraceHandler. Without torch (CI installs no torch: the wheel is
gigabytes), a NumPy MLP records its ops the way the profiler does (nested
spans: ProfilerStep#N > forward/backward/optimizer labels > ops) into a
kineto-shaped Chrome trace on the wall clock, and the same handler takes
it. The torch-specific parsing is covered by the committed real trace
(test_trace.py here, and the Rust tests in attribution/tests)."""

import json
import os
import time

import pytest

from energyd import EnergyMonitor
from energyd.torch_profiler import EnergyTraceHandler, format_ops

np = pytest.importorskip("numpy")

try:
    import torch  # noqa: F401

    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False


class NumpyProfiler:
    """Records nested spans like torch.profiler and exports them as a
    kineto trace (realtime µs after a base, as kineto writes)."""

    def __init__(self):
        self.events = []
        self.pid = os.getpid()
        self.base_ns = (time.time_ns() // 10**15) * 10**15

    def span(self, name, cat="cpu_op"):
        profiler = self

        class _Span:
            def __enter__(self):
                self.t0 = time.time_ns()

            def __exit__(self, *exc):
                t1 = time.time_ns()
                profiler.events.append({
                    "ph": "X", "cat": cat, "name": name, "pid": profiler.pid,
                    "tid": profiler.pid, "ts": (self.t0 - profiler.base_ns) / 1000.0,
                    "dur": (t1 - self.t0) / 1000.0,
                })

        return _Span()

    def export_chrome_trace(self, path):
        with open(path, "w") as f:
            json.dump({"baseTimeNanoseconds": self.base_ns, "traceEvents": self.events}, f)


def numpy_training(prof, steps, width=256, batch=256):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch * steps, 8)).astype(np.float32)
    y = (x @ rng.standard_normal((8, 1)).astype(np.float32)) ** 2
    w1 = rng.standard_normal((8, width)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((width, width)).astype(np.float32) * 0.06
    w3 = rng.standard_normal((width, 1)).astype(np.float32) * 0.06
    for step in range(steps):
        xb, yb = x[step * batch:(step + 1) * batch], y[step * batch:(step + 1) * batch]
        with prof.span(f"ProfilerStep#{step}", "user_annotation"):
            with prof.span("forward", "user_annotation"):
                with prof.span("aten::linear"):
                    with prof.span("aten::mm"):
                        h1 = xb @ w1
                with prof.span("aten::relu"):
                    a1 = np.maximum(h1, 0)
                with prof.span("aten::linear"):
                    with prof.span("aten::mm"):
                        h2 = a1 @ w2
                with prof.span("aten::relu"):
                    a2 = np.maximum(h2, 0)
                with prof.span("aten::linear"):
                    with prof.span("aten::mm"):
                        out = a2 @ w3
                with prof.span("aten::mse_loss"):
                    err = out - yb
                    loss = float((err ** 2).mean())
            with prof.span("backward", "user_annotation"):
                g = 2 * err / batch
                with prof.span("aten::mm"):
                    g3 = a2.T @ g
                    ga2 = g @ w3.T
                with prof.span("aten::threshold_backward"):
                    ga2 = ga2 * (h2 > 0)
                with prof.span("aten::mm"):
                    g2 = a1.T @ ga2
                    ga1 = ga2 @ w2.T
                with prof.span("aten::threshold_backward"):
                    ga1 = ga1 * (h1 > 0)
                with prof.span("aten::mm"):
                    g1 = xb.T @ ga1
            with prof.span("optimizer", "user_annotation"):
                for w, gw in ((w1, g1), (w2, g2), (w3, g3)):
                    with prof.span("aten::add_"):
                        w -= 1e-3 * gw
    return loss


def check_result(result):
    rows = {r["name"]: r for r in result.ops}
    assert result.spans_rejected == 0
    assert result.spans_accepted > 0
    assert result.provenance == "estimated"
    # Self times partition the busy time: they add up to it exactly.
    assert sum(r["self_time_s"] for r in result.ops) == pytest.approx(result.busy_time_s, rel=1e-9)
    assert sum(r["time_share"] for r in result.ops) == pytest.approx(1.0, rel=1e-9)
    mm = rows["aten::mm"]
    assert mm["kind"] == "op"
    # The GEMMs dominate the time of this MLP, as in the committed trace.
    assert mm["self_time_s"] == max(r["self_time_s"] for r in result.ops)
    # Inclusive figures hold their self part.
    for r in result.ops:
        assert r["total_time_s"] >= r["self_time_s"] - 1e-12
        if r["self_energy_j"] is not None:
            assert r["self_energy_j"] >= 0.0
            assert r["total_energy_j"] >= r["self_energy_j"] * (1 - 1e-9)
            assert r["provenance"] == "estimated"
    # What is attributed to ops is part of the process's energy.
    assert result.attributed_energy_j <= result.process_energy_j * (1 + 1e-9)
    kinds = {r["kind"] for r in result.rollups}
    assert "step" in kinds and "label" in kinds
    labels = {r["name"] for r in result.rollups if r["kind"] == "label"}
    assert {"forward", "backward", "optimizer"} <= labels
    text = format_ops(result, top=5)
    assert "rest (" in text and "aten::" in text


@pytest.mark.skipif(HAVE_TORCH, reason="torch is installed: the torch test runs instead")
def test_numpy_training_loop_per_op_energy(daemon):
    with EnergyMonitor(socket=daemon.socket) as monitor:
        handler = EnergyTraceHandler(socket=daemon.socket)
        prof = NumpyProfiler()
        with monitor.window("training") as w:
            numpy_training(prof, steps=300)
        result = handler(prof)
        handler.close()
    check_result(result)
    # The window saw the whole training; the ops are a part of it.
    assert w.result.energy_j > 0
    assert result.process_energy_j <= w.result.energy_j * 1.5 + 0.05


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed (CI): numpy test instead")
def test_torch_training_loop_per_op_energy(daemon):
    import torch
    from torch import nn
    from torch.profiler import ProfilerActivity, profile, record_function, schedule

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Linear(8, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(256, 8), torch.randn(256, 1)
    handler = EnergyTraceHandler(socket=daemon.socket)
    steps = 150
    with profile(activities=[ProfilerActivity.CPU],
                 schedule=schedule(wait=0, warmup=1, active=steps, repeat=1),
                 on_trace_ready=handler) as prof:
        for _ in range(steps + 1):
            with record_function("forward"):
                loss = nn.functional.mse_loss(model(x), y)
            with record_function("backward"):
                opt.zero_grad()
                loss.backward()
            with record_function("optimizer"):
                opt.step()
            prof.step()
    handler.close()
    assert len(handler.results) == 1
    check_result(handler.results[0])
