//! `vm.add-*` and `vm.remove-device`: before boot they edit the configuration the VM will be
//! built from (cold plug, 204); on a running VM they go through the control loop's hot-plug
//! path and answer `{"id", "bdf"}` (200), the exact form Kata's shim accepts. Either way the
//! configuration follows, so `vm.info` echoes what the VM has and a reboot keeps it.

use std::sync::Arc;

use super::Controller;
use crate::api::config::ApiVmConfig;
use crate::api::devices::{ApiDiskConfig, ApiFsConfig, ApiVsockConfig, DeviceConfigError};
use crate::api::{ApiError, ErrorCode, Response};
use crate::config::VmConfig;
use crate::hotplug::HotplugError;
use crate::pci_bus::DeviceSpec;
use crate::pci_devices::PciSetupError;

/// A device to add, as the API received it.
pub enum DeviceAdd {
    Disk(ApiDiskConfig),
    Vsock(ApiVsockConfig),
    Fs(ApiFsConfig),
}

impl DeviceAdd {
    pub fn name(&self) -> &'static str {
        match self {
            DeviceAdd::Disk(_) => "vm.add-disk",
            DeviceAdd::Vsock(_) => "vm.add-vsock",
            DeviceAdd::Fs(_) => "vm.add-fs",
        }
    }

    fn spec(&self) -> Result<DeviceSpec, DeviceConfigError> {
        Ok(match self {
            DeviceAdd::Disk(d) => DeviceSpec::Disk(d.to_disk()?),
            DeviceAdd::Vsock(v) => DeviceSpec::Vsock(v.to_vsock()?),
            DeviceAdd::Fs(f) => DeviceSpec::Fs(f.to_fs()?),
        })
    }

    /// Adds the device to both configurations, named `id` when the bus chose the name.
    fn record(
        self,
        api: &mut ApiVmConfig,
        vm: &mut VmConfig,
        id: Option<String>,
    ) -> Result<(), DeviceConfigError> {
        match self {
            DeviceAdd::Disk(mut d) => {
                d.id = id.or(d.id);
                vm.disks.push(d.to_disk()?);
                api.disks.get_or_insert_with(Vec::new).push(d);
            }
            DeviceAdd::Vsock(mut v) => {
                if vm.vsock.is_some() {
                    return Err(DeviceConfigError::AlreadyPresent("vsock"));
                }
                v.id = id.or(v.id);
                vm.vsock = Some(v.to_vsock()?);
                api.vsock = Some(v);
            }
            DeviceAdd::Fs(mut f) => {
                f.id = id.or(f.id);
                vm.fs.push(f.to_fs()?);
                api.fs.get_or_insert_with(Vec::new).push(f);
            }
        }
        Ok(())
    }
}

fn hotplug_error(name: &str, e: &HotplugError) -> ApiError {
    let code = match e {
        HotplugError::NotFound(_) => ErrorCode::NotFound,
        HotplugError::EjectTimeout { .. } => ErrorCode::Timeout,
        HotplugError::NotRunning => ErrorCode::InvalidState,
        HotplugError::Setup(
            PciSetupError::DuplicateId(_)
            | PciSetupError::AlreadyPresent(_)
            | PciSetupError::PrivateMemory(_)
            | PciSetupError::Slots(_),
        ) => ErrorCode::InvalidState,
        HotplugError::Setup(_) => ErrorCode::InvalidArgument,
        HotplugError::Interrupt(_) => ErrorCode::Internal,
    };
    ApiError::with_source(code, name, e)
}

/// Gives every disk and share its explicit id, so removing one does not rename the others
/// (default ids follow positions).
fn pin_ids(api: &mut ApiVmConfig, vm: &mut VmConfig) {
    for (i, d) in vm.disks.iter_mut().enumerate() {
        d.id = Some(d.id_or_default(i));
    }
    for (d, v) in api.disks.iter_mut().flatten().zip(&vm.disks) {
        d.id.clone_from(&v.id);
    }
    for (i, f) in vm.fs.iter_mut().enumerate() {
        f.id = Some(f.id_or_default(i));
    }
    for (f, v) in api.fs.iter_mut().flatten().zip(&vm.fs) {
        f.id.clone_from(&v.id);
    }
}

