//! Parameter identity and shape: what an optimizer, a proxy or a supernet
//! sees of a trainable tensor.
//!
//! Every trainable tensor has a [`ParamId`], unique in the process and kept
//! for the tensor's life (also when its layer grows or runs at a narrower
//! active width), so optimizer state keyed by it cannot shift to another
//! tensor. Values and gradients are 2-D views: a weight matrix is
//! `(in, out)`, a vector `(1, n)`. At a narrower active width the view is
//! the leading block `W[..in, ..out]` of the row-major max-width matrix,
//! which is strided; at full width it is the whole, contiguous matrix.
//!
//! Gradients *accumulate*: each backward pass adds to them, and
//! [`Layer::zero_grad`](super::layers::Layer::zero_grad) clears them. The
//! clearing is lazy ([`GradBuf`]): it only marks the buffer empty, and the
//! next backward pass overwrites instead of adding (a GEMM with β = 0), so
//! a training loop that clears before every step costs nothing over the
//! old overwrite-only passes.

use ndarray::{s, Array2, ArrayView2, ArrayViewMut2};
use std::sync::atomic::{AtomicU64, Ordering};

/// Identity of one trainable tensor, unique within the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(u64);

static NEXT_PARAM_ID: AtomicU64 = AtomicU64::new(1);

impl ParamId {
    /// A fresh identity.
    pub fn fresh() -> ParamId {
        ParamId(NEXT_PARAM_ID.fetch_add(1, Ordering::Relaxed))
    }

    /// The number behind the identity (for logs).
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Why a width cannot be set or grown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WidthError {
    /// An active width outside 1..=max.
    #[error("{what} width {active} is outside 1..={max}")]
    OutOfRange {
        /// Which layer kind.
        what: &'static str,
        /// Width asked for.
        active: usize,
        /// Max width of the layer.
        max: usize,
    },
    /// The wrong number of widths for the network's free widths.
    #[error("the network has {expected} free widths, got {got}")]
    Count {
        /// Free widths of the network.
        expected: usize,
        /// Widths given.
        got: usize,
    },
    /// Two layers that must share a width do not (a malformed network).
    #[error("layer {path:?} has width {found} where {expected} flows in")]
    Mismatch {
        /// Path of the layer.
        path: String,
        /// Width reaching it.
        expected: usize,
        /// Its own width.
        found: usize,
    },
    /// A layer whose widths this crate does not know how to change.
    #[error("layer {path:?} has no known width rule")]
    Unsupported {
        /// Path of the layer.
        path: String,
    },
    /// Growth while a narrower child is active (set every width to its max
    /// first).
    #[error("cannot grow while a narrower active width is set")]
    Narrow,
    /// No free width with this index.
    #[error("free width {index} does not exist (the network has {count})")]
    NoSuchWidth {
        /// Index asked for.
        index: usize,
        /// Free widths of the network.
        count: usize,
    },
}

/// One parameter tensor with its gradient, at the layer's active width.
pub struct Param<'a> {
    /// Identity, stable across width changes.
    pub id: ParamId,
    /// What it is within its layer ("weight", "bias", "gamma", "beta"); the
    /// layer's path (see [`super::visit`]) completes the name.
    pub name: &'static str,
    /// Values: `(in, out)` for a weight matrix, `(1, n)` for a vector; the
    /// leading block of the max-width tensor.
    pub value: ArrayViewMut2<'a, f32>,
    /// Gradient accumulated since the last `zero_grad`, same shape.
    pub grad: ArrayView2<'a, f32>,
    /// Whether weight decay applies (not to biases and norm parameters).
    pub decay: bool,
}

/// A non-trained tensor that evaluation depends on (BatchNorm's running
/// statistics), at the layer's active width.
pub struct Buffer<'a> {
    /// What it is ("running_mean", "running_var").
    pub name: &'static str,
    /// Values, `(1, n)` for a vector.
    pub value: ArrayViewMut2<'a, f32>,
}

/// A gradient buffer of a parameter's max shape that accumulates, cleared
/// lazily.
///
/// Invariant: the logical gradient is `buf` inside the leading block
/// `live` and zero outside it. Backward passes at different active widths
/// (the sandwich rule of supernet training) each add into their leading
/// block; the live block grows to cover them, zero-filling only what it
/// newly covers.
#[derive(Debug, Clone)]
pub struct GradBuf {
    buf: Array2<f32>,
    live: (usize, usize),
}

