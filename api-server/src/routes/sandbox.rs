//! `sandbox.*`: the containerd Sandbox API over the same VM. Lifecycle commands go to the
//! `vmm` thread; `status`, `wait`, `events`, `metrics`, `platform` and `ping` are reads, and
//! `wait`/`events` long-poll the snapshot (query `timeout_ms`, capped by `MAX_POLL`) without
//! holding anything the VMM needs.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use ::vmm::api::sandbox::{SandboxRecord, SandboxSpec, StartOptions};
use ::vmm::api::state::{BootTimes, ExitInfo};
use ::vmm::api::{ApiError, ErrorCode, Request, Snapshot, VmState};

use super::{get, put, Call, Route, RouteError, MAX_QUEUED_COMMANDS};
use crate::reply::{Family, HttpReply};

const SB: Family = Family::Sandbox;
/// Most events in one `sandbox.events` page.
const MAX_PAGE: u64 = 256;

pub const ROUTES: &[Route] = &[
    put("sandbox.create"),
    put("sandbox.start"),
    get("sandbox.status"),
    get("sandbox.wait"),
    put("sandbox.stop"),
    put("sandbox.shutdown"),
    get("sandbox.events"),
    get("sandbox.metrics"),
    get("sandbox.platform"),
    get("sandbox.ping"),
    get("sandbox.attestation"),
    put("sandbox.device.add"),
    put("sandbox.device.remove"),
];

/// `sandbox.device.add`'s body: exactly one device section, as in `sandbox.create`'s spec.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceAdd {
    disk: Option<::vmm::api::devices::ApiDiskConfig>,
    fs: Option<::vmm::api::devices::ApiFsConfig>,
    vsock: Option<::vmm::api::devices::ApiVsockConfig>,
}

/// `sandbox.device.remove`'s body.
#[derive(serde::Deserialize)]
struct DeviceRemove {
    id: String,
}

pub async fn handle(call: Call<'_>) -> HttpReply {
    let result = match call.name {
        "sandbox.status" => return status(&call),
        "sandbox.wait" => return wait(&call).await,
        "sandbox.events" => return events(&call).await,
        "sandbox.metrics" => return metrics(&call),
        "sandbox.platform" => return HttpReply::json(&Platform::probe()),
        "sandbox.ping" => return HttpReply::json(&call.ctx.info),
        "sandbox.attestation" => return attestation(&call),
        _ => command(&call),
    };
    match result {
        Ok(request) => {
            let removing = matches!(request, Request::VmRemoveDevice(_));
            if call.ctx.queued() >= MAX_QUEUED_COMMANDS {
                return HttpReply::error(
                    SB,
                    &ApiError::new(
                        ErrorCode::Busy,
                        format!(
                            "{}: {MAX_QUEUED_COMMANDS} commands already queued",
                            call.name
                        ),
                    ),
                );
            }
            match call.ctx.submit(request).await {
                // Removal is idempotent for sandboxes: a device that is not there is removed.
                Err(e) if removing && e.code == ErrorCode::NotFound => HttpReply::no_content(),
                result => HttpReply::from_result(SB, result),
            }
        }
        Err(e) => e.reply(SB),
    }
}

fn command(call: &Call<'_>) -> Result<Request, RouteError> {
    Ok(match call.name {
        "sandbox.create" => Request::SandboxCreate(Box::new(call.json::<SandboxSpec>()?)),
        "sandbox.start" => Request::SandboxStart(call.json_or_default::<StartOptions>()?),
        "sandbox.stop" => Request::SandboxStop,
        "sandbox.device.add" => {
            let add = call.json::<DeviceAdd>()?;
            match (add.disk, add.fs, add.vsock) {
                (Some(disk), None, None) => Request::VmAddDisk(disk),
                (None, Some(fs), None) => Request::VmAddFs(fs),
                (None, None, Some(vsock)) => Request::VmAddVsock(vsock),
                _ => {
                    return Err(RouteError::BadBody {
                        endpoint: "sandbox.device.add",
                        why: "give exactly one of disk, fs, vsock".into(),
                    })
                }
            }
        }
        "sandbox.device.remove" => Request::VmRemoveDevice(call.json::<DeviceRemove>()?.id),
        _ => Request::SandboxShutdown,
    })
}

/// What a confidential VM's attestation report must carry (measurement, HOST_DATA, policy),
/// known from `vm.create` on.
fn attestation(call: &Call<'_>) -> HttpReply {
    let snapshot = call.ctx.snapshot();
    match (&snapshot.config, &snapshot.attestation) {
        (_, Some(expected)) => HttpReply::json(expected.as_ref()),
        (Some(_), None) => HttpReply::error(
            SB,
            &ApiError::new(
                ErrorCode::InvalidState,
                "sandbox.attestation: the VM is not confidential (platform.sev_snp is off)",
            ),
        ),
        (None, None) => HttpReply::error(
            SB,
            &ApiError::new(
                ErrorCode::InvalidState,
                "sandbox.attestation: no sandbox or VM is created",
            ),
        ),
    }
}

/// `sandbox.status`'s body.
#[derive(Serialize)]
struct Status<'a> {
    sandbox_id: &'a str,
    /// `created`, `running` or `stopped`.
    state: &'static str,
    vm_state: Option<VmState>,
    pid: u32,
    sandbox: &'a SandboxRecord,
    boot: Option<&'a BootTimes>,
    timeline: Option<Timeline>,
    exit: Option<&'a ExitInfo>,
}

/// The VM's boot timeline in microseconds since the VMM process started.
#[derive(Serialize)]
struct Timeline {
    first_instruction_us: Option<u128>,
    /// Guest boot-progress markers (port 0x440): value and time.
    markers: Vec<(u8, u128)>,
    exit_us: Option<u128>,
}

