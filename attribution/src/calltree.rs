//! Call trees of nested spans, and the self time that partitions them.
//!
//! A profiler trace nests: `aten::linear` contains `aten::addmm`,
//! `autograd::engine::evaluate_function: AddmmBackward0` contains
//! `AddmmBackward0`, which contains `aten::mm`. Charging each level as an
//! independent kernel counts the same CPU time two or three times. Here
//! each thread's spans become a tree (a span is the child of the innermost
//! span that was open when it started), and each node's **self time** is
//! its own time less that of its children. Self times are laid out as
//! segments: per thread they are disjoint and their union is the union of
//! the thread's top-level spans, the thread's *busy time*. So the leaves of
//! the partition add up to the traced busy time and nothing is counted
//! twice. The segments, named by their node's op, are what energyd is given
//! to attribute (its per-type energies are then *self* energies), and
//! [`crate::optable`] composes them back into inclusive (total) figures and
//! roll-ups.
//!
//! Nesting rules. Spans of a thread are ordered by start, longer first on a
//! tie (so a parent comes before a child that starts with it). A span that
//! starts inside an open one but ends after it (trace timestamps are rounded
//! to a microsecond or a nanosecond, so this happens at the edges) is
//! clipped to its parent's end; the clipped time is counted in
//! [`CallForest::clipped_ns`] and should be tiny.
//!
//! Which trace events take part. PyTorch's profiler writes operators
//! (`cpu_op`), `record_function` labels and `ProfilerStep#N`
//! (`user_annotation`), and, with `with_stack`, Python frames
//! (`python_function`). Python frames do not nest with profiler steps (a
//! step starts inside one call of `prof.step()` and ends inside the next),
//! so only the `nn.Module: Name_k` frames are kept by default
//! ([`PythonFrames::ModulesOnly`]): they give the per-module roll-ups, and
//! the time of other frames stays the self time of the op or label around
//! them. Kineto's whole-trace marker (`cat` `Trace`) is left out. GPU
//! kernels and memory operations (`kernel`, `gpu_memcpy`, `gpu_memset`) sit
//! on their own stream "threads"; a flow event of category `ac2g` links each
//! to the CUDA runtime call that launched it, and so to the op that called
//! that runtime function ([`Node::launched_by`]).

use crate::spanfile::{FlowPhase, SpanFile};
use shared::protocol::SpanBatch;
use shared::MonotonicNs;
use std::collections::HashMap;

/// What a node is, from its trace category and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeKind {
    /// An operator (`cpu_op`), or any span of a CSV file.
    Op,
    /// A `record_function` label (`user_annotation`).
    Label,
    /// A `ProfilerStep#N` annotation (or a span of that name in a CSV file).
    Step,
    /// An `nn.Module: Name_k` Python frame.
    Module,
    /// Another Python frame (only with [`PythonFrames::All`]).
    PythonFrame,
    /// A CUDA runtime or driver call (`cuda_runtime`, `cuda_driver`).
    Runtime,
    /// A GPU kernel, memcpy or memset on a stream.
    GpuKernel,
    /// A label on a GPU stream (`gpu_user_annotation`).
    GpuLabel,
    /// Any other category.
    Other,
}

impl NodeKind {
    /// A short lowercase label for tables and JSON.
    pub fn label(self) -> &'static str {
        match self {
            NodeKind::Op => "op",
            NodeKind::Label => "label",
            NodeKind::Step => "step",
            NodeKind::Module => "module",
            NodeKind::PythonFrame => "python",
            NodeKind::Runtime => "runtime",
            NodeKind::GpuKernel => "gpu_kernel",
            NodeKind::GpuLabel => "gpu_label",
            NodeKind::Other => "other",
        }
    }

    fn classify(category: Option<&str>, name: &str) -> NodeKind {
        match category {
            None if name.starts_with(STEP_PREFIX) => NodeKind::Step,
            None | Some("cpu_op") | Some("operator") => NodeKind::Op,
            Some("user_annotation") if name.starts_with(STEP_PREFIX) => NodeKind::Step,
            Some("user_annotation") => NodeKind::Label,
            Some("python_function") if name.starts_with(MODULE_PREFIX) => NodeKind::Module,
            Some("python_function") => NodeKind::PythonFrame,
            Some("cuda_runtime") | Some("cuda_driver") => NodeKind::Runtime,
            Some("kernel") | Some("gpu_memcpy") | Some("gpu_memset") => NodeKind::GpuKernel,
            Some("gpu_user_annotation") => NodeKind::GpuLabel,
            Some(_) => NodeKind::Other,
        }
    }
}

