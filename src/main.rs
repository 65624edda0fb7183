//! `podvisor`: the command-line entry point. Parses arguments and hands them to the VMM.

mod api;
mod attest;
mod confinement;
mod measure;
mod run;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "podvisor",
    version = concat!("v", env!("CARGO_PKG_VERSION")),
    about = "A lean VMM for confidential pod VMs",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand: serve the REST API (Cloud Hypervisor's command-line style).
    #[command(flatten)]
    api: api::ApiArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a guest and run it until it powers off, reboots or fails.
    Run(run::RunArgs),
    /// Print the expected SEV-SNP launch measurement of a firmware or IGVM image.
    Measure(measure::MeasureArgs),
    /// Check SEV-SNP attestation reports.
    Attest(attest::AttestArgs),
}

fn main() -> ExitCode {
    // Boot timing is measured from here: everything before the first guest instruction counts.
    vmm::clock::start();
    let cli = Cli::parse();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(cli.api.log_filter()),
    )
    .init();
    match cli.command {
        Some(Command::Run(args)) => run::main(args),
        Some(Command::Measure(args)) => measure::main(args),
        Some(Command::Attest(args)) => attest::main(args),
        None => api::main(cli.api),
    }
}
