//! Which layer feeds which: the widths a network's layers must share, and
//! setting or growing them together.
//!
//! The record is derived from the layer structure each time it is asked
//! for, so it cannot go stale after growth: walking the layers in order, a
//! linear layer's output starts a new width, norms, activations, dropout
//! and token selection keep the width that reaches them, and a residual
//! block's branch must end at the width it started from (the two are
//! joined). The network's input and output widths are fixed; the others
//! are its *free* widths, numbered in order of first appearance, which is
//! the order of [`Backbone`](super::Backbone)'s sizes: an MLP's hidden
//! widths; a ResNet's main width, then each block's hidden width; an
//! FT-Transformer's token width, then each block's ReGLU width.
//!
//! FT-Transformer layers: the tokenizer starts a width (the token width)
//! as a linear layer does; attention keeps its input's width; ReGLU starts
//! its own width `h` and *derives* the width of its input (the linear
//! layer before it runs on `H + h` outputs, see `ft::Reglu`), which is
//! therefore not free. Growth refuses networks with these layers.

use super::layers::{Layer, LayerRef, WidthError};
use super::visit::visit_layers;
use super::Network;
use rand::rngs::SmallRng;
use std::collections::HashMap;

/// How one layer is tied to the network's widths (indices into
/// [`WidthGraph::dims`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tie {
    /// A layer from width `input` to a width `output` of its own: a linear
    /// layer, the FT tokenizer, ReGLU (whose input width is derived from
    /// its output's, see [`WidthGraph::gated`]).
    Linear {
        /// Width of its input.
        input: usize,
        /// Width of its output.
        output: usize,
    },
    /// A layer that keeps the width of its input.
    Features(usize),
}

/// One width of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dim {
    /// Width the parameters are allocated for.
    pub max: usize,
    /// Width the layers run at.
    pub active: usize,
    /// The network's input or output width (cannot change).
    pub fixed: bool,
}

/// The widths of a network and the layers tied to each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WidthGraph {
    /// Every distinct width.
    pub dims: Vec<Dim>,
    /// Each width-carrying layer, by path, with its tie.
    pub ties: Vec<(String, Tie)>,
    /// Indices into `dims` of the free widths, in order of appearance.
    pub free: Vec<usize>,
    /// Derived widths `(input, output)` of each ReGLU: the input's active
    /// width is the output's max plus its active width (`H + h`).
    pub gated: Vec<(usize, usize)>,
}

/// Union-find over width variables, with the max and active width each
/// class must have.
struct Vars {
    parent: Vec<usize>,
    max: Vec<usize>,
    active: Vec<usize>,
}

impl Vars {
    fn new_var(&mut self, max: usize, active: usize) -> usize {
        self.parent.push(self.parent.len());
        self.max.push(max);
        self.active.push(active);
        self.parent.len() - 1
    }
    fn find(&mut self, v: usize) -> usize {
        let mut r = v;
        while self.parent[r] != r {
            r = self.parent[r];
        }
        self.parent[v] = r;
        r
    }
    /// Checks that width class `v` has (max, active) = `(max, active)`.
    fn expect(
        &mut self,
        v: usize,
        path: &str,
        max: usize,
        active: usize,
    ) -> Result<(), WidthError> {
        let r = self.find(v);
        for (want, found) in [(self.max[r], max), (self.active[r], active)] {
            if want != found {
                return Err(WidthError::Mismatch {
                    path: path.to_owned(),
                    expected: want,
                    found,
                });
            }
        }
        Ok(())
    }
    fn union(&mut self, a: usize, b: usize, path: &str) -> Result<(), WidthError> {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (max, active) = (self.max[ra], self.active[ra]);
            self.expect(rb, path, max, active)?;
            // The earlier variable stays the root (order of appearance).
            let (lo, hi) = (ra.min(rb), ra.max(rb));
            self.parent[hi] = lo;
        }
        Ok(())
    }
}

