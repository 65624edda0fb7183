//! The SNP guest policy given to SNP_LAUNCH_START (SEV-SNP Firmware ABI 56860 §4.3 "Guest
//! Policy", table "Guest Policy Structure").
//!
//! Two layers of checks live here: [`GuestPolicy::firmware_check`] refuses what firmware
//! refuses (reserved bits, the must-be-one bit, SMT on an SMT host without the SMT bit, an ABI
//! newer than the firmware), and [`GuestPolicy::launch_check`] adds what this VMM refuses for
//! confidential pods on top: DEBUG (would let the host decrypt guest memory) and MIGRATE_MA (no
//! migration agent support).
//! The policy is not part of the launch digest; it appears in the attestation report and in the
//! ID block.

/// Errors for a policy the firmware or this VMM refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// Bit 17 is reserved and must be one.
    #[error("guest policy {0:#x}: reserved bit 17 must be 1")]
    MustBeOneClear(u64),
    /// Bits above the ones defined by the ABI must be zero.
    #[error("guest policy {policy:#x}: reserved bits {bits:#x} are set")]
    ReservedBits { policy: u64, bits: u64 },
    /// The host runs with SMT and the policy does not allow it.
    #[error("guest policy {0:#x} forbids SMT but the host has SMT enabled")]
    SmtNotAllowed(u64),
    /// The policy requires a firmware ABI newer than the platform's.
    #[error(
        "guest policy requires firmware ABI {major}.{minor}, platform has {fw_major}.{fw_minor}"
    )]
    AbiTooNew {
        major: u8,
        minor: u8,
        fw_major: u8,
        fw_minor: u8,
    },
    /// DEBUG lets the host read guest memory via SNP_DBG_DECRYPT; never for a pod.
    #[error("guest policy {0:#x} allows debugging, which is refused for confidential guests")]
    DebugAllowed(u64),
    /// No migration agent support.
    #[error("guest policy {0:#x} allows a migration agent, which is not supported")]
    MigrationAgent(u64),
}

/// SNP guest policy (u64, little-endian in every structure that carries it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestPolicy(pub u64);

impl GuestPolicy {
    /// Bit 16: SMT allowed.
    pub const SMT: u64 = 1 << 16;
    /// Bit 17: reserved, must be one.
    pub const MBO: u64 = 1 << 17;
    /// Bit 18: migration agent allowed.
    pub const MIGRATE_MA: u64 = 1 << 18;
    /// Bit 19: debugging allowed.
    pub const DEBUG: u64 = 1 << 19;
    /// Bit 20: single socket only.
    pub const SINGLE_SOCKET: u64 = 1 << 20;
    /// Bits 21–24: CXL_ALLOW, MEM_AES_256_XTS, RAPL_DIS, CIPHERTEXT_HIDING.
    pub const ABI_1_55_BITS: u64 = 0xF << 21;
    /// Every bit the ABI revisions this crate knows define (0–24). Bit 25 (PAGE_SWAP_DISABLE in
    /// the newest revision) is treated as reserved until confirmed.
    pub const KNOWN: u64 = (1 << 25) - 1;
    /// The usual launch policy: SMT allowed plus the must-be-one bit.
    pub const DEFAULT: GuestPolicy = GuestPolicy(Self::SMT | Self::MBO);

    /// Minimum firmware ABI minor version.
    pub fn abi_minor(self) -> u8 {
        (self.0 & 0xff) as u8
    }

    /// Minimum firmware ABI major version.
    pub fn abi_major(self) -> u8 {
        ((self.0 >> 8) & 0xff) as u8
    }

    /// What SNP_LAUNCH_START firmware would refuse, for a platform with `host_smt` and firmware
    /// ABI `fw_abi` (major, minor).
    pub fn firmware_check(self, host_smt: bool, fw_abi: (u8, u8)) -> Result<(), PolicyError> {
        let p = self.0;
        if p & !Self::KNOWN != 0 {
            return Err(PolicyError::ReservedBits {
                policy: p,
                bits: p & !Self::KNOWN,
            });
        }
        if p & Self::MBO == 0 {
            return Err(PolicyError::MustBeOneClear(p));
        }
        if host_smt && p & Self::SMT == 0 {
            return Err(PolicyError::SmtNotAllowed(p));
        }
        if (self.abi_major(), self.abi_minor()) > fw_abi {
            return Err(PolicyError::AbiTooNew {
                major: self.abi_major(),
                minor: self.abi_minor(),
                fw_major: fw_abi.0,
                fw_minor: fw_abi.1,
            });
        }
        Ok(())
    }

    /// What this VMM refuses before asking firmware: reserved bits, the must-be-one bit, DEBUG
    /// and MIGRATE_MA. Host-dependent checks (SMT, ABI) are left to firmware.
    pub fn launch_check(self) -> Result<(), PolicyError> {
        let p = self.0;
        if p & !Self::KNOWN != 0 {
            return Err(PolicyError::ReservedBits {
                policy: p,
                bits: p & !Self::KNOWN,
            });
        }
        if p & Self::MBO == 0 {
            return Err(PolicyError::MustBeOneClear(p));
        }
        if p & Self::DEBUG != 0 {
            return Err(PolicyError::DebugAllowed(p));
        }
        if p & Self::MIGRATE_MA != 0 {
            return Err(PolicyError::MigrationAgent(p));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_passes_both_layers() {
        assert_eq!(GuestPolicy::DEFAULT.0, 0x30000);
        GuestPolicy::DEFAULT.launch_check().unwrap();
        GuestPolicy::DEFAULT.firmware_check(true, (1, 55)).unwrap();
    }

    #[test]
    fn firmware_refusals() {
        assert_eq!(
            GuestPolicy(0x10000).firmware_check(false, (1, 55)),
            Err(PolicyError::MustBeOneClear(0x10000))
        );
        assert!(matches!(
            GuestPolicy(0x30000 | 1 << 40).firmware_check(false, (1, 55)),
            Err(PolicyError::ReservedBits { bits, .. }) if bits == 1 << 40
        ));
        assert_eq!(
            GuestPolicy(0x20000).firmware_check(true, (1, 55)),
            Err(PolicyError::SmtNotAllowed(0x20000))
        );
        GuestPolicy(0x20000).firmware_check(false, (1, 55)).unwrap();
        assert!(matches!(
            GuestPolicy(0x30000 | 0x0238).firmware_check(true, (1, 55)),
            Err(PolicyError::AbiTooNew {
                major: 2,
                minor: 0x38,
                ..
            })
        ));
        // Firmware itself accepts DEBUG; only the VMM refuses it.
        GuestPolicy(0x30000 | GuestPolicy::DEBUG)
            .firmware_check(true, (1, 55))
            .unwrap();
    }

    #[test]
    fn vmm_refusals() {
        assert_eq!(
            GuestPolicy(0x30000 | GuestPolicy::DEBUG).launch_check(),
            Err(PolicyError::DebugAllowed(0xb0000))
        );
        assert_eq!(
            GuestPolicy(0x30000 | GuestPolicy::MIGRATE_MA).launch_check(),
            Err(PolicyError::MigrationAgent(0x70000))
        );
        GuestPolicy(0x30000 | GuestPolicy::SINGLE_SOCKET | GuestPolicy::ABI_1_55_BITS)
            .launch_check()
            .unwrap();
    }
}
