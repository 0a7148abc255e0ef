//! Matrix products on the training thread pool.
//!
//! Every GEMM of the trainer goes through [`gemm`]: single-threaded
//! matrixmultiply for small products, and for large ones the output split
//! into one block of rows (or of columns, when it is wide and short) per
//! thread of the current rayon pool, each block a single-threaded
//! matrixmultiply call.
//!
//! Why not matrixmultiply's own threading: its pool (thread-tree) waits for
//! a forked half by calling `sched_yield` in a loop. On a machine where any
//! other process is runnable, each yield hands the core to that process
//! until the next scheduler tick, so every GEMM of a step waits milliseconds:
//! on the 2-core development machine, with other builds running at nice 19,
//! one epoch of a 256-256 MLP at batch 128 took 5.3–7.2 s on 2 threads
//! against 0.28 s on 1 thread (0.27 s on 2 threads, machine quiet). A
//! second pool also doubled the threads contending for the cores beside
//! the rayon pool that runs the element-wise kernels. rayon's workers
//! spin briefly and then sleep on a condition variable, so a waiting
//! thread is woken (and preempts) as soon as the other block is done.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// Products below this many multiply-adds run on one thread: forking costs
/// a few microseconds, which a product this size (~10 µs on one core) does
/// not repay.
const PAR_MIN_MACS: usize = 1 << 17;

/// Block boundaries fall on multiples of this many rows or columns, so no
/// block but the last has a ragged edge for the GEMM micro-kernel (whose
/// tiles are at most 16 wide for f32 on x86-64 and aarch64).
const BLOCK_ALIGN: usize = 16;

/// `c = alpha · a · b + beta · c`, like [`general_mat_mul`], on the threads
/// of the current rayon pool.
pub fn gemm(
    alpha: f32,
    a: &ArrayView2<f32>,
    b: &ArrayView2<f32>,
    beta: f32,
    c: &mut ArrayViewMut2<f32>,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    let threads = rayon::current_num_threads();
    if threads <= 1 || m.saturating_mul(n).saturating_mul(k) < PAR_MIN_MACS {
        general_mat_mul(alpha, a, b, beta, c);
        return;
    }
    // Split the longer side of the output; the other operand is shared.
    if m >= n {
        let rows = block(m, threads);
        c.axis_chunks_iter_mut(Axis(0), rows)
            .into_par_iter()
            .zip(a.axis_chunks_iter(Axis(0), rows).into_par_iter())
            .for_each(|(mut c, a)| general_mat_mul(alpha, &a, b, beta, &mut c));
    } else {
        let cols = block(n, threads);
        c.axis_chunks_iter_mut(Axis(1), cols)
            .into_par_iter()
            .zip(b.axis_chunks_iter(Axis(1), cols).into_par_iter())
            .for_each(|(mut c, b)| general_mat_mul(alpha, a, &b, beta, &mut c));
    }
}

/// Block length that splits `len` into at most `threads` aligned blocks.
fn block(len: usize, threads: usize) -> usize {
    let per_thread = len.div_ceil(threads);
    per_thread.div_ceil(BLOCK_ALIGN) * BLOCK_ALIGN
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, ShapeBuilder};

    fn filled(rows: usize, cols: usize, seed: f32) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(i, j)| {
            ((i * 31 + j * 17) as f32 * 0.013 + seed).sin()
        })
    }

    /// The product and the accumulation agree with matrixmultiply on one
    /// thread, for shapes split by rows, by columns, ragged blocks, a
    /// transposed operand and a column-major output.
    #[test]
    fn split_products_equal_the_single_threaded_product() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for &(m, k, n) in &[
            (300, 107, 64),
            (2048, 256, 256),
            (14, 2048, 256),
            (5, 3, 7),
            (130, 513, 17),
        ] {
            let a = filled(m, k, 0.1);
            let bt = filled(n, k, 0.7);
            let b = bt.t();
            for beta in [0.0f32, 1.0] {
                let mut expected = filled(m, n, 0.3);
                general_mat_mul(0.5, &a.view(), &b, beta, &mut expected);
                let mut got = Array2::<f32>::zeros((m, n).f());
                got.assign(&filled(m, n, 0.3));
                pool.install(|| gemm(0.5, &a.view(), &b, beta, &mut got.view_mut()));
                let worst = (&got - &expected)
                    .iter()
                    .fold(0.0f32, |w, d| w.max(d.abs()));
                assert!(
                    worst <= 1e-4,
                    "{m}x{k}x{n}, beta {beta}: differs by {worst}"
                );
            }
        }
    }

    #[test]
    fn blocks_are_aligned_and_cover_the_side() {
        assert_eq!(block(2048, 2), 1024);
        assert_eq!(block(300, 2), 160);
        assert_eq!(block(14, 2), 16);
        for (len, threads) in [(1000, 3), (17, 2), (4096, 16)] {
            let b = block(len, threads);
            assert_eq!(b % BLOCK_ALIGN, 0);
            assert!(b * threads >= len);
        }
    }
}
