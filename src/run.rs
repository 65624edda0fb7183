//! `podvisor run`: boot a guest from the command line and exit with a status that says how
//! it ended.

use std::path::PathBuf;
use std::process::ExitCode;

use vmm::config::{self, SerialOutput, VmConfig};
use vmm::exit::{ExitReason, EXIT_INTERNAL_ERROR, EXIT_INVALID_CONFIG};
use vmm::seccomp;
use vmm::snp_launch;
use vmm::vm::Vm;

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  the guest powered off, or SIGINT/SIGTERM stopped it
  1  VMM internal error (including KVM internal errors and emulation failures)
  2  invalid configuration or arguments
  3  the guest requested a reboot
  4  a vCPU triple-faulted
  5  the guest reported a crash, or (SEV-SNP) asked to be terminated

At exit, one line on stderr reports boot timing in microseconds since process start:
  boot-timing first-instruction-us=N [marker-XX-us=N ...] exit-us=N
(XX: the byte the guest wrote to the boot-progress port 0x440, two hex digits).";

#[derive(clap::Args, Debug)]
#[command(after_help = EXIT_STATUS_HELP)]
pub struct RunArgs {
    /// Kernel image: bzImage, or ELF vmlinux (booted through PVH when it has the PVH note).
    #[arg(long, value_name = "PATH", required_unless_present = "igvm")]
    kernel: Option<PathBuf>,
    /// Initramfs loaded at the top of guest RAM below 4 GiB.
    #[arg(long, value_name = "PATH")]
    initramfs: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = config::DEFAULT_CMDLINE)]
    cmdline: String,
    /// Number of vCPUs: N or boot=N.
    #[arg(long, value_name = "N", default_value = "1", value_parser = config::parse_cpus)]
    cpus: u32,
    /// Guest RAM: SIZE or size=SIZE[,shared=on], with K, M, G or T suffix (binary units).
    /// shared=on backs it with a memfd that vhost-user backends can map (implied by --fs).
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = config::parse_memory_spec)]
    memory: config::MemorySpec,
    /// Where COM1 goes: stdout (stdin becomes its input), file=PATH (output only) or off.
    #[arg(long, value_name = "MODE", default_value = "stdout", value_parser = config::parse_serial)]
    serial: SerialOutput,
    /// Confidential platform: sev_snp=on (KVM SEV-SNP: launch, then run the guest) or
    /// sev_snp=model (software SNP platform: runs the launch, prints the launch digest and exits
    /// without running the guest).
    #[arg(long, value_name = "PLATFORM", requires = "igvm", value_parser = snp_launch::parse_platform)]
    platform: Option<snp_launch::SnpPlatform>,
    /// IGVM image of a confidential guest; replaces --kernel, --initramfs and --cmdline. With
    /// sev_snp=on the guest runs with the devices given; the console is off (a launchable
    /// policy never allows debugging). sev_snp=model only launches, so it takes no devices.
    #[arg(long, value_name = "FILE", requires = "platform",
          conflicts_with_all = ["kernel", "initramfs", "cmdline"])]
    igvm: Option<PathBuf>,
    /// HOST_DATA of a confidential guest (64 hex digits), copied into its attestation reports.
    #[arg(long, value_name = "HEX", requires = "igvm", value_parser = snp_launch::parse_host_data)]
    host_data: Option<snp::id_block::HostData>,
    /// How IGVM pages without data are measured and issued: normal (a NORMAL page of zeros,
    /// as the IGVM format defines it) or zero (the firmware ZERO type).
    #[arg(long, value_name = "TYPE", default_value = "normal", requires = "igvm")]
    empty_pages: snp::plan::EmptyPages,
    /// Certificate table (GHCB extended guest request format: a GUID table ended by 24 zero
    /// bytes, then the certificates) the guest receives with its attestation reports; checked
    /// at start-up. With sev_snp=on it needs a kernel with KVM_SEV_SNP_ENABLE_REQ_CERTS.
    #[arg(long, value_name = "FILE", requires = "igvm", value_parser = snp_launch::parse_certs)]
    snp_certs: Option<std::sync::Arc<snp::certs::CertTable>>,
    /// A virtio-blk disk: path=FILE[,readonly=on][,num_queues=N][,queue_size=N][,id=NAME].
    /// Repeatable; disks take PCI slots 1, 2, … in the order given.
    #[arg(long = "disk", value_name = "DISK", value_parser = config::disk::parse_disk)]
    disks: Vec<config::disk::DiskConfig>,
    /// A virtio-vsock device: cid=N,socket=PATH. Host clients connect to PATH and send
    /// `CONNECT <port>`; guest connections to host port P go to PATH_P.
    #[arg(long = "vsock", value_name = "VSOCK", value_parser = config::vsock::parse_vsock)]
    vsock: Option<config::vsock::VsockConfig>,
    /// A virtio-rng device fed from a host entropy source: src=PATH (e.g. /dev/urandom).
    /// It takes the PCI slot after every other device.
    #[arg(long = "rng", value_name = "RNG", value_parser = config::rng::parse_rng)]
    rng: Option<config::rng::RngConfig>,
    /// A virtio-fs share served by a vhost-user backend (virtiofsd) listening on PATH:
    /// tag=NAME,socket=PATH[,num_queues=N][,queue_size=N][,id=NAME]. Repeatable; shares take
    /// the PCI slots after vsock. The guest mounts it with `mount -t virtiofs NAME DIR`.
    #[arg(long = "fs", value_name = "FS", value_parser = config::fs::parse_fs)]
    fs: Vec<config::fs::FsConfig>,
    #[command(flatten)]
    confinement: crate::confinement::ConfinementArgs,
}

