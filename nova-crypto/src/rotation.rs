//! Rotation policy: how old a key may get, and when to start warning.
//!
//! AES-GCM with random 96-bit nonces must not seal more than 2^32 messages under one key
//! (NIST SP 800-38D §8.3), which keeps the chance of a repeated nonce below 2^-32. Nova
//! derives a separate key per tenant, key version, table and column, so the bound applies
//! to each column of each tenant separately; rotating the tenant key (a new version) starts
//! every column's count again. A policy of rotating at least yearly, and sooner for a
//! column that sees more than ~10^8 writes a year, keeps a wide margin.

use std::time::{Duration, SystemTime};

use nova_tenancy::TenantId;

use crate::keys::{KeyId, KeyVersion};

const DAY: Duration = Duration::from_secs(86_400);

/// When keys should be rotated.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use nova_crypto::{RotationPolicy, RotationStatus};
/// let policy = RotationPolicy::days(90, 14);
/// let now = SystemTime::now();
/// let created = now - Duration::from_secs(80 * 86_400);
/// assert!(matches!(policy.status(created, now), RotationStatus::DueSoon { .. }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// The oldest a primary key may be.
    pub max_age: Duration,
    /// How long before `max_age` to start warning.
    pub warn_before: Duration,
}

impl RotationPolicy {
    /// A policy in whole days.
    #[must_use]
    pub fn days(max_age_days: u64, warn_days: u64) -> Self {
        Self {
            max_age: DAY * u32::try_from(max_age_days).unwrap_or(u32::MAX),
            warn_before: DAY * u32::try_from(warn_days).unwrap_or(u32::MAX),
        }
    }

    /// Where a key created at `created` stands at `now`. A creation time in the future
    /// (clock skew) counts as new.
    #[must_use]
    pub fn status(&self, created: SystemTime, now: SystemTime) -> RotationStatus {
        let age = now.duration_since(created).unwrap_or(Duration::ZERO);
        if age >= self.max_age {
            RotationStatus::Due {
                overdue: age - self.max_age,
            }
        } else if age + self.warn_before >= self.max_age {
            RotationStatus::DueSoon {
                remaining: self.max_age - age,
            }
        } else {
            RotationStatus::Current
        }
    }
}

/// Where a key stands under a [`RotationPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotationStatus {
    /// Younger than the warning window.
    Current,
    /// Inside the warning window.
    DueSoon {
        /// Time left before it is due.
        remaining: Duration,
    },
    /// Older than the maximum age.
    Due {
        /// How long past due.
        overdue: Duration,
    },
}

/// Which key a [`KeyDue`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotationSubject {
    /// A key-encryption key's primary version.
    Kek {
        /// Its id.
        id: KeyId,
        /// Its version.
        version: KeyVersion,
    },
    /// A tenant's current key.
    Tenant {
        /// The tenant.
        tenant: TenantId,
        /// Its current version.
        version: KeyVersion,
    },
}

/// A key that is due, or nearly due, for rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDue {
    /// Which key.
    pub subject: RotationSubject,
    /// How due it is.
    pub status: RotationStatus,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_boundaries() {
        let p = RotationPolicy::days(90, 14);
        let now = SystemTime::UNIX_EPOCH + DAY * 1000;
        assert_eq!(p.status(now - DAY * 10, now), RotationStatus::Current);
        assert_eq!(
            p.status(now - DAY * 76, now),
            RotationStatus::DueSoon {
                remaining: DAY * 14
            }
        );
        assert_eq!(
            p.status(now - DAY * 90, now),
            RotationStatus::Due {
                overdue: Duration::ZERO
            }
        );
        assert_eq!(p.status(now + DAY, now), RotationStatus::Current);
    }
}
