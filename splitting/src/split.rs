//! The split: neuron `j` of a site becomes two offspring, `j` itself at
//! `θ_j + ε·v` and a new neuron (appended to the layer) at `θ_j − ε·v`,
//! each with half of `j`'s outgoing weights; a batch norm's γ, β and
//! running statistics are duplicated. At `ε = 0` the network computes
//! exactly the same function; for `ε > 0` it differs by `O(ε²)` (that
//! difference is the loss decrease splitting is after).
//!
//! Optimizer state follows ([`ParamId`](tabular_nn::model::layers::ParamId)
//! keyed): an offspring's incoming parameters see half the parent's
//! gradient (its outgoing weights are halved), so their first moments are
//! the parent's × ½ and second moments × ¼, for both offspring; the
//! outgoing weights of the new neuron see the parent's gradient and take
//! its moments unchanged.

use crate::site::SplitSite;
use crate::SplitError;
use ndarray::{s, Array2};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::HashSet;
use tabular_nn::model::layers::{Layer, LayerRef, ParamId};
use tabular_nn::model::param::grown;
use tabular_nn::model::visit::visit_layers;
use tabular_nn::model::Network;
use tabular_nn::train::Optimizer;

/// The offspring's offset along the unit eigenvector (the reference's
/// `1e-2` with `‖v‖ = 1`): small enough that the function is unchanged to
/// within training noise, large enough that fine-tuning separates the
/// offspring.
pub const DEFAULT_EPSILON: f32 = 1e-2;

/// One neuron to split, along a direction over `[incoming weights, bias]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitPlan {
    /// Site index (into the sites given to [`apply_splits`]).
    pub site: usize,
    /// Neuron within the site.
    pub neuron: usize,
    /// Direction, `fan_in + 1` long (normally the unit eigenvector).
    pub direction: Vec<f64>,
}

/// How one parameter's moments move: which axis holds the neurons and how
/// the offspring's moments relate to the parent's.
#[derive(Clone, Copy)]
enum Follow {
    /// Incoming (neurons on columns): both offspring get ½ / ¼ moments.
    Halve,
    /// Outgoing (neurons on rows): the new neuron copies the parent's.
    CopyRows,
}