/// Drops device `id` from both configurations; false if neither has it.
fn forget(api: &mut ApiVmConfig, vm: &mut VmConfig, id: &str) -> bool {
    pin_ids(api, vm);
    let before = vm.disks.len() + vm.fs.len() + usize::from(vm.vsock.is_some());
    vm.disks.retain(|d| d.id.as_deref() != Some(id));
    if let Some(disks) = &mut api.disks {
        disks.retain(|d| d.id.as_deref() != Some(id));
    }
    vm.fs.retain(|f| f.id.as_deref() != Some(id));
    if let Some(shares) = &mut api.fs {
        shares.retain(|f| f.id.as_deref() != Some(id));
    }
    let vsock_id = vm
        .vsock
        .as_ref()
        .map(|v| v.id.clone().unwrap_or_else(|| "vsock".to_owned()));
    if vsock_id.as_deref() == Some(id) {
        vm.vsock = None;
        api.vsock = None;
    }
    let after = vm.disks.len() + vm.fs.len() + usize::from(vm.vsock.is_some());
    after < before
}

impl Controller {
    /// `vm.add-disk`, `vm.add-vsock`, `vm.add-fs`.
    pub(super) fn add_device(&mut self, add: DeviceAdd) -> Result<Response, ApiError> {
        let name = add.name();
        if self.confidential.is_some() && matches!(add, DeviceAdd::Fs(_)) {
            return Err(ApiError::new(
                ErrorCode::Unsupported,
                format!(
                    "{name}: a confidential VM cannot have virtio-fs shares (the backend would \
                     map all of guest memory)"
                ),
            ));
        }
        let Some((api, vm)) = &self.config else {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                format!("{name}: no VM is created (vm.create first)"),
            ));
        };
        let (mut new_api, mut new_vm) = (api.clone(), vm.clone());
        let config_error = |e: DeviceConfigError| {
            let code = match e {
                DeviceConfigError::AlreadyPresent(_) => ErrorCode::InvalidState,
                _ => ErrorCode::InvalidArgument,
            };
            ApiError::with_source(code, name, &e)
        };
        let response = match &self.running {
            Some(running) => {
                let spec = add.spec().map_err(config_error)?;
                let placed = running
                    .handle
                    .add_device(spec)
                    .map_err(|e| hotplug_error(name, &e))?;
                add.record(&mut new_api, &mut new_vm, Some(placed.id.clone()))
                    .map_err(config_error)?;
                self.event("vm", "device_hotplugged", Some(placed.id.clone()));
                Response::Json(serde_json::json!({"id": placed.id, "bdf": placed.bdf()}))
            }
            None => {
                add.record(&mut new_api, &mut new_vm, None)
                    .map_err(config_error)?;
                crate::config::disk::validate(&new_vm.disks)
                    .map_err(|e| ApiError::with_source(ErrorCode::InvalidArgument, name, &e))?;
                crate::config::fs::validate(&new_vm.fs)
                    .map_err(|e| ApiError::with_source(ErrorCode::InvalidArgument, name, &e))?;
                self.event("vm", "device_added", Some(name.to_owned()));
                Response::Empty
            }
        };
        self.store_config(new_api, new_vm);
        Ok(response)
    }

    /// `vm.remove-device`: on a running VM, waits for the guest to release the device.
    /// Removing an id that is not there (any more) is 404, as in Cloud Hypervisor.
    pub(super) fn remove_device(&mut self, id: &str) -> Result<Response, ApiError> {
        let name = "vm.remove-device";
        let Some((api, vm)) = &self.config else {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                format!("{name}: no VM is created (vm.create first)"),
            ));
        };
        let (mut new_api, mut new_vm) = (api.clone(), vm.clone());
        if let Some(running) = &self.running {
            running
                .handle
                .remove_device(id)
                .map_err(|e| hotplug_error(name, &e))?;
            forget(&mut new_api, &mut new_vm, id);
            self.event("vm", "device_removed", Some(id.to_owned()));
        } else if !forget(&mut new_api, &mut new_vm, id) {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("{name}: no device with id {id:?}"),
            ));
        }
        self.store_config(new_api, new_vm);
        Ok(Response::Empty)
    }

    fn store_config(&mut self, api: ApiVmConfig, vm: VmConfig) {
        let echo = Arc::new(api.clone());
        self.config = Some((api, vm));
        self.shared.update(|s| s.config = Some(echo));
    }
}
