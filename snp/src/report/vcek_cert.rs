//! VCEK certificates: AMD's key distribution service hands out the VCEK as an X.509
//! certificate (RFC 5280) whose subject public key is the P-384 key that signs the chip's
//! reports. `podvisor attest verify --vcek` takes that certificate as well as a bare public
//! key; only the key is used here (checking the certificate's chain up to AMD's root, ASK and
//! ARK, is a separate step the verifier's owner makes with AMD's certificates).
//!
//! Parsing uses the `der` crate the `p384` key types already bring, strictly: one
//! certificate, DER (no trailing bytes), the three top-level fields, and a P-384 key in it.
//! [`model_vcek_certificate`] writes such a certificate for the software platform's VCEK, as
//! the key distribution service would for a chip's.

use p384::ecdsa::signature::Signer;
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::pkcs8::der::asn1::AnyRef;
use p384::pkcs8::der::{Decode, Encode, Reader, SliceReader, Tag, TagNumber, Tagged};
use p384::pkcs8::DecodePublicKey;

use super::ReportError;

fn key_err(what: impl std::fmt::Display) -> ReportError {
    ReportError::Key(format!("VCEK certificate: {what}"))
}

/// The subject public key of the DER certificate `der`.
pub fn vcek_from_certificate_der(der: &[u8]) -> Result<VerifyingKey, ReportError> {
    let cert = AnyRef::from_der(der).map_err(key_err)?;
    if cert.tag() != Tag::Sequence {
        return Err(key_err("not a certificate (no outer SEQUENCE)"));
    }
    let mut outer = SliceReader::new(cert.value()).map_err(key_err)?;
    let tbs: AnyRef = outer.decode().map_err(key_err)?;
    let sig_alg: AnyRef = outer.decode().map_err(key_err)?;
    let sig: AnyRef = outer.decode().map_err(key_err)?;
    if !outer.is_finished()
        || tbs.tag() != Tag::Sequence
        || sig_alg.tag() != Tag::Sequence
        || sig.tag() != Tag::BitString
    {
        return Err(key_err(
            "not tbsCertificate, signatureAlgorithm, signatureValue",
        ));
    }
    let mut t = SliceReader::new(tbs.value()).map_err(key_err)?;
    let mut field: AnyRef = t.decode().map_err(key_err)?;
    if field.tag()
        == (Tag::ContextSpecific {
            constructed: true,
            number: TagNumber::N0,
        })
    {
        field = t.decode().map_err(key_err)?; // the serial number after the version
    }
    if field.tag() != Tag::Integer {
        return Err(key_err("no serial number"));
    }
    // signature, issuer, validity, subject
    for name in ["signature", "issuer", "validity", "subject"] {
        let f: AnyRef = t.decode().map_err(key_err)?;
        if f.tag() != Tag::Sequence {
            return Err(key_err(format!("{name} is not a SEQUENCE")));
        }
    }
    let spki: AnyRef = t.decode().map_err(key_err)?;
    let spki = spki.to_der().map_err(key_err)?;
    VerifyingKey::from_public_key_der(&spki)
        .map_err(|e| key_err(format!("subject key is not a P-384 key: {e}")))
}