/// Splits the planned neurons of `net`, `sites` being `net`'s current
/// sites; with `optimizer`, its state follows. Afterwards the sites have
/// grown: find them again with [`split_sites`](crate::split_sites).
pub fn apply_splits(
    net: &mut Network,
    sites: &[SplitSite],
    plans: &[SplitPlan],
    epsilon: f32,
    mut optimizer: Option<&mut Optimizer>,
) -> Result<(), SplitError> {
    let mut seen = HashSet::new();
    for p in plans {
        let bad = |reason: &str| SplitError::BadSplit {
            site: p.site,
            neuron: p.neuron,
            reason: reason.to_owned(),
        };
        let site = sites.get(p.site).ok_or_else(|| bad("no such site"))?;
        if p.neuron >= site.width {
            return Err(bad("no such neuron"));
        }
        if p.direction.len() != site.fan_in + 1 {
            return Err(bad("direction length is not fan-in + 1"));
        }
        if !seen.insert((p.site, p.neuron)) {
            return Err(bad("the same neuron twice in one round"));
        }
    }
    // The appended units' fresh values are all overwritten below.
    let mut rng = SmallRng::seed_from_u64(0);
    for (index, site) in sites.iter().enumerate() {
        let mine: Vec<&SplitPlan> = plans.iter().filter(|p| p.site == index).collect();
        if mine.is_empty() {
            continue;
        }
        let old = site.width;
        let pairs: Vec<(usize, usize)> = mine
            .iter()
            .enumerate()
            .map(|(t, p)| (p.neuron, old + t))
            .collect();
        net.grow_width(site.width_index, mine.len(), &mut rng)?;
        let eps = f64::from(epsilon);
        let mut follow: Vec<(ParamId, Follow)> = Vec::new();
        visit_layers(&mut net.body, &mut |path, layer| match layer {
            LayerRef::Linear(l) if path == site.incoming => {
                for (p, &(j, m)) in mine.iter().zip(&pairs) {
                    for (r, &dv) in p.direction.iter().enumerate().take(site.fan_in) {
                        let base = f64::from(l.weight[[r, j]]);
                        l.weight[[r, j]] = (base + eps * dv) as f32;
                        l.weight[[r, m]] = (base - eps * dv) as f32;
                    }
                    // Inputs appended by an earlier site's split in this
                    // call: the direction does not cover them; the
                    // offspring inherits the parent's weights there.
                    for r in site.fan_in..l.weight.nrows() {
                        l.weight[[r, m]] = l.weight[[r, j]];
                    }
                    let base = f64::from(l.bias[j]);
                    let db = eps * p.direction[site.fan_in];
                    l.bias[j] = (base + db) as f32;
                    l.bias[m] = (base - db) as f32;
                }
                let (w, b) = l.param_ids();
                follow.push((w, Follow::Halve));
                follow.push((b, Follow::Halve));
            }
            LayerRef::BatchNorm(bn) if site.norm.as_deref() == Some(path) => {
                bn.visit_parameters(&mut |mut p| {
                    for &(j, m) in &pairs {
                        p.value[[0, m]] = p.value[[0, j]];
                    }
                    follow.push((p.id, Follow::Halve));
                });
                bn.visit_buffers(&mut |mut b| {
                    for &(j, m) in &pairs {
                        b.value[[0, m]] = b.value[[0, j]];
                    }
                });
            }
            LayerRef::Linear(l) if path == site.outgoing => {
                for &(j, m) in &pairs {
                    let half = l.weight.row(j).mapv(|w| 0.5 * w);
                    l.weight.row_mut(j).assign(&half);
                    l.weight.row_mut(m).assign(&half);
                }
                follow.push((l.param_ids().0, Follow::CopyRows));
            }
            _ => {}
        });
        if let Some(opt) = optimizer.as_deref_mut() {
            let mut shapes = std::collections::HashMap::new();
            net.body.visit_parameters(&mut |p| {
                shapes.insert(p.id, p.value.dim());
            });
            for (id, how) in follow {
                let (Some(state), Some(&(rows, cols))) = (opt.state_mut(id), shapes.get(&id))
                else {
                    continue;
                };
                for moments in [&mut state.first, &mut state.second] {
                    // SGD has no second moment (an empty array).
                    if !moments.is_empty() {
                        cover(moments, rows, cols);
                    }
                }
                for &(j, m) in &pairs {
                    match how {
                        Follow::Halve => {
                            scale_copy_column(&mut state.first, j, m, 0.5);
                            if !state.second.is_empty() {
                                scale_copy_column(&mut state.second, j, m, 0.25);
                            }
                        }
                        Follow::CopyRows => {
                            copy_row(&mut state.first, j, m);
                            if !state.second.is_empty() {
                                copy_row(&mut state.second, j, m);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Grows `a` with zeros to cover `(rows, cols)`.
fn cover(a: &mut Array2<f32>, rows: usize, cols: usize) {
    let (r, c) = a.dim();
    if r < rows || c < cols {
        *a = grown(a.view(), rows.max(r), cols.max(c), |_, _| 0.0);
    }
}

fn scale_copy_column(a: &mut Array2<f32>, j: usize, m: usize, scale: f32) {
    let col = a.slice(s![.., j]).mapv(|x| x * scale);
    a.slice_mut(s![.., j]).assign(&col);
    a.slice_mut(s![.., m]).assign(&col);
}

fn copy_row(a: &mut Array2<f32>, j: usize, m: usize) {
    let row = a.row(j).to_owned();
    a.row_mut(m).assign(&row);
}
