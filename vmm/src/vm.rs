//! One VM on KVM: built from a validated [`VmConfig`], run until it ends, reported as an
//! [`ExitReason`].
//!
//! [`Vm::build`] does all the fallible work up front (KVM VM, irqchip and PIT, RAM, ACPI
//! tables, kernel, devices, vCPU state) so that a bad configuration never starts a vCPU.
//! [`Vm::run`] is the `vmm` control loop: it starts the `vcpuN` threads, waits for the first
//! event that ends the VM (a device's [`GuestRequest`], a vCPU exit), then stops and joins
//! every vCPU. Host requests (stop, pause, resume) reach the same loop through a [`VmHandle`].

use std::io::Write;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use devices::bus::{Bus, BusError};
use devices::legacy::ged::{self, Ged, EVENT_POWER_BUTTON};
use devices::legacy::{acpi_pm, boot_marker, i8042, serial};
use devices::{GuestRequest, GuestRequestHandler};
use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::acpi::{self, AcpiConfig};
use crate::boot::{self, BootError, BootSource};
use crate::clock::BootClock;
use crate::config::{ConfigError, HostLimits, SerialOutput, VmConfig, MAX_VCPUS};
use crate::console::{self, SharedSerial};
use crate::cpu::{self, CpuError, EntryMode, VcpuSetup};
use crate::exit::{ExitReason, EXIT_INTERNAL_ERROR, EXIT_INVALID_CONFIG};
use crate::hotplug::{Hotplug, HotplugError, HotplugRequest};
use crate::layout;
use crate::memory::{self, MemoryError};
use crate::pci_bus::{DeviceList, DeviceSpec, PciBus};
use crate::pci_devices::PlacedDevice;
use crate::vcpu::{self, RunControl, Vcpu, VcpuError, VmEvent};