/// The VCEK from PEM: a `CERTIFICATE` or a `PUBLIC KEY` (SubjectPublicKeyInfo).
pub fn vcek_from_any_pem(pem: &str) -> Result<VerifyingKey, ReportError> {
    if pem.contains("-----BEGIN CERTIFICATE-----") {
        let (label, der) = p384::pkcs8::der::pem::decode_vec(pem.trim().as_bytes())
            .map_err(|e| key_err(format!("PEM: {e}")))?;
        if label != "CERTIFICATE" {
            return Err(key_err(format!("PEM label {label}")));
        }
        vcek_from_certificate_der(&der)
    } else {
        super::vcek_from_pem(pem)
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// ecdsa-with-SHA384 (RFC 5758), as a DER AlgorithmIdentifier.
fn ecdsa_sha384() -> Vec<u8> {
    tlv(
        0x30,
        &tlv(0x06, &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x03]),
    )
}

/// A Name with one common name.
fn name(cn: &str) -> Vec<u8> {
    let attr = [tlv(0x06, &[0x55, 0x04, 0x03]), tlv(0x0C, cn.as_bytes())].concat();
    tlv(0x30, &tlv(0x31, &tlv(0x30, &attr)))
}

/// A DER X.509 v3 certificate for `vcek` (subject "SEV-VCEK"), signed ECDSA P-384 by a
/// fresh key standing in for AMD's (nothing here checks the chain).
pub fn model_vcek_certificate(vcek: &VerifyingKey) -> Result<Vec<u8>, ReportError> {
    let issuer = SigningKey::random(&mut p384::elliptic_curve::rand_core::OsRng);
    use p384::pkcs8::EncodePublicKey;
    let spki = vcek
        .to_public_key_der()
        .map_err(|e| ReportError::Key(e.to_string()))?;
    let validity = [tlv(0x17, b"260101000000Z"), tlv(0x17, b"491231235959Z")].concat();
    let tbs = tlv(
        0x30,
        &[
            tlv(0xA0, &tlv(0x02, &[2])),
            tlv(0x02, &[1]),
            ecdsa_sha384(),
            name("SEV-Milan"),
            tlv(0x30, &validity),
            name("SEV-VCEK"),
            spki.as_bytes().to_vec(),
        ]
        .concat(),
    );
    let signature: Signature = issuer.sign(&tbs);
    // The issuer key lives only for this signature.
    drop(issuer);
    let sig_der = signature.to_der();
    let bits = [&[0u8][..], sig_der.as_bytes()].concat();
    Ok(tlv(0x30, &[tbs, ecdsa_sha384(), tlv(0x03, &bits)].concat()))
}

/// A DER certificate as PEM.
pub fn certificate_pem(der: &[u8]) -> Result<String, ReportError> {
    p384::pkcs8::der::pem::encode_string("CERTIFICATE", p384::pkcs8::LineEnding::LF, der)
        .map_err(|e| ReportError::Key(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use p384::elliptic_curve::rand_core::OsRng;

    fn key() -> VerifyingKey {
        *SigningKey::random(&mut OsRng).verifying_key()
    }

    #[test]
    fn the_key_comes_out_of_a_certificate_and_of_a_bare_key() {
        let vcek = key();
        let pem = certificate_pem(&model_vcek_certificate(&vcek).unwrap()).unwrap();
        assert_eq!(vcek_from_any_pem(&pem).unwrap(), vcek);
        let bare = super::super::vcek_to_pem(&vcek).unwrap();
        assert_eq!(vcek_from_any_pem(&bare).unwrap(), vcek);
    }

    #[test]
    fn damaged_certificates_are_refused_or_yield_another_key() {
        let vcek = key();
        let der = model_vcek_certificate(&vcek).unwrap();
        use p384::pkcs8::EncodePublicKey;
        let spki = vcek.to_public_key_der().unwrap();
        let spki = spki.as_bytes();
        let at = der.windows(spki.len()).position(|w| w == spki).unwrap();
        let mut refused = 0;
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0x01;
            let got = vcek_from_certificate_der(&bad);
            if (at..at + spki.len()).contains(&i) {
                // Inside the key: never the same key.
                assert!(got.as_ref().map_or(true, |k| *k != vcek), "flip at {i}");
            } else {
                // Elsewhere (a name, a date, the issuer's signature): the same key or none.
                assert!(got.as_ref().map_or(true, |k| *k == vcek), "flip at {i}");
            }
            refused += usize::from(got.is_err());
        }
        assert!(
            refused > 20,
            "only {refused} of {} flips refused",
            der.len()
        );
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(vcek_from_certificate_der(&trailing).is_err());
        assert!(vcek_from_certificate_der(&der[..der.len() - 1]).is_err());
        // An empty certificate is refused.
        let pem = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        assert!(vcek_from_any_pem(pem).is_err());
    }
}