/// Walks `layer` with width variable `cur` flowing in; returns the
/// variable flowing out.
fn walk(
    layer: &mut dyn Layer,
    path: &str,
    cur: usize,
    vars: &mut Vars,
    ties: &mut Vec<(String, Tie)>,
    gated: &mut Vec<(usize, usize)>,
) -> Result<usize, WidthError> {
    let features = |vars: &mut Vars,
                    ties: &mut Vec<(String, Tie)>,
                    max: usize,
                    active: usize|
     -> Result<usize, WidthError> {
        vars.expect(cur, path, max, active)?;
        ties.push((path.to_owned(), Tie::Features(cur)));
        Ok(cur)
    };
    match layer.layer_ref() {
        LayerRef::Linear(l) => {
            let (mi, mo) = l.max_dims();
            vars.expect(cur, path, mi, l.in_dim())?;
            let out = vars.new_var(mo, l.out_dim());
            ties.push((
                path.to_owned(),
                Tie::Linear {
                    input: cur,
                    output: out,
                },
            ));
            Ok(out)
        }
        LayerRef::Activation(l) => features(vars, ties, l.max_features(), l.out_dim()),
        LayerRef::BatchNorm(l) => features(vars, ties, l.max_features(), l.out_dim()),
        LayerRef::LayerNorm(l) => features(vars, ties, l.max_features(), l.out_dim()),
        LayerRef::Dropout(l) => features(vars, ties, l.max_features(), l.out_dim()),
        LayerRef::SelectToken(l) => features(vars, ties, l.max_features(), l.out_dim()),
        LayerRef::Attention(l) => features(vars, ties, l.max_features(), l.out_dim()),
        LayerRef::Tokenizer(l) => {
            let inputs = l.feature_widths().iter().sum();
            vars.expect(cur, path, inputs, inputs)?;
            let out = vars.new_var(l.max_features(), l.out_dim());
            ties.push((
                path.to_owned(),
                Tie::Linear {
                    input: cur,
                    output: out,
                },
            ));
            Ok(out)
        }
        LayerRef::Reglu(l) => {
            let (max, active) = (l.max_features(), l.out_dim());
            vars.expect(cur, path, 2 * max, l.in_dim())?;
            let out = vars.new_var(max, active);
            ties.push((
                path.to_owned(),
                Tie::Linear {
                    input: cur,
                    output: out,
                },
            ));
            gated.push((cur, out));
            Ok(out)
        }
        LayerRef::Sequential(s) => walk_children(s, path, cur, vars, ties, gated),
        LayerRef::Residual(r) => {
            let end = walk_children(r.inner_mut(), path, cur, vars, ties, gated)?;
            vars.union(cur, end, path)?;
            Ok(cur)
        }
        LayerRef::Other(_) => Err(WidthError::Unsupported {
            path: path.to_owned(),
        }),
    }
}

fn walk_children(
    layer: &mut dyn Layer,
    path: &str,
    cur: usize,
    vars: &mut Vars,
    ties: &mut Vec<(String, Tie)>,
    gated: &mut Vec<(usize, usize)>,
) -> Result<usize, WidthError> {
    let mut cur = Ok(cur);
    layer.visit_children(&mut |name, child| {
        if let Ok(c) = cur {
            let child_path = if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}.{name}")
            };
            cur = walk(child, &child_path, c, vars, ties, gated);
        }
    });
    cur
}

impl WidthGraph {
    /// The widths of `body`, whose input has `inputs` features.
    pub fn of(body: &mut dyn Layer, inputs: usize) -> Result<WidthGraph, WidthError> {
        let mut vars = Vars {
            parent: Vec::new(),
            max: Vec::new(),
            active: Vec::new(),
        };
        let input = vars.new_var(inputs, inputs);
        let mut ties = Vec::new();
        let mut gated = Vec::new();
        let output = walk(body, "", input, &mut vars, &mut ties, &mut gated)?;
        // Compact the classes into dims, in order of their roots.
        let mut index = HashMap::new();
        let mut dims = Vec::new();
        for v in 0..vars.parent.len() {
            let r = vars.find(v);
            if let std::collections::hash_map::Entry::Vacant(e) = index.entry(r) {
                e.insert(dims.len());
                dims.push(Dim {
                    max: vars.max[r],
                    active: vars.active[r],
                    fixed: false,
                });
            }
        }
        let (input, output) = (index[&vars.find(input)], index[&vars.find(output)]);
        dims[input].fixed = true;
        dims[output].fixed = true;
        for (_, tie) in &mut ties {
            *tie = match *tie {
                Tie::Linear { input, output } => Tie::Linear {
                    input: index[&vars.find(input)],
                    output: index[&vars.find(output)],
                },
                Tie::Features(v) => Tie::Features(index[&vars.find(v)]),
            };
        }
        let gated: Vec<(usize, usize)> = gated
            .into_iter()
            .map(|(i, o)| (index[&vars.find(i)], index[&vars.find(o)]))
            .collect();
        let free = (0..dims.len())
            .filter(|&d| !dims[d].fixed && !gated.iter().any(|&(i, _)| i == d))
            .collect();
        Ok(WidthGraph {
            dims,
            ties,
            free,
            gated,
        })
    }

    /// Max widths of the free widths.
    pub fn max_widths(&self) -> Vec<usize> {
        self.free.iter().map(|&d| self.dims[d].max).collect()
    }

    /// Active widths of the free widths.
    pub fn active_widths(&self) -> Vec<usize> {
        self.free.iter().map(|&d| self.dims[d].active).collect()
    }
}

impl Network {
    /// The network's widths and which layers share each.
    pub fn widths(&mut self) -> Result<WidthGraph, WidthError> {
        WidthGraph::of(&mut self.body, self.inputs)
    }

