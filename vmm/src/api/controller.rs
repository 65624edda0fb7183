//! The `vmm` control loop: executes API commands one at a time and follows the VM's life.
//!
//! State machine (the names `vm.info` reports):
//!
//! ```text
//!  (none) ──create──► Created ──boot──► Running ──shutdown / guest ends──► Shutdown
//!     ▲                  │                 │  └──reboot──► Running              │
//!     └─────delete───────┴─────────────────┴──────────────────boot──► Running ◄─┘
//! ```
//!
//! `Vm::build` runs here, on the `vmm` thread, so a slow boot delays only later commands, never
//! reads (they come from the snapshot). `Vm::run` runs on its own thread `vm` and reports back
//! through the same channel as the API, so the loop never blocks on the guest. `vm.pause` parks
//! every vCPU outside `KVM_RUN` (`Running` ⇄ `Paused`); stopping a paused VM releases them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::confidential::Confidential;
use super::config::ApiVmConfig;
use super::events::{Event, EventMonitor};
use super::sandbox::{SandboxRecord, SandboxSpec, StartOptions};
use super::state::{unix_ms, BootTimes, ExitInfo, SharedState, VmState};
use super::{ApiError, ControlMsg, ErrorCode, Reply, Request, Response};
use crate::config::VmConfig;
use crate::exit::{ExitReason, EXIT_INVALID_CONFIG, EXIT_POWER_OFF};
use crate::vm::{Vm, VmHandle};

mod devices;
use devices::DeviceAdd;

/// Errors of the control loop's own machinery (not of a request).
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("cannot start the vm thread: {0}")]
    Spawn(std::io::Error),
}

/// How the process should behave, chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// End the loop (and the process) when the guest ends the VM by itself.
    pub exit_on_vm_end: bool,
    /// A guest-requested reset boots the same configuration again instead of ending the VM,
    /// as Cloud Hypervisor does; a sandbox instead ends with the reason `reboot`, which its
    /// owner sees in `sandbox.wait`.
    pub reboot_in_place: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            exit_on_vm_end: true,
            reboot_in_place: true,
        }
    }
}

struct RunningVm {
    handle: VmHandle,
    generation: u64,
    thread: JoinHandle<()>,
}

/// The control loop's state.
pub struct Controller {
    shared: Arc<SharedState>,
    tx: Sender<ControlMsg>,
    rx: Receiver<ControlMsg>,
    monitor: EventMonitor,
    policy: Policy,
    config: Option<(ApiVmConfig, VmConfig)>,
    /// Set for a confidential VM: its launch inputs and expected attestation.
    confidential: Option<Confidential>,
    running: Option<RunningVm>,
    generation: u64,
    /// Commands that arrived while the loop waited for a VM to stop.
    pending: VecDeque<(Request, Reply)>,
    counters: BTreeMap<&'static str, u64>,
}

/// What a handled request does to the loop.
enum Next {
    Continue,
    Exit(u8),
}

impl Controller {
    /// A controller for `shared`; `tx`/`rx` are the two ends of the control channel (the API
    /// handle holds another clone of `tx`).
    pub fn new(
        shared: Arc<SharedState>,
        tx: Sender<ControlMsg>,
        rx: Receiver<ControlMsg>,
        monitor: EventMonitor,
        policy: Policy,
    ) -> Self {
        Self {
            shared,
            tx,
            rx,
            monitor,
            policy,
            config: None,
            confidential: None,
            running: None,
            generation: 0,
            pending: VecDeque::new(),
            counters: BTreeMap::new(),
        }
    }

    /// Runs until `vmm.shutdown`, or until the guest ends the VM when the policy says so.
    /// Returns the process exit status.
    pub fn run(mut self) -> u8 {
        self.event("vmm", "started", None);
        loop {
            let msg = match self.pending.pop_front() {
                Some((request, reply)) => ControlMsg::Api(request, reply),
                None => match self.rx.recv() {
                    Ok(msg) => msg,
                    // Every sender is gone: nobody can ask for anything any more.
                    Err(_) => return self.finish(EXIT_POWER_OFF),
                },
            };
            let next = match msg {
                ControlMsg::Api(request, reply) => self.handle(request, reply),
                ControlMsg::VmEnded { generation, result } => self.on_vm_end(generation, result),
            };
            if let Next::Exit(code) = next {
                return self.finish(code);
            }
        }
    }