fn timeline(snapshot: &Snapshot) -> Option<Timeline> {
    let t = snapshot.clock.as_ref()?.snapshot();
    Some(Timeline {
        first_instruction_us: t.first_instruction.map(|d| d.as_micros()),
        markers: t.markers.iter().map(|(v, d)| (*v, d.as_micros())).collect(),
        exit_us: t.exit.map(|d| d.as_micros()),
    })
}

fn no_sandbox(endpoint: &str) -> HttpReply {
    HttpReply::error(
        SB,
        &ApiError::new(
            ErrorCode::NotFound,
            format!("{endpoint}: no sandbox (sandbox.create first)"),
        ),
    )
}

fn status(call: &Call<'_>) -> HttpReply {
    let snapshot = call.ctx.snapshot();
    let Some(sandbox) = &snapshot.sandbox else {
        return no_sandbox(call.name);
    };
    let state = match snapshot.state {
        Some(VmState::Running) | Some(VmState::Paused) => "running",
        Some(VmState::Shutdown) => "stopped",
        _ if snapshot.exit.is_some() => "stopped",
        _ => "created",
    };
    HttpReply::json(&Status {
        sandbox_id: &sandbox.id,
        state,
        vm_state: snapshot.state,
        pid: call.ctx.info.pid,
        sandbox,
        boot: snapshot.boot.as_ref(),
        timeline: timeline(&snapshot),
        exit: snapshot.exit.as_ref(),
    })
}

fn poll_timeout(call: &Call<'_>, default: Duration) -> Result<Duration, RouteError> {
    Ok(call
        .query_u64("timeout_ms")?
        .map_or(default, Duration::from_millis))
}

/// The exit of a VM that ran (or failed to boot) and is not running now.
fn ended(snapshot: &Snapshot) -> Option<ExitInfo> {
    match snapshot.state {
        Some(VmState::Running) | Some(VmState::Paused) => None,
        _ => snapshot.exit.clone(),
    }
}

async fn wait(call: &Call<'_>) -> HttpReply {
    let timeout = match poll_timeout(call, crate::MAX_POLL) {
        Ok(t) => t,
        Err(e) => return e.reply(SB),
    };
    if call.ctx.snapshot().sandbox.is_none() {
        return no_sandbox(call.name);
    }
    let ctx = call.ctx;
    match ctx.wait_for(timeout, || ended(&ctx.snapshot())).await {
        Some(exit) => HttpReply::json(&exit),
        None => HttpReply::error(
            SB,
            &ApiError::new(
                ErrorCode::Timeout,
                format!("sandbox.wait: the VM is still running after {timeout:?}"),
            ),
        ),
    }
}

async fn events(call: &Call<'_>) -> HttpReply {
    let parsed = (|| {
        Ok::<_, RouteError>((
            call.query_u64("since")?.unwrap_or(0),
            call.query_u64("max")?.unwrap_or(64).clamp(1, MAX_PAGE),
            poll_timeout(call, Duration::ZERO)?,
        ))
    })();
    let (since, max, timeout) = match parsed {
        Ok(p) => p,
        Err(e) => return e.reply(SB),
    };
    let max = usize::try_from(max).unwrap_or(64);
    let shared = call.ctx.backend.shared().clone();
    let page = call
        .ctx
        .wait_for(timeout, || {
            let page = shared.events_since(since, max);
            (!page.events.is_empty() || page.dropped > 0).then_some(page)
        })
        .await
        .unwrap_or_else(|| shared.events_since(since, max));
    HttpReply::json(&page)
}

/// `sandbox.metrics`'s body.
#[derive(Serialize)]
struct Metrics {
    vcpus: Option<u32>,
    memory_bytes: Option<u64>,
    /// Resident memory of this process, guest RAM touched so far included.
    host_rss_bytes: Option<u64>,
    uptime_ms: Option<u64>,
    boot: Option<BootTimes>,
    timeline: Option<Timeline>,
    counters: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
}

fn metrics(call: &Call<'_>) -> HttpReply {
    let snapshot = call.ctx.snapshot();
    if snapshot.sandbox.is_none() {
        return no_sandbox(call.name);
    }
    let running = snapshot.state == Some(VmState::Running);
    let uptime_ms = snapshot
        .boot
        .as_ref()
        .filter(|_| running)
        .map(|b| ::vmm::api::state::unix_ms().saturating_sub(b.started_at_ms));
    HttpReply::json(&Metrics {
        vcpus: snapshot.config.as_ref().map(|c| c.cpus.boot_vcpus),
        memory_bytes: snapshot.config.as_ref().map(|c| c.memory.size),
        host_rss_bytes: rss_bytes(),
        uptime_ms,
        boot: snapshot.boot.clone(),
        timeline: timeline(&snapshot),
        counters: snapshot.counters.clone(),
    })
}

/// `VmRSS` from `/proc/self/status`.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// `sandbox.platform`'s body: what this host can run.
#[derive(Serialize)]
struct Platform {
    os: &'static str,
    arch: &'static str,
    kvm: bool,
    /// KVM without hardware virtualization (the `kvm_pvm` module).
    kvm_pvm: bool,
    /// The host's KVM offers SEV-SNP guests.
    sev_snp: bool,
}

impl Platform {
    fn probe() -> Self {
        let snp = std::fs::read_to_string("/sys/module/kvm_amd/parameters/sev_snp")
            .map(|v| matches!(v.trim(), "Y" | "1"))
            .unwrap_or(false);
        Self {
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            kvm: Path::new("/dev/kvm").exists(),
            kvm_pvm: Path::new("/sys/module/kvm_pvm").exists(),
            sev_snp: snp,
        }
    }
}
