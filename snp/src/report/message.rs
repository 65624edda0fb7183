//! SNP guest messages (SEV-SNP Firmware ABI 56860 §8.26, "Guest Messages"; Linux
//! `arch/x86/coco/sev` `snp_guest_msg`): a 0x60-byte header followed by a payload encrypted
//! with AES-256-GCM under the VMPCK the header names. The IV is the 64-bit sequence number
//! (little-endian, zero-padded to 12 bytes), the additional data is the header from ALGO to
//! its end (0x30..0x60), the 16-byte tag sits at the start of AUTHTAG. A response carries the
//! request's sequence number plus one.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};

/// Header size.
pub const HEADER_SIZE: usize = 0x60;
/// ALGO: AES-256-GCM.
pub const ALGO_AES_256_GCM: u8 = 1;
/// Header version.
pub const HDR_VERSION: u8 = 1;
/// MSG_TYPE of a report request.
pub const MSG_REPORT_REQ: u8 = 5;
/// MSG_TYPE of a report response.
pub const MSG_REPORT_RSP: u8 = 6;
/// Largest payload in one 4 KiB message page.
pub const MAX_PAYLOAD: usize = 4096 - HEADER_SIZE;

const AAD: std::ops::Range<usize> = 0x30..0x60;
const TAG_LEN: usize = 16;

/// Message failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Guest fault: the header is malformed.
    #[error("guest message header: {0}")]
    Header(&'static str),
    /// Guest fault: authentication failed (wrong key, tampered, replayed).
    #[error("guest message does not authenticate")]
    Auth,
    /// Guest fault: the payload does not fit a page.
    #[error("payload of {0} bytes does not fit a message page")]
    TooLarge(usize),
}

/// A decoded message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Sequence number.
    pub seqno: u64,
    /// Message type.
    pub msg_type: u8,
    /// Message version.
    pub msg_version: u8,
    /// Payload size.
    pub msg_size: u16,
    /// VMPCK index (0..=3).
    pub vmpck: u8,
}

fn write_header(h: &Header, out: &mut [u8]) {
    out[..HEADER_SIZE].fill(0);
    out[0x20..0x28].copy_from_slice(&h.seqno.to_le_bytes());
    out[0x30] = ALGO_AES_256_GCM;
    out[0x31] = HDR_VERSION;
    out[0x32..0x34].copy_from_slice(&(HEADER_SIZE as u16).to_le_bytes());
    out[0x34] = h.msg_type;
    out[0x35] = h.msg_version;
    out[0x36..0x38].copy_from_slice(&h.msg_size.to_le_bytes());
    out[0x3C] = h.vmpck;
}

fn nonce(seqno: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    iv
}

/// Build an encrypted message page.
pub fn seal(key: &[u8; 32], h: &Header, payload: &[u8]) -> Result<Vec<u8>, MessageError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(MessageError::TooLarge(payload.len()));
    }
    let h = Header {
        msg_size: payload.len() as u16,
        ..*h
    };
    let mut out = vec![0u8; HEADER_SIZE + payload.len()];
    write_header(&h, &mut out);
    let (head, body) = out.split_at_mut(HEADER_SIZE);
    body.copy_from_slice(payload);
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce(h.seqno)), &head[AAD], body)
        .map_err(|_| MessageError::TooLarge(payload.len()))?;
    head[..TAG_LEN].copy_from_slice(&tag);
    Ok(out)
}

/// Parse the header of `page` without decrypting.
pub fn header(page: &[u8]) -> Result<Header, MessageError> {
    let h = page
        .get(..HEADER_SIZE)
        .ok_or(MessageError::Header("short page"))?;
    if h[0x30] != ALGO_AES_256_GCM {
        return Err(MessageError::Header("unknown algorithm"));
    }
    if h[0x31] != HDR_VERSION || u16::from_le_bytes([h[0x32], h[0x33]]) != HEADER_SIZE as u16 {
        return Err(MessageError::Header("unknown header version or size"));
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&h[0x20..0x28]);
    let msg_size = u16::from_le_bytes([h[0x36], h[0x37]]);
    if usize::from(msg_size) > MAX_PAYLOAD {
        return Err(MessageError::TooLarge(msg_size.into()));
    }
    if h[0x3C] > 3 {
        return Err(MessageError::Header("VMPCK index above 3"));
    }
    Ok(Header {
        seqno: u64::from_le_bytes(seq),
        msg_type: h[0x34],
        msg_version: h[0x35],
        msg_size,
        vmpck: h[0x3C],
    })
}

/// Authenticate and decrypt `page`; returns the header and the payload.
pub fn open(key: &[u8; 32], page: &[u8]) -> Result<(Header, Vec<u8>), MessageError> {
    let h = header(page)?;
    let end = HEADER_SIZE + usize::from(h.msg_size);
    let mut body = page
        .get(HEADER_SIZE..end)
        .ok_or(MessageError::Header("payload runs past the page"))?
        .to_vec();
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(&nonce(h.seqno)),
            &page[AAD],
            &mut body,
            Tag::from_slice(&page[..TAG_LEN]),
        )
        .map_err(|_| MessageError::Auth)?;
    Ok((h, body))
}
