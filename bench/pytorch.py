"""Driver of bench/pytorch: a real PyTorch (CPU) training under energyd,
profiled with torch.profiler, its traces attributed per op through the
energyd Python package. Run by bench/pytorch, which installs everything.

Arguments: SOCKET STEPS THREADS REPEATS WAIT WARMUP ACTIVE. Prints the
per-op table over the last run's traces, the share of the traced busy time
that ops with an energy figure cover, the overhead of span reporting (time
in the on_trace_ready handler over the training's wall time), and a last line
`busy_time_explained_pct=… overhead_pct=… ops=…`.
"""

import csv
import gzip
import os
import statistics
import sys
import time

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function, schedule

from energyd import EnergyMonitor
from energyd.torch_profiler import EnergyTraceHandler

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SOCKET, STEPS, THREADS, REPEATS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
# The profiler's cycle: WAIT idle steps, WARMUP, then ACTIVE traced steps.
WAIT, WARMUP, ACTIVE = (int(v) for v in sys.argv[5:8])


def load():
    with gzip.open(os.path.join(ROOT, "data", "california_housing.csv.gz"), "rt") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    target = header.index("median_house_value")
    keep = [i for i, h in enumerate(header) if h not in ("median_house_value", "ocean_proximity")]
    body = [r for r in body if all(r[i] != "" for i in keep)]
    x = torch.tensor([[float(r[i]) for i in keep] for r in body])
    y = torch.tensor([float(r[target]) / 1e5 for r in body]).unsqueeze(1)
    return (x - x.mean(0)) / x.std(0), y


class StepClock:
    """Process CPU time per training step, on CLOCK_MONOTONIC, to compare
    with the traced busy time."""

    def __init__(self):
        self.steps = []

    def mark(self, t0, c0):
        self.steps.append((t0, time.monotonic_ns(), time.process_time_ns() - c0))

    def cpu_between(self, start, end):
        return sum(c for a, b, c in self.steps if a >= start - 1_000_000 and b <= end + 1_000_000)


def train(x, y, on_trace_ready, clock):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(x.shape[1], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.MSELoss()
    batch = 256
    per_epoch = x.shape[0] // batch
    start = time.monotonic()
    with profile(activities=[ProfilerActivity.CPU],
                 schedule=schedule(wait=WAIT, warmup=WARMUP, active=ACTIVE, repeat=0),
                 on_trace_ready=on_trace_ready) as prof:
        for step in range(STEPS):
            t0, c0 = time.monotonic_ns(), time.process_time_ns()
            i = step % per_epoch
            xb, yb = x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]
            with record_function("forward"):
                loss = loss_fn(model(xb), yb)
            with record_function("backward"):
                opt.zero_grad(set_to_none=True)
                loss.backward()
            with record_function("optimizer"):
                opt.step()
            prof.step()
            if clock is not None:
                clock.mark(t0, c0)
    return time.monotonic() - start, loss.item()


