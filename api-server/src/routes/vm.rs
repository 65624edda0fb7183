//! `vm.*`: Cloud Hypervisor's VM endpoints. Reads (`vm.info`, `vm.counters`) come from the
//! snapshot; everything else is a command for the `vmm` thread. Endpoints for features this
//! VMM does not have answer 501 with the reason, without reaching the VMM.

use serde::Serialize;

use ::vmm::api::config::ApiVmConfig;
use ::vmm::api::{ApiError, ErrorCode, Request, VmState};

use super::{get, put, Call, Route};
use crate::reply::{Family, HttpReply};

const CH: Family = Family::CloudHypervisor;

pub const ROUTES: &[Route] = &[
    put("vm.create"),
    put("vm.boot"),
    put("vm.shutdown"),
    put("vm.reboot"),
    put("vm.pause"),
    put("vm.resume"),
    put("vm.delete"),
    put("vm.power-button"),
    get("vm.info"),
    get("vm.counters"),
    put("vm.add-disk"),
    put("vm.add-fs"),
    put("vm.add-vsock"),
    put("vm.remove-device"),
    put("vm.add-net"),
    put("vm.add-device"),
    put("vm.resize"),
    put("vm.snapshot"),
    put("vm.restore"),
];

/// `vm.info`'s body.
#[derive(Serialize)]
struct VmInfo<'a> {
    config: &'a ApiVmConfig,
    state: VmState,
    memory_actual_size: u64,
    /// Once booted: every PCI device, where it is, and whether it still works (a vhost-user
    /// device fails when its backend goes away; the VM runs on).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    devices: Vec<DeviceInfo>,
}

#[derive(Serialize)]
struct DeviceInfo {
    id: String,
    bdf: String,
    state: &'static str,
}

/// `vm.remove-device`'s body.
#[derive(serde::Deserialize)]
struct RemoveDevice {
    id: String,
}

pub async fn handle(call: Call<'_>) -> HttpReply {
    let request = match call.name {
        "vm.info" => return info(&call),
        "vm.counters" => return HttpReply::json(&call.ctx.snapshot().counters),
        "vm.create" => match call.json::<ApiVmConfig>() {
            Ok(config) => Request::VmCreate(Box::new(config)),
            Err(e) => return e.reply(CH),
        },
        "vm.boot" => Request::VmBoot,
        "vm.shutdown" => Request::VmShutdown,
        "vm.reboot" => Request::VmReboot,
        "vm.pause" => Request::VmPause,
        "vm.resume" => Request::VmResume,
        "vm.delete" => Request::VmDelete,
        "vm.power-button" => Request::VmPowerButton,
        "vm.add-disk" => match call.json() {
            Ok(disk) => Request::VmAddDisk(disk),
            Err(e) => return e.reply(CH),
        },
        "vm.add-vsock" => match call.json() {
            Ok(vsock) => Request::VmAddVsock(vsock),
            Err(e) => return e.reply(CH),
        },
        "vm.add-fs" => match call.json() {
            Ok(share) => Request::VmAddFs(share),
            Err(e) => return e.reply(CH),
        },
        "vm.remove-device" => match call.json::<RemoveDevice>() {
            Ok(body) => Request::VmRemoveDevice(body.id),
            Err(e) => return e.reply(CH),
        },
        other => return not_built(other),
    };
    HttpReply::from_result(CH, call.ctx.submit(request).await)
}

fn info(call: &Call<'_>) -> HttpReply {
    let snapshot = call.ctx.snapshot();
    match (snapshot.state, &snapshot.config) {
        (Some(state), Some(config)) => HttpReply::json(&VmInfo {
            config,
            state,
            memory_actual_size: config.memory.size,
            devices: snapshot
                .devices
                .iter()
                .flat_map(|d| d.snapshot())
                .map(|d| DeviceInfo {
                    id: d.id.clone(),
                    bdf: d.bdf(),
                    state: if d.has_failed() { "failed" } else { "ok" },
                })
                .collect(),
        }),
        _ => HttpReply::error(
            CH,
            &ApiError::new(ErrorCode::InvalidState, "vm.info: no VM is created"),
        ),
    }
}

/// The endpoints of features that do not exist in this VMM.
fn not_built(name: &str) -> HttpReply {
    let what = match name {
        "vm.add-net" => "there is no virtio-net device",
        "vm.add-device" => "there is no VFIO device passthrough",
        "vm.resize" => "vCPU and memory hot-plug are not implemented",
        _ => "snapshot and restore are not implemented",
    };
    HttpReply::error(
        CH,
        &ApiError::new(ErrorCode::Unsupported, format!("{name}: {what}")),
    )
}
