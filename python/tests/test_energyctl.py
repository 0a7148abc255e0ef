"""energyctl's per-op output for a nested span file, against the real daemon:
a program burns CPU in nested spans (step > phase > op), writes them as CSV,
and `energyctl run --spans` attributes their self time."""

import json
import os
import subprocess
import sys

from conftest import REPO

WORKLOAD = r'''
import os, sys, time
out = sys.argv[1]
rows = []
def span(name, seconds, children=()):
    t0 = time.monotonic_ns()
    end = time.monotonic() + seconds
    for child in children:
        child()
    while time.monotonic() < end:
        sum(i * i for i in range(500))
    rows.append((name, t0, time.monotonic_ns()))
for step in range(40):
    span(f"ProfilerStep#{step}", 0.0, [
        lambda: span("forward", 0.0, [lambda: span("gemm", 0.012), lambda: span("relu", 0.002)]),
        lambda: span("backward", 0.0, [lambda: span("gemm", 0.012), lambda: span("add", 0.001)]),
        lambda: span("optimizer", 0.003),
    ])
with open(out, "w") as f:
    f.write("name,start_ns,end_ns,pid,tid\n")
    for name, a, b in rows:
        f.write(f"{name},{a},{b},{os.getpid()},{os.getpid()}\n")
'''


def energyctl(daemon, *args):
    exe = os.environ.get("ENERGYCTL_BIN") or os.path.join(REPO, "target", "debug", "energyctl")
    return subprocess.run([exe, "--socket", daemon.socket, *args], capture_output=True,
                          text=True, timeout=120)


def test_run_with_nested_spans_prints_top_ops_and_a_rest_row(daemon, tmp_path):
    script = tmp_path / "workload.py"
    script.write_text(WORKLOAD)
    spans = tmp_path / "spans.csv"
    out = energyctl(daemon, "run", "--spans", str(spans), "--top", "3", "--",
                    sys.executable, str(script), str(spans))
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    header = next(i for i, l in enumerate(lines) if "op (by self energy)" in l)
    assert "estimated" in lines[header]
    # gemm spends most of the time: first row; then a rest row.
    assert lines[header + 1].split()[0] == "gemm", out.stderr
    assert any(l.strip().startswith("rest (") for l in lines[header + 1:header + 6]), out.stderr
    assert "per step (inclusive)" in out.stderr and "ProfilerStep#0" in out.stderr

    out = energyctl(daemon, "run", "--json", "--spans", str(spans), "--",
                    sys.executable, str(script), str(spans))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    table = doc["op_table"]
    ops = {o["name"]: o for o in table["ops"]}
    assert set(ops) == {"ProfilerStep#*", "forward", "backward", "optimizer", "gemm", "relu",
                        "add"}
    # Self times partition the busy time: nothing counted twice.
    assert abs(sum(o["self_time_s"] for o in ops.values()) - table["cpu_busy_time_s"]) < 1e-6
    assert ops["forward"]["self_time_s"] < 0.1 * ops["forward"]["total_time_s"]
    assert ops["gemm"]["self_energy_j"] > ops["relu"]["self_energy_j"] > 0
    assert table["provenance"] == "estimated"
    steps = [r for r in table["rollups"] if r["kind"] == "step"]
    assert len(steps) == 40
