//! The `[security.audit]` section of a service's configuration file, validated against the
//! deployment [`Profile`].
//!
//! ```
//! use nova_audit::AuditConfig;
//! use nova_tenancy::Profile;
//!
//! #[derive(serde::Deserialize)]
//! struct File { audit: AuditConfig }
//! let file: File = serde_json::from_str(r#"{"audit": {"retention_days": 2192}}"#)?;
//! file.audit.validate(Profile::Hipaa)?;
//! let short: File = serde_json::from_str(r#"{"audit": {"retention_days": 30}}"#)?;
//! let refused = short.audit.validate(Profile::Hipaa).unwrap_err();
//! assert!(refused.to_string().contains("audit.retention_days"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use nova_tenancy::Profile;
use serde::Deserialize;

use crate::file_log::FsyncPolicy;
use crate::writer::WriterConfig;

/// Six years in days, counting the two leap days six years can hold: the shortest
/// retention the `hipaa` profile accepts (45 CFR 164.316(b)(2)(i)).
pub const HIPAA_RETENTION_DAYS: u32 = 6 * 365 + 2;

/// The shortest retention any strict profile accepts: one year.
pub const MIN_STRICT_RETENTION_DAYS: u32 = 365;

/// When appends reach the disk, as written in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncSetting {
    /// Before every append returns.
    Always,
    /// Once per batch (the writer batches concurrent appends).
    #[default]
    PerBatch,
    /// Never; refused by every strict profile.
    Never,
}

/// The `[security.audit]` section. Unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Days an event's content is kept before the retention job prunes it (its leaf hash
    /// stays, so the log still verifies). Absent: kept forever, which `gdpr` refuses.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// When appends reach the disk.
    #[serde(default)]
    pub fsync: FsyncSetting,
    /// Events the writer queues before callers wait (1..=1,000,000).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Events per batch (1..=100,000).
    #[serde(default = "default_batch")]
    pub max_batch: usize,
    /// Where the log is (a [`crate::FileLog`]); read by whoever opens the log (the `nova`
    /// crate's builder does).
    #[serde(default)]
    pub file: Option<std::path::PathBuf>,
    /// The log's origin, named in every checkpoint (default `nova/audit`).
    #[serde(default)]
    pub origin: Option<String>,
    /// The environment variable holding the checkpoint signing key's 32-byte seed, in
    /// base64. Without one a log can only be opened with a key made up at start, whose
    /// checkpoints nobody can verify after a restart.
    #[serde(default)]
    pub signing_key_env: Option<String>,
    /// The environment variable holding the 32-byte key (base64) of keyed hashes of
    /// sensitive values ([`crate::RedactionPolicy::with_hash_key`]); without one they are
    /// redacted.
    #[serde(default)]
    pub redaction_key_env: Option<String>,
}

fn default_queue() -> usize {
    8192
}

fn default_batch() -> usize {
    512
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention_days: None,
            fsync: FsyncSetting::default(),
            queue: default_queue(),
            max_batch: default_batch(),
            file: None,
            origin: None,
            signing_key_env: None,
            redaction_key_env: None,
        }
    }
}

/// Settings a profile refuses, each named by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfigError {
    /// One message per refused setting.
    pub problems: Vec<String>,
}

impl fmt::Display for AuditConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration refused: {}", self.problems.join("; "))
    }
}

impl std::error::Error for AuditConfigError {}