    /// Runs the network as the child with these free widths (one per free
    /// width, see [`WidthGraph::free`]): every layer on the leading block of
    /// its max-width parameters. The max widths make it the whole network.
    pub fn set_active_widths(&mut self, widths: &[usize]) -> Result<(), WidthError> {
        let graph = self.widths()?;
        if widths.len() != graph.free.len() {
            return Err(WidthError::Count {
                expected: graph.free.len(),
                got: widths.len(),
            });
        }
        let mut active: Vec<usize> = graph.dims.iter().map(|d| d.active).collect();
        for (&d, &w) in graph.free.iter().zip(widths) {
            if w == 0 || w > graph.dims[d].max {
                return Err(WidthError::OutOfRange {
                    what: "network",
                    active: w,
                    max: graph.dims[d].max,
                });
            }
            active[d] = w;
        }
        for &(input, output) in &graph.gated {
            active[input] = graph.dims[output].max + active[output];
        }
        let ties: HashMap<&str, Tie> = graph.ties.iter().map(|(p, t)| (p.as_str(), *t)).collect();
        // Refused before anything changes, so a bad choice leaves the
        // network as it was: a width its attention heads do not divide.
        let mut result = Ok(());
        visit_layers(&mut self.body, &mut |path, layer| {
            if let (LayerRef::Attention(l), Some(&Tie::Features(d))) = (layer, ties.get(path)) {
                if active[d] % l.heads() != 0 && result.is_ok() {
                    result = Err(WidthError::OutOfRange {
                        what: "attention (a multiple of its heads)",
                        active: active[d],
                        max: l.max_features(),
                    });
                }
            }
        });
        result?;
        let mut result = Ok(());
        visit_layers(&mut self.body, &mut |path, layer| {
            let Some(&tie) = ties.get(path) else { return };
            let r = match (layer, tie) {
                (LayerRef::Linear(l), Tie::Linear { input, output }) => {
                    l.set_active(active[input], active[output])
                }
                (LayerRef::Activation(l), Tie::Features(d)) => l.set_active(active[d]),
                (LayerRef::BatchNorm(l), Tie::Features(d)) => l.set_active(active[d]),
                (LayerRef::LayerNorm(l), Tie::Features(d)) => l.set_active(active[d]),
                (LayerRef::Dropout(l), Tie::Features(d)) => l.set_active(active[d]),
                (LayerRef::SelectToken(l), Tie::Features(d)) => l.set_active(active[d]),
                (LayerRef::Attention(l), Tie::Features(d)) => l.set_active(active[d]),
                (LayerRef::Tokenizer(l), Tie::Linear { output, .. }) => {
                    l.set_active(active[output])
                }
                (LayerRef::Reglu(l), Tie::Linear { output, .. }) => l.set_active(active[output]),
                _ => Err(WidthError::Unsupported {
                    path: path.to_owned(),
                }),
            };
            if result.is_ok() {
                result = r;
            }
        });
        result
    }

    /// Runs the network at its max widths.
    pub fn set_full_width(&mut self) -> Result<(), WidthError> {
        let max = self.widths()?.max_widths();
        self.set_active_widths(&max)
    }

    /// Appends `n` units to free width `index` in every layer that shares
    /// it: linear layers producing it get `n` new outputs (initialised as
    /// at construction), those reading it `n` new input rows of zeros (so
    /// the network's function is unchanged), norms γ = 1, β = 0. Parameter
    /// identities are kept, so optimizer state follows the parameters (the
    /// new units' moments start at zero). Every width must be at its max.
    pub fn grow_width(
        &mut self,
        index: usize,
        n: usize,
        rng: &mut SmallRng,
    ) -> Result<(), WidthError> {
        let graph = self.widths()?;
        let Some(&dim) = graph.free.get(index) else {
            return Err(WidthError::NoSuchWidth {
                index,
                count: graph.free.len(),
            });
        };
        if graph.dims.iter().any(|d| d.active != d.max) {
            return Err(WidthError::Narrow);
        }
        // Growth appends units to linear layers and norms only.
        let mut unsupported = None;
        visit_layers(&mut self.body, &mut |path, layer| {
            if matches!(
                layer,
                LayerRef::Tokenizer(_) | LayerRef::Attention(_) | LayerRef::Reglu(_)
            ) && unsupported.is_none()
            {
                unsupported = Some(path.to_owned());
            }
        });
        if let Some(path) = unsupported {
            return Err(WidthError::Unsupported { path });
        }
        let ties: HashMap<&str, Tie> = graph.ties.iter().map(|(p, t)| (p.as_str(), *t)).collect();
        visit_layers(&mut self.body, &mut |path, layer| {
            let Some(&tie) = ties.get(path) else { return };
            match (layer, tie) {
                (LayerRef::Linear(l), Tie::Linear { input, output }) => {
                    if input == dim {
                        l.grow_inputs(n);
                    }
                    if output == dim {
                        l.grow_outputs(n, &mut *rng);
                    }
                }
                (layer, Tie::Features(d)) if d == dim => match layer {
                    LayerRef::Activation(l) => l.grow(n),
                    LayerRef::BatchNorm(l) => l.grow(n),
                    LayerRef::LayerNorm(l) => l.grow(n),
                    LayerRef::Dropout(l) => l.grow(n),
                    LayerRef::SelectToken(l) => l.grow(n),
                    _ => {}
                },
                _ => {}
            }
        });
        Ok(())
    }
}
