//! `podvisor`: the command-line entry point. Parses arguments and hands them to the VMM.

mod measure;
mod run;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "podvisor",
    version,
    about = "A lean VMM for confidential pod VMs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a guest and run it until it powers off, reboots or fails.
    Run(run::RunArgs),
    /// Print the expected SEV-SNP launch measurement of a firmware or IGVM image.
    Measure(measure::MeasureArgs),
}

fn main() -> ExitCode {
    // Boot timing is measured from here: everything before the first guest instruction counts.
    vmm::clock::start();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::main(args),
        Command::Measure(args) => measure::main(args),
    }
}
