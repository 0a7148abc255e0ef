//! Walking a network: every layer with its stable path and a typed
//! reference, and observers that see each layer's activations as it runs.
//!
//! Paths join the names of the containers' children with dots
//! (`blocks.2.linear`); a residual block is transparent (its branch's
//! layers are its children), the root has the empty path. The same path
//! names a layer in [`visit_layers`], in [`Observer`] calls and in
//! [`named_parameters`](visit_named_parameters).

use super::ft::{FeatureTokenizer, MultiHeadAttention, Reglu};
use super::layers::{
    Activation, ActivationLayer, BatchNorm, Dropout, Layer, LayerNorm, Linear, Residual, Sequential,
};
use super::param::Param;
use super::tokens::SelectToken;
use ndarray::ArrayView2;

/// What a layer is (a cheap tag for hooks and reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// [`Linear`].
    Linear,
    /// [`ActivationLayer`] with its function.
    Activation(Activation),
    /// [`BatchNorm`].
    BatchNorm,
    /// [`LayerNorm`].
    LayerNorm,
    /// [`Dropout`].
    Dropout,
    /// [`Sequential`].
    Sequential,
    /// [`Residual`].
    Residual,
    /// [`SelectToken`].
    SelectToken,
    /// A layer defined outside this crate's layer set.
    Other,
}

/// A layer as its concrete type, so a tool can reach what only that type
/// has (a linear layer's weights, a norm's statistics, widths).
pub enum LayerRef<'a> {
    /// A dense layer.
    Linear(&'a mut Linear),
    /// An element-wise activation.
    Activation(&'a mut ActivationLayer),
    /// Batch normalisation.
    BatchNorm(&'a mut BatchNorm),
    /// Layer normalisation.
    LayerNorm(&'a mut LayerNorm),
    /// Dropout.
    Dropout(&'a mut Dropout),
    /// A sequence (its children are visited after it).
    Sequential(&'a mut Sequential),
    /// A residual block (its branch's layers are visited after it).
    Residual(&'a mut Residual),
    /// Selection of one token per sample.
    SelectToken(&'a mut SelectToken),
    /// The FT-Transformer's feature tokenizer (its token width is a
    /// width of the network).
    Tokenizer(&'a mut FeatureTokenizer),
    /// Multi-head self-attention (its projections are visited after it,
    /// as children).
    Attention(&'a mut MultiHeadAttention),
    /// ReGLU (halves the width of its input).
    Reglu(&'a mut Reglu),
    /// Any other layer.
    Other(&'a mut dyn Layer),
}

/// Sees each layer's activations as a network runs with a
/// [`Ctx::with_observer`](super::layers::Ctx::with_observer) context:
/// forward and backward hooks. Called for every layer inside a
/// [`Sequential`] (at any depth), after the layer ran; the root itself is
/// not reported (its input and output are the caller's).
pub trait Observer {
    /// `path`'s layer mapped `input` to `output`.
    fn on_forward(
        &mut self,
        path: &str,
        kind: LayerKind,
        input: ArrayView2<f32>,
        output: ArrayView2<f32>,
    );
    /// `path`'s layer back-propagated `grad_output` (the gradient of the
    /// loss at its output) to `grad_input` (`None` where the input gradient
    /// was not asked for: the first layer, unless the caller asked).
    fn on_backward(
        &mut self,
        path: &str,
        kind: LayerKind,
        grad_output: ArrayView2<f32>,
        grad_input: Option<ArrayView2<f32>>,
    );
}

/// Calls `f` on `root` (path "") and on every layer below it, parents
/// before children, children in order.
pub fn visit_layers(root: &mut dyn Layer, f: &mut dyn FnMut(&str, LayerRef<'_>)) {
    let mut path = String::new();
    walk(root, &mut path, f);
}

fn walk(layer: &mut dyn Layer, path: &mut String, f: &mut dyn FnMut(&str, LayerRef<'_>)) {
    f(path, layer.layer_ref());
    layer.visit_children(&mut |name, child| {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(name);
        walk(child, path, f);
        path.truncate(len);
    });
}

/// Calls `f` on every parameter below `root` with its layer's path
/// (`blocks.0.linear1` + [`Param::name`] makes the full name), in the order
/// of [`Layer::visit_parameters`].
pub fn visit_named_parameters(root: &mut dyn Layer, f: &mut dyn FnMut(&str, Param<'_>)) {
    let mut path = String::new();
    walk_params(root, &mut path, f);
}

fn walk_params(layer: &mut dyn Layer, path: &mut String, f: &mut dyn FnMut(&str, Param<'_>)) {
    let mut has_children = false;
    layer.visit_children(&mut |name, child| {
        has_children = true;
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(name);
        walk_params(child, path, f);
        path.truncate(len);
    });
    if !has_children {
        let here: &str = path;
        layer.visit_parameters(&mut |p| f(here, p));
    }
}

/// What a [`Recorder`] saw of one forward call.
#[derive(Debug, Clone)]
pub struct ForwardRecord {
    /// Layer path.
    pub path: String,
    /// Layer kind.
    pub kind: LayerKind,
    /// Its input.
    pub input: ndarray::Array2<f32>,
    /// Its output.
    pub output: ndarray::Array2<f32>,
}

/// What a [`Recorder`] saw of one backward call.
#[derive(Debug, Clone)]
pub struct BackwardRecord {
    /// Layer path.
    pub path: String,
    /// Layer kind.
    pub kind: LayerKind,
    /// Gradient of the loss at the layer's output.
    pub grad_output: ndarray::Array2<f32>,
    /// Gradient at its input, when computed.
    pub grad_input: Option<ndarray::Array2<f32>>,
}

/// An [`Observer`] that keeps a copy of everything it sees, by path: for
/// proxies and tests on one minibatch.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Each forward call, in order.
    pub forward: Vec<ForwardRecord>,
    /// Each backward call, in order (last layer first).
    pub backward: Vec<BackwardRecord>,
}

impl Recorder {
    /// Output of the last forward call of `path`.
    pub fn output(&self, path: &str) -> Option<&ndarray::Array2<f32>> {
        self.forward
            .iter()
            .rev()
            .find(|r| r.path == path)
            .map(|r| &r.output)
    }
    /// Input of the last forward call of `path`.
    pub fn input(&self, path: &str) -> Option<&ndarray::Array2<f32>> {
        self.forward
            .iter()
            .rev()
            .find(|r| r.path == path)
            .map(|r| &r.input)
    }
    /// Gradient at the output of `path` in its last backward call.
    pub fn grad_output(&self, path: &str) -> Option<&ndarray::Array2<f32>> {
        self.backward
            .iter()
            .rev()
            .find(|r| r.path == path)
            .map(|r| &r.grad_output)
    }
}

impl Observer for Recorder {
    fn on_forward(
        &mut self,
        path: &str,
        kind: LayerKind,
        input: ArrayView2<f32>,
        output: ArrayView2<f32>,
    ) {
        self.forward.push(ForwardRecord {
            path: path.to_owned(),
            kind,
            input: input.to_owned(),
            output: output.to_owned(),
        });
    }
    fn on_backward(
        &mut self,
        path: &str,
        kind: LayerKind,
        grad_output: ArrayView2<f32>,
        grad_input: Option<ArrayView2<f32>>,
    ) {
        self.backward.push(BackwardRecord {
            path: path.to_owned(),
            kind,
            grad_output: grad_output.to_owned(),
            grad_input: grad_input.map(|g| g.to_owned()),
        });
    }
}