    fn finish(mut self, code: u8) -> u8 {
        self.stop_and_wait();
        self.event("vmm", "shutdown", None);
        code
    }

    fn handle(&mut self, request: Request, reply: Reply) -> Next {
        let name = request.name();
        self.count("api_commands");
        let mut next = Next::Continue;
        let result = match request {
            Request::VmmShutdown => {
                next = Next::Exit(EXIT_POWER_OFF);
                self.stop_and_wait();
                Ok(Response::Empty)
            }
            Request::VmCreate(config) => self.create(*config).map(|()| Response::Empty),
            Request::VmBoot => self.boot().map(|_| Response::Empty),
            Request::VmShutdown => self.shutdown().map(|()| Response::Empty),
            Request::VmReboot => self.reboot().map(|()| Response::Empty),
            Request::VmDelete => {
                self.stop_and_wait();
                self.delete();
                Ok(Response::Empty)
            }
            Request::VmPause => self.pause().map(|()| Response::Empty),
            Request::VmResume => self.resume().map(|()| Response::Empty),
            Request::VmPowerButton => self.power_button().map(|()| Response::Empty),
            Request::VmAddDisk(disk) => self.add_device(DeviceAdd::Disk(disk)),
            Request::VmAddVsock(vsock) => self.add_device(DeviceAdd::Vsock(vsock)),
            Request::VmAddFs(share) => self.add_device(DeviceAdd::Fs(share)),
            Request::VmRemoveDevice(id) => self.remove_device(&id),
            Request::SandboxCreate(spec) => self.sandbox_create(*spec),
            Request::SandboxStart(options) => self.sandbox_start(&options),
            Request::SandboxStop => {
                self.stop_and_wait();
                Ok(Response::Empty)
            }
            Request::SandboxShutdown => {
                self.stop_and_wait();
                if self.shared.snapshot().sandbox.is_some() {
                    self.delete();
                    self.event("vmm", "sandbox_shutdown", None);
                }
                Ok(Response::Empty)
            }
        };
        if let Err(e) = &result {
            self.count("api_errors");
            log::info!("{name} refused: {e}");
        }
        reply(result);
        next
    }

