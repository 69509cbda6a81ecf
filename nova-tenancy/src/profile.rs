//! The deployment profile every Nova crate validates its configuration against.

use serde::Deserialize;

/// The deployment profile, read from `[security] profile` in a service's TOML file and
/// shared by every crate's section: `development` allows insecure settings (and says so);
/// `production`, `hipaa` and `gdpr` refuse them, each naming the setting.
///
/// ```
/// use nova_tenancy::Profile;
/// assert!(Profile::Hipaa.is_strict());
/// assert!(!Profile::default().is_strict());
/// assert_eq!("gdpr".parse::<Profile>(), Ok(Profile::Gdpr));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Local development: insecure settings are allowed (and logged).
    #[default]
    Development,
    /// Production: insecure settings are refused.
    Production,
    /// Production, plus HIPAA's rules: a second factor no older than 15 minutes for admin
    /// actions and RLS bypass, sessions that end after 15 idle minutes, and audit records
    /// kept for at least six years.
    Hipaa,
    /// Production, for services under the GDPR: retention rules, export and erasure of a
    /// data subject's records.
    Gdpr,
}

impl Profile {
    /// Whether insecure settings are refused (every profile but `development`).
    #[must_use]
    pub fn is_strict(self) -> bool {
        self != Self::Development
    }

    /// The profile's name as written in configuration.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Production => "production",
            Self::Hipaa => "hipaa",
            Self::Gdpr => "gdpr",
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "development" => Ok(Self::Development),
            "production" => Ok(Self::Production),
            "hipaa" => Ok(Self::Hipaa),
            "gdpr" => Ok(Self::Gdpr),
            _ => Err(UnknownProfile),
        }
    }
}

/// A profile name that is not one of `development`, `production`, `hipaa`, `gdpr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown profile (expected development, production, hipaa or gdpr)")]
pub struct UnknownProfile;