const STEP_PREFIX: &str = "ProfilerStep#";
const MODULE_PREFIX: &str = "nn.Module: ";
/// The op name all `ProfilerStep#N` share: their self time (the Python
/// between ops) is one kind of work, whatever the step.
pub const STEP_OP_NAME: &str = "ProfilerStep#*";

/// Which Python frames of a trace join the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PythonFrames {
    /// None.
    None,
    /// Only `nn.Module: …` frames (see the module doc for why).
    #[default]
    ModulesOnly,
    /// Every frame (only for traces whose frames nest with their steps).
    All,
}

/// Options of [`CallForest::build`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallTreeOptions {
    /// Python frames taken.
    pub python_frames: PythonFrames,
}

/// One span in its thread's tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Index of the span in [`SpanFile::spans`].
    pub span: usize,
    /// The span's own name, index into [`SpanFile::names`].
    pub name: u32,
    /// The op it counts as, index into [`CallForest::op_names`]
    /// (`ProfilerStep#3` counts as [`STEP_OP_NAME`]).
    pub op: u32,
    /// What it is.
    pub kind: NodeKind,
    /// Start.
    pub start: MonotonicNs,
    /// End, clipped to the parent's end.
    pub end: MonotonicNs,
    /// Enclosing node, if any.
    pub parent: Option<u32>,
    /// Nodes of the subtree after this one (the subtree is
    /// `index ..= index + descendants`: nodes are stored in pre-order).
    pub descendants: u32,
    /// 0 for a top-level span.
    pub depth: u32,
    /// Own time: duration less the children's.
    pub self_ns: u64,
    /// Thread group (index into [`CallForest::threads`]).
    pub thread: u32,
    /// For a GPU kernel: the nearest op or label above the launch that
    /// its `ac2g` flow points from.
    pub launched_by: Option<u32>,
}

impl Node {
    /// Inclusive duration.
    pub fn total_ns(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
}

/// A piece of one node's self time: what energyd attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelfSegment {
    /// The node.
    pub node: u32,
    /// Start.
    pub start: MonotonicNs,
    /// End (`> start`).
    pub end: MonotonicNs,
}

/// One thread (or GPU stream) of the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadTree {
    /// Process, if the file says.
    pub pid: Option<u32>,
    /// Thread, if the file says.
    pub tid: Option<u32>,
    /// Union of the thread's top-level spans.
    pub busy_ns: u64,
    /// Whether it holds GPU work (kernels or GPU labels).
    pub gpu: bool,
}

/// Every thread's call tree, with self times and self segments.
#[derive(Debug, Clone, PartialEq)]
pub struct CallForest {
    /// Nodes, thread by thread, each thread's in pre-order.
    pub nodes: Vec<Node>,
    /// The threads.
    pub threads: Vec<ThreadTree>,
    /// Op names referenced by [`Node::op`].
    pub op_names: Vec<String>,
    /// Span names referenced by [`Node::name`] (the file's).
    pub span_names: Vec<String>,
    /// The self segments, thread by thread in time order.
    pub segments: Vec<SelfSegment>,
    /// Time cut from spans that ended after their parent.
    pub clipped_ns: u64,
    /// How many spans were clipped.
    pub clipped_spans: usize,
    /// Spans of the file left out (categories, Python frames).
    pub excluded_spans: usize,
    /// GPU kernels linked to their launch by a flow.
    pub linked_kernels: usize,
    /// GPU kernels without a usable flow.
    pub unlinked_kernels: usize,
}

