//! `ensemble snapshot list|dump|verify`.

use clap::Subcommand;

use super::{Outcome, ToolError};

/// `ensemble snapshot ...`
#[derive(Subcommand)]
pub enum SnapshotCommand {}

/// Runs a `snapshot` subcommand.
pub fn run(command: SnapshotCommand) -> Result<Outcome, ToolError> {
    match command {}
}
