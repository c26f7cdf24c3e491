//! Page signatures: a clinic checks that a page came from us, unaltered, with an
//! HMAC-SHA256 over the page's protobuf bytes and the secret it shares with us.
//!
//! On the wire: gRPC metadata `x-fleet-signature: v1=<lowercase hex>`. The signed bytes
//! are the `AlarmNotification` exactly as encoded in the request; a receiver built on
//! prost re-encodes the decoded message to the same bytes (fields in number order,
//! evidence map sorted), which is what `fleetctl receiver` does.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The gRPC metadata key carrying the signature.
pub const SIGNATURE_METADATA_KEY: &str = "x-fleet-signature";
const VERSION_PREFIX: &str = "v1=";

/// The metadata value for `payload` signed with `secret`.
pub fn sign(secret: &[u8], payload: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(payload);
    format!(
        "{VERSION_PREFIX}{}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Whether `signature` (a metadata value) is `payload` signed with `secret`; compared in
/// constant time.
pub fn verify(secret: &[u8], payload: &[u8], signature: &str) -> bool {
    let Some(hex_digest) = signature.strip_prefix(VERSION_PREFIX) else {
        return false;
    };
    let Ok(digest) = hex::decode(hex_digest) else {
        return false;
    };
    let mut mac = mac(secret);
    mac.update(payload);
    mac.verify_slice(&digest).is_ok()
}

/// Why a page's signature was refused; the message tells the sender what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageSignatureError {
    #[error("unsigned page: no {SIGNATURE_METADATA_KEY} metadata")]
    Missing,
    #[error(
        "bad page signature: {SIGNATURE_METADATA_KEY} does not verify with this receiver's \
         secret (different secret, or the page was altered)"
    )]
    Mismatch,
}

/// A receiver's check of a page: `signed` is the page as encoded (prost re-encodes a
/// decoded page to the bytes the sender signed), `signature` the metadata value if any.
pub fn check_page(
    secret: &[u8],
    signed: &[u8],
    signature: Option<&str>,
) -> Result<(), PageSignatureError> {
    let signature = signature.ok_or(PageSignatureError::Missing)?;
    if verify(secret, signed, signature) {
        Ok(())
    } else {
        Err(PageSignatureError::Mismatch)
    }
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length (long ones are hashed): this cannot fail.
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|e| unreachable!("HMAC accepts any key length: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_its_secret_only() {
        let signature = sign(b"clinic secret", b"page bytes");
        assert!(signature.starts_with("v1="));
        assert!(verify(b"clinic secret", b"page bytes", &signature));
        assert!(!verify(b"other secret", b"page bytes", &signature));
        assert!(!verify(b"clinic secret", b"page bytes!", &signature));
        assert!(!verify(b"clinic secret", b"page bytes", "v1=zz"));
        assert!(!verify(b"clinic secret", b"page bytes", &signature[3..]));
    }

    #[test]
    fn matches_the_rfc_4231_test_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let expected = "v1=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(sign(b"Jefe", b"what do ya want for nothing?"), expected);
    }
}