    fn create(&mut self, mut config: ApiVmConfig) -> Result<(), ApiError> {
        if self.config.is_some() {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                "vm.create: a VM is already created (vm.delete it first)",
            ));
        }
        let vm_config = config.normalize().map_err(|e| {
            let code = match e {
                super::config::ApiConfigError::Unsupported(_) => ErrorCode::Unsupported,
                _ => ErrorCode::InvalidArgument,
            };
            ApiError::with_source(code, "vm.create: invalid VM configuration", &e)
        })?;
        let confidential = super::confidential::plan(&config).map_err(|e| {
            ApiError::with_source(
                ErrorCode::InvalidArgument,
                "vm.create: invalid confidential VM",
                &e,
            )
        })?;
        let attestation = confidential.as_ref().map(|c| Arc::new(c.expected.clone()));
        let echo = Arc::new(config.clone());
        self.config = Some((config, vm_config));
        self.confidential = confidential;
        self.shared.update(|s| {
            s.state = Some(VmState::Created);
            s.config = Some(echo);
            s.attestation = attestation;
            s.exit = None;
            s.boot = None;
        });
        self.event("vm", "created", None);
        Ok(())
    }

    /// Builds the VM and starts its vCPUs; returns the boot times.
    fn boot(&mut self) -> Result<BootTimes, ApiError> {
        if self.running.is_some() {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                "vm.boot: the VM is already running",
            ));
        }
        let Some((_, vm_config)) = &self.config else {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                "vm.boot: no VM is created (vm.create first)",
            ));
        };
        let vm_config = vm_config.clone();
        self.event("vm", "booting", None);
        let started_at_ms = unix_ms();
        let started = Instant::now();
        let built = match &self.confidential {
            Some(c) => crate::confidential_vm::build(&vm_config, &c.launch)
                .map(|(vm, _)| vm)
                .map_err(|e| {
                    let code = e.exit_code();
                    (code, "vm.boot: cannot launch the confidential VM", e.into())
                }),
            None => Vm::build(&vm_config).map_err(|e| {
                let code = e.exit_code();
                (code, "vm.boot: cannot build the VM", e.into())
            }),
        };
        let vm = match built {
            Ok(vm) => vm,
            Err((exit_code, message, e)) => return Err(self.boot_failed(exit_code, message, e)),
        };
        self.generation += 1;
        let generation = self.generation;
        let handle = vm.handle();
        let clock = vm.clock();
        let devices = vm.devices();
        let tx = self.tx.clone();
        let thread = std::thread::Builder::new()
            .name("vm".into())
            .spawn(move || {
                let result = vm.run().map_err(|e| e.to_string());
                // A closed channel means the controller is gone; nobody is left to tell.
                let _ = tx.send(ControlMsg::VmEnded { generation, result });
            })
            .map_err(|e| {
                ApiError::with_source(ErrorCode::Internal, "vm.boot", &ControllerError::Spawn(e))
            })?;
        wait_for_first_instruction(&clock, &thread);
        self.running = Some(RunningVm {
            handle,
            generation,
            thread,
        });
        let times = BootTimes {
            started_at_ms,
            boot_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            ready_ms: None,
        };
        let published = times.clone();
        self.shared.update(|s| {
            s.state = Some(VmState::Running);
            s.exit = None;
            s.boot = Some(published);
            s.clock = Some(clock);
            s.devices = Some(devices);
        });
        self.count("boots");
        self.event("vm", "booted", None);
        Ok(times)
    }

    fn shutdown(&mut self) -> Result<(), ApiError> {
        if self.running.is_none() {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                "vm.shutdown: the VM is not running",
            ));
        }
        self.stop_and_wait();
        Ok(())
    }

    /// `Running` → `Paused`: returns once every vCPU is parked outside `KVM_RUN`.
    fn pause(&mut self) -> Result<(), ApiError> {
        let handle = self.live_handle("vm.pause", VmState::Running)?;
        handle
            .pause()
            .map_err(|e| ApiError::with_source(ErrorCode::Internal, "vm.pause", &e))?;
        self.shared.update(|s| s.state = Some(VmState::Paused));
        self.event("vm", "paused", None);
        Ok(())
    }

    /// Presses the ACPI power button of the running VM; the guest decides what follows.
    fn power_button(&mut self) -> Result<(), ApiError> {
        let handle = self.live_handle("vm.power-button", VmState::Running)?;
        handle
            .power_button()
            .map_err(|e| ApiError::with_source(ErrorCode::Internal, "vm.power-button", &e))?;
        self.event("vm", "power_button", None);
        Ok(())
    }

    /// `Paused` → `Running`.
    fn resume(&mut self) -> Result<(), ApiError> {
        let handle = self.live_handle("vm.resume", VmState::Paused)?;
        handle
            .resume()
            .map_err(|e| ApiError::with_source(ErrorCode::Internal, "vm.resume", &e))?;
        self.shared.update(|s| s.state = Some(VmState::Running));
        self.event("vm", "resumed", None);
        Ok(())
    }

    /// The running VM's handle, if the VM is in state `want`.
    fn live_handle(&self, name: &str, want: VmState) -> Result<VmHandle, ApiError> {
        let state = self.shared.snapshot().state;
        match &self.running {
            Some(running) if state == Some(want) => Ok(running.handle.clone()),
            _ => Err(ApiError::new(
                ErrorCode::InvalidState,
                format!("{name}: the VM is {state:?}, not {want:?}"),
            )),
        }
    }

    fn reboot(&mut self) -> Result<(), ApiError> {
        if self.running.is_none() {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                "vm.reboot: the VM is not running",
            ));
        }
        self.stop_and_wait();
        self.event("vm", "rebooting", None);
        self.boot().map(|_| ())
    }

    /// Records a failed boot (exit info, `boot_failed` event) and the answer for the client.
    fn boot_failed(
        &mut self,
        exit_code: u8,
        message: &'static str,
        e: Box<dyn std::error::Error>,
    ) -> ApiError {
        let code = if exit_code == EXIT_INVALID_CONFIG {
            ErrorCode::InvalidArgument
        } else {
            ErrorCode::Internal
        };
        let info = ExitInfo::boot_error(e.to_string(), exit_code);
        self.shared.update(|s| s.exit = Some(info));
        self.event("vm", "boot_failed", Some(e.to_string()));
        ApiError::with_source(code, message, e.as_ref())
    }

    fn delete(&mut self) {
        self.config = None;
        self.confidential = None;
        self.shared.update(|s| {
            s.state = None;
            s.config = None;
            s.sandbox = None;
            s.boot = None;
            s.devices = None;
            s.attestation = None;
        });
        self.event("vm", "deleted", None);
    }

    /// Stops the running VM, if any, and waits for its thread; commands arriving meanwhile
    /// are kept for later, in order.
    fn stop_and_wait(&mut self) {
        let Some(generation) = self.running.as_ref().map(|r| r.generation) else {
            return;
        };
        if let Some(running) = &self.running {
            running.handle.stop();
        }
        loop {
            match self.rx.recv() {
                Ok(ControlMsg::Api(request, reply)) => self.pending.push_back((request, reply)),
                Ok(ControlMsg::VmEnded {
                    generation: ended,
                    result,
                }) => {
                    if ended == generation {
                        self.record_end(result);
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }

    /// The `vm` thread finished: publish how; end the loop if the guest ended the VM and the
    /// policy says the process ends with it.
    fn on_vm_end(&mut self, generation: u64, result: Result<ExitReason, String>) -> Next {
        if self.running.as_ref().map(|r| r.generation) != Some(generation) {
            return Next::Continue;
        }
        if self.policy.reboot_in_place && matches!(result, Ok(ExitReason::Reboot)) {
            return self.reboot_after_guest_reset();
        }
        let host_stop = matches!(result, Ok(ExitReason::HostStop));
        let code = self.record_end(result);
        if self.policy.exit_on_vm_end && !host_stop {
            log::info!("the VM ended; exiting as the policy says");
            return Next::Exit(code);
        }
        Next::Continue
    }

    /// The guest reset itself: build and boot the same configuration again. A VM that cannot
    /// be rebuilt ends as a boot error (and the process with it when the policy says so).
    fn reboot_after_guest_reset(&mut self) -> Next {
        if let Some(running) = self.running.take() {
            if running.thread.join().is_err() {
                log::error!("the vm thread panicked");
            }
        }
        log::info!("the guest requested a reboot; booting the VM again");
        self.count("guest_reboots");
        self.event(
            "vm",
            "rebooting",
            Some("guest requested a reboot".to_owned()),
        );
        match self.boot() {
            Ok(_) => Next::Continue,
            Err(e) => {
                log::error!("reboot failed: {}", e.message);
                self.shared.update(|s| s.state = Some(VmState::Shutdown));
                if self.policy.exit_on_vm_end {
                    Next::Exit(crate::exit::EXIT_INTERNAL_ERROR)
                } else {
                    Next::Continue
                }
            }
        }
    }

    /// Joins the `vm` thread and publishes the ending; returns its exit status.
    fn record_end(&mut self, result: Result<ExitReason, String>) -> u8 {
        if let Some(running) = self.running.take() {
            if running.thread.join().is_err() {
                log::error!("the vm thread panicked");
            }
        }
        let info = match &result {
            Ok(reason) => ExitInfo::from_reason(reason),
            Err(e) => ExitInfo::from_reason(&ExitReason::InternalError(e.clone())),
        };
        log::info!("VM ended: {}", info.detail);
        let code = info.exit_status;
        let detail = format!("{}: {}", info.reason, info.detail);
        // The event goes out before the state flips: `sandbox.wait` returns on the state, and a
        // client reading `sandbox.events` right after it must already find `exited`.
        self.count("vm_exits");
        self.event("vm", "exited", Some(detail));
        self.shared.update(|s| {
            s.state = Some(VmState::Shutdown);
            s.exit = Some(info);
        });
        code
    }

    fn sandbox_create(&mut self, spec: SandboxSpec) -> Result<Response, ApiError> {
        spec.check()
            .map_err(|e| ApiError::with_source(ErrorCode::InvalidArgument, "sandbox.create", &e))?;
        if self.shared.snapshot().sandbox.is_some() || self.config.is_some() {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                "sandbox.create: this VMM already holds a sandbox or VM",
            ));
        }
        self.create(spec.vm)?;
        self.policy.exit_on_vm_end = spec.lifecycle.exit_on_vm_end;
        self.policy.reboot_in_place = false;
        let record = Arc::new(SandboxRecord {
            id: spec.sandbox_id,
            annotations: spec.annotations,
            agent_vsock_port: spec.agent_vsock_port,
            exit_on_vm_end: spec.lifecycle.exit_on_vm_end,
            created_at_ms: unix_ms(),
        });
        let id = record.id.clone();
        self.shared.update(|s| s.sandbox = Some(record));
        self.event("vmm", "sandbox_created", Some(id));
        Ok(Response::Empty)
    }

    fn sandbox_start(&mut self, options: &StartOptions) -> Result<Response, ApiError> {
        let Some(sandbox) = self.shared.snapshot().sandbox.clone() else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                "sandbox.start: no sandbox (sandbox.create first)",
            ));
        };
        // What waiting for the agent needs is checked before anything boots.
        let agent =
            if options.wait_for_agent {
                let socket = self
                    .config
                    .as_ref()
                    .and_then(|(api, _)| api.vsock.as_ref())
                    .and_then(|v| v.socket.clone());
                match (sandbox.agent_vsock_port, socket) {
                    (Some(port), Some(socket)) => Some((port, socket)),
                    _ => return Err(ApiError::new(
                        ErrorCode::InvalidArgument,
                        "sandbox.start: wait_for_agent needs agent_vsock_port and a vsock device",
                    )),
                }
            } else {
                None
            };
        let mut times = self.boot()?;
        if let Some((port, socket)) = agent {
            let timeout = Duration::from_millis(options.timeout_ms);
            let alive = || {
                self.running
                    .as_ref()
                    .is_some_and(|r| !r.thread.is_finished())
            };
            let waited =
                super::agent::wait_for_agent(&socket, port, timeout, &alive).map_err(|e| {
                    let code = match e {
                        super::agent::AgentError::Timeout { .. } => ErrorCode::Timeout,
                        super::agent::AgentError::VmEnded { .. } => ErrorCode::InvalidState,
                    };
                    ApiError::with_source(code, "sandbox.start", &e)
                })?;
            let ready = times.boot_ms + u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
            times.ready_ms = Some(ready);
            let published = times.clone();
            self.shared.update(|s| s.boot = Some(published));
            self.event(
                "vm",
                "agent_ready",
                Some(format!("port {port} after {ready} ms")),
            );
        }
        serde_json::to_value(&times)
            .map(Response::Json)
            .map_err(|e| ApiError::with_source(ErrorCode::Internal, "sandbox.start", &e))
    }

    fn count(&mut self, name: &'static str) {
        let value = self.counters.entry(name).or_insert(0);
        *value += 1;
        let counters: BTreeMap<String, u64> = self
            .counters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        self.shared.update(|s| {
            s.counters.insert("vmm".to_owned(), counters);
        });
    }

    fn event(&mut self, source: &'static str, event: &'static str, detail: Option<String>) {
        let mut event = Event {
            seq: 0,
            timestamp_ms: unix_ms(),
            source,
            event,
            detail,
        };
        event.seq = self.shared.push_event(event.clone());
        self.monitor.write(&event);
    }
}

/// Longest `vm.boot` waits for vCPU 0 to enter the guest before answering anyway.
const FIRST_INSTRUCTION_WAIT: Duration = Duration::from_secs(10);

/// Holds the boot answer until vCPU 0 has entered the guest (or the run already ended), so a
/// client that sees `Running` finds the `vcpuN` threads in place, as with Cloud Hypervisor.
fn wait_for_first_instruction(clock: &crate::clock::BootClock, thread: &JoinHandle<()>) {
    let deadline = Instant::now() + FIRST_INSTRUCTION_WAIT;
    while clock.snapshot().first_instruction.is_none()
        && !thread.is_finished()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests;
