"""The Python call tree on the committed real PyTorch trace, against
PyTorch's own key_averages() of the same run (recorded beside it)."""

import json
import os

import pytest

from energyd.trace import STEP_OP_NAME, build_forest, load_trace, op_rows, rollup_rows

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "attribution", "tests", "fixtures",
                        "pytorch")


@pytest.fixture(scope="module")
def trace():
    return load_trace(os.path.join(FIXTURES, "mlp_train_trace.json.gz"))


@pytest.fixture(scope="module")
def pytorch_averages():
    with open(os.path.join(FIXTURES, "mlp_train_key_averages.json")) as f:
        return {r["name"]: r for r in json.load(f)}


def test_self_times_partition_the_busy_time(trace):
    forest = build_forest(trace, offset_ns=0)
    assert forest.clipped_ns == 0
    # One CPU thread; busy time = the union of its top-level spans (the
    # four profiler steps), computed here independently of the tree.
    tops = sorted((e["ts"], e["ts"] + e["dur"]) for e in trace["traceEvents"]
                  if e.get("ph") == "X" and e["name"].startswith("ProfilerStep#"))
    assert forest.busy_ns() == pytest.approx(sum(b - a for a, b in tops) * 1000, abs=8)
    assert sum(n.self_ns for n in forest.nodes) == forest.busy_ns()
    segs = sorted(forest.segments, key=lambda s: s[1])
    assert sum(e - s for _, s, e in segs) == forest.busy_ns()
    assert all(a[2] <= b[1] for a, b in zip(segs, segs[1:])), "segments overlap"


def test_operator_self_times_match_pytorch(trace, pytorch_averages):
    # Without Python frames, as PyTorch's key_averages counts.
    forest = build_forest(trace, python_frames="none", offset_ns=0)
    ours = {r["name"]: r for r in forest.op_times()}
    compared = 0
    for name, theirs in pytorch_averages.items():
        row = ours.get(name)
        if row is None or row["kind"] != "op":
            continue
        compared += 1
        # PyTorch counts a recursive op (aten::div_ inside aten::div_) its
        # own way; self times agree for every op.
        recursive = any(n.op == forest.op_names.index(name) and forest.has_ancestor_op(i, n.op)
                        for i, n in enumerate(forest.nodes))
        if not recursive:
            assert row["count"] == theirs["count"], name
        # Rounding of µs to ns: at most a few ns per instance.
        assert row["self_ns"] / 1000 == pytest.approx(theirs["self_cpu_us"], abs=0.01 * row["count"] + 0.01), name
    assert compared >= 40
    matmul = ours["aten::mm"]["self_ns"] + ours["aten::addmm"]["self_ns"]
    assert matmul / forest.busy_ns() > 0.3, "the GEMMs dominate the time"
    assert ours[STEP_OP_NAME]["count"] == 4


