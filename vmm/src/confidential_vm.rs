//! Running an SEV-SNP guest on KVM once it is launched (data flow 4, after "SNP launch").
//!
//! The launch ([`crate::snp_launch`], `snp::launch`) creates the VM as `KVM_X86_SNP_VM`, backs
//! every RAM slot with a guest_memfd plus a shared mapping, creates the vCPUs and seals their
//! state with SNP_LAUNCH_FINISH. What is left is what any VM needs, minus what the host may no
//! longer do: no kernel load, no ACPI tables, no register set-up (guest memory and vCPU state
//! are the guest's now). So [`build`] creates the in-kernel irqchip and PIT before the launch
//! creates the vCPUs (KVM refuses them afterwards), gives each vCPU the host's CPUID at
//! creation, and then hands the launched VM to [`Vm::assemble`] with the vCPUs it made, the
//! shared view of RAM (all that devices ever see) and the conversions that serve the guest's
//! page-state changes ([`crate::snp_memory`]).
//!
//! [`from_launched`] is that last step on its own, so the same code runs any VM whose vCPUs
//! and memory someone else set up; the tests drive it with a plain KVM VM on hosts without
//! SNP.

use std::sync::Arc;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use snp::exits::ImplicitConversion;
use snp::launch::kvm::KvmBackend;
use snp::launch::kvm_sys::{snp_unavailable_reason, KvmSnpVm, LaunchedVm};
use snp::launch::{launch, ram_slots, LaunchError, LaunchReport, RamSlot};
use snp::plan::{RamLayout, PAGE_SIZE_U64};

use crate::config::{HostLimits, VmConfig, MAX_VCPUS};
use crate::exit::EXIT_INVALID_CONFIG;
use crate::snp_certs::CertRequests;
use crate::snp_launch::{SnpConfig, SnpLaunchError};
use crate::snp_memory::{Conversions, KvmMemoryAttributes, MemoryAttributes};
use crate::vm::{Vm, VmError};

/// Errors of building a confidential VM: the launch, or the VM around it.
#[derive(Debug, thiserror::Error)]
pub enum ConfidentialVmError {
    #[error(transparent)]
    Launch(#[from] SnpLaunchError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("the launch created {launched} vCPUs but the VM is configured with {configured}")]
    VcpuCount { launched: usize, configured: u32 },
    #[error("the VM has {} vCPUs and {} bytes of RAM but the launch {} and {}", vm.0, vm.1, launch.0, launch.1)]
    Mismatch { vm: (u32, u64), launch: (u32, u64) },
}

impl ConfidentialVmError {
    /// Process exit status (see [`crate::exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            ConfidentialVmError::Launch(e) => e.exit_code(),
            ConfidentialVmError::Vm(e) => e.exit_code(),
            ConfidentialVmError::VcpuCount { .. } | ConfidentialVmError::Mismatch { .. } => {
                EXIT_INVALID_CONFIG
            }
        }
    }
}

/// The private/shared map of a launched guest: its RAM layout and the slot of each region.
pub struct PrivateMemory {
    pub ram: RamLayout,
    pub slots: Vec<RamSlot>,
    /// `(gpa, size)` of the ranges the launch made private.
    pub launched: Vec<(u64, u64)>,
    /// What applies conversions on the host; `None`: KVM_SET_MEMORY_ATTRIBUTES on the VM and
    /// hole punches in the launched VM's guest_memfds.
    pub host: Option<Box<dyn MemoryAttributes>>,
    /// The certificate table answering the guest's certificate requests
    /// (`KVM_EXIT_SNP_REQ_CERTS`, enabled at launch when a table is configured).
    pub certs: Option<snp::certs::CertTable>,
}

