//! The `--threads` setting: one rayon pool per training runs its GEMM
//! blocks ([`crate::gemm`]) and its element-wise kernels.

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
