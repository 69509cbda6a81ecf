//! Redaction policies: which parts of an event are replaced or keyed-hashed before any sink
//! sees them.
//!
//! The formats are documented on [`RedactionPolicy`].

use std::collections::BTreeMap;
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use nova_tenancy::TenantId;

/// What a policy does with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Treatment {
    /// Replace it with `"[REDACTED]"`.
    Redact,
    /// Replace it with its keyed hash (or redact it when the policy has no key).
    KeyedHash,
}

const DOMAIN: &[u8] = b"nova-audit/redaction/v1";
/// The text a redacted value becomes.
pub const REDACTED: &str = "[REDACTED]";

/// A redaction policy.
///
/// Values are treated in one of two ways:
///
/// - **redacted**: replaced by `"[REDACTED]"`;
/// - **keyed-hashed**: replaced by `"hmac-sha256:<32 lower-case hex digits>"`, the first 16
///   bytes of `HMAC-SHA256(key, "nova-audit/redaction/v1" || 0x00 || tenant UUID (16 bytes)
///   || 0x00 || value)`. The same value in the same tenant always gives the same hash, so an
///   investigator can still see that two events name the same e-mail address or that one
///   actor failed five logins, without the log holding the value. The tenant is bound in, so
///   hashes cannot be correlated across tenants, and the key keeps a dictionary attack
///   (hashing every likely e-mail address) out of reach of anyone who reads the log but does
///   not hold the key. The field name is not bound in, so a value hashes the same wherever it
///   appears (an e-mail as actor and as a parameter).
///
/// Parameters marked sensitive with
/// [`AuditEventBuilder::sensitive_param`](crate::AuditEventBuilder::sensitive_param) are
/// always treated: redacted, or keyed-hashed when the policy has a key. A policy can
/// additionally treat named parameters, the actor and the IP address of every event, whatever
/// the caller marked. A rule asking for a hash in a policy without a key redacts instead: a
/// policy never lets a value through because a key is missing. A policy must never let a
/// value a rule names reach the encoding in clear.
///
/// ```
/// use nova_audit::{AuditEvent, RedactionPolicy};
/// use nova_tenancy::TenantId;
///
/// let policy = RedactionPolicy::with_hash_key([7; 32])
///     .hash_param("email")
///     .redact_param("card_number")
///     .hash_actor();
/// let event = AuditEvent::builder(TenantId::new_v4(), "auth.login_failed", "auth.login")
///     .actor("alice@example.com")
///     .param("email", "alice@example.com")
///     .param("card_number", "4111111111111111")
///     .build();
/// let json = String::from_utf8(event.canonical_json_with(&policy)).unwrap();
/// assert!(!json.contains("alice") && !json.contains("4111"));
/// assert!(json.contains("hmac-sha256:") && json.contains("[REDACTED]"));
/// ```
#[derive(Clone, Default)]
pub struct RedactionPolicy {
    /// HMAC keyed and fed the domain prefix once; cloned per value. Its two keyed SHA-256
    /// states zeroize on drop (the `zeroize` feature of `sha2`); its block buffer holds only
    /// the public domain prefix.
    key: Option<Hmac<Sha256>>,
    params: BTreeMap<String, Treatment>,
    actor: Option<Treatment>,
    ip: Option<Treatment>,
}

impl fmt::Debug for RedactionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedactionPolicy")
            .field("key", &self.key.as_ref().map(|_| "[REDACTED]"))
            .field("params", &self.params)
            .field("actor", &self.actor)
            .field("ip", &self.ip)
            .finish()
    }
}

impl RedactionPolicy {
    /// A policy without a hash key: values marked sensitive and every value a rule names are
    /// redacted.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A policy that keyed-hashes values marked sensitive, and values named by
    /// [`hash_param`](Self::hash_param) and [`hash_actor`](Self::hash_actor), with `key`.
    /// Keep the key secret and stable: a new key makes new hashes.
    #[must_use]
    pub fn with_hash_key(key: [u8; 32]) -> Self {
        let key = Zeroizing::new(key);
        // A 32-byte key is always accepted; should that ever change, the policy has no key
        // and redacts instead of hashing (fail closed).
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_slice())
            .ok()
            .map(|mac| mac.chain_update(DOMAIN).chain_update([0]));
        Self {
            key: mac,
            ..Self::default()
        }
    }

    /// Redacts the parameter `name` in every event.
    #[must_use]
    pub fn redact_param(mut self, name: &str) -> Self {
        self.params.insert(name.to_owned(), Treatment::Redact);
        self
    }

    /// Keyed-hashes the parameter `name` in every event (integers and booleans are hashed
    /// as their JSON text).
    #[must_use]
    pub fn hash_param(mut self, name: &str) -> Self {
        self.params.insert(name.to_owned(), Treatment::KeyedHash);
        self
    }

    /// Keyed-hashes the actor of every event.
    #[must_use]
    pub fn hash_actor(mut self) -> Self {
        self.actor = Some(Treatment::KeyedHash);
        self
    }

    /// Redacts the actor of every event.
    #[must_use]
    pub fn redact_actor(mut self) -> Self {
        self.actor = Some(Treatment::Redact);
        self
    }

    /// Keyed-hashes the client IP address of every event.
    #[must_use]
    pub fn hash_ip(mut self) -> Self {
        self.ip = Some(Treatment::KeyedHash);
        self
    }

    /// Redacts the client IP address of every event.
    #[must_use]
    pub fn redact_ip(mut self) -> Self {
        self.ip = Some(Treatment::Redact);
        self
    }

    pub(crate) fn param_rule(&self, name: &str) -> Option<Treatment> {
        self.params.get(name).copied()
    }

    pub(crate) fn actor_rule(&self) -> Option<Treatment> {
        self.actor
    }

    pub(crate) fn ip_rule(&self) -> Option<Treatment> {
        self.ip
    }

    /// What `value` becomes under `treatment` in `tenant`.
    pub(crate) fn treat(&self, treatment: Treatment, tenant: TenantId, value: &str) -> String {
        match (treatment, &self.key) {
            (Treatment::KeyedHash, Some(key)) => keyed_hash(key, tenant, value),
            _ => REDACTED.to_owned(),
        }
    }
}

fn keyed_hash(mac: &Hmac<Sha256>, tenant: TenantId, value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let tag = mac
        .clone()
        .chain_update(tenant.as_uuid().as_bytes())
        .chain_update([0])
        .chain_update(value.as_bytes())
        .finalize()
        .into_bytes();
    let mut out = String::with_capacity(12 + 32);
    out.push_str("hmac-sha256:");
    for &b in &tag[..16] {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    /// Compile-time proof: the keyed SHA-256 states a policy holds are wiped on drop.
    #[test]
    fn the_keyed_states_zeroize_on_drop() {
        fn zeroizes_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroizes_on_drop::<<sha2::Sha256 as hmac::EagerHash>::Core>();
    }
}
