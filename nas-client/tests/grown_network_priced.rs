//! A network changed with the layer API (grown after training steps, or
//! run as a narrower supernet child) converts to its `nn_plan::ModelSpec`
//! and is priced in process by the energy model (issue 11's acceptance
//! item). nas-client is where the trainer and the energy model meet, so
//! the test lives here.
//!
//! The spec is checked against the network itself, not only against
//! `Network::spec`'s own rebuild check: every layer of the network has the
//! path, kind and widths of the layer of the same path in the spec's
//! `Architecture` (what the plan walks), the parameter counts agree, and
//! one recorded training step of the grown network lists the kernel kinds
//! of the spec's step plan in order. The calibration is synthetic (energy
//! linear in the work of a call, fitted with the energy model's own types,
//! as its tests and `bench/pricing` do), so figures say that pricing
//! follows the network, not what a real machine spends.

use energy_model::{Calibration, MachineFingerprint, NetworkEnergyPrediction, NetworkRun};
use ndarray::{Array1, Array2};
use nn_plan::{
    Activation, Architecture, Backbone, DatasetShape, KernelKind, LayerShape, ModelSpec,
    NamedLayer, Norm, OptimizerKind, RunShape,
};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use shared::{MonotonicNs, Provenance};
use std::collections::BTreeMap;
use tabular_nn::kernels::SpanSink;
use tabular_nn::model::layers::{Ctx, Layer, LayerRef};
use tabular_nn::model::visit::visit_layers;
use tabular_nn::model::{BuildNetwork, Network};
use tabular_nn::train::trainer::Trainer;
use tabular_nn::train::{LossKind, Optimizer};

const INPUTS: usize = 5;
const OUTPUTS: usize = 3;
const BATCH: usize = 16;

/// The shared synthetic calibration (`integration_tests::fixtures`) of a
/// fixed test machine: this test prices in process, so the machine need
/// not be this one.
fn synthetic_calibration() -> Calibration {
    let machine = MachineFingerprint {
        cpu_model: "Test CPU".into(),
        logical_cpus: 2,
        kernel_release: "6.1".into(),
        gpu: None,
        energy_sources: Vec::new(),
        provenance: Provenance::Estimated,
    };
    integration_tests::fixtures::synthetic_calibration(machine, "grown_network_priced test")
}

fn price(cal: &Calibration, model: &ModelSpec) -> NetworkEnergyPrediction {
    let run = NetworkRun {
        model: model.clone(),
        data: DatasetShape {
            inputs: INPUTS,
            outputs: OUTPUTS,
            regression: false,
            train_rows: 200,
            val_rows: 50,
            test_rows: 50,
        },
        run: RunShape {
            optimizer: OptimizerKind::AdamW,
            batch_size: BATCH,
            eval_batch_size: 64,
            epochs: 3,
            threads: 1,
        },
    };
    let p = cal.predict_network(&run).expect("priced");
    assert!(
        p.training_j.is_finite() && p.training_j > 0.0,
        "{}: {p:?}",
        model.describe()
    );
    assert!(p.inference_j_per_1000_rows > 0.0, "{p:?}");
    assert_eq!(p.provenance, Provenance::Estimated);
    p
}

/// Path → (kind, widths) of every layer, from the network's layers.
fn network_layers(net: &mut Network) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    visit_layers(&mut net.body, &mut |path, layer| {
        let what = match layer {
            LayerRef::Linear(l) => format!("linear {}→{}", l.in_dim(), l.out_dim()),
            LayerRef::Activation(l) => format!("{:?} {}", l.activation, l.out_dim()),
            LayerRef::BatchNorm(l) => format!("Batch {}", l.out_dim()),
            LayerRef::LayerNorm(l) => format!("Layer {}", l.out_dim()),
            LayerRef::Dropout(l) => format!("dropout {} {}", l.p, l.out_dim()),
            LayerRef::Residual(l) => format!("residual {}", l.out_dim()),
            LayerRef::Sequential(_) => return,
            _ => panic!("{path}: not a layer a spec builds"),
        };
        out.insert(path.to_owned(), what);
    });
    out
}