impl GradBuf {
    /// A zero gradient of shape `(rows, cols)`.
    pub fn zeros(rows: usize, cols: usize) -> GradBuf {
        GradBuf {
            buf: Array2::zeros((rows, cols)),
            live: (0, 0),
        }
    }

    /// Clears the gradient (no memory traffic).
    pub fn zero(&mut self) {
        self.live = (0, 0);
    }

    /// Shape of the full (max-width) buffer.
    pub fn dim(&self) -> (usize, usize) {
        self.buf.dim()
    }

    /// Prepares the block `[..rows, ..cols]` for a backward pass and returns
    /// it with the β to write it with: 0 (overwrite) when nothing of it
    /// holds a gradient yet, 1 (add) otherwise.
    pub fn begin(&mut self, rows: usize, cols: usize) -> (f32, ArrayViewMut2<'_, f32>) {
        let beta = if self.live == (0, 0) {
            self.live = (rows, cols);
            0.0
        } else {
            self.cover(rows, cols);
            1.0
        };
        (beta, self.buf.slice_mut(s![..rows, ..cols]))
    }

    /// The gradient of the block `[..rows, ..cols]` (zeros where no
    /// backward pass wrote).
    pub fn view(&mut self, rows: usize, cols: usize) -> ArrayView2<'_, f32> {
        self.cover(rows, cols);
        self.buf.slice(s![..rows, ..cols])
    }

    /// Grows the live block to cover `[..rows, ..cols]`, zero-filling the
    /// cells it newly covers.
    fn cover(&mut self, rows: usize, cols: usize) {
        let (lr, lc) = self.live;
        let (nr, nc) = (lr.max(rows), lc.max(cols));
        if (nr, nc) == (lr, lc) {
            return;
        }
        // Right of the old block, within the old rows; then every row below.
        self.buf.slice_mut(s![..lr, lc..nc]).fill(0.0);
        self.buf.slice_mut(s![lr..nr, ..nc]).fill(0.0);
        self.live = (nr, nc);
    }

    /// Resizes the max shape to `(rows, cols)` (growth), keeping every
    /// element at its `(i, j)` position; new cells are zero.
    pub fn resize(&mut self, rows: usize, cols: usize) {
        let (lr, lc) = self.live;
        let mut next = Array2::zeros((rows, cols));
        let (kr, kc) = (lr.min(rows), lc.min(cols));
        next.slice_mut(s![..kr, ..kc])
            .assign(&self.buf.slice(s![..kr, ..kc]));
        self.buf = next;
        self.live = (kr, kc);
    }
}

/// Copies `src` into a new `(rows, cols)` array at the same `(i, j)`
/// positions, filling new cells with `fill(i, j)`: how a parameter grows
/// by appending units.
pub fn grown(
    src: ArrayView2<f32>,
    rows: usize,
    cols: usize,
    mut fill: impl FnMut(usize, usize) -> f32,
) -> Array2<f32> {
    let (r0, c0) = src.dim();
    Array2::from_shape_fn((rows, cols), |(i, j)| {
        if i < r0 && j < c0 {
            src[[i, j]]
        } else {
            fill(i, j)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_buf_accumulates_blocks_of_different_widths() {
        let mut g = GradBuf::zeros(3, 4);
        {
            let (beta, mut b) = g.begin(2, 2);
            assert_eq!(beta, 0.0);
            b.fill(1.0);
        }
        {
            let (beta, mut b) = g.begin(3, 3);
            assert_eq!(beta, 1.0);
            b += 2.0;
        }
        let v = g.view(3, 4).to_owned();
        let expect = ndarray::array![
            [3.0, 3.0, 2.0, 0.0],
            [3.0, 3.0, 2.0, 0.0],
            [2.0, 2.0, 2.0, 0.0]
        ];
        assert_eq!(v, expect);
        g.zero();
        {
            let (beta, mut b) = g.begin(1, 1);
            assert_eq!(beta, 0.0);
            b.fill(5.0);
        }
        // Cells the cleared buffer held before are zero once covered.
        assert_eq!(
            g.view(2, 2).to_owned(),
            ndarray::array![[5.0, 0.0], [0.0, 0.0]]
        );
    }
}
