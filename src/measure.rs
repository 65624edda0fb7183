//! `podvisor measure`: the expected SEV-SNP launch digest, computed ahead of time.

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct MeasureArgs {}

pub fn main(_args: MeasureArgs) -> ExitCode {
    eprintln!("podvisor measure: not built yet");
    ExitCode::FAILURE
}