def main():
    torch.set_num_threads(THREADS)
    x, y = load()
    monitor = EnergyMonitor(socket=SOCKET)
    handler = EnergyTraceHandler(socket=SOCKET)
    handler_time = [0.0]

    def reporting(prof):
        t = time.monotonic()
        handler(prof)
        handler_time[0] += time.monotonic() - t

    def exporting_nothing(prof):
        pass

    # Interleaved: the same training with span reporting and without (the
    # profiler runs in both), REPEATS times each, on a shared machine.
    with_reporting, without = [], []
    clock = StepClock()
    for r in range(REPEATS):
        handler_time[0] = 0.0
        handler.results.clear()
        with monitor.window(f"reporting {r}") as w:
            wall, loss = train(x, y, reporting, clock if r == REPEATS - 1 else None)
        with_reporting.append((wall, handler_time[0]))
        wall_plain, _ = train(x, y, exporting_nothing, None)
        without.append(wall_plain)
        print(f"# run {r}: {wall:.2f} s with span reporting ({handler_time[0]:.3f} s in the "
              f"handler), {wall_plain:.2f} s without; loss {loss:.3f}; window energy "
              f"{w.result.energy_j:.2f} ± {w.result.uncertainty_j:.2f} J ({w.result.provenance})",
              file=sys.stderr)

    # The per-op table over the last run's traces.
    results = handler.results
    agg = {}
    traced_busy = explained = fit_explained = cpu = 0.0
    for res in results:
        traced_busy += res.busy_time_s
        explained += sum(r["self_time_s"] for r in res.ops if r["self_energy_j"] is not None)
        fit_explained += sum(r["self_time_s"] for r in res.ops if r["fit_energy_j"] is not None)
        cpu += clock.cpu_between(res.start_ns, res.end_ns) * 1e-9
        for r in res.ops:
            a = agg.setdefault(r["name"], {"count": 0, "self_s": 0.0, "j": 0.0, "sigma": 0.0,
                                           "known": False, "fit": 0.0, "fit_n": 0})
            a["count"] += r["count"]
            a["self_s"] += r["self_time_s"]
            if r["self_energy_j"] is not None:
                a["known"] = True
                a["j"] += r["self_energy_j"]
                a["sigma"] += r["self_uncertainty_j"]
            if r["fit_energy_j"] is not None:
                a["fit"] += r["fit_energy_j"]
                a["fit_n"] += 1
    provenance = results[0].provenance if results else "none"
    total_j = sum(a["j"] for a in agg.values())
    rows = sorted(agg.items(), key=lambda kv: -kv[1]["j"])
    print(f"{len(results)} traces of {ACTIVE} steps, {THREADS} thread(s); energy is {provenance}")
    print(f"{'op (by self energy)':<50} {'count':>7} {'self s':>8} {'time%':>6} "
          f"{'self J':>9} {'± J':>7} {'J%':>6}")
    top = 15
    for name, a in rows[:top]:
        print(f"{name[:50]:<50} {a['count']:>7} {a['self_s']:>8.3f} "
              f"{a['self_s'] / traced_busy * 100:>5.1f}% {a['j']:>9.4f} {a['sigma']:>7.4f} "
              f"{a['j'] / total_j * 100 if total_j else 0:>5.1f}%")
    rest = rows[top:]
    if rest:
        rs = sum(a["self_s"] for _, a in rest)
        rj = sum(a["j"] for _, a in rest)
        print(f"{'rest (' + str(len(rest)) + ' ops)':<50} {sum(a['count'] for _, a in rest):>7} "
              f"{rs:>8.3f} {rs / traced_busy * 100:>5.1f}% {rj:>9.4f} {'':>7} "
              f"{rj / total_j * 100 if total_j else 0:>5.1f}%")
    gemm = sum(a["j"] for n, a in agg.items() if n in ("aten::mm", "aten::addmm"))
    fits = sum(1 for a in agg.values() if a["fit_n"])
    print(f"GEMMs (aten::mm + aten::addmm): {gemm / total_j * 100 if total_j else 0:.1f}% of the "
          f"ops' energy; energyd's own per-type fit gave a figure for {fits} of {len(agg)} ops")
    busy_pct = explained / traced_busy * 100 if traced_busy else 0.0
    fit_pct = fit_explained / traced_busy * 100 if traced_busy else 0.0
    print(f"traced busy time {traced_busy:.3f} s: ops with an energy figure cover {busy_pct:.1f}% "
          f"of it (energyd's per-type fit alone: {fit_pct:.1f}%); the process's CPU time over "
          f"the same steps was {cpu:.3f} s ({cpu / traced_busy * 100 if traced_busy else 0:.0f}% "
          f"of the spans' wall time: below 100% the process waited for a CPU inside its spans)")
    direct = statistics.median(h / (w - h) * 100 for w, h in with_reporting)
    traced_steps = len(results) * ACTIVE
    per_step_ms = statistics.median(h for _, h in with_reporting) / max(traced_steps, 1) * 1e3
    step_ms = statistics.median(without) / STEPS * 1e3
    print(f"handler cost {per_step_ms:.2f} ms per traced step (a training step takes "
          f"{step_ms:.2f} ms with the profiler on); {traced_steps} of {STEPS} steps traced "
          f"(cycle: wait {WAIT}, warmup {WARMUP}, active {ACTIVE})")
    ab = (statistics.median(w for w, _ in with_reporting) / statistics.median(without) - 1) * 100
    print(f"span reporting: {direct:.2f}% of the training's wall time spent in the handler "
          f"(median of {REPEATS}); A/B wall-time difference {ab:+.2f}% (noisy on a shared machine)")
    handler.close()
    monitor.close()
    ops = sum(1 for a in agg.values() if a["known"])
    print(f"busy_time_explained_pct={busy_pct:.1f} overhead_pct={direct:.2f} ops={ops}")


if __name__ == "__main__":
    main()
