"""PyTorch profiler (Chrome trace) files: call trees, self time, per-op rows.

The same rules as the Rust side (attribution/src/calltree.rs and
optable.rs; ARCHITECTURE.md): each thread's spans form a tree (a span is
the child of the innermost span open when it starts; one that overhangs
its parent is clipped to it), self time = own time less the children's,
laid out as segments that partition each thread's busy time. Python frames
take part only as `nn.Module: …` frames (other frames do not nest with
profiler steps); kineto's whole-trace marker (`cat` "Trace") is left out;
all `ProfilerStep#N` count as one op, "ProfilerStep#*". GPU kernels are
linked to the op that launched them through `ac2g` flow events.

Both implementations are checked against PyTorch's own key_averages() on
the committed fixture (attribution/tests/fixtures/pytorch).
"""

import gzip
import json
import math
import time

STEP_PREFIX = "ProfilerStep#"
STEP_OP_NAME = "ProfilerStep#*"
MODULE_PREFIX = "nn.Module: "
EPOCH_THRESHOLD_NS = 10**18
GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")


def _kind(cat, name):
    if cat is None and name.startswith(STEP_PREFIX):
        return "step"
    if cat in (None, "cpu_op", "operator"):
        return "op"
    if cat == "user_annotation":
        return "step" if name.startswith(STEP_PREFIX) else "label"
    if cat == "python_function":
        return "module" if name.startswith(MODULE_PREFIX) else "python"
    if cat in ("cuda_runtime", "cuda_driver"):
        return "runtime"
    if cat in GPU_CATEGORIES:
        return "gpu_kernel"
    if cat == "gpu_user_annotation":
        return "gpu_label"
    return "other"


def _ns(us):
    # Rust's f64::round (half away from zero), for identical results.
    return int(math.floor(us * 1000.0 + 0.5))


def _id(v):
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return abs(v)
    if isinstance(v, str):
        digits = ""
        for c in reversed(v):
            if not c.isdigit():
                break
            digits = c + digits
        return int(digits) if digits else None
    return None


