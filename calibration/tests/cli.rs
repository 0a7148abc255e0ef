//! The `calibration` command line, as a user calls it. (Being an
//! integration test of this package, it also makes `cargo test
//! --workspace` build the `calibration` binary, which the cross-crate
//! calibrated-search test runs as nas-client's co-process.)

use std::process::Command;

#[test]
fn show_names_a_calibration_file_it_cannot_read() {
    let out = Command::new(env!("CARGO_BIN_EXE_calibration"))
        .args(["show", "--calibration", "/nonexistent/calibration.toml"])
        .output()
        .expect("run calibration");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/calibration.toml"), "{err}");
}