impl CallForest {
    /// Builds the trees of every (pid, tid) of `file`.
    pub fn build(file: &SpanFile, options: &CallTreeOptions) -> CallForest {
        let category = |s: &crate::spanfile::FileSpan| {
            s.category
                .and_then(|c| file.categories.get(c as usize))
                .map(String::as_str)
        };
        let mut groups: HashMap<(Option<u32>, Option<u32>), Vec<usize>> = HashMap::new();
        let mut excluded = 0usize;
        let mut kinds = vec![NodeKind::Other; file.spans.len()];
        for (i, s) in file.spans.iter().enumerate() {
            let name = file.names.get(s.name as usize).map_or("", String::as_str);
            let cat = category(s);
            let kind = NodeKind::classify(cat, name);
            let taken = match kind {
                NodeKind::Module => options.python_frames != PythonFrames::None,
                NodeKind::PythonFrame => options.python_frames == PythonFrames::All,
                // Kineto's marker spanning the whole profile.
                NodeKind::Other => cat != Some("Trace"),
                _ => true,
            };
            if !taken {
                excluded += 1;
                continue;
            }
            kinds[i] = kind;
            groups.entry((s.pid, s.tid)).or_default().push(i);
        }
        let mut keys: Vec<_> = groups.keys().copied().collect();
        keys.sort_unstable();

        let mut op_index: HashMap<String, u32> = HashMap::new();
        let mut op_names: Vec<String> = Vec::new();
        let mut op_of = |name: &str, kind: NodeKind| -> u32 {
            let key = if kind == NodeKind::Step {
                STEP_OP_NAME
            } else {
                name
            };
            if let Some(&i) = op_index.get(key) {
                return i;
            }
            let i = op_names.len() as u32;
            op_names.push(key.to_owned());
            op_index.insert(key.to_owned(), i);
            i
        };

        let mut forest = CallForest {
            nodes: Vec::with_capacity(file.spans.len() - excluded),
            threads: Vec::with_capacity(keys.len()),
            op_names: Vec::new(),
            span_names: file.names.clone(),
            segments: Vec::with_capacity(2 * file.spans.len()),
            clipped_ns: 0,
            clipped_spans: 0,
            excluded_spans: excluded,
            linked_kernels: 0,
            unlinked_kernels: 0,
        };
        for key in keys {
            let mut members = groups.remove(&key).unwrap_or_default();
            members.sort_by(|&a, &b| {
                let (sa, sb) = (&file.spans[a], &file.spans[b]);
                sa.start
                    .cmp(&sb.start)
                    .then(sb.end.cmp(&sa.end))
                    .then(a.cmp(&b))
            });
            let thread = forest.threads.len() as u32;
            // Open nodes: (node index, cursor = end of the last self or
            // child time laid out).
            let mut stack: Vec<(usize, MonotonicNs)> = Vec::new();
            let mut busy_ns = 0u64;
            let mut gpu = false;
            for &i in &members {
                let s = &file.spans[i];
                let kind = kinds[i];
                gpu |= matches!(kind, NodeKind::GpuKernel | NodeKind::GpuLabel);
                // Close every open node that ended by this start.
                while let Some(&(top, _)) = stack.last() {
                    if forest.nodes[top].end <= s.start {
                        forest.close(&mut stack);
                    } else {
                        break;
                    }
                }
                let mut end = s.end;
                let parent = stack.last().map(|&(p, _)| p);
                if let Some(p) = parent {
                    let parent_end = forest.nodes[p].end;
                    if end > parent_end {
                        forest.clipped_ns += end.saturating_sub(parent_end);
                        forest.clipped_spans += 1;
                        end = parent_end;
                    }
                    // The parent's self time up to this child.
                    let cursor = stack.last().map(|&(_, c)| c).unwrap_or(s.start);
                    if s.start > cursor {
                        forest.segments.push(SelfSegment {
                            node: p as u32,
                            start: cursor,
                            end: s.start,
                        });
                    }
                } else {
                    busy_ns += end.saturating_sub(s.start);
                }
                let name = file.names.get(s.name as usize).map_or("", String::as_str);
                let index = forest.nodes.len();
                forest.nodes.push(Node {
                    span: i,
                    name: s.name,
                    op: op_of(name, kind),
                    kind,
                    start: s.start,
                    end,
                    parent: parent.map(|p| p as u32),
                    descendants: 0,
                    depth: stack.len() as u32,
                    self_ns: end.saturating_sub(s.start),
                    thread,
                    launched_by: None,
                });
                if let Some(p) = parent {
                    forest.nodes[p].self_ns = forest.nodes[p]
                        .self_ns
                        .saturating_sub(end.saturating_sub(s.start));
                }
                stack.push((index, s.start));
            }
            while !stack.is_empty() {
                forest.close(&mut stack);
            }
            forest.threads.push(ThreadTree {
                pid: key.0,
                tid: key.1,
                busy_ns,
                gpu,
            });
        }
        forest.op_names = op_names;
        forest.link_flows(file);
        forest
    }

