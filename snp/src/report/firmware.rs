//! The software platform's SNP firmware for guest requests: it owns the VMPCKs it wrote into
//! the guest's secrets page at launch, a per-instance model VCEK, and the launch facts a
//! report carries. A request page is authenticated under the VMPCK its header names, must
//! carry the next sequence number for that key, and is answered with an encrypted
//! MSG_REPORT_RSP holding a signed ATTESTATION_REPORT (ABI 56860 §7.3, §8.26, table
//! "MSG_REPORT_REQ/MSG_REPORT_RSP Message Structure").
//!
//! Model choices: every refused request answers firmware status INVALID_PARAM and leaves the
//! response page zero; the VCEK is generated per instance (there is no AMD chain to it).

use super::message::{self, Header, MSG_REPORT_REQ, MSG_REPORT_RSP};
use super::{Report, REPORT_SIZE, REPORT_VERSION};
use crate::launch::fw_status;
use crate::page_info::PAGE_SIZE;
use crate::page_state::memory::{MemoryError, ModelRam};
use crate::plan::{LaunchPlan, PlanError};
use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::OsRng;
use p384::ecdsa::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha384};

/// Offset of VMPCK0 in the secrets page (ABI table "Secrets Page Format"); VMPCK*n* follows
/// at 0x20 steps.
pub const SECRETS_VMPCK0: usize = 0x20;
/// Secrets page format version written.
pub const SECRETS_VERSION: u32 = 2;
/// Report request payload size (REPORT_DATA, VMPL, KEY_SEL, reserved).
pub const REPORT_REQ_SIZE: usize = 0x60;
/// Report response payload: STATUS, REPORT_SIZE, reserved to 0x20, then the report.
pub const REPORT_RSP_SIZE: usize = 0x20 + REPORT_SIZE;

const ID_KEY: std::ops::Range<usize> = 0x240..0x240 + 0x404;
const AUTHOR_KEY: std::ops::Range<usize> = 0x880..0x880 + 0x404;

/// What a launch fixed for every report of the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchFacts {
    /// Launch digest.
    pub measurement: [u8; 48],
    /// HOST_DATA.
    pub host_data: [u8; 32],
    /// Guest policy.
    pub policy: u64,
    /// Family, image ID and SVN from the ID block (zero without).
    pub family_id: [u8; 16],
    /// Image ID.
    pub image_id: [u8; 16],
    /// Guest SVN.
    pub guest_svn: u32,
    /// SHA-384 of the ID key structure (zero without ID block).
    pub id_key_digest: [u8; 48],
    /// SHA-384 of the author key structure (zero without).
    pub author_key_digest: [u8; 48],
    /// AUTHOR_KEY_EN.
    pub author_key_en: bool,
}

impl LaunchFacts {
    /// The facts of a launch without an ID block: only the digest, HOST_DATA and policy.
    pub fn without_id_block(measurement: [u8; 48], host_data: [u8; 32], policy: u64) -> Self {
        Self {
            measurement,
            host_data,
            policy,
            family_id: [0; 16],
            image_id: [0; 16],
            guest_svn: 0,
            id_key_digest: [0; 48],
            author_key_digest: [0; 48],
            author_key_en: false,
        }
    }

    /// The facts of launching `plan`.
    pub fn from_plan(plan: &LaunchPlan) -> Result<Self, PlanError> {
        let digest = plan.expected_digest()?;
        let mut facts = Self {
            measurement: *digest.as_bytes(),
            host_data: plan.host_data.0,
            policy: plan.policy.0,
            family_id: [0; 16],
            image_id: [0; 16],
            guest_svn: 0,
            id_key_digest: [0; 48],
            author_key_digest: [0; 48],
            author_key_en: false,
        };
        if let Some((block, auth)) = &plan.id {
            let bytes = auth.to_bytes();
            facts.family_id = block.family_id;
            facts.image_id = block.image_id;
            facts.guest_svn = block.guest_svn;
            facts.id_key_digest = Sha384::digest(&bytes[ID_KEY]).into();
            if auth.author_key_en {
                facts.author_key_digest = Sha384::digest(&bytes[AUTHOR_KEY]).into();
                facts.author_key_en = true;
            }
        }
        Ok(facts)
    }
}

/// The model firmware of one guest.
pub struct ModelFirmware {
    facts: LaunchFacts,
    vcek: SigningKey,
    vmpck: [[u8; 32]; 4],
    next_seqno: [u64; 4],
    chip_id: [u8; 64],
    report_id: [u8; 32],
    /// Reports issued.
    pub reports: u64,
}

impl std::fmt::Debug for ModelFirmware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelFirmware")
            .field("facts", &self.facts)
            .field("reports", &self.reports)
            .finish_non_exhaustive()
    }
}

impl ModelFirmware {
    /// Fresh keys for a guest launched with `facts`.
    pub fn new(facts: LaunchFacts) -> Self {
        let mut vmpck = [[0u8; 32]; 4];
        for k in &mut vmpck {
            OsRng.fill_bytes(k);
        }
        let mut chip_id = [0u8; 64];
        OsRng.fill_bytes(&mut chip_id);
        let mut report_id = [0u8; 32];
        OsRng.fill_bytes(&mut report_id);
        Self {
            facts,
            vcek: SigningKey::random(&mut OsRng),
            vmpck,
            next_seqno: [1; 4],
            chip_id,
            report_id,
            reports: 0,
        }
    }

    /// The VCEK public key a verifier needs.
    pub fn vcek(&self) -> VerifyingKey {
        *self.vcek.verifying_key()
    }

