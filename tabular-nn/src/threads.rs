//! The `--threads` setting: one place that sizes both the GEMM thread pool
//! (matrixmultiply's, read once per process from `MATMUL_NUM_THREADS`) and
//! the rayon pool that runs element-wise kernels.

use std::sync::OnceLock;

static GEMM_THREADS: OnceLock<usize> = OnceLock::new();

/// Sets the number of threads GEMMs use. matrixmultiply reads this once,
/// at the first GEMM of the process, so the first call wins; a later call
/// with a different count is logged and ignored.
pub fn set_gemm_threads(threads: usize) {
    let threads = threads.max(1);
    let chosen = *GEMM_THREADS.get_or_init(|| {
        // Edition 2021: set_var is safe; we call it before any GEMM runs,
        // and nothing else in this crate reads the environment concurrently.
        std::env::set_var("MATMUL_NUM_THREADS", threads.to_string());
        threads
    });
    if chosen != threads {
        tracing::warn!(
            requested = threads,
            in_use = chosen,
            "GEMM thread count is fixed at the first GEMM of the process; keeping {chosen}"
        );
    }
}

/// The GEMM thread count in force, if set.
pub fn gemm_threads() -> Option<usize> {
    GEMM_THREADS.get().copied()
}

/// A rayon pool of `threads` threads for element-wise kernels.
pub fn build_pool(threads: usize) -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("nas-client-{i}"))
        .build()
}

/// Threads available on this machine (at least 1).
pub fn available() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