def test_modules_roll_up_and_energy_composes(trace):
    forest = build_forest(trace, offset_ns=0)
    busy_s = forest.busy_ns() * 1e-9
    # energyd's answer shaped by hand: the process drew 2 W of dynamic
    # power while busy, +- 10 %, on an estimated CPU domain.
    sources = [{"id": 0, "name": "estimated-cpu", "domain": ("cpu", None)}]
    breakdown = {
        "domains": [{"source": 0, "process_j": 3.0 * busy_s, "process_dynamic_j": 2.0 * busy_s,
                     "uncertainty_j": 0.2 * busy_s, "provenance": ("estimated", None)}],
        "kernels": [{"name": "aten::mm", "energy_j": 0.5, "uncertainty_j": 0.1,
                     "method": ("regression", None)}],
    }
    rows = {r["name"]: r for r in op_rows(forest, breakdown, sources)}
    assert sum(r["self_energy_j"] for r in rows.values()) == pytest.approx(2.0 * busy_s, rel=1e-9)
    for r in rows.values():
        assert r["energy_share"] == pytest.approx(r["time_share"], rel=1e-9)
        assert r["self_energy_j"] == pytest.approx(2.0 * r["self_time_s"], rel=1e-9)
        assert r["provenance"] == "estimated"
    steps = rows[STEP_OP_NAME]
    assert steps["total_energy_j"] == pytest.approx(2.0 * busy_s, rel=1e-9)
    assert steps["total_uncertainty_j"] == pytest.approx(0.2 * busy_s, rel=1e-9)
    linear = rows["aten::linear"]
    assert linear["total_energy_j"] == pytest.approx(2.0 * linear["total_time_s"], rel=1e-9)
    # energyd's own fit is kept beside, for comparison.
    assert rows["aten::mm"]["fit_energy_j"] == 0.5
    assert rows["aten::mm"]["fit_method"] == "regression"
    # On a measured source each op's power may differ from the average.
    breakdown["domains"][0]["provenance"] = ("measured", None)
    mm = {r["name"]: r for r in op_rows(forest, breakdown, sources)}["aten::mm"]
    e = mm["self_energy_j"]
    assert mm["self_uncertainty_j"] == pytest.approx(((0.1 * e) ** 2 + (0.3 * e) ** 2) ** 0.5)
    rollups = rollup_rows(forest, breakdown, sources)
    modules = {r["name"]: r for r in rollups if r["kind"] == "module"}
    assert set(modules) >= {"nn.Module: Linear_0", "nn.Module: Linear_1", "nn.Module: Linear_2",
                            "nn.Module: Sequential_0"}
    seq = modules["nn.Module: Sequential_0"]
    assert seq["total_energy_j"] >= modules["nn.Module: Linear_1"]["total_energy_j"] > 0
    assert [r["name"] for r in rollups if r["kind"] == "step"] == [
        "ProfilerStep#2", "ProfilerStep#3", "ProfilerStep#4", "ProfilerStep#5"]


def test_gpu_kernels_link_to_the_launching_op_by_flow():
    # The shape kineto writes for a CUDA run (the Rust test has the same).
    trace = {"traceEvents": [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#7", "pid": 1, "tid": 1,
         "ts": 0, "dur": 100},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 10, "dur": 20},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1,
         "ts": 15, "dur": 5},
        {"ph": "s", "cat": "ac2g", "name": "ac2g", "id": 42, "pid": 1, "tid": 1, "ts": 15},
        {"ph": "X", "cat": "kernel", "name": "gemm_kernel", "pid": 0, "tid": "stream 7", "ts": 40,
         "dur": 30},
        {"ph": "f", "cat": "ac2g", "name": "ac2g", "id": 42, "pid": 0, "tid": "stream 7", "ts": 40,
         "bp": "e"},
        {"ph": "X", "cat": "kernel", "name": "orphan", "pid": 0, "tid": 7, "ts": 80, "dur": 5},
        {"ph": "X", "cat": "Trace", "name": "PyTorch Profiler (0)", "pid": "Spans",
         "tid": "PyTorch Profiler", "ts": 0, "dur": 200},
    ]}
    forest = build_forest(trace, offset_ns=0)
    kernel = next(n for n in forest.nodes if n.name == "gemm_kernel")
    assert forest.nodes[kernel.launched_by].name == "aten::mm"
    assert next(n for n in forest.nodes if n.name == "orphan").launched_by is None
    assert forest.cpu_busy_ns() == 100_000
    assert forest.busy_ns() == 135_000
    # The kernel's GPU energy counts in aten::mm's inclusive figure.
    sources = [{"id": 0, "domain": ("cpu", None)}, {"id": 1, "domain": ("gpu", {"index": 0})}]
    breakdown = {"kernels": [], "domains": [
        {"source": 0, "process_j": 1.0, "process_dynamic_j": 1.0, "uncertainty_j": 0.0,
         "provenance": ("measured", None)},
        {"source": 1, "process_j": 3.5, "process_dynamic_j": 3.5, "uncertainty_j": 0.0,
         "provenance": ("measured", None)},
    ]}
    rows = {r["name"]: r for r in op_rows(forest, breakdown, sources)}
    # CPU: 1 J over 100 µs of busy time; GPU: 3.5 J over 35 µs of streams.
    assert rows["gemm_kernel"]["self_energy_j"] == pytest.approx(3.0)
    assert rows["aten::mm"]["self_energy_j"] == pytest.approx(0.15)
    assert rows["aten::mm"]["total_energy_j"] == pytest.approx(0.2 + 3.0)
