//! The `sandbox.*` layer: the containerd Sandbox API's lifecycle (create, start, status,
//! wait, stop, shutdown) expressed over the same VM the Cloud Hypervisor endpoints drive.
//!
//! A sandbox is one VM plus what the shim needs to know about it: its id, annotations, the
//! vsock port of the in-guest agent and whether the process should end with the VM. The
//! controller executes the commands; this module holds their bodies and checks them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::ApiVmConfig;

/// Longest sandbox id accepted (containerd ids are 64 hex digits).
pub const MAX_ID_LEN: usize = 128;

/// Errors in sandbox request bodies.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SandboxError {
    #[error("sandbox_id is required")]
    NoId,
    #[error("sandbox_id {0:?} must be 1..=128 characters of A-Z a-z 0-9 _ . -")]
    BadId(String),
    #[error("agent_vsock_port must be between 1 and 2^32-2")]
    BadPort,
}

/// What happens to the process when the VM ends on its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Lifecycle {
    /// End the process when the guest powers off, reboots or crashes (Cloud Hypervisor's
    /// behaviour). Off by default for sandboxes, so `sandbox.status` and `sandbox.wait` still
    /// answer afterwards; `vmm.shutdown` ends the process.
    pub exit_on_vm_end: bool,
}

/// The `sandbox.create` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SandboxSpec {
    pub sandbox_id: String,
    pub annotations: BTreeMap<String, String>,
    pub vm: ApiVmConfig,
    /// The port the in-guest agent listens on (Kata: 1024).
    pub agent_vsock_port: Option<u32>,
    pub lifecycle: Lifecycle,
}

impl SandboxSpec {
    /// Checks the sandbox fields (the VM part is checked by the VM mapping).
    pub fn check(&self) -> Result<(), SandboxError> {
        if self.sandbox_id.is_empty() {
            return Err(SandboxError::NoId);
        }
        let good = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if self.sandbox_id.len() > MAX_ID_LEN || !self.sandbox_id.chars().all(good) {
            return Err(SandboxError::BadId(self.sandbox_id.clone()));
        }
        // VMADDR_PORT_ANY (u32::MAX) and 0 cannot be listened on by name.
        if self
            .agent_vsock_port
            .is_some_and(|p| p == 0 || p == u32::MAX)
        {
            return Err(SandboxError::BadPort);
        }
        Ok(())
    }
}

/// The `sandbox.start` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StartOptions {
    /// Answer only once the agent's vsock port accepts a connection.
    pub wait_for_agent: bool,
    /// Bound on that wait.
    pub timeout_ms: u64,
}

impl Default for StartOptions {
    fn default() -> Self {
        Self {
            wait_for_agent: false,
            timeout_ms: 30_000,
        }
    }
}

/// The `sandbox.wait` and `sandbox.events` query bodies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PollOptions {
    /// Longest time to hold the request open; capped by the server.
    pub timeout_ms: u64,
    /// `sandbox.events`: last sequence number seen.
    pub since: u64,
    /// `sandbox.events`: most events in one page.
    pub max: usize,
}

impl Default for PollOptions {
    fn default() -> Self {
        Self {
            timeout_ms: 0,
            since: 0,
            max: 64,
        }
    }
}

/// A created sandbox, as published in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxRecord {
    pub id: String,
    pub annotations: BTreeMap<String, String>,
    pub agent_vsock_port: Option<u32>,
    pub exit_on_vm_end: bool,
    pub created_at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_ports_are_checked() {
        let mut spec = SandboxSpec::default();
        assert_eq!(spec.check(), Err(SandboxError::NoId));
        spec.sandbox_id = "a/b".into();
        assert!(matches!(spec.check(), Err(SandboxError::BadId(_))));
        spec.sandbox_id = "x".repeat(MAX_ID_LEN + 1);
        assert!(matches!(spec.check(), Err(SandboxError::BadId(_))));
        spec.sandbox_id = "pod-1.a_b".into();
        assert_eq!(spec.check(), Ok(()));
        spec.agent_vsock_port = Some(0);
        assert_eq!(spec.check(), Err(SandboxError::BadPort));
        spec.agent_vsock_port = Some(1024);
        assert_eq!(spec.check(), Ok(()));
    }
}