    /// The certificate table a host of this chip would configure (`--snp-certs`): the VCEK's
    /// X.509 certificate under the VCEK GUID, so a guest's extended request carries what
    /// verifies its report.
    pub fn certificate_table(&self) -> Result<crate::certs::CertTable, super::ReportError> {
        let der = super::vcek_cert::model_vcek_certificate(&self.vcek())?;
        crate::certs::CertTable::build(&[(crate::certs::VCEK_GUID, &der)])
            .map_err(|e| super::ReportError::Key(e.to_string()))
    }

    /// The secrets page contents (version, VMPCK0..3).
    pub fn secrets_page(&self) -> [u8; PAGE_SIZE] {
        let mut p = [0u8; PAGE_SIZE];
        p[..4].copy_from_slice(&SECRETS_VERSION.to_le_bytes());
        for (i, k) in self.vmpck.iter().enumerate() {
            let at = SECRETS_VMPCK0 + 32 * i;
            p[at..at + 32].copy_from_slice(k);
        }
        p
    }

    /// Write the secrets page into the guest's private page at `gpa` (a launched SECRETS
    /// page: private and validated).
    pub fn install_secrets(&self, ram: &mut ModelRam, gpa: u64) -> Result<(), MemoryError> {
        ram.guest_write(gpa, &self.secrets_page(), true)
    }

    /// The signed report for `report_data` at `vmpl`.
    pub fn report(&self, report_data: [u8; 64], vmpl: u32) -> [u8; REPORT_SIZE] {
        let f = &self.facts;
        Report {
            version: REPORT_VERSION,
            guest_svn: f.guest_svn,
            policy: f.policy,
            family_id: f.family_id,
            image_id: f.image_id,
            vmpl,
            current_tcb: MODEL_TCB,
            platform_info: 1,
            key_info: u32::from(f.author_key_en),
            report_data,
            measurement: f.measurement,
            host_data: f.host_data,
            id_key_digest: f.id_key_digest,
            author_key_digest: f.author_key_digest,
            report_id: self.report_id,
            reported_tcb: MODEL_TCB,
            chip_id: self.chip_id,
        }
        .sign(&self.vcek)
    }

    /// Answer one SNP_GUEST_REQUEST: returns the firmware status.
    pub fn guest_request(&mut self, request: &[u8], response: &mut [u8]) -> u32 {
        match self.try_request(request) {
            Ok(page) if page.len() <= response.len() => {
                response[..page.len()].copy_from_slice(&page);
                0
            }
            Ok(_) => fw_status::INVALID_LENGTH,
            Err(e) => {
                log::debug!("model firmware refused a guest request: {e}");
                fw_status::INVALID_PARAM
            }
        }
    }

    fn try_request(&mut self, request: &[u8]) -> Result<Vec<u8>, message::MessageError> {
        let h = message::header(request)?;
        let slot = usize::from(h.vmpck);
        let key = self.vmpck[slot];
        let (h, payload) = message::open(&key, request)?;
        if h.seqno != self.next_seqno[slot] {
            return Err(message::MessageError::Header("unexpected sequence number"));
        }
        if h.msg_type != MSG_REPORT_REQ || payload.len() < REPORT_REQ_SIZE {
            return Err(message::MessageError::Header("not a report request"));
        }
        let mut report_data = [0u8; 64];
        report_data.copy_from_slice(&payload[..64]);
        let mut v = [0u8; 4];
        v.copy_from_slice(&payload[0x40..0x44]);
        let vmpl = u32::from_le_bytes(v);
        let mut body = vec![0u8; REPORT_RSP_SIZE];
        if vmpl > 3 {
            body[..4].copy_from_slice(&fw_status::INVALID_PARAM.to_le_bytes());
        } else {
            body[4..8].copy_from_slice(&(REPORT_SIZE as u32).to_le_bytes());
            body[0x20..].copy_from_slice(&self.report(report_data, vmpl));
            self.reports += 1;
        }
        let rsp = Header {
            seqno: h.seqno + 1,
            msg_type: MSG_REPORT_RSP,
            msg_version: 1,
            msg_size: 0,
            vmpck: h.vmpck,
        };
        let page = message::seal(&key, &rsp, &body)?;
        self.next_seqno[slot] = h.seqno + 2;
        Ok(page)
    }
}

/// TCB version the model reports (bootloader 3, TEE 0, SNP 8, microcode 115).
pub const MODEL_TCB: u64 = 3 | (8 << 48) | (115 << 56);

/// Guest side of a report request: build the request page and read the report from the
/// response (what a guest driver does; used by the model guest and tests).
pub fn request_page(vmpck: &[u8; 32], seqno: u64, slot: u8, report_data: &[u8; 64]) -> Vec<u8> {
    let mut payload = [0u8; REPORT_REQ_SIZE];
    payload[..64].copy_from_slice(report_data);
    let h = Header {
        seqno,
        msg_type: MSG_REPORT_REQ,
        msg_version: 1,
        msg_size: 0,
        vmpck: slot,
    };
    // A 0x60-byte payload always fits a page.
    message::seal(vmpck, &h, &payload).unwrap_or_default()
}

/// Decrypt a report response and return the report bytes.
pub fn report_from_response(
    vmpck: &[u8; 32],
    expect_seqno: u64,
    page: &[u8],
) -> Result<Vec<u8>, message::MessageError> {
    let (h, body) = message::open(vmpck, page)?;
    if h.seqno != expect_seqno || h.msg_type != MSG_REPORT_RSP {
        return Err(message::MessageError::Header("unexpected response"));
    }
    let status = body
        .get(..4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
    if status != Some(0) {
        return Err(message::MessageError::Header("report request failed"));
    }
    body.get(0x20..0x20 + REPORT_SIZE)
        .map(<[u8]>::to_vec)
        .ok_or(message::MessageError::Header("short report response"))
}