/// How often stragglers are kicked again while the VM stops or pauses.
const KICK_INTERVAL: Duration = Duration::from_millis(5);
/// How long a pause waits for every vCPU to park before giving up (and resuming).
const PAUSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    #[error("KVM lacks {0}, which podvisor needs")]
    MissingCapability(&'static str),
    #[error("cannot read host limits: {0}")]
    HostLimits(std::io::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{op} failed: {source}")]
    Kvm {
        op: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("ACPI tables: {0}")]
    Acpi(#[from] acpi::AcpiError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error("cannot open serial output file {path:?}: {source}")]
    SerialFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the {what} eventfd: {source}")]
    EventFd {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("serial port: {0}")]
    Serial(#[from] serial::SerialError),
    #[error("cannot place the {what} on the I/O bus: {source}")]
    Bus {
        what: &'static str,
        source: BusError,
    },
    #[error(transparent)]
    Cpu(#[from] CpuError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("PCI devices: {0}")]
    Pci(#[from] crate::pci_devices::PciSetupError),
    #[error(transparent)]
    Landlock(#[from] crate::landlock::LandlockError),
    #[error("all vCPU threads ended without a reason")]
    VcpusVanished,
    #[error("the VM is no longer running")]
    NotRunning,
    #[error("not every vCPU parked within {0:?}")]
    PauseTimeout(Duration),
}

impl VmError {
    /// The process exit status for this failure: 2 if the user's input is at fault, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            VmError::Config(_) | VmError::SerialFile { .. } => EXIT_INVALID_CONFIG,
            VmError::Boot(e) if e.is_config_error() => EXIT_INVALID_CONFIG,
            // A share whose backend is missing or does not speak vhost-user: the
            // configuration names something that cannot serve it.
            VmError::Pci(crate::pci_devices::PciSetupError::Fs { .. }) => EXIT_INVALID_CONFIG,
            _ => EXIT_INTERNAL_ERROR,
        }
    }
}

fn kvm_err(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { op, source }
}

/// Lets other threads ask a VM to stop; cheap to clone.
#[derive(Clone)]
pub struct VmHandle {
    events: Sender<VmEvent>,
    ged: Arc<Ged>,
}

impl VmHandle {
    /// Asks the control loop to stop every vCPU and end the run with
    /// [`ExitReason::HostStop`]. Returns false if the VM has already been torn down.
    pub fn stop(&self) -> bool {
        self.events.send(VmEvent::HostStop).is_ok()
    }

    /// Parks every vCPU outside `KVM_RUN` and returns once they all are (the `Paused` state).
    pub fn pause(&self) -> Result<(), VmError> {
        if self.request(VmEvent::Pause)? {
            Ok(())
        } else {
            Err(VmError::PauseTimeout(PAUSE_TIMEOUT))
        }
    }

    /// Lets paused vCPUs run again.
    pub fn resume(&self) -> Result<(), VmError> {
        self.request(VmEvent::Resume).map(|_| ())
    }

    /// Presses the ACPI power button: the GED raises its interrupt and the guest's AML
    /// notifies the `PNP0C0C` device; what happens next is the guest's choice.
    pub fn power_button(&self) -> Result<(), VmError> {
        self.ged
            .raise(EVENT_POWER_BUTTON)
            .map_err(|source| VmError::EventFd {
                what: "power-button interrupt",
                source,
            })
    }

    /// Puts a device on the running VM's bus and tells the guest; returns where it landed.
    pub fn add_device(&self, spec: DeviceSpec) -> Result<PlacedDevice, HotplugError> {
        self.hotplug(|reply| HotplugRequest::Add { spec, reply })
    }

    /// Asks the guest to release device `id` and returns once it did and the device is gone
    /// (or with [`HotplugError::EjectTimeout`]).
    pub fn remove_device(&self, id: &str) -> Result<(), HotplugError> {
        let id = id.to_owned();
        self.hotplug(|reply| HotplugRequest::Remove { id, reply })
    }

    /// Sends a hot-plug request to the control loop and waits for its answer.
    fn hotplug<T>(
        &self,
        request: impl FnOnce(Sender<Result<T, HotplugError>>) -> HotplugRequest,
    ) -> Result<T, HotplugError> {
        let (reply, answer) = mpsc::channel();
        self.events
            .send(VmEvent::Hotplug(request(reply)))
            .map_err(|_| HotplugError::NotRunning)?;
        answer.recv().map_err(|_| HotplugError::NotRunning)?
    }

    fn request(&self, event: fn(Sender<bool>) -> VmEvent) -> Result<bool, VmError> {
        let (reply, answer) = mpsc::channel();
        self.events
            .send(event(reply))
            .map_err(|_| VmError::NotRunning)?;
        answer.recv().map_err(|_| VmError::NotRunning)
    }
}

/// A built, not yet running VM.
pub struct Vm {
    // Field order matters for drop: vCPU fds go before the VM fd, RAM last.
    vcpus: Vec<Vcpu>,
    /// Shared with the PCI devices' MSI router and ioeventfd registry.
    _vm_fd: Arc<VmFd>,
    _kvm: Kvm,
    _memory: GuestMemoryMmap,
    control: Arc<RunControl>,
    clock: Arc<BootClock>,
    events: Receiver<VmEvent>,
    /// Kept so [`Vm::handle`] can hand out senders.
    events_tx: Sender<VmEvent>,
    /// Interrupt eventfds registered as irqfds, kept for the VM's lifetime.
    _irqfds: Vec<EventFd>,
    /// The UART that stdin feeds once the VM runs.
    console_input: Option<SharedSerial>,
    /// The ACPI Generic Event Device (power button).
    ged: Arc<Ged>,
    /// The root bus; devices come and go at run time through [`VmHandle::add_device`] and
    /// [`VmHandle::remove_device`].
    bus: PciBus,
    hotplug: Hotplug,
    /// With `--landlock`: the files the running VM may open.
    landlock: Option<Vec<crate::landlock::LandlockRule>>,
}

impl Vm {
    /// Opens KVM, validates `config` against this host and builds the whole VM.
    pub fn build(config: &VmConfig) -> Result<Self, VmError> {
        // Everything that can be refused without KVM is checked first, so a bad command line
        // gets status 2 even on a host without /dev/kvm.
        let host = HostLimits::probe(MAX_VCPUS as usize).map_err(VmError::HostLimits)?;
        config.validate(&host)?;
        boot::check_kernel_format(&config.kernel)?;
        let serial_out = serial_writer(&config.serial)?;

        let kvm = open_kvm()?;
        config.validate(&HostLimits {
            max_vcpus: u32::try_from(kvm.get_max_vcpus()).unwrap_or(u32::MAX),
            ..host
        })?;

        let vm_fd = Arc::new(kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?);
        let shared_memory = config.needs_shared_memory();
        if shared_memory && !config.shared_memory {
            log::info!("guest RAM is shared (memfd) because a vhost-user device needs to map it");
        }
        let memory = memory::create_guest_memory(config.memory, shared_memory)?;
        // RAM slots before the in-kernel irqchip: registered after it, a 128 MiB slot took
        // 5–7 ms instead of 0.1 ms on PVM (docs/benchmarks.md, "VMM setup").
        memory::register_with_kvm(&vm_fd, &memory)?;
        create_platform(&vm_fd)?;

        let acpi_config = AcpiConfig {
            vcpus: config.vcpus,
            serial: config.serial != SerialOutput::Off,
            pci: true,
        };
        let rsdp = acpi::create_acpi_tables(&memory, &acpi_config)?;
        let entry = boot::load(
            &memory,
            &BootSource {
                kernel: &config.kernel,
                initramfs: config.initramfs.as_deref(),
                cmdline: &config.cmdline,
                mem_size: config.memory,
                rsdp: Some(rsdp.0),
            },
        )?;

        Self::assemble(
            config,
            kvm,
            vm_fd,
            memory,
            serial_out,
            VcpuOrigin::Boot(entry),
        )
    }

    /// Everything after guest RAM holds what the guest boots from: the buses and devices, the
    /// vCPUs (created here, or taken over from a confidential launch) and the control state.
    /// The irqchip and PIT already exist (they must precede the vCPUs).
    pub(crate) fn assemble(
        config: &VmConfig,
        kvm: Kvm,
        vm_fd: Arc<VmFd>,
        memory: GuestMemoryMmap,
        serial_out: Option<Box<dyn Write + Send>>,
        origin: VcpuOrigin,
    ) -> Result<Self, VmError> {
        let (tx, rx) = mpsc::channel();
        let control = Arc::new(RunControl::default());
        let markers = boot_marker::BootMarkerLog::new();
        let clock = Arc::new(BootClock::new(markers.clone()));
        let PioDevices {
            bus: mut pio,
            irqfds,
            console: uart,
            ged,
        } = build_pio_bus(&vm_fd, serial_out, &control, &tx, markers)?;
        let mut mmio = Bus::new();
        let eject_tx = tx.clone();
        let on_eject = Box::new(move |slots: u32| {
            // A closed channel means the VM is being torn down; nothing to remove then.
            let _ = eject_tx.send(VmEvent::Hotplug(HotplugRequest::Ejected(slots)));
        });
        let (bus, controller) = crate::pci_devices::attach(
            &vm_fd,
            &memory,
            crate::pci_devices::DeviceSet::of(config).with_dma(origin.dma_guard()),
            &mut pio,
            &mut mmio,
            on_eject,
        )?;
        let hotplug = Hotplug::new(controller, ged.clone());
        // Only a console on the terminal takes input; file and off are output-only.
        let console_input = uart.filter(|_| config.serial == SerialOutput::Stdout);
        let shared = VcpuShared {
            pio,
            mmio,
            control: control.clone(),
            events: tx.clone(),
            clock: clock.clone(),
        };
        let vcpus = match origin {
            VcpuOrigin::Boot(entry) => {
                let vcpus = create_vcpus(&kvm, &vm_fd, config.vcpus, &memory, entry, &shared)?;
                log::info!(
                    "VM built: {} vCPU(s), {} MiB, entry {entry:x?}",
                    config.vcpus,
                    config.memory >> 20
                );
                vcpus
            }
            VcpuOrigin::Launched {
                fds,
                conversions,
                certs,
            } => {
                log::info!(
                    "confidential VM built: {} vCPU(s), {} MiB",
                    fds.len(),
                    config.memory >> 20
                );
                adopt_vcpus(fds, conversions, certs, &shared)
            }
        };
        Ok(Self {
            vcpus,
            _vm_fd: vm_fd,
            _kvm: kvm,
            _memory: memory,
            control,
            clock,
            events: rx,
            events_tx: tx,
            _irqfds: irqfds,
            ged,
            console_input,
            bus,
            hotplug,
            landlock: crate::landlock::plan(config),
        })
    }

    /// A handle to stop the VM from another thread (the API, a signal handler).
    pub fn handle(&self) -> VmHandle {
        VmHandle {
            ged: self.ged.clone(),
            events: self.events_tx.clone(),
        }
    }

    /// The boot timeline, live while the VM runs.
    pub fn clock(&self) -> Arc<BootClock> {
        self.clock.clone()
    }

    /// The PCI devices with their slots and, for vhost-user devices, whether the backend has
    /// gone; live for as long as anyone holds it.
    pub fn devices(&self) -> Arc<DeviceList> {
        self.bus.list()
    }

    /// Runs the VM to its end. Returns why it ended; `Err` only if it could not start.
    pub fn run(mut self) -> Result<ExitReason, VmError> {
        // Before any vCPU or console thread exists, so that all of them inherit it; device
        // workers, started by the seccomp spawner, take it on themselves.
        if let Some(rules) = &self.landlock {
            crate::landlock::confine_vm(rules)?;
            log::info!(
                "Landlock: the VM's threads may open only its {} configured paths",
                rules.len()
            );
        }
        vcpu::install_kick_handler()?;
        if let Some(uart) = self.console_input.take() {
            if let Err(e) = console::forward_input(uart, std::io::stdin()) {
                log::warn!("console input unavailable: {e}");
            }
        }
        let mut threads: Vec<(u32, JoinHandle<()>)> = Vec::new();
        let mut start_error = None;
        for vcpu in self.vcpus.drain(..) {
            let index = vcpu.index;
            match vcpu.spawn() {
                Ok(handle) => threads.push((index, handle)),
                Err(e) => {
                    start_error = Some(e);
                    break;
                }
            }
        }
        let reason = match start_error {
            Some(_) => None,
            None => self.wait_for_end(&threads),
        };
        self.stop_all(&threads);
        for (index, handle) in threads {
            if handle.join().is_err() {
                log::error!("vcpu{index} thread panicked");
            }
        }
        self.clock.record_exit(Instant::now());
        if let Some(e) = start_error {
            return Err(e.into());
        }
        reason.ok_or(VmError::VcpusVanished)
    }

    /// Blocks until something ends the VM, serving host requests meanwhile.
    fn wait_for_end(&mut self, threads: &[(u32, JoinHandle<()>)]) -> Option<ExitReason> {
        let mut running = threads.len();
        while running > 0 {
            let event = match self.hotplug.next_deadline() {
                None => self.events.recv().ok()?,
                Some(deadline) => {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    match self.events.recv_timeout(wait) {
                        Ok(event) => event,
                        Err(RecvTimeoutError::Timeout) => {
                            self.hotplug.expire(Instant::now());
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => return None,
                    }
                }
            };
            match event {
                VmEvent::Hotplug(request) => self.hotplug.handle(&mut self.bus, request),
                VmEvent::Guest(GuestRequest::PowerOff) => return Some(ExitReason::PowerOff),
                VmEvent::Guest(GuestRequest::Reset) => return Some(ExitReason::Reboot),
                VmEvent::Exit { reason, .. } => return Some(reason),
                VmEvent::HostStop => return Some(ExitReason::HostStop),
                VmEvent::Pause(reply) => {
                    let _ = reply.send(self.pause_all(threads));
                }
                VmEvent::Resume(reply) => {
                    self.control.set_paused(false);
                    let _ = reply.send(true);
                }
                VmEvent::Stopped { index } => {
                    log::warn!("vcpu{index} stopped without a reason");
                    running -= 1;
                }
            }
        }
        None
    }

    /// Requests a pause and kicks vCPUs out of `KVM_RUN` until every live thread is parked.
    /// On timeout the pause is withdrawn, so a failed pause never leaves the VM half-stopped.
    fn pause_all(&self, threads: &[(u32, JoinHandle<()>)]) -> bool {
        self.control.set_paused(true);
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        loop {
            let live = threads.iter().filter(|(_, h)| !h.is_finished()).count();
            if self.control.wait_parked(live, KICK_INTERVAL) {
                return true;
            }
            if Instant::now() >= deadline {
                self.control.set_paused(false);
                return false;
            }
            vcpu::kick(threads, |index| {
                threads
                    .iter()
                    .any(|(i, handle)| *i == index && !handle.is_finished())
            });
        }
    }

    /// Sets the stop flag and kicks vCPUs until every thread has finished.
    fn stop_all(&self, threads: &[(u32, JoinHandle<()>)]) {
        self.control.request_stop();
        loop {
            let running = |index: u32| {
                threads
                    .iter()
                    .any(|(i, handle)| *i == index && !handle.is_finished())
            };
            if !threads.iter().any(|(index, _)| running(*index)) {
                return;
            }
            vcpu::kick(threads, running);
            // Waits a little for the next event; late exits and stops need no answer now.
            if let Err(RecvTimeoutError::Disconnected) = self.events.recv_timeout(KICK_INTERVAL) {
                std::thread::sleep(KICK_INTERVAL);
            }
        }
    }
}

/// Opens `/dev/kvm` and checks the capabilities every VM needs.
pub(crate) fn open_kvm() -> Result<Kvm, VmError> {
    let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
    for (cap, name) in [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
        (Cap::Pit2, "KVM_CAP_PIT2"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(VmError::MissingCapability(name));
        }
    }
    Ok(kvm)
}

/// What every vCPU thread gets a clone of.
struct VcpuShared {
    pio: Bus,
    mmio: Bus,
    control: Arc<RunControl>,
    events: Sender<VmEvent>,
    clock: Arc<BootClock>,
}

impl VcpuShared {
    /// vCPU `index` on `fd`, sharing the VM's buses and control state.
    fn vcpu(
        &self,
        index: u32,
        fd: kvm_ioctls::VcpuFd,
        conversions: Option<Arc<crate::snp_memory::Conversions>>,
        certs: Option<Arc<crate::snp_certs::CertRequests>>,
    ) -> Vcpu {
        Vcpu {
            index,
            fd,
            pio: self.pio.clone(),
            mmio: self.mmio.clone(),
            control: self.control.clone(),
            events: self.events.clone(),
            clock: self.clock.clone(),
            conversions,
            certs,
        }
    }
}

/// Creates and configures `count` vCPUs; vCPU 0 gets the boot registers for `entry`.
fn create_vcpus(
    kvm: &Kvm,
    vm_fd: &VmFd,
    count: u32,
    memory: &GuestMemoryMmap,
    entry: EntryMode,
    shared: &VcpuShared,
) -> Result<Vec<Vcpu>, VmError> {
    let supported_cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    let msr_list = kvm
        .get_msr_index_list()
        .map_err(kvm_err("KVM_GET_MSR_INDEX_LIST"))?;
    let mut vcpus = Vec::new();
    for index in 0..count {
        let fd = vm_fd
            .create_vcpu(u64::from(index))
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;
        cpu::configure(
            &fd,
            &VcpuSetup {
                index,
                count,
                supported_cpuid: &supported_cpuid,
                supported_msrs: msr_list.as_slice(),
                boot: (index == 0).then_some((memory, entry)),
            },
        )?;
        vcpus.push(shared.vcpu(index, fd, None, None));
    }
    Ok(vcpus)
}

/// Where a VM's vCPUs come from.
pub(crate) enum VcpuOrigin {
    /// Created and configured by [`Vm::assemble`]; vCPU 0 enters the loaded kernel here.
    Boot(EntryMode),
    /// Created by a confidential launch, their state sealed by SNP_LAUNCH_FINISH; with the
    /// conversions their private/shared exits apply.
    Launched {
        fds: Vec<kvm_ioctls::VcpuFd>,
        conversions: Option<Arc<crate::snp_memory::Conversions>>,
        /// Answers `KVM_EXIT_SNP_REQ_CERTS` when the launch enabled it.
        certs: Option<Arc<crate::snp_certs::CertRequests>>,
    },
}

impl VcpuOrigin {
    /// A confidential guest's devices see only its shared pages.
    fn dma_guard(&self) -> devices::dma::DmaGuard {
        match self {
            VcpuOrigin::Launched {
                conversions: Some(c),
                ..
            } => c.dma_guard(),
            _ => devices::dma::DmaGuard::unrestricted(),
        }
    }
}

/// Wraps vCPUs someone else created (in index order) for the run loop.
fn adopt_vcpus(
    fds: Vec<kvm_ioctls::VcpuFd>,
    conversions: Option<Arc<crate::snp_memory::Conversions>>,
    certs: Option<Arc<crate::snp_certs::CertRequests>>,
    shared: &VcpuShared,
) -> Vec<Vcpu> {
    (0u32..)
        .zip(fds)
        .map(|(index, fd)| shared.vcpu(index, fd, conversions.clone(), certs.clone()))
        .collect()
}

/// In-kernel interrupt controllers and PIT, plus the addresses KVM needs on Intel hosts.
pub fn create_platform(vm_fd: &VmFd) -> Result<(), VmError> {
    vm_fd
        .set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDRESS)
        .map_err(kvm_err("KVM_SET_IDENTITY_MAP_ADDR"))?;
    vm_fd
        .set_tss_address(layout::KVM_TSS_ADDRESS as usize)
        .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
    vm_fd
        .create_irq_chip()
        .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm_fd.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))
}

/// The port-I/O bus and what the VM keeps of its devices.
struct PioDevices {
    bus: Bus,
    /// Interrupt eventfds registered as irqfds.
    irqfds: Vec<EventFd>,
    /// The UART, when the VM has a serial port.
    console: Option<SharedSerial>,
    ged: Arc<Ged>,
}

/// The legacy devices on the port bus: COM1 (unless off), the boot-marker port, the ACPI PM
/// registers and the i8042. Guest power-off/reset requests stop the vCPUs at once and are
/// forwarded to the control loop.
fn build_pio_bus(
    vm_fd: &VmFd,
    serial_out: Option<Box<dyn Write + Send>>,
    control: &Arc<RunControl>,
    tx: &Sender<VmEvent>,
    markers: boot_marker::BootMarkerLog,
) -> Result<PioDevices, VmError> {
    let mut bus = Bus::new();
    let mut irqfds = Vec::new();
    let bus_err = |what| move |source| VmError::Bus { what, source };
    let request_tx = tx.clone();
    let request_control = control.clone();
    let on_request: GuestRequestHandler = Arc::new(move |request| {
        request_control.request_stop();
        // A closed channel means the VM is already stopping.
        let _ = request_tx.send(VmEvent::Guest(request));
    });

    let mut console = None;
    if let Some(out) = serial_out {
        let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| VmError::EventFd {
            what: "serial interrupt",
            source,
        })?;
        let (uart, irq) = serial::Serial::with_interrupt_clone(irq, out)?;
        vm_fd
            .register_irqfd(&irq, serial::COM1_IRQ)
            .map_err(kvm_err("KVM_IRQFD (COM1)"))?;
        irqfds.push(irq);
        let uart: SharedSerial = Arc::new(Mutex::new(uart));
        bus.insert(
            uart.clone(),
            u64::from(serial::COM1_PORT),
            u64::from(serial::SERIAL_PORT_LEN),
        )
        .map_err(bus_err("serial port"))?;
        console = Some(uart);
    }
    bus.insert(
        Arc::new(Mutex::new(boot_marker::BootMarkerPort::new(
            crate::clock::start(),
            markers,
        ))),
        u64::from(boot_marker::BOOT_MARKER_PORT),
        u64::from(boot_marker::BOOT_MARKER_PORT_LEN),
    )
    .map_err(bus_err("boot marker port"))?;
    bus.insert(
        Arc::new(Mutex::new(acpi_pm::AcpiPm::new(on_request.clone()))),
        u64::from(acpi_pm::ACPI_PM_PORT),
        u64::from(acpi_pm::ACPI_PM_PORT_LEN),
    )
    .map_err(bus_err("ACPI PM registers"))?;
    bus.insert(
        Arc::new(Mutex::new(i8042::I8042::new(on_request))),
        u64::from(i8042::I8042_PORT),
        u64::from(i8042::I8042_PORT_LEN),
    )
    .map_err(bus_err("i8042"))?;
    let ged_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| VmError::EventFd {
        what: "GED interrupt",
        source,
    })?;
    vm_fd
        .register_irqfd(&ged_irq, ged::GED_IRQ)
        .map_err(kvm_err("KVM_IRQFD (GED)"))?;
    let ged = Ged::new(ged_irq);
    bus.insert(
        Arc::new(Mutex::new(ged::GedPort(ged.clone()))),
        u64::from(ged::GED_PORT),
        u64::from(ged::GED_PORT_LEN),
    )
    .map_err(bus_err("GED event register"))?;
    Ok(PioDevices {
        bus,
        irqfds,
        console,
        ged,
    })
}

pub(crate) fn serial_writer(out: &SerialOutput) -> Result<Option<Box<dyn Write + Send>>, VmError> {
    Ok(match out {
        SerialOutput::Off => None,
        SerialOutput::Stdout => Some(Box::new(std::io::stdout())),
        SerialOutput::File(path) => {
            Some(Box::new(std::fs::File::create(path).map_err(|source| {
                VmError::SerialFile {
                    path: path.clone(),
                    source,
                }
            })?))
        }
    })
}
