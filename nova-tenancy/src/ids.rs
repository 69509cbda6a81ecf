//! Typed identifiers for tenants, users and requests: parsed and validated once, then trusted.
//!
//! Every id is a UUID in its hyphenated form (hex digits in either case). Nothing else is
//! accepted — not the braced, URN or 32-digit "simple" forms, not surrounding whitespace,
//! and not the nil UUID — and every id prints in one canonical spelling (lower-case
//! hyphenated), so the text that reaches a log line, a JWT claim or a SQL setting is always
//! one spelling of one value. This module must never accept an id it could not print back
//! canonically.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Length of the canonical hyphenated UUID text form, e.g. `67e55044-10b1-426f-9247-bb680e5fe0c8`.
pub const ID_TEXT_LEN: usize = 36;

/// Why a string is not a valid Nova identifier.
///
/// The offending input is never included: ids arrive from tokens and headers, and an error
/// message is not the place to echo attacker-controlled bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The input was empty.
    #[error("{kind} is empty")]
    Empty {
        /// Which id was being parsed.
        kind: &'static str,
    },
    /// The input is not exactly 36 characters long.
    #[error("{kind} must be a 36-character hyphenated UUID (got {len} bytes)")]
    Length {
        /// Which id was being parsed.
        kind: &'static str,
        /// The input's length in bytes.
        len: usize,
    },
    /// The input has the right length but is not a hyphenated UUID.
    #[error("{kind} is not a hyphenated UUID")]
    Syntax {
        /// Which id was being parsed.
        kind: &'static str,
    },
    /// The input is the nil UUID, which Nova never treats as a real tenant, user or request.
    #[error("{kind} must not be the nil UUID")]
    Nil {
        /// Which id was being parsed.
        kind: &'static str,
    },
}

/// Parses the canonical hyphenated form (upper- or lower-case hex) and nothing else.
fn parse_canonical(kind: &'static str, s: &str) -> Result<Uuid, IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() != ID_TEXT_LEN {
        return Err(IdError::Length { kind, len: s.len() });
    }
    let bytes = s.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        let ok = match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        };
        if !ok {
            return Err(IdError::Syntax { kind });
        }
    }
    let uuid = Uuid::try_parse(s).map_err(|_| IdError::Syntax { kind })?;
    if uuid.is_nil() {
        return Err(IdError::Nil { kind });
    }
    Ok(uuid)
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random (version 4) id.
            #[must_use]
            pub fn new_v4() -> Self {
                Self(Uuid::new_v4())
            }

            /// Wraps an already-parsed UUID, refusing the nil UUID.
            ///
            /// # Errors
            /// [`IdError::Nil`] for the nil UUID.
            pub fn from_uuid(uuid: Uuid) -> Result<Self, IdError> {
                if uuid.is_nil() {
                    Err(IdError::Nil { kind: $kind })
                } else {
                    Ok(Self(uuid))
                }
            }

            /// The underlying UUID.
            #[must_use]
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }

            /// The canonical lower-case hyphenated text form, without allocating.
            #[must_use]
            pub fn to_text(&self) -> IdText {
                let mut buf = [0u8; ID_TEXT_LEN];
                self.0.hyphenated().encode_lower(&mut buf);
                IdText(buf)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_canonical($kind, s).map(Self)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;

            fn try_from(s: &str) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.hyphenated())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.to_text().as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a hyphenated UUID ", $kind))
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(Visitor)
            }
        }
    };
}

uuid_id!(
    /// A tenant: the unit of isolation. Every row of tenant data carries one.
    ///
    /// ```
    /// use nova_tenancy::TenantId;
    /// let t: TenantId = "67e55044-10b1-426f-9247-bb680e5fe0c8".parse()?;
    /// assert_eq!(t.to_string(), "67e55044-10b1-426f-9247-bb680e5fe0c8");
    /// assert!("acme".parse::<TenantId>().is_err());
    /// # Ok::<(), nova_tenancy::IdError>(())
    /// ```
    TenantId,
    "tenant id"
);

uuid_id!(
    /// A user (or service principal) acting within a tenant.
    UserId,
    "user id"
);

uuid_id!(
    /// One request, for correlating logs, audit events and database sessions.
    RequestId,
    "request id"
);

impl RequestId {
    /// A process-unique request id without a system call: a UUIDv8 (RFC 9562 §5.8) made of
    /// a random per-process prefix (drawn once) and an atomic counter. Request ids need to
    /// be unique, not secret; drawing a v4 from the OS for each request cost about 0.3 µs
    /// on the benchmark machine.
    #[must_use]
    pub fn generate() -> Self {
        use std::sync::OnceLock;
        use std::sync::atomic::{AtomicU64, Ordering};
        static PREFIX: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = *PREFIX.get_or_init(|| {
            let b = *Uuid::new_v4().as_bytes();
            u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&prefix.to_be_bytes());
        bytes[8..].copy_from_slice(&n.to_be_bytes());
        // new_v8 sets the version and variant bits; the result is never nil.
        Self(Uuid::new_v8(bytes))
    }
}

/// The fixed-size text form of an id, so that hot paths (SQL settings, log fields) format
/// an id without a heap allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdText([u8; ID_TEXT_LEN]);

impl IdText {
    /// The text, always 36 bytes of `[0-9a-f-]`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // The buffer is written only by `Uuid::hyphenated().encode_lower`, which emits ASCII.
        std::str::from_utf8(&self.0).unwrap_or("00000000-0000-0000-0000-000000000000")
    }
}