def load_trace(path):
    """The trace as a dict (a bare event array is wrapped); .gz is read too."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        doc = json.load(f)
    if isinstance(doc, list):
        doc = {"traceEvents": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise ValueError(f"{path}: not a Chrome trace (no traceEvents array)")
    return doc


def realtime_to_monotonic_offset_ns():
    """CLOCK_MONOTONIC - CLOCK_REALTIME, read back to back."""
    before = time.monotonic_ns()
    real = time.time_ns()
    after = time.monotonic_ns()
    return (before + after) // 2 - real


class Node:
    __slots__ = ("name", "op", "kind", "start", "end", "parent", "descendants", "depth",
                 "self_ns", "thread", "launched_by")

    def __init__(self, name, op, kind, start, end, parent, depth, thread):
        self.name, self.op, self.kind = name, op, kind
        self.start, self.end, self.parent, self.depth = start, end, parent, depth
        self.descendants = 0
        self.self_ns = end - start
        self.thread = thread
        self.launched_by = None


class Forest:
    """Every thread's call tree. Times are CLOCK_MONOTONIC ns once aligned
    (`offset_ns` was added to the trace's absolute times)."""

    def __init__(self):
        self.nodes = []
        self.op_names = []
        self.threads = []  # (pid, tid, busy_ns, gpu)
        self.segments = []  # (node index, start, end)
        self.clipped_ns = 0
        self.clipped_spans = 0
        self.offset_ns = 0
        self.clock = "monotonic"

    def busy_ns(self):
        return sum(t[2] for t in self.threads)

    def cpu_busy_ns(self):
        return sum(t[2] for t in self.threads if not t[3])

    def time_range(self):
        if not self.segments:
            return None
        return min(s[1] for s in self.segments), max(s[2] for s in self.segments)

    def segments_batch(self, pid):
        """(names, spans) for energyd: one span per self segment, named by op."""
        spans = []
        for node, start, end in self.segments:
            n = self.nodes[node]
            tid = self.threads[n.thread][1] or 0
            spans.append((n.op, start, end, pid, tid))
        return list(self.op_names), spans

    def has_ancestor_op(self, i, op):
        p = self.nodes[i].parent
        while p is not None:
            if self.nodes[p].op == op:
                return True
            p = self.nodes[p].parent
        return False

    def outermost_by_op(self):
        """Per op, the nodes with no ancestor of the same op (one pass:
        nodes are in pre-order per thread, so open ancestors are a stack)."""
        out = [[] for _ in self.op_names]
        open_ops = {}
        stack = []  # (end index of subtree, op)
        for i, n in enumerate(self.nodes):
            while stack and stack[-1][0] < i:
                _, op = stack.pop()
                open_ops[op] -= 1
            if not open_ops.get(n.op):
                out[n.op].append(i)
            open_ops[n.op] = open_ops.get(n.op, 0) + 1
            stack.append((i + n.descendants, n.op))
        return out

    def op_times(self):
        """Per op: {name, kind, count, self_ns, total_ns} (inclusive time of
        the outermost instances)."""
        rows = [{"name": n, "kind": "other", "count": 0, "self_ns": 0, "total_ns": 0}
                for n in self.op_names]
        for n in self.nodes:
            r = rows[n.op]
            r["kind"] = n.kind
            r["count"] += 1
            r["self_ns"] += n.self_ns
        for op, roots in enumerate(self.outermost_by_op()):
            rows[op]["total_ns"] = sum(self.nodes[i].end - self.nodes[i].start for i in roots)
        return rows


def build_forest(trace, python_frames="modules", offset_ns=None):
    """The call forest of a trace dict. python_frames: "none", "modules"
    (default) or "all". offset_ns: added to absolute times; by default
    epoch (CLOCK_REALTIME) times are moved onto CLOCK_MONOTONIC by the
    offset read now, and smaller times are taken as monotonic already."""
    base = trace.get("baseTimeNanoseconds", 0)
    events = trace["traceEvents"]
    spans, flows, cats = [], [], {}
    for index, e in enumerate(events):
        if not isinstance(e, dict):
            raise ValueError(f"traceEvents[{index}] is not an object")
        ph = e.get("ph")
        if ph in ("s", "f"):
            fid = e.get("id")
            if isinstance(fid, str):
                try:
                    fid = int(fid, 16) if fid.startswith("0x") else int(fid)
                except ValueError:
                    fid = None
            ts = e.get("ts")
            if isinstance(fid, int) and isinstance(ts, (int, float)) and ts >= 0:
                flows.append((fid, e.get("cat"), ph, base + _ns(ts), _id(e.get("pid")),
                              _id(e.get("tid")), e.get("bp") == "e"))
            continue
        if ph != "X":
            continue
        name = e.get("name")
        ts, dur = e.get("ts"), e.get("dur")
        if not isinstance(name, str) or not name:
            raise ValueError(f"traceEvents[{index}]: field `name`: missing or empty")
        for field, v in (("ts", ts), ("dur", dur)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0:
                raise ValueError(f"traceEvents[{index}]: field `{field}`: {v!r} is not a "
                                 "non-negative number of µs")
        cat = e.get("cat")
        kind = _kind(cat, name)
        if kind == "module" and python_frames == "none":
            continue
        if kind == "python" and python_frames != "all":
            continue
        if kind == "other" and cat == "Trace":
            continue
        start = base + _ns(ts)
        spans.append((start, start + _ns(dur), name, kind, _id(e.get("pid")), _id(e.get("tid"))))

    forest = Forest()
    if offset_ns is None:
        earliest = min((s[0] for s in spans), default=0)
        if earliest >= EPOCH_THRESHOLD_NS:
            offset_ns = realtime_to_monotonic_offset_ns()
            forest.clock = "realtime"
        else:
            offset_ns = 0
    else:
        forest.clock = "offset"
    forest.offset_ns = offset_ns

    op_index = {}

    def op_of(name, kind):
        key = STEP_OP_NAME if kind == "step" else name
        if key not in op_index:
            op_index[key] = len(forest.op_names)
            forest.op_names.append(key)
        return op_index[key]

    groups = {}
    for i, s in enumerate(spans):
        groups.setdefault((s[4], s[5]), []).append(i)

    def key_order(k):
        return tuple((0, -1) if v is None else (1, v) for v in k)

    for key in sorted(groups, key=key_order):
        members = sorted(groups[key], key=lambda i: (spans[i][0], -spans[i][1], i))
        thread = len(forest.threads)
        stack = []  # [node index, cursor]
        busy = 0
        gpu = False

        def close():
            top, cursor = stack.pop()
            node = forest.nodes[top]
            if node.end > cursor:
                forest.segments.append((top, cursor + offset_ns, node.end + offset_ns))
            if stack:
                stack[-1][1] = node.end
                forest.nodes[stack[-1][0]].descendants += node.descendants + 1

        for i in members:
            start, end, name, kind, _pid, _tid = spans[i]
            gpu = gpu or kind in ("gpu_kernel", "gpu_label")
            while stack and forest.nodes[stack[-1][0]].end <= start:
                close()
            parent = stack[-1][0] if stack else None
            if parent is not None:
                pend = forest.nodes[parent].end
                if end > pend:
                    forest.clipped_ns += end - pend
                    forest.clipped_spans += 1
                    end = pend
                cursor = stack[-1][1]
                if start > cursor:
                    forest.segments.append((parent, cursor + offset_ns, start + offset_ns))
                forest.nodes[parent].self_ns -= end - start
            else:
                busy += end - start
            forest.nodes.append(Node(name, op_of(name, kind), kind, start, end, parent,
                                     len(stack), thread))
            stack.append([len(forest.nodes) - 1, start])
        while stack:
            close()
        forest.threads.append((key[0], key[1], busy, gpu))
    # Node times onto the monotonic clock too.
    for n in forest.nodes:
        n.start += offset_ns
        n.end += offset_ns
    _link_flows(forest, flows, offset_ns)
    return forest


def _link_flows(forest, flows, offset_ns):
    thread_of = {(t[0], t[1]): i for i, t in enumerate(forest.threads)}
    by_thread = {}
    for i, n in enumerate(forest.nodes):
        by_thread.setdefault(n.thread, []).append(i)

    def innermost(thread, at):
        idx = by_thread.get(thread, [])
        cand = None
        for i in idx:  # pre-order: the last one starting at or before `at`
            if forest.nodes[i].start <= at:
                cand = i
            else:
                break
        while cand is not None:
            n = forest.nodes[cand]
            if n.start <= at <= n.end:
                return cand
            cand = n.parent
        return None

    def next_at(thread, at):
        for i in by_thread.get(thread, []):
            if forest.nodes[i].start >= at:
                return i
        return None

    starts, finishes = {}, []
    for fid, cat, ph, at, pid, tid, enclosing in flows:
        if cat != "ac2g" or (pid, tid) not in thread_of:
            continue
        thread = thread_of[(pid, tid)]
        at += offset_ns
        node = innermost(thread, at) if (ph == "s" or enclosing) else next_at(thread, at)
        if node is None:
            continue
        if ph == "s":
            starts[fid] = node
        else:
            finishes.append((fid, node))
    for fid, kernel in finishes:
        if forest.nodes[kernel].kind != "gpu_kernel" or fid not in starts:
            continue
        at = starts[fid]
        while at is not None and forest.nodes[at].kind not in ("op", "label", "step"):
            at = forest.nodes[at].parent
        forest.nodes[kernel].launched_by = at if at is not None else starts[fid]


# How far one op's power may sit from the process average on a measured
# source (1 sigma); see attribution/src/optable.rs.
MEASURED_POWER_SPREAD = 0.3


def cpu_kernel_domains(sources):
    """Source ids energyd gives kernel figures on: packages; else the
    estimated CPU domain; else psys; else every non-GPU source."""
    for pick in (lambda d: d == "package", lambda d: d == "cpu", lambda d: d == "psys",
                 lambda d: d != "gpu"):
        ids = [s["id"] for s in sources if pick(s["domain"][0])]
        if ids:
            return ids
    return []


_WEAKNESS = {"measured": 0, "estimated": 1, "simulated": 2}


class _Composer:
    """Per-op self energy: the process's dynamic energy (from energyd's
    breakdown) split by self time; composed over subtrees. See op_rows."""

    def __init__(self, forest, breakdown, sources):
        self.forest = forest
        self.fits = {k["name"]: k for k in breakdown["kernels"]}
        self.times = forest.op_times()
        self.cpu_busy = forest.cpu_busy_ns()
        self.gpu_busy = forest.busy_ns() - self.cpu_busy
        cpu_ids = cpu_kernel_domains(sources)
        gpu_ids = [s["id"] for s in sources if s["domain"][0] == "gpu"]

        def side(ids):
            shares = [d for d in breakdown["domains"] if d["source"] in ids]
            if not shares:
                return None
            prov = max((d["provenance"][0] for d in shares), key=_WEAKNESS.get)
            return (sum(d["process_dynamic_j"] for d in shares),
                    math.sqrt(sum(d["uncertainty_j"] ** 2 for d in shares)),
                    sum(d["process_j"] for d in shares), prov)

        self.cpu, self.gpu = side(cpu_ids), side(gpu_ids)
        provs = [x[3] for x, busy in ((self.cpu, 1), (self.gpu, self.gpu_busy)) if x and busy]
        self.provenance = max(provs, key=_WEAKNESS.get) if provs else "none"
        self.rates = []
        for t in self.times:
            gpu = t["kind"] == "gpu_kernel"
            figures, busy = (self.gpu, self.gpu_busy) if gpu else (self.cpu, self.cpu_busy)
            if figures is None or busy == 0:
                self.rates.append(None)
                continue
            spread = MEASURED_POWER_SPREAD if figures[3] == "measured" else 0.0
            self.rates.append((figures[0] / busy, figures[1] / busy, spread))
        self.launched = {}
        for i, n in enumerate(forest.nodes):
            if n.launched_by is not None:
                self.launched.setdefault(n.launched_by, []).append(i)

    def own(self, op):
        rate = self.rates[op]
        if rate is None:
            return None
        ns = self.times[op]["self_ns"]
        e = rate[0] * ns
        return e, math.hypot(rate[1] * ns, rate[2] * e)

    def inclusive(self, roots):
        """(energy J over parts with a figure, its sigma, ns without a figure).
        The process energy's error is shared by all ops (added linearly);
        the per-op model term is independent (added in quadrature)."""
        nodes = self.forest.nodes
        per_op = {}
        for root in roots:
            stack = list(range(root, root + nodes[root].descendants + 1))
            while stack:
                i = stack.pop()
                n = nodes[i]
                per_op[n.op] = per_op.get(n.op, 0) + n.self_ns
                stack.extend(self.launched.get(i, ()))
        j = shared = model = 0.0
        unknown = 0
        for op, ns in per_op.items():
            rate = self.rates[op]
            if rate is None:
                unknown += ns
                continue
            e = rate[0] * ns
            j += e
            shared += rate[1] * ns
            model += (rate[2] * e) ** 2
        return j, math.sqrt(shared ** 2 + model), unknown


def op_rows(forest, breakdown, sources):
    """Per-op rows (dicts, ready for a DataFrame), largest self energy first.

    breakdown: energyd's Breakdown of the process over the traced interval;
    sources: its ListSources answer. Self energy of an op: the process's
    dynamic energy on the kernel domains x its self time / the threads'
    busy time (exact on energyd's estimated source; assumes the traced
    threads do the process's CPU work). Inclusive energy: over the subtrees
    (and launched GPU kernels) of the outermost instances. energyd's own
    per-type regression of the self segments is kept as fit_energy_j for
    comparison (see ARCHITECTURE.md for why it is not the figure)."""
    c = _Composer(forest, breakdown, sources)
    owns = [c.own(op) for op in range(len(c.times))]
    outermost = forest.outermost_by_op()
    attributed = sum(o[0] for o in owns if o is not None)
    rows = []
    for op, t in enumerate(c.times):
        own = owns[op]
        fit = c.fits.get(t["name"])
        total_j, total_sigma, unknown = c.inclusive(outermost[op])
        busy = c.gpu_busy if t["kind"] == "gpu_kernel" else c.cpu_busy
        rows.append({
            "name": t["name"],
            "kind": t["kind"],
            "count": t["count"],
            "self_time_s": t["self_ns"] * 1e-9,
            "total_time_s": t["total_ns"] * 1e-9,
            "self_energy_j": own[0] if own else None,
            "self_uncertainty_j": own[1] if own else 0.0,
            "total_energy_j": total_j,
            "total_uncertainty_j": total_sigma,
            "total_time_without_figure_s": unknown * 1e-9,
            "time_share": t["self_ns"] / busy if busy else 0.0,
            "energy_share": own[0] / attributed if own and attributed > 0 else None,
            "provenance": c.provenance,
            "fit_energy_j": fit["energy_j"] if fit else None,
            "fit_uncertainty_j": fit["uncertainty_j"] if fit else 0.0,
            "fit_method": fit["method"][0] if fit else "insufficient",
        })
    rows.sort(key=lambda r: (-(r["self_energy_j"] if r["self_energy_j"] is not None
                               else -math.inf), -r["self_time_s"], r["name"]))
    return rows


def rollup_rows(forest, breakdown, sources):
    """Inclusive energy per ProfilerStep#N, record_function label and
    nn.Module (outermost instances of each name)."""
    c = _Composer(forest, breakdown, sources)
    groups = {}
    for i, n in enumerate(forest.nodes):
        if n.kind not in ("step", "label", "module"):
            continue
        p, nested = n.parent, False
        while p is not None:
            if forest.nodes[p].name == n.name and forest.nodes[p].kind == n.kind:
                nested = True
                break
            p = forest.nodes[p].parent
        if not nested:
            groups.setdefault((n.kind, n.name), []).append(i)
    rows = []
    for (kind, name), members in groups.items():
        j, sigma, unknown = c.inclusive(members)
        rows.append({
            "kind": kind,
            "name": name,
            "count": len(members),
            "total_time_s": sum(forest.nodes[i].end - forest.nodes[i].start for i in members) * 1e-9,
            "total_energy_j": j,
            "total_uncertainty_j": sigma,
            "total_time_without_figure_s": unknown * 1e-9,
            "provenance": c.provenance,
            "_first": min(forest.nodes[i].start for i in members),
        })
    order = {"step": 0, "label": 1, "module": 2}
    rows.sort(key=lambda r: (order[r["kind"]], r["_first"] if r["kind"] == "step"
                             else -r["total_energy_j"], r["name"]))
    for r in rows:
        del r["_first"]
    return rows