/// Launches the IGVM image of `snp` on KVM SEV-SNP and builds the VM that runs it, with the
/// devices, serial port and vCPU count of `config` (whose kernel fields are unused).
pub fn build(
    config: &VmConfig,
    snp: &SnpConfig,
) -> Result<(Vm, LaunchReport), ConfidentialVmError> {
    if let Some(reason) = snp_unavailable_reason() {
        return Err(SnpLaunchError::from(LaunchError::Unavailable(reason)).into());
    }
    if config.vcpus != snp.vcpus || config.memory != snp.memory {
        return Err(ConfidentialVmError::Mismatch {
            vm: (config.vcpus, config.memory),
            launch: (snp.vcpus, snp.memory),
        });
    }
    // Before the launch, so a bad device or size costs no SNP launch.
    validate(config)?;
    let plan = crate::snp_launch::plan(snp)?;
    let mut sys = KvmSnpVm::create().map_err(SnpLaunchError::from)?;
    crate::vm::create_platform(sys.vm())?;
    let supported = sys
        .kvm()
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|source| VmError::Kvm {
            op: "KVM_GET_SUPPORTED_CPUID",
            source,
        })?;
    let count = snp.vcpus;
    sys.set_vcpu_cpuid(Box::new(move |index| {
        let mut cpuid = supported.clone();
        crate::cpu::cpuid::patch_for_vcpu(cpuid.as_mut_slice(), index, count);
        cpuid
    }));
    if snp.certs.is_some() && !snp::launch::req_certs::kernel_supports_req_certs(sys.kvm()) {
        return Err(SnpLaunchError::Unavailable(
            "--snp-certs needs KVM_SEV_SNP_ENABLE_REQ_CERTS, which this kernel does not offer \
             (no KVM_X86_SEV_SNP_REQ_CERTS attribute)"
                .into(),
        )
        .into());
    }
    let mut backend = KvmBackend::new(sys);
    if snp.certs.is_some() {
        backend = backend.with_req_certs();
    }
    let report = launch(&plan, &mut backend).map_err(SnpLaunchError::from)?;
    // Read by scripts/bench/all --snp, like the boot-timing line.
    eprintln!("{}", report.timing);
    let parts = backend
        .into_inner()
        .into_parts()
        .map_err(SnpLaunchError::from)?;
    let private = PrivateMemory {
        slots: ram_slots(&plan, 0),
        launched: plan.pages.iter().map(|p| (p.gpa, PAGE_SIZE_U64)).collect(),
        ram: plan.ram,
        host: None,
        certs: snp.certs.as_deref().cloned(),
    };
    let vm = assemble(config, parts, Some(private))?;
    Ok((vm, report))
}

fn validate(config: &VmConfig) -> Result<(), ConfidentialVmError> {
    let host = HostLimits::probe(MAX_VCPUS as usize).map_err(VmError::HostLimits)?;
    config.validate_machine(&host).map_err(VmError::Config)?;
    Ok(())
}

/// A [`Vm`] around vCPUs and memory that were set up elsewhere (by a confidential launch, or a
/// test). With `private`, the guest_memfds of `parts` back private pages and the vCPUs serve
/// the guest's conversions; without, the VM is an ordinary one.
pub fn from_launched(
    config: &VmConfig,
    parts: LaunchedVm,
    private: Option<PrivateMemory>,
) -> Result<Vm, ConfidentialVmError> {
    validate(config)?;
    assemble(config, parts, private)
}

/// [`from_launched`] for a configuration already validated.
fn assemble(
    config: &VmConfig,
    parts: LaunchedVm,
    private: Option<PrivateMemory>,
) -> Result<Vm, ConfidentialVmError> {
    if parts.vcpus.len() != config.vcpus as usize {
        return Err(ConfidentialVmError::VcpuCount {
            launched: parts.vcpus.len(),
            configured: config.vcpus,
        });
    }
    let serial_out = crate::vm::serial_writer(&config.serial)?;
    let LaunchedVm {
        vcpus,
        vm,
        kvm,
        guest_memfds,
        memory,
    } = parts;
    let vm = Arc::new(vm);
    let mut certs = None;
    let conversions = private.map(|p| {
        let host = p.host.unwrap_or_else(|| {
            Box::new(KvmMemoryAttributes {
                vm: vm.clone(),
                memfds: guest_memfds,
            })
        });
        let conversions =
            Conversions::new(p.ram.clone(), p.slots, ImplicitConversion::default(), host)
                .with_private(&p.launched);
        certs = p.certs.map(|table| {
            Arc::new(
                CertRequests::new(table.bytes().to_vec(), p.ram, Box::new(memory.clone()))
                    .with_guard(conversions.dma_guard()),
            )
        });
        Arc::new(conversions)
    });
    Ok(Vm::assemble(
        config,
        kvm,
        vm,
        memory,
        serial_out,
        crate::vm::VcpuOrigin::Launched {
            fds: vcpus,
            conversions,
            certs,
        },
    )?)
}
