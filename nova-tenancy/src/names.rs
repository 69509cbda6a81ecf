//! Short validated names carried in a tenant context: roles and data-residency regions.
//!
//! Both arrive from credentials and configuration, so both are checked once at the edge
//! and never again. A name is 1–64 bytes of `[a-z0-9_.:-]` starting with a letter; this
//! module must never accept a name that could not be written into a log line, a header
//! or a policy file without escaping.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest role or region name, in bytes.
pub const NAME_MAX_LEN: usize = 64;

/// Why a role or region name was refused. The input itself is never echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Empty, or longer than [`NAME_MAX_LEN`].
    #[error("{kind} must be 1 to {NAME_MAX_LEN} bytes long (got {len})")]
    Length {
        /// Which name was being parsed.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// Contains a character outside `[a-z0-9_.:-]` or does not start with a letter.
    #[error("{kind} must start with a lower-case letter and use only [a-z0-9_.:-]")]
    Syntax {
        /// Which name was being parsed.
        kind: &'static str,
    },
}

fn check(kind: &'static str, s: &str) -> Result<(), NameError> {
    if s.is_empty() || s.len() > NAME_MAX_LEN {
        return Err(NameError::Length { kind, len: s.len() });
    }
    let mut bytes = s.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
    let rest_ok = bytes.all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b':' | b'-')
    });
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(NameError::Syntax { kind })
    }
}

macro_rules! short_name {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates and wraps a name.
            ///
            /// # Errors
            /// [`NameError`] when the name is empty, too long or uses other characters.
            pub fn new(s: &str) -> Result<Self, NameError> {
                check($kind, s)?;
                Ok(Self(Arc::from(s)))
            }

            /// The name as text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), &*self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

short_name!(
    /// A role name as carried by a credential (`agent`, `admin`, `billing:read`).
    ///
    /// ```
    /// use nova_tenancy::Role;
    /// assert!(Role::new("agent").is_ok());
    /// assert!(Role::new("Agent").is_err());
    /// assert!(Role::new("agent; drop").is_err());
    /// ```
    Role,
    "role"
);

short_name!(
    /// How the caller authenticated, as an RFC 8176 `amr` value (`pwd`, `otp`, `hwk`,
    /// `mfa`, ...). See [`crate::TenantContext::has_mfa`].
    AuthMethod,
    "authentication method"
);

/// The kinds of authentication factor RFC 8176 §2 names: something known, something held,
/// something the user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FactorKind {
    /// `pwd`, `pin`, `kba`.
    Knowledge,
    /// `otp`, `hwk`, `swk`, `sms`, `tel`, `sc`.
    Possession,
    /// `face`, `fpt`, `iris`, `retina`, `vbm`.
    Inherence,
}

impl AuthMethod {
    /// The kind of factor this method is, if it is one (`mfa`, `user`, `geo`, `rba` and
    /// unknown values are none).
    #[must_use]
    pub fn factor_kind(&self) -> Option<FactorKind> {
        match self.as_str() {
            "pwd" | "pin" | "kba" => Some(FactorKind::Knowledge),
            "otp" | "hwk" | "swk" | "sms" | "tel" | "sc" => Some(FactorKind::Possession),
            "face" | "fpt" | "iris" | "retina" | "vbm" => Some(FactorKind::Inherence),
            _ => None,
        }
    }

    /// Whether this method can be a second factor: something held or something the user
    /// is.
    #[must_use]
    pub fn is_second_factor(&self) -> bool {
        matches!(
            self.factor_kind(),
            Some(FactorKind::Possession | FactorKind::Inherence)
        )
    }
}

short_name!(
    /// A data-residency region (`eu-west-1`, `us`), used to route a tenant to the database
    /// that is allowed to hold its data.
    Region,
    "region"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_typical_names() {
        for s in ["admin", "agent", "billing:read", "eu-west-1", "a", "x.y_z"] {
            assert!(Role::new(s).is_ok(), "{s}");
        }
        assert!(Role::new(&"a".repeat(NAME_MAX_LEN)).is_ok());
    }

    #[test]
    fn refuses_empty_long_uppercase_and_punctuation() {
        for s in [
            "", "Admin", "1admin", "_x", "a b", "a\"b", "a'b", "a\nb", "ä", "a/b",
        ] {
            assert!(Role::new(s).is_err(), "{s:?}");
        }
        assert!(Region::new(&"a".repeat(NAME_MAX_LEN + 1)).is_err());
    }

    proptest! {
        #[test]
        fn accepted_names_round_trip_through_serde(s in "[a-z][a-z0-9_.:-]{0,63}") {
            let role = Role::new(&s).unwrap();
            let json = serde_json::to_string(&role).unwrap();
            let back: Role = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, role);
        }

        #[test]
        fn never_panics_on_arbitrary_text(s in "\\PC{0,80}") {
            let _ = Region::new(&s);
        }
    }
}
