//! energyd and energyctl as the processes users and systemd run: the
//! command lines, signals, socket activation, and energyctl's reports
//! against a running daemon. Cargo builds both binaries, up to date, for
//! this package's integration tests (`CARGO_BIN_EXE_*`); everything that
//! does not need a separate daemon process is tested in-process instead
//! (`tests/` package, the handler fuzz tests).
//!
//! One test executable with a module per topic: each extra executable
//! costs a link of the whole daemon.

mod daemon_process;
mod energyctl_cli;
mod rapl_fixture;
mod socket_activation;
mod support;