/// Path → (kind, widths) of every layer of an architecture.
fn architecture_layers(arch: &Architecture) -> BTreeMap<String, String> {
    fn walk(layers: &[NamedLayer], prefix: &str, out: &mut BTreeMap<String, String>) {
        for l in layers {
            let path = format!("{prefix}{}", l.name);
            let what = match &l.shape {
                LayerShape::Linear { inputs, outputs } => format!("linear {inputs}→{outputs}"),
                LayerShape::Activation { activation, width } => format!("{activation:?} {width}"),
                LayerShape::Norm { norm, width } => format!("{norm:?} {width}"),
                LayerShape::Dropout { p, width } => format!("dropout {p} {width}"),
                LayerShape::Residual { inner, width } => {
                    walk(inner, &format!("{path}."), out);
                    format!("residual {width}")
                }
                // Token layers (FT-Transformer): not grown here.
                other => format!("{other:?}"),
            };
            out.insert(path, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(&arch.layers, "", &mut out);
    out
}

/// The kinds of every span one recorded training step produces.
struct Kinds(Vec<KernelKind>);

impl SpanSink for Kinds {
    fn enabled(&self) -> bool {
        true
    }
    fn record(&mut self, kind: KernelKind, _: MonotonicNs, _: MonotonicNs) {
        self.0.push(kind);
    }
}

fn batch() -> (Array2<f32>, Array1<f32>) {
    let x = Array2::from_shape_fn((BATCH, INPUTS), |(i, j)| {
        ((i * 7 + j * 3) % 11) as f32 / 5.0 - 1.0
    });
    let y = Array1::from_shape_fn(BATCH, |i| (i % OUTPUTS) as f32);
    (x, y)
}

/// Checks that `spec` describes `trainer.net` exactly (layers, parameters,
/// the kernels of a training step).
fn assert_describes(spec: &ModelSpec, trainer: &mut Trainer) {
    let arch = spec.architecture(INPUTS, OUTPUTS).expect("expands");
    assert_eq!(
        network_layers(&mut trainer.net),
        architecture_layers(&arch),
        "{}",
        spec.describe()
    );
    assert_eq!(arch.parameters(), trainer.net.parameter_count());
    let (x, y) = batch();
    let mut sink = Kinds(Vec::new());
    {
        let mut ctx = Ctx::new(&mut sink, 5);
        // The training loop's batch gather, then the step itself.
        let t = tabular_nn::kernels::span_start(ctx.sink);
        tabular_nn::kernels::span_end(ctx.sink, KernelKind::BatchGather, t);
        trainer.step(x.view(), y.view(), 1e-3, &mut ctx);
    }
    let data = DatasetShape {
        inputs: INPUTS,
        outputs: OUTPUTS,
        regression: false,
        train_rows: BATCH,
        val_rows: BATCH,
        test_rows: BATCH,
    };
    let planned: Vec<KernelKind> =
        nn_plan::plan::step_calls(&arch, &data, OptimizerKind::AdamW, BATCH)
            .iter()
            .map(|c| c.kind)
            .collect();
    assert_eq!(planned, sink.0, "{}", spec.describe());
}

#[test]
fn a_grown_network_converts_to_a_spec_and_is_priced_by_the_energy_model() {
    let cal = synthetic_calibration();
    let cases = [
        (
            ModelSpec {
                backbone: Backbone::Mlp { widths: vec![6, 4] },
                activation: Activation::Gelu,
                dropout: 0.1,
                norm: Norm::Batch,
            },
            vec![9, 6],
        ),
        (
            ModelSpec {
                backbone: Backbone::Resnet {
                    d_main: 6,
                    d_hidden: vec![8, 5],
                },
                activation: Activation::Relu,
                dropout: 0.0,
                norm: Norm::Layer,
            },
            vec![8, 9, 7],
        ),
    ];
    let mut rng = SmallRng::seed_from_u64(4);
    for (spec, grown_widths) in cases {
        let net = spec.build(INPUTS, OUTPUTS, 1).expect("builds");
        let opt = Optimizer::new(OptimizerKind::AdamW, 0.9, 0.999, 1e-4);
        let mut trainer = Trainer::new(net, opt, LossKind::SoftmaxCrossEntropy);
        assert_eq!(trainer.net.spec().expect("spec"), spec);
        let before = price(&cal, &spec);

        // Train a little, then grow every free width with the layer API.
        let (x, y) = batch();
        let mut sink = tabular_nn::kernels::NullSink;
        let mut ctx = Ctx::new(&mut sink, 2);
        for _ in 0..3 {
            trainer.step(x.view(), y.view(), 1e-2, &mut ctx);
        }
        let max = trainer.net.widths().expect("widths").max_widths();
        for (i, (&now, &want)) in max.iter().zip(&grown_widths).enumerate() {
            trainer
                .net
                .grow_width(i, want - now, &mut rng)
                .expect("grows");
        }
        let grown = trainer.net.spec().expect("a grown network has a spec");
        let expected = ModelSpec {
            backbone: match &spec.backbone {
                Backbone::Mlp { .. } => Backbone::Mlp {
                    widths: grown_widths.clone(),
                },
                _ => Backbone::Resnet {
                    d_main: grown_widths[0],
                    d_hidden: grown_widths[1..].to_vec(),
                },
            },
            ..spec.clone()
        };
        assert_eq!(grown, expected);
        assert_describes(&grown, &mut trainer);
        let after = price(&cal, &grown);
        assert!(
            after.training_j > before.training_j
                && after.inference_j_per_1000_rows > before.inference_j_per_1000_rows,
            "{}: grown {after:?} against {before:?}",
            spec.describe()
        );

        // A narrower child of the grown network is priced as its own spec:
        // below the full network.
        let child: Vec<usize> = grown_widths.iter().map(|w| w / 2).collect();
        trainer.net.set_active_widths(&child).expect("within max");
        let child_spec = trainer.net.spec().expect("a child has a spec");
        assert_describes(&child_spec, &mut trainer);
        let child_price = price(&cal, &child_spec);
        assert!(
            child_price.training_j < after.training_j,
            "{}: child {child_price:?} against {after:?}",
            spec.describe()
        );
    }
}
