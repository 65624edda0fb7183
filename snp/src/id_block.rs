//! SNP_LAUNCH_FINISH inputs that identify and authenticate the image: the ID block, the ID
//! authentication information structure and HOST_DATA (SEV-SNP Firmware ABI 56860 §8.18
//! "SNP_LAUNCH_FINISH", tables "ID Block Structure", "ID Authentication Information
//! Structure", "ECDSA Signature", "ECDSA Public Key").
//!
//! The IGVM `SnpIdBlock` directive carries the pieces in its own layout; this module places
//! them at the firmware offsets. The firmware compares ID block LD with the launch digest and
//! ID block POLICY with the launch policy, failing LAUNCH_FINISH with BAD_MEASUREMENT on a
//! mismatch, so a plan checks both before launching.

use crate::hex::{self, HexError};
use crate::page_info::LAUNCH_DIGEST_SIZE;
use crate::policy::GuestPolicy;

/// Size of the ID block (`KVM_SEV_SNP_ID_BLOCK_SIZE`).
pub const ID_BLOCK_SIZE: usize = 96;
/// Size of the ID authentication structure (`KVM_SEV_SNP_ID_AUTH_SIZE`).
pub const ID_AUTH_SIZE: usize = 4096;
/// Size of HOST_DATA (`KVM_SEV_SNP_FINISH_DATA_SIZE`).
pub const HOST_DATA_SIZE: usize = 32;
/// ID_KEY_ALGO / AUTH_KEY_ALGO value for ECDSA P-384 with SHA-384.
pub const ALGO_ECDSA_P384_SHA384: u32 = 1;
/// ECDSA curve identifier for P-384.
pub const CURVE_P384: u32 = 2;
/// The only ID block format version the ABI defines.
pub const ID_BLOCK_VERSION: u32 = 1;

const SIG_OFFSET_ID_BLOCK: usize = 0x040;
const KEY_OFFSET_ID: usize = 0x240;
const SIG_OFFSET_ID_KEY: usize = 0x680;
const KEY_OFFSET_AUTHOR: usize = 0x880;
const SIG_SIZE: usize = 0x200;
const KEY_SIZE: usize = 0x404;
const COMPONENT_SIZE: usize = 72;

/// Errors building the ID block or parsing host data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdBlockError {
    /// The format version field must be 1.
    #[error("SNP ID block version {0} is not supported (firmware accepts only version 1)")]
    BadVersion(u32),
    /// Only ECDSA P-384 with SHA-384 is defined.
    #[error("SNP ID block {which} algorithm {algo} is not ECDSA P-384/SHA-384 (1)")]
    BadAlgorithm { which: &'static str, algo: u32 },
    /// Only curve P-384 is defined.
    #[error("SNP ID block {which} curve {curve} is not P-384 (2)")]
    BadCurve { which: &'static str, curve: u32 },
    /// AUTHOR_KEY_EN must be 0 or 1.
    #[error("SNP ID block author_key_enabled is {0}, expected 0 or 1")]
    BadAuthorKeyFlag(u8),
    /// HOST_DATA is 64 hex digits.
    #[error("host data must be 64 hex digits (32 bytes): {0}")]
    HostData(#[from] HexError),
}

/// HOST_DATA: 32 host-chosen bytes copied into every attestation report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostData(pub [u8; HOST_DATA_SIZE]);

impl HostData {
    /// Parse exactly 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, IdBlockError> {
        Ok(Self(hex::decode_array::<HOST_DATA_SIZE>(s.trim())?))
    }
}

/// An ECDSA P-384 signature: R and S, 72 bytes each, little-endian, zero-padded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcdsaSignature {
    /// R component.
    pub r: [u8; COMPONENT_SIZE],
    /// S component.
    pub s: [u8; COMPONENT_SIZE],
}

/// An ECDSA public key: curve, QX and QY (72 bytes each, little-endian).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcdsaPublicKey {
    /// Curve identifier ([`CURVE_P384`]).
    pub curve: u32,
    /// X coordinate.
    pub qx: [u8; COMPONENT_SIZE],
    /// Y coordinate.
    pub qy: [u8; COMPONENT_SIZE],
}

/// The 96-byte ID block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdBlock {
    /// Expected launch digest.
    pub ld: [u8; LAUNCH_DIGEST_SIZE],
    /// Family ID (opaque to firmware, copied into the report).
    pub family_id: [u8; 16],
    /// Image ID (opaque to firmware, copied into the report).
    pub image_id: [u8; 16],
    /// Format version (1).
    pub version: u32,
    /// Guest security version number.
    pub guest_svn: u32,
    /// Policy the image was signed for; must equal the launch policy.
    pub policy: GuestPolicy,
}

