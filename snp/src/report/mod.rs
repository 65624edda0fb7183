//! SNP attestation reports: the ATTESTATION_REPORT layout (SEV-SNP Firmware ABI 56860 §7.3,
//! table "ATTESTATION_REPORT Structure"), its ECDSA P-384 signature, and a verifier that
//! checks signature and expected fields and names the first mismatch.
//!
//! [`message`] is the guest-message protocol that carries report requests (ABI §8.26 "Guest
//! messages": AES-256-GCM under a VMPCK), and [`firmware`] is the software platform's answer to
//! SNP guest requests (data flow 5; the GHCB guest-request event delivers the pages).

pub mod firmware;
pub mod message;
pub mod vcek_cert;

use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};

/// Size of the report.
pub const REPORT_SIZE: usize = 0x4A0;
/// Bytes covered by the signature.
pub const SIGNED_SIZE: usize = 0x2A0;
/// Report format version produced.
pub const REPORT_VERSION: u32 = 2;
/// SIGNATURE_ALGO: ECDSA P-384 with SHA-384.
pub const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;

mod off {
    pub const VERSION: usize = 0x00;
    pub const GUEST_SVN: usize = 0x04;
    pub const POLICY: usize = 0x08;
    pub const FAMILY_ID: usize = 0x10;
    pub const IMAGE_ID: usize = 0x20;
    pub const VMPL: usize = 0x30;
    pub const SIG_ALGO: usize = 0x34;
    pub const CURRENT_TCB: usize = 0x38;
    pub const PLATFORM_INFO: usize = 0x40;
    pub const KEY_INFO: usize = 0x48;
    pub const REPORT_DATA: usize = 0x50;
    pub const MEASUREMENT: usize = 0x90;
    pub const HOST_DATA: usize = 0xC0;
    pub const ID_KEY_DIGEST: usize = 0xE0;
    pub const AUTHOR_KEY_DIGEST: usize = 0x110;
    pub const REPORT_ID: usize = 0x140;
    pub const REPORTED_TCB: usize = 0x180;
    pub const CHIP_ID: usize = 0x1A0;
    pub const SIGNATURE: usize = 0x2A0;
}

/// Length of R and S in the signature (little-endian, zero-padded).
const SIG_COMPONENT: usize = 72;

/// Report verification and parsing failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The input is not a report.
    #[error("report is {len} bytes, expected {REPORT_SIZE}")]
    Size { len: usize },
    /// The signature algorithm is not ECDSA P-384.
    #[error("signature algorithm {0} is not ECDSA P-384/SHA-384")]
    Algorithm(u32),
    /// The signature does not verify under the VCEK.
    #[error("signature does not verify under the given VCEK")]
    Signature,
    /// A field differs from what was expected.
    #[error("{field} mismatch: expected {expected}, report has {got}")]
    Mismatch {
        field: &'static str,
        expected: String,
        got: String,
    },
    /// The VCEK could not be read.
    #[error("VCEK public key: {0}")]
    Key(String),
}

/// The fields of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Format version.
    pub version: u32,
    /// Guest SVN from the ID block.
    pub guest_svn: u32,
    /// Guest policy.
    pub policy: u64,
    /// Family ID from the ID block.
    pub family_id: [u8; 16],
    /// Image ID from the ID block.
    pub image_id: [u8; 16],
    /// VMPL of the requester.
    pub vmpl: u32,
    /// Current platform TCB.
    pub current_tcb: u64,
    /// Platform info bits (SMT enabled, TSME enabled, ...).
    pub platform_info: u64,
    /// Bit 0 AUTHOR_KEY_EN, bit 1 MASK_CHIP_KEY, bits 4:2 SIGNING_KEY (0 = VCEK).
    pub key_info: u32,
    /// Guest-chosen data.
    pub report_data: [u8; 64],
    /// Launch digest.
    pub measurement: [u8; 48],
    /// HOST_DATA from LAUNCH_FINISH.
    pub host_data: [u8; 32],
    /// SHA-384 of the ID key (zero without ID block).
    pub id_key_digest: [u8; 48],
    /// SHA-384 of the author key (zero without).
    pub author_key_digest: [u8; 48],
    /// Report ID of the guest context.
    pub report_id: [u8; 32],
    /// TCB the report was signed for.
    pub reported_tcb: u64,
    /// Chip identifier.
    pub chip_id: [u8; 64],
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(arr(b, at))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(arr(b, at))
}

impl Report {
    /// The unsigned report body with the signature area zeroed.
    pub fn to_bytes(&self) -> [u8; REPORT_SIZE] {
        let mut b = [0u8; REPORT_SIZE];
        put(&mut b, off::VERSION, &self.version.to_le_bytes());
        put(&mut b, off::GUEST_SVN, &self.guest_svn.to_le_bytes());
        put(&mut b, off::POLICY, &self.policy.to_le_bytes());
        put(&mut b, off::FAMILY_ID, &self.family_id);
        put(&mut b, off::IMAGE_ID, &self.image_id);
        put(&mut b, off::VMPL, &self.vmpl.to_le_bytes());
        put(
            &mut b,
            off::SIG_ALGO,
            &SIG_ALGO_ECDSA_P384_SHA384.to_le_bytes(),
        );
        put(&mut b, off::CURRENT_TCB, &self.current_tcb.to_le_bytes());
        put(
            &mut b,
            off::PLATFORM_INFO,
            &self.platform_info.to_le_bytes(),
        );
        put(&mut b, off::KEY_INFO, &self.key_info.to_le_bytes());
        put(&mut b, off::REPORT_DATA, &self.report_data);
        put(&mut b, off::MEASUREMENT, &self.measurement);
        put(&mut b, off::HOST_DATA, &self.host_data);
        put(&mut b, off::ID_KEY_DIGEST, &self.id_key_digest);
        put(&mut b, off::AUTHOR_KEY_DIGEST, &self.author_key_digest);
        put(&mut b, off::REPORT_ID, &self.report_id);
        put(&mut b, off::REPORTED_TCB, &self.reported_tcb.to_le_bytes());
        put(&mut b, off::CHIP_ID, &self.chip_id);
        b
    }