    /// Pops the innermost open node: lays out its last self segment, moves
    /// its parent's cursor past it and counts it in its ancestors'
    /// subtrees.
    fn close(&mut self, stack: &mut Vec<(usize, MonotonicNs)>) {
        let Some((top, cursor)) = stack.pop() else {
            return;
        };
        let end = self.nodes[top].end;
        if end > cursor {
            self.segments.push(SelfSegment {
                node: top as u32,
                start: cursor,
                end,
            });
        }
        let size = self.nodes[top].descendants + 1;
        if let Some(parent) = stack.last_mut() {
            parent.1 = end;
            self.nodes[parent.0].descendants += size;
        }
    }

    /// Links GPU kernels to their launches through `ac2g` flow events.
    fn link_flows(&mut self, file: &SpanFile) {
        let is_launch_flow = |c: Option<u32>| {
            c.and_then(|c| file.categories.get(c as usize))
                .is_some_and(|c| c == "ac2g")
        };
        // (pid, tid) → thread index.
        let thread_of: HashMap<(Option<u32>, Option<u32>), u32> = self
            .threads
            .iter()
            .enumerate()
            .map(|(i, t)| ((t.pid, t.tid), i as u32))
            .collect();
        // First node of each thread (nodes are stored thread by thread).
        let mut thread_start = vec![self.nodes.len(); self.threads.len() + 1];
        for (i, n) in self.nodes.iter().enumerate().rev() {
            thread_start[n.thread as usize] = i;
        }
        thread_start[self.threads.len()] = self.nodes.len();
        for t in (0..self.threads.len()).rev() {
            if thread_start[t] > thread_start[t + 1] {
                thread_start[t] = thread_start[t + 1];
            }
        }
        let mut starts: HashMap<u64, u32> = HashMap::new();
        let mut finishes: Vec<(u64, u32)> = Vec::new();
        for f in file.flows.iter().filter(|f| is_launch_flow(f.category)) {
            let Some(&thread) = thread_of.get(&(f.pid, f.tid)) else {
                continue;
            };
            let range = thread_start[thread as usize]..thread_start[thread as usize + 1];
            let node = match f.phase {
                FlowPhase::Start => self.innermost_at(range, f.at),
                FlowPhase::Finish if f.binds_enclosing => self.innermost_at(range, f.at),
                FlowPhase::Finish => self.next_at(range, f.at),
            };
            if let Some(node) = node {
                match f.phase {
                    FlowPhase::Start => {
                        starts.insert(f.id, node);
                    }
                    FlowPhase::Finish => finishes.push((f.id, node)),
                }
            }
        }
        for (id, kernel) in finishes {
            if self.nodes[kernel as usize].kind != NodeKind::GpuKernel {
                continue;
            }
            let Some(&launch) = starts.get(&id) else {
                continue;
            };
            // The op above the runtime call: the nearest ancestor (or the
            // node itself) that is an op or a label.
            let mut at = Some(launch);
            while let Some(n) = at {
                let node = &self.nodes[n as usize];
                if matches!(node.kind, NodeKind::Op | NodeKind::Label | NodeKind::Step) {
                    break;
                }
                at = node.parent;
            }
            self.nodes[kernel as usize].launched_by = at.or(Some(launch));
        }
        let (linked, unlinked) = self
            .nodes
            .iter()
            .filter(|n| n.kind == NodeKind::GpuKernel)
            .fold((0, 0), |(l, u), n| {
                if n.launched_by.is_some() {
                    (l + 1, u)
                } else {
                    (l, u + 1)
                }
            });
        self.linked_kernels = linked;
        self.unlinked_kernels = unlinked;
    }

    /// The deepest node of `range` (one thread, pre-order) containing `at`.
    fn innermost_at(&self, range: std::ops::Range<usize>, at: MonotonicNs) -> Option<u32> {
        let nodes = &self.nodes[range.clone()];
        // Last node starting at or before `at`, then up to one containing it.
        let i = nodes.partition_point(|n| n.start <= at);
        let mut candidate = if i == 0 {
            None
        } else {
            Some(range.start + i - 1)
        };
        while let Some(c) = candidate {
            let n = &self.nodes[c];
            if n.start <= at && at <= n.end {
                return Some(c as u32);
            }
            candidate = n.parent.map(|p| p as usize);
        }
        None
    }