impl RunArgs {
    fn into_config(self) -> VmConfig {
        VmConfig {
            kernel: self.kernel.unwrap_or_default(),
            initramfs: self.initramfs,
            cmdline: self.cmdline,
            vcpus: self.cpus,
            memory: self.memory.size,
            shared_memory: self.memory.shared,
            serial: self.serial,
            disks: self.disks,
            vsock: self.vsock,
            fs: self.fs,
            rng: self.rng,
        }
    }
}

pub fn main(args: RunArgs) -> ExitCode {
    // The main thread is confined first; every thread it starts inherits the `vmm` filter.
    if let Err(e) = seccomp::init_confined(args.confinement.seccomp) {
        eprintln!("podvisor: error: {e}");
        return ExitCode::from(EXIT_INTERNAL_ERROR);
    }
    let confidential = match (args.platform, args.igvm.clone()) {
        (Some(platform), Some(igvm)) => Some(snp_launch::SnpConfig {
            platform,
            igvm,
            host_data: args.host_data.unwrap_or_default(),
            vcpus: args.cpus,
            memory: args.memory.size,
            empty_pages: args.empty_pages,
            certs: args.snp_certs.clone(),
        }),
        _ => None,
    };
    if let Some(snp) = &confidential {
        if snp.platform == snp_launch::SnpPlatform::Model {
            if !(args.disks.is_empty() && args.fs.is_empty())
                || args.vsock.is_some()
                || args.rng.is_some()
            {
                eprintln!(
                    "podvisor: error: --platform sev_snp=model only runs the launch; devices \
                     need a guest that runs (sev_snp=on)"
                );
                return ExitCode::from(EXIT_INVALID_CONFIG);
            }
            return run_model_launch(snp);
        }
    }
    args.confinement.enable_landlock();
    let rlimit_nofile = args.confinement.rlimit_nofile;
    let config = args.into_config();
    let budget = vmm::fd_limit::FdBudget::for_vm(&config).total();
    if let Err(e) = vmm::fd_limit::apply(rlimit_nofile, budget) {
        eprintln!("podvisor: error: {e}");
        return ExitCode::from(EXIT_INVALID_CONFIG);
    }
    // The control loop gets its own thread, named as design.md's thread map says; the main
    // thread only waits for its verdict.
    let vmm = std::thread::Builder::new()
        .name("vmm".into())
        .spawn(move || match &confidential {
            Some(snp) => run_confidential_vm(config, snp),
            None => run_vm(&config),
        });
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
    match Vm::build(config) {
        Ok(vm) => run_built_vm(vm),
        Err(e) => {
            eprintln!("podvisor: error: {e}");
            e.exit_code()
        }
    }
}

/// Runs a built VM to its end; SIGINT/SIGTERM stop it.
fn run_built_vm(vm: Vm) -> u8 {
    let clock = vm.clock();
    if let Err(e) = vmm::signals::stop_on_termination(vm.handle()) {
        log::warn!("{e}; SIGINT/SIGTERM will end the process without stopping the VM");
    }
    let result = vm.run();
    eprintln!("{}", clock.snapshot());
    match result {
        Ok(reason) => {
            match &reason {
                ExitReason::PowerOff | ExitReason::Reboot | ExitReason::HostStop => {
                    log::info!("{reason}")
                }
                ExitReason::TripleFault { .. }
                | ExitReason::GuestPanic { .. }
                | ExitReason::GuestTerminated { .. }
                | ExitReason::InternalError(_) => {
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

/// `--platform sev_snp=model`: the launch on the software platform, nothing runs after it.
fn run_model_launch(config: &snp_launch::SnpConfig) -> ExitCode {
    match snp_launch::run_model(config) {
        Ok(report) => {
            println!("sev-snp launch digest: {}", report.expected);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("podvisor: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `--platform sev_snp=on`: launch on KVM SEV-SNP, then run the guest like any other.
fn run_confidential_vm(mut config: VmConfig, snp: &snp_launch::SnpConfig) -> u8 {
    if config.serial != SerialOutput::Off {
        log::info!("the console of a confidential VM is off: its policy does not allow debugging");
        config.serial = SerialOutput::Off;
    }
    match vmm::confidential_vm::build(&config, snp) {
        Ok((vm, report)) => {
            println!("sev-snp launch digest: {}", report.expected);
            run_built_vm(vm)
        }
        Err(e) => {
            eprintln!("podvisor: error: {e}");
            e.exit_code()
        }
    }
}
