//! Compact JWS parsing and signature verification, done strictly and in a fixed order:
//! size limit, three base64url segments, header JSON (only `alg`, `kid`, `typ` honoured;
//! risky parameters refused), algorithm allow-list, key selection by `kid`, algorithm/key
//! match, signature. Nothing in the payload is read before the signature verifies.
//!
//! This module must never choose an algorithm from the token when the key says otherwise
//! (RFC 8725 §3.1, §3.2), and never trust a key carried in the token itself.

use std::fmt;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::error::AuthError;

/// Longest token accepted by default (8 KiB).
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;

/// The signature algorithms Nova verifies and issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3).
    RS256,
    /// ECDSA P-256 with SHA-256 (RFC 7518 §3.4).
    ES256,
    /// Ed25519 (RFC 8037).
    EdDSA,
    /// HMAC-SHA256 (RFC 7518 §3.2); only when explicitly configured.
    HS256,
}

impl Alg {
    /// The JOSE name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
            Self::HS256 => "HS256",
        }
    }

    pub(crate) fn from_name(name: &str) -> Result<Self, AuthError> {
        match name {
            "RS256" => Ok(Self::RS256),
            "ES256" => Ok(Self::ES256),
            "EdDSA" => Ok(Self::EdDSA),
            "HS256" => Ok(Self::HS256),
            n if n.eq_ignore_ascii_case("none") => Err(AuthError::AlgNone),
            _ => Err(AuthError::AlgorithmNotAllowed),
        }
    }

    /// Every algorithm, in the order configuration messages list them.
    pub const ALL: [Self; 4] = [Self::ES256, Self::EdDSA, Self::RS256, Self::HS256];

    pub(crate) fn jwt(self) -> Algorithm {
        match self {
            Self::RS256 => Algorithm::RS256,
            Self::ES256 => Algorithm::ES256,
            Self::EdDSA => Algorithm::EdDSA,
            Self::HS256 => Algorithm::HS256,
        }
    }
}

/// Configuration names an algorithm by its JOSE name (`"EdDSA"`); `none` and unknown
/// names are refused.
impl<'de> serde::Deserialize<'de> for Alg {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::from_name(&name).map_err(|_| {
            serde::de::Error::custom(format_args!(
                "`{}` is not supported (ES256, EdDSA, RS256, HS256)",
                name.escape_debug()
            ))
        })
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A public (or, for HS256, secret) key bound to one algorithm and one key id.
#[derive(Clone)]
pub struct VerifyingKey {
    pub(crate) kid: String,
    pub(crate) alg: Alg,
    pub(crate) key: DecodingKey,
    pub(crate) prepared: Prepared,
}

/// Keys parsed once when the key set is loaded, so a verification does not decompress an
/// Ed25519 point or decode a P-256 point per token (`jsonwebtoken` does both per call).
/// Verification semantics are those of the same crates `jsonwebtoken` uses.
#[derive(Clone)]
pub(crate) enum Prepared {
    Ed(ed25519_dalek::VerifyingKey),
    Es(p256::ecdsa::VerifyingKey),
    Generic,
}

impl VerifyingKey {
    /// The key id.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key verifies.
    #[must_use]
    pub fn alg(&self) -> Alg {
        self.alg
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The protected header, as far as Nova reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The declared algorithm (already checked against the allow-list).
    pub alg: Alg,
    /// The key id, if any.
    pub kid: Option<String>,
}

/// Header members as present; an explicit `null` counts as present (and invalid).
#[derive(Deserialize)]
struct RawHeader {
    #[serde(default, deserialize_with = "present")]
    alg: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    kid: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    typ: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    crit: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    jku: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    jwk: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    x5u: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    x5c: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    b64: Option<serde_json::Value>,
}

pub(crate) fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// The three segments of a compact JWS. `Debug` shows only the header: the segments
/// together are a bearer token.
pub struct Compact<'t> {
    /// The header, parsed.
    pub header: Header,
    /// `base64url(header) || '.' || base64url(payload)`, the signing input.
    pub signing_input: &'t str,
    /// The payload segment (still base64url).
    pub payload_b64: &'t str,
    /// The signature segment (still base64url).
    pub signature_b64: &'t str,
}

impl std::fmt::Debug for Compact<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compact")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

fn is_b64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(crate) fn b64_decode(s: &str, what: &'static str) -> Result<Vec<u8>, AuthError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| AuthError::Malformed(what))
}

/// Splits and checks a compact JWS and parses its header. Does not verify anything.
///
/// # Errors
/// [`AuthError::TokenTooLarge`], [`AuthError::Malformed`], [`AuthError::AlgNone`],
/// [`AuthError::AlgorithmNotAllowed`], [`AuthError::UnsupportedHeader`].
pub fn parse_compact(token: &str, max_len: usize) -> Result<Compact<'_>, AuthError> {
    if token.len() > max_len {
        return Err(AuthError::TokenTooLarge { limit: max_len });
    }
    let mut parts = token.splitn(4, '.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed(
            "a compact JWS has exactly three segments",
        ));
    };
    if h.is_empty() || s.is_empty() || !is_b64url(h) || !is_b64url(p) || !is_b64url(s) {
        return Err(AuthError::Malformed(
            "segments must be non-empty unpadded base64url",
        ));
    }
    let header_json = b64_decode(h, "header is not base64url")?;
    let raw: RawHeader = serde_json::from_slice(&header_json)
        .map_err(|_| AuthError::Malformed("header is not a JSON object with unique members"))?;
    let alg = match raw.alg {
        Some(serde_json::Value::String(a)) => Alg::from_name(&a)?,
        Some(_) => return Err(AuthError::Malformed("alg must be a string")),
        None => return Err(AuthError::Malformed("header has no alg")),
    };
    let kid = match raw.kid {
        None => None,
        Some(serde_json::Value::String(k)) if !k.is_empty() && k.len() <= 256 => Some(k),
        Some(_) => return Err(AuthError::Malformed("kid must be a non-empty string")),
    };
    if let Some(typ) = raw.typ {
        let ok = matches!(&typ, serde_json::Value::String(t)
            if t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("at+jwt"));
        if !ok {
            return Err(AuthError::UnsupportedHeader("typ"));
        }
    }
    // RFC 7515 §4.1.11: a recipient must reject `crit` it does not understand. Keys named
    // by the token (jku, jwk, x5u, x5c) are never trusted (RFC 8725 §3.10).
    for (present, name) in [
        (raw.crit.is_some(), "crit"),
        (raw.jku.is_some(), "jku"),
        (raw.jwk.is_some(), "jwk"),
        (raw.x5u.is_some(), "x5u"),
        (raw.x5c.is_some(), "x5c"),
        (raw.b64.is_some(), "b64"),
    ] {
        if present {
            return Err(AuthError::UnsupportedHeader(name));
        }
    }
    let signing_input = &token[..h.len() + 1 + p.len()];
    Ok(Compact {
        header: Header { alg, kid },
        signing_input,
        payload_b64: p,
        signature_b64: s,
    })
}

