//! What the tests of the `ensemble` binary's commands share: running it.

use std::path::PathBuf;
use std::process::Output;

/// The binary under test: `ENSEMBLE_BIN` (the release build `scripts/test` makes), else this package's.
pub fn ensemble() -> PathBuf {
    std::env::var_os("ENSEMBLE_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ensemble")), PathBuf::from)
}

/// Runs `ensemble args...` to completion; it must exit, not die of a signal.
pub fn run(args: &[&str]) -> Output {
    let out = std::process::Command::new(ensemble()).args(args).output().expect("run ensemble");
    assert!(out.status.code().is_some(), "ensemble died of a signal: {out:?}");
    out
}
