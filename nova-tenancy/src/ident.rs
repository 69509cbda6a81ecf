//! SQL identifiers (schema, table, column and role names) that are safe to place in DDL.
//!
//! Generated SQL never splices a caller's string: every name passes through [`Ident`],
//! which accepts only `[a-z_][a-z0-9_]*` up to PostgreSQL's 63-byte limit, and is then
//! emitted double-quoted. Both guards hold on their own; this module must never emit an
//! identifier that did not pass validation.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// PostgreSQL's `NAMEDATALEN - 1`: longer identifiers are silently truncated by the server,
/// which could make two distinct names collide, so they are refused instead.
pub const IDENT_MAX_LEN: usize = 63;

/// Why a string is not a valid SQL identifier for Nova's generated SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentError {
    /// Empty, or longer than [`IDENT_MAX_LEN`] bytes.
    #[error("SQL identifier must be 1 to {IDENT_MAX_LEN} bytes long (got {len})")]
    Length {
        /// The input's length in bytes.
        len: usize,
    },
    /// Contains something other than `[a-z0-9_]`, or starts with a digit.
    #[error("SQL identifier must match [a-z_][a-z0-9_]*")]
    Syntax,
    /// Starts with `pg_`, a prefix PostgreSQL reserves for system objects and roles.
    #[error("SQL identifier must not start with the reserved prefix pg_")]
    Reserved,
}

/// A validated SQL identifier. Displays double-quoted, ready for DDL.
///
/// ```
/// use nova_tenancy::Ident;
/// let t = Ident::new("tickets")?;
/// assert_eq!(t.to_string(), "\"tickets\"");
/// assert!(Ident::new("tickets; DROP TABLE x").is_err());
/// assert!(Ident::new("Tickets").is_err());
/// # Ok::<(), nova_tenancy::IdentError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ident(Arc<str>);

impl Ident {
    /// Validates an identifier.
    ///
    /// # Errors
    /// [`IdentError`] when the name is empty, too long, reserved or uses other characters.
    pub fn new(s: &str) -> Result<Self, IdentError> {
        if s.is_empty() || s.len() > IDENT_MAX_LEN {
            return Err(IdentError::Length { len: s.len() });
        }
        let mut bytes = s.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
        let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !(first_ok && rest_ok) {
            return Err(IdentError::Syntax);
        }
        if s.starts_with("pg_") {
            return Err(IdentError::Reserved);
        }
        Ok(Self(Arc::from(s)))
    }

    /// The bare name, unquoted.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a single-quoted SQL string literal (for `pg_roles.rolname = '...'`).
    /// Safe because validation admits no quote characters.
    #[must_use]
    pub fn literal(&self) -> String {
        format!("'{}'", self.0)
    }

    /// Joins this identifier with a suffix, validating the result (e.g. index names).
    ///
    /// # Errors
    /// [`IdentError`] when the joined name is too long.
    pub fn with_suffix(&self, suffix: &str) -> Result<Self, IdentError> {
        Self::new(&format!("{}{suffix}", self.0))
    }
}

impl FromStr for Ident {
    type Err = IdentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

impl fmt::Debug for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ident({:?})", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refuses_injection_quotes_and_reserved_names() {
        for s in [
            "",
            "a\"b",
            "a'b",
            "a;b",
            "a b",
            "A",
            "1a",
            "pg_authid",
            "tickets--",
            "t\0",
            "ünïcode",
        ] {
            assert!(Ident::new(s).is_err(), "{s:?}");
        }
        assert!(Ident::new(&"a".repeat(IDENT_MAX_LEN + 1)).is_err());
        assert!(Ident::new(&"a".repeat(IDENT_MAX_LEN)).is_ok());
    }

    proptest! {
        #[test]
        fn accepted_identifiers_contain_no_sql_metacharacters(s in "\\PC{0,70}") {
            if let Ok(ident) = Ident::new(&s) {
                let quoted = ident.to_string();
                prop_assert_eq!(quoted.matches('"').count(), 2);
                prop_assert!(!quoted.contains('\''));
                prop_assert!(!quoted.contains(';'));
                prop_assert!(!quoted.contains('$'));
            }
        }
    }
}
