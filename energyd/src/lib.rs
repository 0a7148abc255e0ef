//! energyd: the energy measurement daemon, as a library the binaries
//! (`energyd`, `energyctl`) and the tests call.
//!
//! - [`config`]: the TOML configuration and its documented defaults.
//! - [`policy`]: who a peer is (SO_PEERCRED), what it may see, rate limits,
//!   and the coarsening of machine-wide readings for unprivileged peers.
//! - [`spans`]: the per-process store of kernel spans submitted by clients.
//! - [`service`]: the request handler, a pure function of (caller, request)
//!   and the daemon state; no sockets, so it is fuzzed directly.
//! - [`server`]: the Unix-socket listener, connections, framing, streaming.
//! - [`listener`]: socket path checks, binding and systemd socket activation.
//! - [`daemon`]: start-up wiring of samplers, tracker and server.
//! - [`exporter`]: the Prometheus/OpenMetrics `/metrics` endpoint (opt-in).
#![warn(missing_docs)]

pub mod breakdown;
pub mod config;
pub mod daemon;
pub mod exporter;
pub mod gpu_activity;
pub mod listener;
pub mod policy;
pub mod server;
pub mod service;
pub mod spans;