/// Verifies a compact JWS's signature with `key` and returns the decoded payload. The
/// token's `alg` must equal the key's algorithm.
///
/// # Errors
/// As [`parse_compact`], and [`AuthError::AlgorithmKeyMismatch`],
/// [`AuthError::BadSignature`].
pub fn verify_compact(
    token: &str,
    key: &VerifyingKey,
    max_len: usize,
) -> Result<Vec<u8>, AuthError> {
    let c = parse_compact(token, max_len)?;
    verify_parsed(&c, key)?;
    b64_decode(c.payload_b64, "payload is not base64url")
}

pub(crate) fn verify_parsed(c: &Compact<'_>, key: &VerifyingKey) -> Result<(), AuthError> {
    if c.header.alg != key.alg {
        return Err(AuthError::AlgorithmKeyMismatch);
    }
    let signature = b64_decode(c.signature_b64, "signature is not base64url")?;
    verify_signature(key, c.signing_input.as_bytes(), &signature)
}

/// Verifies a raw signature over `message` with `key` in its one algorithm (ES256
/// signatures in the 64-byte `r || s` form of RFC 7518 §3.4). Every token verification
/// ends here; exposed so published signature vectors exercise the same path.
///
/// # Errors
/// [`AuthError::BadSignature`].
pub fn verify_signature(
    key: &VerifyingKey,
    message: &[u8],
    signature: &[u8],
) -> Result<(), AuthError> {
    match &key.prepared {
        Prepared::Ed(vk) => {
            use ed25519_dalek::Verifier as _;
            let sig = ed25519_dalek::Signature::from_slice(signature)
                .map_err(|_| AuthError::BadSignature)?;
            return vk
                .verify(message, &sig)
                .map_err(|_| AuthError::BadSignature);
        }
        Prepared::Es(vk) => {
            use p256::ecdsa::signature::Verifier as _;
            let sig = p256::ecdsa::Signature::from_slice(signature)
                .map_err(|_| AuthError::BadSignature)?;
            return vk
                .verify(message, &sig)
                .map_err(|_| AuthError::BadSignature);
        }
        Prepared::Generic => {}
    }
    let verifier = (jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.verifier_factory)(
        &key.alg.jwt(),
        &key.key,
    )
    .map_err(|_| AuthError::BadSignature)?;
    verifier
        .verify(message, &signature.to_vec())
        .map_err(|_| AuthError::BadSignature)
}