impl IdBlock {
    /// Firmware layout: LD @0x00, FAMILY_ID @0x30, IMAGE_ID @0x40, VERSION @0x50,
    /// GUEST_SVN @0x54, POLICY @0x58.
    pub fn to_bytes(&self) -> [u8; ID_BLOCK_SIZE] {
        let mut b = [0u8; ID_BLOCK_SIZE];
        b[0x00..0x30].copy_from_slice(&self.ld);
        b[0x30..0x40].copy_from_slice(&self.family_id);
        b[0x40..0x50].copy_from_slice(&self.image_id);
        b[0x50..0x54].copy_from_slice(&self.version.to_le_bytes());
        b[0x54..0x58].copy_from_slice(&self.guest_svn.to_le_bytes());
        b[0x58..0x60].copy_from_slice(&self.policy.0.to_le_bytes());
        b
    }

    /// Parse the firmware layout (used by the software platform model).
    pub fn from_bytes(b: &[u8; ID_BLOCK_SIZE]) -> Self {
        let mut ld = [0u8; LAUNCH_DIGEST_SIZE];
        ld.copy_from_slice(&b[0x00..0x30]);
        let mut family_id = [0u8; 16];
        family_id.copy_from_slice(&b[0x30..0x40]);
        let mut image_id = [0u8; 16];
        image_id.copy_from_slice(&b[0x40..0x50]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let mut pol = [0u8; 8];
        pol.copy_from_slice(&b[0x58..0x60]);
        Self {
            ld,
            family_id,
            image_id,
            version: u32_at(0x50),
            guest_svn: u32_at(0x54),
            policy: GuestPolicy(u64::from_le_bytes(pol)),
        }
    }
}

/// The 4096-byte ID authentication information structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdAuth {
    /// ID_KEY_ALGO.
    pub id_key_algo: u32,
    /// AUTH_KEY_ALGO.
    pub auth_key_algo: u32,
    /// Signature of the ID block by the ID key.
    pub id_block_sig: EcdsaSignature,
    /// The ID key.
    pub id_key: EcdsaPublicKey,
    /// Signature of the ID key by the author key (meaningful only with `author_key_en`).
    pub id_key_sig: EcdsaSignature,
    /// The author key (meaningful only with `author_key_en`).
    pub author_key: EcdsaPublicKey,
    /// AUTH_KEY_EN for LAUNCH_FINISH.
    pub author_key_en: bool,
}

fn put_sig(b: &mut [u8], off: usize, sig: &EcdsaSignature) {
    b[off..off + COMPONENT_SIZE].copy_from_slice(&sig.r);
    b[off + COMPONENT_SIZE..off + 2 * COMPONENT_SIZE].copy_from_slice(&sig.s);
}

fn put_key(b: &mut [u8], off: usize, key: &EcdsaPublicKey) {
    b[off..off + 4].copy_from_slice(&key.curve.to_le_bytes());
    b[off + 4..off + 4 + COMPONENT_SIZE].copy_from_slice(&key.qx);
    b[off + 4 + COMPONENT_SIZE..off + 4 + 2 * COMPONENT_SIZE].copy_from_slice(&key.qy);
}

impl IdAuth {
    /// Firmware layout: ID_KEY_ALGO @0x000, AUTH_KEY_ALGO @0x004, ID_BLOCK_SIG @0x040 (0x200
    /// bytes), ID_KEY @0x240 (0x404), ID_KEY_SIG @0x680 (0x200), AUTHOR_KEY @0x880 (0x404);
    /// everything else reserved zero.
    pub fn to_bytes(&self) -> Box<[u8; ID_AUTH_SIZE]> {
        let mut b = Box::new([0u8; ID_AUTH_SIZE]);
        b[0..4].copy_from_slice(&self.id_key_algo.to_le_bytes());
        b[4..8].copy_from_slice(&self.auth_key_algo.to_le_bytes());
        put_sig(&mut b[..], SIG_OFFSET_ID_BLOCK, &self.id_block_sig);
        put_key(&mut b[..], KEY_OFFSET_ID, &self.id_key);
        put_sig(&mut b[..], SIG_OFFSET_ID_KEY, &self.id_key_sig);
        put_key(&mut b[..], KEY_OFFSET_AUTHOR, &self.author_key);
        b
    }
}

const _: () = assert!(SIG_OFFSET_ID_BLOCK + SIG_SIZE == KEY_OFFSET_ID);
const _: () = assert!(KEY_OFFSET_ID + KEY_SIZE + 60 == SIG_OFFSET_ID_KEY);
const _: () = assert!(SIG_OFFSET_ID_KEY + SIG_SIZE == KEY_OFFSET_AUTHOR);
const _: () = assert!(KEY_OFFSET_AUTHOR + KEY_SIZE <= ID_AUTH_SIZE);

