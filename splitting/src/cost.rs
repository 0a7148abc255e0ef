//! The cost of one more neuron at each site: the energy-aware selection's
//! per-neuron weight.
//!
//! With a calibration, the cost is the calibrated energy model's predicted
//! inference energy (joules per 1000 rows) of the network with one more
//! neuron in that layer, less that of the network as it is: what a split
//! adds to every later inference. Without one, the documented fallback is
//! the forward FLOPs per row that the neuron adds, labelled
//! [`CostSource::FlopsFallback`] (the reference's cost is √ΔFLOPs; we keep
//! the unit linear so a budget is a plain sum).

use crate::site::SplitSite;
use crate::SplitError;
use energy_model::{Calibration, NetworkRun};
use nn_plan::{Backbone, DatasetShape, ModelSpec, RunShape};
use shared::Provenance;
use tabular_nn::model::BuildNetwork;

/// Where the costs come from, and so their unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostSource {
    /// The calibrated energy model: joules per 1000 inference rows,
    /// *predicted* from a calibration measured with this provenance.
    Calibration(Provenance),
    /// No calibration: forward FLOPs per row (not energy).
    FlopsFallback,
}

impl CostSource {
    /// The unit of the costs, for reports.
    pub fn unit(self) -> &'static str {
        match self {
            CostSource::Calibration(_) => "J per 1000 inferences (predicted)",
            CostSource::FlopsFallback => "FLOPs per row (fallback, no calibration)",
        }
    }
}

/// Per-site costs of one more neuron, and the network's current total in
/// the same unit.
#[derive(Debug, Clone, PartialEq)]
pub struct NeuronCosts {
    /// Cost of one more neuron, per site (always > 0).
    pub per_site: Vec<f64>,
    /// Source and unit.
    pub source: CostSource,
}

/// Smallest cost a neuron is given: a calibration's linear fits can price
/// a one-neuron change at zero or below (within their noise), and a free
/// neuron would make the budget meaningless.
const MIN_RELATIVE_COST: f64 = 1e-6;

/// `spec` with `by` more units in free width `index` (the order of
/// `tabular_nn::model::widths`: an MLP's hidden widths; a ResNet's main
/// width, then its blocks' hidden widths).
pub fn widened(spec: &ModelSpec, index: usize, by: usize) -> ModelSpec {
    let mut out = spec.clone();
    match &mut out.backbone {
        Backbone::Mlp { widths } => {
            if let Some(w) = widths.get_mut(index) {
                *w += by;
            }
        }
        Backbone::Resnet { d_main, d_hidden } => {
            if index == 0 {
                *d_main += by;
            } else if let Some(h) = d_hidden.get_mut(index - 1) {
                *h += by;
            }
        }
        // A backbone without free widths of these kinds: unchanged.
        _ => {}
    }
    out
}

fn floor_costs(per_site: &mut [f64], total: f64) {
    let floor = MIN_RELATIVE_COST * total.abs().max(f64::MIN_POSITIVE);
    for c in per_site {
        *c = c.max(floor);
    }
}

/// Costs from a calibration: predicted inference energy of `spec` widened
/// by one neuron at each site, less `spec`'s own.
pub fn price_with_calibration(
    calibration: &Calibration,
    spec: &ModelSpec,
    data: &DatasetShape,
    run: &RunShape,
    sites: &[SplitSite],
) -> Result<NeuronCosts, SplitError> {
    let price = |model: &ModelSpec| -> Result<f64, SplitError> {
        let network = NetworkRun {
            model: model.clone(),
            data: *data,
            run: *run,
        };
        calibration
            .predict_network(&network)
            .map(|p| p.inference_j_per_1000_rows)
            .map_err(|e| SplitError::Pricing {
                spec: model.describe(),
                message: e.to_string(),
            })
    };
    let base = price(spec)?;
    let mut per_site = sites
        .iter()
        .map(|s| Ok(price(&widened(spec, s.width_index, 1))? - base))
        .collect::<Result<Vec<f64>, SplitError>>()?;
    floor_costs(&mut per_site, base);
    Ok(NeuronCosts {
        per_site,
        source: CostSource::Calibration(calibration.provenance),
    })
}

/// The fallback without a calibration: forward FLOPs per row.
pub fn price_by_flops(
    spec: &ModelSpec,
    inputs: usize,
    outputs: usize,
    sites: &[SplitSite],
) -> Result<NeuronCosts, SplitError> {
    let flops = |model: &ModelSpec| -> Result<f64, SplitError> {
        let net = model
            .build(inputs, outputs, 0)
            .map_err(|e| SplitError::Pricing {
                spec: model.describe(),
                message: e.to_string(),
            })?;
        Ok(net.flops_per_row().0 as f64)
    };
    let base = flops(spec)?;
    let mut per_site = sites
        .iter()
        .map(|s| Ok(flops(&widened(spec, s.width_index, 1))? - base))
        .collect::<Result<Vec<f64>, SplitError>>()?;
    floor_costs(&mut per_site, base);
    Ok(NeuronCosts {
        per_site,
        source: CostSource::FlopsFallback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::split_sites;
    use nn_plan::{Activation, Norm};

    #[test]
    fn flops_fallback_prices_wider_layers_higher() {
        let spec = ModelSpec {
            backbone: Backbone::Mlp { widths: vec![4, 4] },
            activation: Activation::Relu,
            dropout: 0.0,
            norm: Norm::None,
        };
        let mut net = spec.build(30, 2, 0).unwrap();
        let sites = split_sites(&mut net).unwrap();
        let costs = price_by_flops(&spec, 30, 2, &sites).unwrap();
        assert_eq!(costs.source, CostSource::FlopsFallback);
        // A first-layer neuron reads 30 inputs, a second-layer one 4.
        assert!(costs.per_site[0] > costs.per_site[1]);
        assert!(costs.per_site.iter().all(|&c| c > 0.0));
        assert_eq!(
            widened(&spec, 1, 2).backbone,
            Backbone::Mlp { widths: vec![4, 6] }
        );
    }
}
