//! `podvisor run`: boot a guest from the command line and exit with a status that says how
//! it ended.

use std::path::PathBuf;
use std::process::ExitCode;

use vmm::config::{self, SerialOutput, VmConfig};
use vmm::exit::{ExitReason, EXIT_INTERNAL_ERROR};
use vmm::vm::Vm;

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  the guest powered off
  1  VMM internal error (including KVM internal errors and emulation failures)
  2  invalid configuration or arguments
  3  the guest requested a reboot
  4  a vCPU triple-faulted

At exit, one line on stderr reports boot timing in microseconds since process start:
  boot-timing first-instruction-us=N [marker-XX-us=N ...] exit-us=N
(XX: the byte the guest wrote to the boot-progress port 0x440, two hex digits).";

#[derive(clap::Args, Debug)]
#[command(after_help = EXIT_STATUS_HELP)]
pub struct RunArgs {
    /// Kernel image: bzImage, or ELF vmlinux (booted through PVH when it has the PVH note).
    #[arg(long, value_name = "PATH")]
    kernel: PathBuf,
    /// Initramfs loaded at the top of guest RAM below 4 GiB.
    #[arg(long, value_name = "PATH")]
    initramfs: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = config::DEFAULT_CMDLINE)]
    cmdline: String,
    /// Number of vCPUs: N or boot=N.
    #[arg(long, value_name = "N", default_value = "1", value_parser = config::parse_cpus)]
    cpus: u32,
    /// Guest RAM: SIZE or size=SIZE, with K, M, G or T suffix (binary units).
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = config::parse_memory)]
    memory: u64,
    /// Where COM1 output goes: stdout, file=PATH or off.
    #[arg(long, value_name = "MODE", default_value = "stdout", value_parser = config::parse_serial)]
    serial: SerialOutput,
}

impl RunArgs {
    fn into_config(self) -> VmConfig {
        VmConfig {
            kernel: self.kernel,
            initramfs: self.initramfs,
            cmdline: self.cmdline,
            vcpus: self.cpus,
            memory: self.memory,
            serial: self.serial,
        }
    }
}

pub fn main(args: RunArgs) -> ExitCode {
    let config = args.into_config();
    // The control loop gets its own thread, named as design.md's thread map says; the main
    // thread only waits for its verdict.
    let vmm = std::thread::Builder::new()
        .name("vmm".into())
        .spawn(move || run_vm(&config));
    let code = match vmm.map(|handle| handle.join()) {
        Ok(Ok(code)) => code,
        Ok(Err(_)) => {
            eprintln!("podvisor: error: the vmm thread panicked");
            EXIT_INTERNAL_ERROR
        }
        Err(e) => {
            eprintln!("podvisor: error: cannot start the vmm thread: {e}");
            EXIT_INTERNAL_ERROR
        }
    };
    ExitCode::from(code)
}

fn run_vm(config: &VmConfig) -> u8 {
    let vm = match Vm::build(config) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("podvisor: error: {e}");
            return e.exit_code();
        }
    };
    let clock = vm.clock();
    let result = vm.run();
    eprintln!("{}", clock.snapshot());
    match result {
        Ok(reason) => {
            match &reason {
                ExitReason::PowerOff => log::info!("{reason}"),
                ExitReason::Reboot => log::info!("{reason}"),
                ExitReason::TripleFault { .. } | ExitReason::InternalError(_) => {
                    eprintln!("podvisor: {reason}")
                }
            }
            reason.exit_code()
        }
        Err(e) => {
            eprintln!("podvisor: error: {e}");
            e.exit_code()
        }
    }
}
