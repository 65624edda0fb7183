//! The options with which the process confines itself, the same for `run` and API mode.

use vmm::landlock::LandlockRule;
use vmm::seccomp::SeccompMode;

#[derive(clap::Args, Debug, Default)]
pub struct ConfinementArgs {
    /// System-call filters per thread: true (a forbidden call kills the process), log (the
    /// kernel logs it and lets it through) or false (no filters).
    #[arg(long, value_name = "true|false|log", default_value = "true",
          value_parser = vmm::seccomp::parse_mode)]
    pub seccomp: SeccompMode,
    /// Confine the running VM's threads with Landlock to the files it was configured with
    /// (kernel, initramfs, disks, entropy source, serial file) and --landlock-rules.
    #[arg(long)]
    pub landlock: bool,
    /// One more path the running VM may open with --landlock: path=P,access=r|rw
    /// (repeatable), e.g. the directory disks hot-plugged later come from.
    #[arg(long = "landlock-rules", value_name = "RULE", requires = "landlock",
          value_parser = vmm::landlock::parse_rule)]
    pub landlock_rules: Vec<LandlockRule>,
    /// Ceiling on open file descriptors (soft and hard RLIMIT_NOFILE), set at start-up before
    /// any guest runs. Default: a budget computed from the VM's vCPUs, devices and queues, or in
    /// API mode for the largest VM the API accepts plus every API client (see
    /// docs/threat-model.md).
    #[arg(long = "rlimit-nofile", value_name = "N", value_parser = vmm::fd_limit::parse_limit)]
    pub rlimit_nofile: Option<u64>,
}

impl ConfinementArgs {
    /// With --landlock: the VMs built from now on confine themselves (with the extra rules).
    pub fn enable_landlock(&self) {
        if self.landlock {
            vmm::landlock::enable(self.landlock_rules.clone());
        }
    }
}
