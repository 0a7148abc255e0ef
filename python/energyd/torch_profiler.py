"""torch.profiler integration: per-op energy of each profiled cycle.

    from energyd.torch_profiler import EnergyTraceHandler
    handler = EnergyTraceHandler()
    with torch.profiler.profile(schedule=..., on_trace_ready=handler) as prof:
        for batch in loader:
            train_step(batch)
            prof.step()
    df = pandas.DataFrame(handler.results[-1].ops)      # one row per op

Each time the profiler hands over a trace, the handler exports it (Chrome
trace JSON), builds the call tree, sends the self-time segments of every
op to energyd as spans of this process, asks energyd for the process's
breakdown over the traced interval, and composes per-op self and total
energy (see energyd.trace). torch is not imported here: any object with
export_chrome_trace(path) works.
"""

import os
import tempfile
from dataclasses import dataclass, field
from typing import List, Optional

from .client import Client
from .monitor import additive, weakest
from .trace import build_forest, load_trace, op_rows, rollup_rows


@dataclass
class TraceEnergy:
    """The answer for one trace."""

    ops: List[dict]
    rollups: List[dict]
    busy_time_s: float
    busy_time_explained: float
    spans_accepted: int
    spans_rejected: int
    provenance: str
    process_energy_j: float
    attributed_energy_j: float
    start_ns: int
    end_ns: int
    notes: List[str] = field(default_factory=list)
    trace_path: Optional[str] = None

    def to_dataframe(self):
        """The per-op rows as a pandas DataFrame (pandas must be installed)."""
        import pandas  # noqa: PLC0415 - optional dependency

        return pandas.DataFrame(self.ops)


class EnergyTraceHandler:
    """An on_trace_ready callable. socket: energyd's socket (default as in
    Client); pid: the process the spans belong to (default this one; it is
    registered with energyd, children included, when the handler is
    made); trace_dir: keep each exported trace there (default: a temporary
    file, removed after use)."""

    def __init__(self, socket=None, pid=None, trace_dir=None, client=None):
        self.client = client or Client(socket, client_name="energyd-python torch")
        self.pid = pid if pid is not None else os.getpid()
        self.trace_dir = trace_dir
        self.client.register_process(self.pid, True)
        self.source_list = self.client.sources()
        self.sources = {s["id"]: s for s in self.source_list}
        self.results: List[TraceEnergy] = []

    def __call__(self, prof):
        if self.trace_dir:
            os.makedirs(self.trace_dir, exist_ok=True)
            path = os.path.join(self.trace_dir, f"trace_{len(self.results)}.json")
            prof.export_chrome_trace(path)
            self.results.append(self.attribute_file(path))
            self.results[-1].trace_path = path
        else:
            fd, path = tempfile.mkstemp(suffix=".json", prefix="energyd-trace-")
            os.close(fd)
            try:
                prof.export_chrome_trace(path)
                self.results.append(self.attribute_file(path))
            finally:
                os.unlink(path)
        return self.results[-1]

    def attribute_file(self, path, offset_ns=None) -> TraceEnergy:
        """Attributes a Chrome trace file of this process (see the module doc)."""
        return self.attribute_trace(load_trace(path), offset_ns)

    def attribute_trace(self, trace, offset_ns=None) -> TraceEnergy:
        forest = build_forest(trace, offset_ns=offset_ns)
        time_range = forest.time_range()
        if time_range is None:
            raise ValueError("the trace holds no span")
        names, spans = forest.segments_batch(self.pid)
        accepted, rejected = self.client.submit_spans(names, spans)
        start, end = time_range
        b = self.client.breakdown(self.pid, start, end)
        all_domains = [s["domain"] for s in self.source_list]
        counted = [d for d in b["domains"]
                   if d["source"] in self.sources
                   and additive(self.sources[d["source"]]["domain"], all_domains)]
        ops = op_rows(forest, b, self.source_list)
        provenance = ops[0]["provenance"] if ops else weakest(d["provenance"][0] for d in counted)
        explained = sum(r["self_time_s"] for r in ops
                        if r["self_energy_j"] is not None and r["kind"] != "gpu_kernel")
        busy_s = forest.cpu_busy_ns() * 1e-9
        notes = list(b["notes"])
        if rejected:
            notes.append(f"energyd refused {rejected} of {accepted + rejected} spans")
        return TraceEnergy(
            ops=ops,
            rollups=rollup_rows(forest, b, self.source_list),
            busy_time_s=busy_s,
            busy_time_explained=explained / busy_s if busy_s > 0 else 0.0,
            spans_accepted=accepted,
            spans_rejected=rejected,
            provenance=provenance,
            process_energy_j=sum(d["process_j"] for d in counted),
            attributed_energy_j=sum(r["self_energy_j"] for r in ops
                                    if r["self_energy_j"] is not None),
            start_ns=b["from"],
            end_ns=b["to"],
            notes=notes,
        )

    def close(self):
        self.client.close()


def format_ops(result: TraceEnergy, top=15):
    """The per-op table as text: top ops by self energy and a rest row."""
    lines = [f"{'op (by self energy)':<44} {'count':>6} {'self ms':>9} {'time%':>6} "
             f"{'self mJ ' + result.provenance:>18} {'± mJ':>8} {'J%':>6} {'total mJ':>9}"]
    for r in result.ops[:top]:
        e = r["self_energy_j"]
        energy = f"{e * 1e3:.3f}" if e is not None else "n/a"
        sigma = f"{r['self_uncertainty_j'] * 1e3:.3f}" if e is not None else ""
        share = f"{r['energy_share'] * 100:.1f}%" if r["energy_share"] is not None else "n/a"
        lines.append(
            f"{r['name'][:44]:<44} {r['count']:>6} {r['self_time_s'] * 1e3:>9.3f} "
            f"{r['time_share'] * 100:>5.1f}% {energy:>18} {sigma:>8} {share:>6} "
            f"{r['total_energy_j'] * 1e3:>9.3f}"
        )
    rest = result.ops[top:]
    if rest:
        e = sum(r["self_energy_j"] for r in rest if r["self_energy_j"] is not None)
        t = sum(r["self_time_s"] for r in rest)
        share = sum(r["time_share"] for r in rest)
        lines.append(f"{'rest (' + str(len(rest)) + ' ops)':<44} {sum(r['count'] for r in rest):>6} "
                     f"{t * 1e3:>9.3f} {share * 100:>5.1f}% {e * 1e3:>18.3f}")
    return "\n".join(lines)