    /// Parse the fields of a report (the signature is not checked here).
    pub fn parse(b: &[u8]) -> Result<Self, ReportError> {
        if b.len() != REPORT_SIZE {
            return Err(ReportError::Size { len: b.len() });
        }
        Ok(Self {
            version: u32_at(b, off::VERSION),
            guest_svn: u32_at(b, off::GUEST_SVN),
            policy: u64_at(b, off::POLICY),
            family_id: arr(b, off::FAMILY_ID),
            image_id: arr(b, off::IMAGE_ID),
            vmpl: u32_at(b, off::VMPL),
            current_tcb: u64_at(b, off::CURRENT_TCB),
            platform_info: u64_at(b, off::PLATFORM_INFO),
            key_info: u32_at(b, off::KEY_INFO),
            report_data: arr(b, off::REPORT_DATA),
            measurement: arr(b, off::MEASUREMENT),
            host_data: arr(b, off::HOST_DATA),
            id_key_digest: arr(b, off::ID_KEY_DIGEST),
            author_key_digest: arr(b, off::AUTHOR_KEY_DIGEST),
            report_id: arr(b, off::REPORT_ID),
            reported_tcb: u64_at(b, off::REPORTED_TCB),
            chip_id: arr(b, off::CHIP_ID),
        })
    }

    /// The signed report: body plus R and S, each little-endian in 72 bytes (ABI §7.3,
    /// "ECDSA P-384 with SHA-384 Signature Format").
    pub fn sign(&self, key: &SigningKey) -> [u8; REPORT_SIZE] {
        let mut b = self.to_bytes();
        let sig: Signature = key.sign(&b[..SIGNED_SIZE]);
        let (r, s) = sig.split_bytes();
        for (i, comp) in [r, s].iter().enumerate() {
            let mut le = [0u8; SIG_COMPONENT];
            for (d, v) in le.iter_mut().zip(comp.iter().rev()) {
                *d = *v;
            }
            put(&mut b, off::SIGNATURE + i * SIG_COMPONENT, &le);
        }
        b
    }
}

/// What a verifier expects besides a valid signature.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Launch measurement.
    pub measurement: Option<[u8; 48]>,
    /// HOST_DATA.
    pub host_data: Option<[u8; 32]>,
    /// REPORT_DATA (a nonce the verifier chose).
    pub report_data: Option<[u8; 64]>,
    /// Guest policy.
    pub policy: Option<u64>,
}

/// Read a VCEK public key from PEM (SubjectPublicKeyInfo).
pub fn vcek_from_pem(pem: &str) -> Result<VerifyingKey, ReportError> {
    use p384::pkcs8::DecodePublicKey;
    VerifyingKey::from_public_key_pem(pem).map_err(|e| ReportError::Key(e.to_string()))
}

/// Write a VCEK public key as PEM.
pub fn vcek_to_pem(key: &VerifyingKey) -> Result<String, ReportError> {
    use p384::pkcs8::{EncodePublicKey, LineEnding};
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| ReportError::Key(e.to_string()))
}

fn signature_of(b: &[u8]) -> Result<Signature, ReportError> {
    let mut be = [0u8; 96];
    for i in 0..2 {
        let comp = &b[off::SIGNATURE + i * SIG_COMPONENT..off::SIGNATURE + (i + 1) * SIG_COMPONENT];
        // P-384 components are 48 bytes; the padding must be zero.
        if comp[48..].iter().any(|&x| x != 0) {
            return Err(ReportError::Signature);
        }
        for (d, v) in be[i * 48..(i + 1) * 48]
            .iter_mut()
            .zip(comp[..48].iter().rev())
        {
            *d = *v;
        }
    }
    Signature::from_slice(&be).map_err(|_| ReportError::Signature)
}

fn check<const N: usize>(
    field: &'static str,
    expected: Option<[u8; N]>,
    got: &[u8; N],
) -> Result<(), ReportError> {
    match expected {
        Some(e) if e != *got => Err(ReportError::Mismatch {
            field,
            expected: crate::hex::encode(&e),
            got: crate::hex::encode(got),
        }),
        _ => Ok(()),
    }
}

/// Verify `bytes` under `vcek` and against `expected`; returns the parsed report.
pub fn verify(
    bytes: &[u8],
    vcek: &VerifyingKey,
    expected: &Expected,
) -> Result<Report, ReportError> {
    let report = Report::parse(bytes)?;
    let algo = u32_at(bytes, off::SIG_ALGO);
    if algo != SIG_ALGO_ECDSA_P384_SHA384 {
        return Err(ReportError::Algorithm(algo));
    }
    let sig = signature_of(bytes)?;
    vcek.verify(&bytes[..SIGNED_SIZE], &sig)
        .map_err(|_| ReportError::Signature)?;
    check("measurement", expected.measurement, &report.measurement)?;
    check("host_data", expected.host_data, &report.host_data)?;
    check("report_data", expected.report_data, &report.report_data)?;
    if let Some(p) = expected.policy {
        if p != report.policy {
            return Err(ReportError::Mismatch {
                field: "policy",
                expected: format!("{p:#x}"),
                got: format!("{:#x}", report.policy),
            });
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