/// Build the ID block and ID auth from an IGVM `SnpIdBlock` directive and the launch policy.
pub fn from_igvm(
    directive: &igvm::IgvmDirectiveHeader,
    policy: GuestPolicy,
) -> Result<Option<(IdBlock, IdAuth)>, IdBlockError> {
    let igvm::IgvmDirectiveHeader::SnpIdBlock {
        author_key_enabled,
        ld,
        family_id,
        image_id,
        version,
        guest_svn,
        id_key_algorithm,
        author_key_algorithm,
        id_key_signature,
        id_public_key,
        author_key_signature,
        author_public_key,
        ..
    } = directive
    else {
        return Ok(None);
    };
    if *version != ID_BLOCK_VERSION {
        return Err(IdBlockError::BadVersion(*version));
    }
    if *id_key_algorithm != ALGO_ECDSA_P384_SHA384 {
        return Err(IdBlockError::BadAlgorithm {
            which: "ID key",
            algo: *id_key_algorithm,
        });
    }
    if id_public_key.curve != CURVE_P384 {
        return Err(IdBlockError::BadCurve {
            which: "ID key",
            curve: id_public_key.curve,
        });
    }
    let author_key_en = match author_key_enabled {
        0 => false,
        1 => true,
        other => return Err(IdBlockError::BadAuthorKeyFlag(*other)),
    };
    if author_key_en {
        if *author_key_algorithm != ALGO_ECDSA_P384_SHA384 {
            return Err(IdBlockError::BadAlgorithm {
                which: "author key",
                algo: *author_key_algorithm,
            });
        }
        if author_public_key.curve != CURVE_P384 {
            return Err(IdBlockError::BadCurve {
                which: "author key",
                curve: author_public_key.curve,
            });
        }
    }
    let block = IdBlock {
        ld: *ld,
        family_id: *family_id,
        image_id: *image_id,
        version: *version,
        guest_svn: *guest_svn,
        policy,
    };
    let sig = |s: &igvm_defs::IGVM_VHS_SNP_ID_BLOCK_SIGNATURE| EcdsaSignature {
        r: s.r_comp,
        s: s.s_comp,
    };
    let key = |k: &igvm_defs::IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY| EcdsaPublicKey {
        curve: k.curve,
        qx: k.qx,
        qy: k.qy,
    };
    let auth = IdAuth {
        id_key_algo: *id_key_algorithm,
        auth_key_algo: if author_key_en {
            *author_key_algorithm
        } else {
            0
        },
        id_block_sig: sig(id_key_signature),
        id_key: key(id_public_key),
        id_key_sig: sig(author_key_signature),
        author_key: key(author_public_key),
        author_key_en,
    };
    Ok(Some((block, auth)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_block_offsets() {
        let block = IdBlock {
            ld: [0x11; 48],
            family_id: [0x22; 16],
            image_id: [0x33; 16],
            version: 1,
            guest_svn: 0x0403_0201,
            policy: GuestPolicy(0x30000),
        };
        let b = block.to_bytes();
        assert_eq!(b[47], 0x11);
        assert_eq!(b[48], 0x22);
        assert_eq!(b[64], 0x33);
        assert_eq!(&b[80..84], &[1, 0, 0, 0]);
        assert_eq!(&b[84..88], &[1, 2, 3, 4]);
        assert_eq!(&b[88..96], &[0, 0, 3, 0, 0, 0, 0, 0]);
        assert_eq!(IdBlock::from_bytes(&b), block);
    }

    #[test]
    fn id_auth_offsets() {
        let sig = EcdsaSignature {
            r: [0xa1; 72],
            s: [0xa2; 72],
        };
        let key = EcdsaPublicKey {
            curve: CURVE_P384,
            qx: [0xb1; 72],
            qy: [0xb2; 72],
        };
        let auth = IdAuth {
            id_key_algo: 1,
            auth_key_algo: 1,
            id_block_sig: sig.clone(),
            id_key: key.clone(),
            id_key_sig: sig,
            author_key: key,
            author_key_en: true,
        };
        let b = auth.to_bytes();
        assert_eq!(&b[0..8], &[1, 0, 0, 0, 1, 0, 0, 0]);
        assert!(b[8..0x40].iter().all(|&x| x == 0));
        assert_eq!(b[0x40], 0xa1);
        assert_eq!(b[0x40 + 72], 0xa2);
        assert_eq!(b[0x40 + 144], 0);
        assert_eq!(&b[0x240..0x244], &[2, 0, 0, 0]);
        assert_eq!(b[0x244], 0xb1);
        assert_eq!(b[0x244 + 72], 0xb2);
        assert_eq!(b[0x680], 0xa1);
        assert_eq!(b[0x884], 0xb1);
        assert!(b[0x880 + 0x94..].iter().all(|&x| x == 0));
    }

    #[test]
    fn host_data_parsing() {
        let hex64 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let hd = HostData::from_hex(hex64).unwrap();
        assert_eq!(hd.0[1], 0x11);
        assert!(HostData::from_hex(&hex64[..62]).is_err());
        assert!(HostData::from_hex(&format!("{}zz", &hex64[..62])).is_err());
        assert!(HostData::from_hex("").is_err());
    }
}