impl AuditConfig {
    /// Checks the section against `profile`, listing every refused setting:
    /// - always: `queue` and `max_batch` in range, `retention_days` at least 1;
    /// - strict profiles: `fsync = "never"`, and a retention under one year;
    /// - `hipaa`: a retention under six years ([`HIPAA_RETENTION_DAYS`]); absent (kept
    ///   forever) passes;
    /// - `gdpr`: no retention (events kept forever).
    ///
    /// # Errors
    /// [`AuditConfigError`] naming each refused setting.
    pub fn validate(&self, profile: Profile) -> Result<(), AuditConfigError> {
        let mut problems = Vec::new();
        if !(1..=1_000_000).contains(&self.queue) {
            problems.push("audit.queue must be between 1 and 1000000".to_owned());
        }
        if !(1..=100_000).contains(&self.max_batch) {
            problems.push("audit.max_batch must be between 1 and 100000".to_owned());
        }
        if self.retention_days == Some(0) {
            problems.push("audit.retention_days must be at least 1".to_owned());
        }
        if profile.is_strict() {
            if self.fsync == FsyncSetting::Never {
                problems.push(format!(
                    "audit.fsync = \"never\" can lose acknowledged events ({profile} profile)"
                ));
            }
            if let Some(days) = self.retention_days
                && days < MIN_STRICT_RETENTION_DAYS
            {
                problems.push(format!(
                    "audit.retention_days = {days} is under one year ({profile} profile)"
                ));
            }
        }
        if profile == Profile::Hipaa
            && let Some(days) = self.retention_days
            && days < HIPAA_RETENTION_DAYS
        {
            problems.push(format!(
                "audit.retention_days = {days} is under six years \
                 ({HIPAA_RETENTION_DAYS} days; hipaa profile)"
            ));
        }
        if profile == Profile::Gdpr && self.retention_days.is_none() {
            problems.push(
                "audit.retention_days must be set: events are personal data (gdpr profile)"
                    .to_owned(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(AuditConfigError { problems })
        }
    }

    /// The file log's fsync policy.
    #[must_use]
    pub fn fsync_policy(&self) -> FsyncPolicy {
        match self.fsync {
            FsyncSetting::Always => FsyncPolicy::Always,
            FsyncSetting::PerBatch => FsyncPolicy::PerBatch,
            FsyncSetting::Never => FsyncPolicy::Never,
        }
    }

    /// The background writer's queue and batch sizes.
    #[must_use]
    pub fn writer_config(&self) -> WriterConfig {
        WriterConfig::new(self.queue, self.max_batch)
    }

    /// The retention job's cutoff for a run at `now_ms` (milliseconds since the epoch):
    /// events older than this may be pruned. `None` when events are kept forever.
    #[must_use]
    pub fn prune_cutoff_ms(&self, now_ms: u64) -> Option<u64> {
        self.retention_days
            .map(|d| now_ms.saturating_sub(u64::from(d) * 86_400_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(retention: Option<u32>, fsync: FsyncSetting) -> AuditConfig {
        AuditConfig {
            retention_days: retention,
            fsync,
            ..AuditConfig::default()
        }
    }

    #[test]
    fn development_accepts_anything_in_range() {
        assert!(
            cfg(Some(1), FsyncSetting::Never)
                .validate(Profile::Development)
                .is_ok()
        );
        assert!(
            cfg(Some(0), FsyncSetting::Always)
                .validate(Profile::Development)
                .is_err()
        );
    }

    #[test]
    fn strict_profiles_name_each_refused_setting() {
        let err = cfg(Some(30), FsyncSetting::Never)
            .validate(Profile::Production)
            .unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(err.to_string().contains("audit.fsync"));
        assert!(err.to_string().contains("audit.retention_days = 30"));
    }

    #[test]
    fn hipaa_needs_six_years() {
        let short = cfg(Some(HIPAA_RETENTION_DAYS - 1), FsyncSetting::Always);
        let err = short.validate(Profile::Hipaa).unwrap_err();
        assert!(err.to_string().contains("six years"), "{err}");
        assert!(short.validate(Profile::Production).is_ok());
        assert!(
            cfg(Some(HIPAA_RETENTION_DAYS), FsyncSetting::Always)
                .validate(Profile::Hipaa)
                .is_ok()
        );
        assert!(
            cfg(None, FsyncSetting::Always)
                .validate(Profile::Hipaa)
                .is_ok()
        );
    }

    #[test]
    fn gdpr_needs_a_retention() {
        let err = cfg(None, FsyncSetting::PerBatch)
            .validate(Profile::Gdpr)
            .unwrap_err();
        assert!(err.to_string().contains("audit.retention_days must be set"));
        assert!(
            cfg(Some(400), FsyncSetting::PerBatch)
                .validate(Profile::Gdpr)
                .is_ok()
        );
    }

    #[test]
    fn cutoff_saturates() {
        let c = cfg(Some(1), FsyncSetting::Always);
        assert_eq!(c.prune_cutoff_ms(86_400_000 + 5), Some(5));
        assert_eq!(c.prune_cutoff_ms(3), Some(0));
        assert_eq!(cfg(None, FsyncSetting::Always).prune_cutoff_ms(9), None);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let r: Result<AuditConfig, _> = serde_json::from_str(r#"{"retention": 5}"#);
        assert!(r.is_err());
    }
}
