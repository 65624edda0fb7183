//! `podvisor run`: boot a guest from the command line.

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct RunArgs {}

pub fn main(_args: RunArgs) -> ExitCode {
    eprintln!("podvisor run: not built yet");
    ExitCode::FAILURE
}