    /// The first node of `range` starting at or after `at`.
    fn next_at(&self, range: std::ops::Range<usize>, at: MonotonicNs) -> Option<u32> {
        let nodes = &self.nodes[range.clone()];
        let i = nodes.partition_point(|n| n.start < at);
        (i < nodes.len()).then_some((range.start + i) as u32)
    }

    /// Busy time of the CPU threads: the union of their top-level spans.
    pub fn cpu_busy_ns(&self) -> u64 {
        self.threads
            .iter()
            .filter(|t| !t.gpu)
            .map(|t| t.busy_ns)
            .sum()
    }

    /// Busy time of every thread and stream.
    pub fn busy_ns(&self) -> u64 {
        self.threads.iter().map(|t| t.busy_ns).sum()
    }

    /// Sum of the self times of every node.
    pub fn self_ns_total(&self) -> u64 {
        self.nodes.iter().map(|n| n.self_ns).sum()
    }

    /// The self segments as a span batch for energyd, one span name per
    /// op; pids the file gave are kept unless `pid` overrides them all,
    /// missing ones become `default_pid`, missing tids 0.
    pub fn segments_batch(&self, pid: Option<u32>, default_pid: u32) -> SpanBatch {
        let mut batch = SpanBatch {
            names: self.op_names.clone(),
            spans: Vec::with_capacity(self.segments.len()),
        };
        for seg in &self.segments {
            let node = &self.nodes[seg.node as usize];
            let thread = &self.threads[node.thread as usize];
            batch.spans.push(shared::protocol::SpanRecord {
                name: node.op,
                start: seg.start,
                end: seg.end,
                pid: pid.or(thread.pid).unwrap_or(default_pid),
                tid: thread.tid.unwrap_or(0),
            });
        }
        batch
    }

    /// Per op: instances, self time and inclusive time (an instance inside
    /// another of the same op is not counted again in the inclusive time).
    pub fn op_times(&self) -> Vec<OpTimes> {
        let mut rows: Vec<OpTimes> = self
            .op_names
            .iter()
            .map(|name| OpTimes {
                name: name.clone(),
                kind: NodeKind::Other,
                count: 0,
                self_ns: 0,
                total_ns: 0,
            })
            .collect();
        for (i, n) in self.nodes.iter().enumerate() {
            let row = &mut rows[n.op as usize];
            row.kind = n.kind;
            row.count += 1;
            row.self_ns += n.self_ns;
            if !self.has_ancestor_op(i, n.op) {
                row.total_ns += n.total_ns();
            }
        }
        rows
    }

    /// Whether a strict ancestor of node `i` counts as op `op`.
    pub fn has_ancestor_op(&self, i: usize, op: u32) -> bool {
        let mut at = self.nodes[i].parent;
        while let Some(p) = at {
            let n = &self.nodes[p as usize];
            if n.op == op {
                return true;
            }
            at = n.parent;
        }
        false
    }
}