impl fmt::Display for IdText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for IdText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = "67e55044-10b1-426f-9247-bb680e5fe0c8";

    #[test]
    fn accepts_canonical_hyphenated_uuid_in_either_case() {
        let lower: TenantId = GOOD.parse().unwrap();
        let upper: TenantId = GOOD.to_uppercase().parse().unwrap();
        assert_eq!(lower, upper);
        assert_eq!(upper.to_string(), GOOD);
    }

    #[test]
    fn rejects_every_non_canonical_spelling() {
        let bad = [
            "",
            "acme",
            "67e5504410b1426f9247bb680e5fe0c8",
            "{67e55044-10b1-426f-9247-bb680e5fe0c8}",
            "urn:uuid:67e55044-10b1-426f-9247-bb680e5fe0c8",
            " 67e55044-10b1-426f-9247-bb680e5fe0c8",
            "67e55044-10b1-426f-9247-bb680e5fe0c8 ",
            "67e55044-10b1-426f-9247-bb680e5fe0cg",
            "67e55044+10b1-426f-9247-bb680e5fe0c8",
            "67e55044-10b1-426f-9247-bb680e5fe0c8'--",
            "'; DROP TABLE t; --aaaaaaaaaaaaaaaaa",
            "00000000-0000-0000-0000-000000000000",
        ];
        for s in bad {
            assert!(s.parse::<TenantId>().is_err(), "accepted {s:?}");
        }
        assert_eq!(
            "00000000-0000-0000-0000-000000000000".parse::<UserId>(),
            Err(IdError::Nil { kind: "user id" })
        );
    }

    #[test]
    fn error_text_never_echoes_the_input() {
        let secret = "eyJhbGciOiJIUzI1NiJ9.secret-token-material";
        let err = secret.parse::<TenantId>().unwrap_err();
        assert!(!err.to_string().contains("secret"));
        assert!(!format!("{err:?}").contains("secret"));
    }

    #[test]
    fn serde_uses_the_canonical_string() {
        let t: TenantId = GOOD.parse().unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, format!("\"{GOOD}\""));
        let back: TenantId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert!(serde_json::from_str::<TenantId>("\"acme\"").is_err());
        assert!(serde_json::from_str::<TenantId>("42").is_err());
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(bytes in any::<[u8; 16]>()) {
            let uuid = Uuid::from_bytes(bytes);
            prop_assume!(!uuid.is_nil());
            let id = TenantId::from_uuid(uuid).unwrap();
            let text = id.to_string();
            let rendered = id.to_text();
            prop_assert_eq!(text.as_str(), rendered.as_str());
            prop_assert_eq!(text.parse::<TenantId>().unwrap(), id);
        }

        #[test]
        fn parser_never_panics_and_accepts_only_36_byte_hex_and_hyphens(s in "\\PC{0,64}") {
            if let Ok(id) = s.parse::<RequestId>() {
                prop_assert_eq!(s.len(), ID_TEXT_LEN);
                prop_assert_eq!(id.to_string(), s.to_ascii_lowercase());
            }
        }

        #[test]
        fn any_single_byte_change_to_a_valid_id_is_caught_or_still_canonical(
            bytes in any::<[u8; 16]>(),
            pos in 0usize..36,
            replacement in any::<u8>(),
            upper in any::<bool>(),
        ) {
            let uuid = Uuid::from_bytes(bytes);
            prop_assume!(!uuid.is_nil());
            let mut text = uuid.hyphenated().to_string();
            if upper {
                text = text.to_uppercase();
            }
            prop_assert_eq!(*text.parse::<TenantId>().unwrap().as_uuid(), uuid);
            let mut mutated = text.clone().into_bytes();
            mutated[pos] = replacement;
            if let Ok(s) = String::from_utf8(mutated) {
                match s.parse::<TenantId>() {
                    // Accepted only if still hex/hyphen in the right places: then it must
                    // print back as the lower-case form of what was given.
                    Ok(id) => prop_assert_eq!(id.to_string(), s.to_ascii_lowercase()),
                    Err(_) => {
                        let b = s.as_bytes();
                        let still_shaped = s.len() == 36 && b.iter().enumerate().all(|(i, c)| {
                            if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_hexdigit() }
                        });
                        // A well-shaped string is refused only if it is the nil UUID.
                        prop_assert!(!still_shaped || s.chars().all(|c| c == '0' || c == '-'));
                    }
                }
            }
        }

        #[test]
        fn generated_request_ids_are_distinct(n in 1usize..200) {
            let ids: std::collections::HashSet<_> = (0..n).map(|_| RequestId::generate()).collect();
            prop_assert_eq!(ids.len(), n);
        }

        #[test]
        fn text_form_is_always_sql_safe(bytes in any::<[u8; 16]>()) {
            let id = UserId::from_uuid(Uuid::from_bytes(bytes));
            if let Ok(id) = id {
                prop_assert!(id.to_text().as_str().bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
            }
        }
    }
}