/// Times of one op over the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpTimes {
    /// Op name.
    pub name: String,
    /// What it is (of its last instance).
    pub kind: NodeKind,
    /// Instances.
    pub count: u64,
    /// Self time, summed.
    pub self_ns: u64,
    /// Inclusive time of the outermost instances.
    pub total_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spanfile::{parse_chrome_trace, parse_csv, SpanFileOptions};
    use std::path::Path;

    fn csv(text: &str) -> SpanFile {
        parse_csv(text, Path::new("t.csv"), &SpanFileOptions::default()).unwrap()
    }

    fn op<'a>(rows: &'a [OpTimes], name: &str) -> &'a OpTimes {
        rows.iter().find(|r| r.name == name).unwrap()
    }

    #[test]
    fn nested_spans_get_self_time_and_segments_partition_busy_time() {
        // linear [100, 200] ⊃ addmm [110, 170] ⊃ mm [120, 160]; relu after.
        let f = csv("linear,100,200,1,1\naddmm,110,170,1,1\nmm,120,160,1,1\nrelu,250,260,1,1\n");
        let forest = CallForest::build(&f, &CallTreeOptions::default());
        let rows = forest.op_times();
        assert_eq!(op(&rows, "linear").self_ns, 40);
        assert_eq!(op(&rows, "addmm").self_ns, 20);
        assert_eq!(op(&rows, "mm").self_ns, 40);
        assert_eq!(op(&rows, "linear").total_ns, 100);
        assert_eq!(forest.busy_ns(), 110);
        assert_eq!(forest.self_ns_total(), 110);
        let seg_total: u64 = forest
            .segments
            .iter()
            .map(|s| s.end.saturating_sub(s.start))
            .sum();
        assert_eq!(seg_total, 110);
        // Segments are disjoint and in time order.
        for w in forest.segments.windows(2) {
            assert!(w[0].end <= w[1].start, "{w:?}");
        }
        // linear: [100,110) and [170,200); addmm: [110,120) and [160,170).
        let of = |name: &str| -> Vec<(u64, u64)> {
            forest
                .segments
                .iter()
                .filter(|s| forest.op_names[forest.nodes[s.node as usize].op as usize] == name)
                .map(|s| (s.start.0, s.end.0))
                .collect()
        };
        assert_eq!(of("linear"), vec![(100, 110), (170, 200)]);
        assert_eq!(of("addmm"), vec![(110, 120), (160, 170)]);
        assert_eq!(forest.nodes[2].depth, 2);
        assert_eq!(forest.nodes[0].descendants, 2);
        assert_eq!(forest.clipped_spans, 0);
    }

    #[test]
    fn threads_are_separate_and_overhanging_children_are_clipped() {
        let f = csv("a,0,100,1,1\nb,50,150,1,1\nc,0,30,1,2\nc,10,20,1,2\n");
        let forest = CallForest::build(&f, &CallTreeOptions::default());
        assert_eq!(forest.threads.len(), 2);
        assert_eq!(forest.clipped_spans, 1);
        assert_eq!(forest.clipped_ns, 50);
        // Thread 1: a [0,100] with b clipped to [50,100]; thread 2: 30.
        assert_eq!(forest.busy_ns(), 130);
        assert_eq!(forest.self_ns_total(), 130);
        let rows = forest.op_times();
        // Recursive c: inclusive time counts the outer instance only.
        assert_eq!(op(&rows, "c").total_ns, 30);
        assert_eq!(op(&rows, "c").self_ns, 30);
        assert_eq!(op(&rows, "c").count, 2);
    }

    #[test]
    fn gpu_kernels_link_to_the_launching_op_by_flow() {
        let trace = r#"{"traceEvents": [
  {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#7", "pid": 1, "tid": 1, "ts": 0, "dur": 100},
  {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 10, "dur": 20},
  {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": 15, "dur": 5},
  {"ph": "s", "cat": "ac2g", "name": "ac2g", "id": 42, "pid": 1, "tid": 1, "ts": 15},
  {"ph": "X", "cat": "kernel", "name": "gemm_kernel", "pid": 0, "tid": "stream 7", "ts": 40, "dur": 30},
  {"ph": "f", "cat": "ac2g", "name": "ac2g", "id": 42, "pid": 0, "tid": "stream 7", "ts": 40, "bp": "e"},
  {"ph": "X", "cat": "kernel", "name": "orphan", "pid": 0, "tid": 7, "ts": 80, "dur": 5},
  {"ph": "X", "cat": "Trace", "name": "PyTorch Profiler (0)", "pid": "Spans", "tid": "PyTorch Profiler", "ts": 0, "dur": 200}
]}"#;
        let f =
            parse_chrome_trace(trace, Path::new("t.json"), &SpanFileOptions::default()).unwrap();
        let forest = CallForest::build(&f, &CallTreeOptions::default());
        assert_eq!(forest.excluded_spans, 1, "the Trace marker");
        assert_eq!((forest.linked_kernels, forest.unlinked_kernels), (1, 1));
        let kernel = forest
            .nodes
            .iter()
            .find(|n| forest.op_names[n.op as usize] == "gemm_kernel")
            .unwrap();
        let launcher = &forest.nodes[kernel.launched_by.unwrap() as usize];
        assert_eq!(forest.op_names[launcher.op as usize], "aten::mm");
        assert_eq!(forest.cpu_busy_ns(), 100_000);
        assert_eq!(forest.busy_ns(), 135_000);
        let rows = forest.op_times();
        assert_eq!(op(&rows, STEP_OP_NAME).self_ns, 80_000);
        assert_eq!(op(&rows, STEP_OP_NAME).kind, NodeKind::Step);
        assert_eq!(op(&rows, "aten::mm").self_ns, 15_000);
    }
}
