//! One TOML file, one section per crate: `[security.*]` for `nova-auth`,
//! `[security.audit]` for `nova-audit`, `[security.privacy]` for `nova-tenancy`'s
//! data-subject rules, and the application's own `[ticketing]` table. Every section is
//! validated against the one profile at start, and every refusal names its setting.

use std::net::SocketAddr;

use nova_audit::AuditConfig;
use nova_auth::config::AuthConfig;
use nova_tenancy::Profile;
use nova_tenancy::privacy::PrivacyConfig;
use serde::Deserialize;

/// The shipped configuration (`examples/ticketing/nova.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../../ticketing/nova.toml");

/// The whole file, validated.
#[derive(Debug, Clone)]
pub struct TicketingConfig {
    /// The profile every section was checked against.
    pub profile: Profile,
    /// `[security.*]`: the guard, tokens, rate limits, lockout, MFA and sessions.
    pub auth: AuthConfig,
    /// `[security.audit]`.
    pub audit: AuditConfig,
    /// `[security.privacy]`: retention rules.
    pub privacy: PrivacyConfig,
    /// `[ticketing]`.
    pub service: ServiceSection,
}

/// `[ticketing]`: the application's own settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// Where the binary listens.
    pub listen: SocketAddr,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    security: Sections,
    ticketing: ServiceSection,
}

#[derive(Deserialize, Default)]
struct Sections {
    /// Required here: a file that names no profile must not load as `development`.
    #[serde(default)]
    profile: Option<Profile>,
    #[serde(default)]
    audit: Option<AuditConfig>,
    #[serde(default)]
    privacy: Option<PrivacyConfig>,
}

/// A configuration that does not load: every problem, each naming its setting.
#[derive(Debug)]
pub struct ConfigRefused(pub Vec<String>);

impl std::fmt::Display for ConfigRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "configuration refused: {}", self.0.join("; "))
    }
}

impl std::error::Error for ConfigRefused {}

impl TicketingConfig {
    /// Parses and validates `text`, collecting the refusals of every section.
    ///
    /// # Errors
    /// [`ConfigRefused`] listing each refused or malformed setting.
    pub fn from_toml(text: &str) -> Result<Self, ConfigRefused> {
        let mut problems = Vec::new();
        let auth = AuthConfig::from_toml(text).map_err(|e| problems.push(e.to_string()));
        let file: Result<File, _> = toml::from_str(text);
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                // The message with the line it is about, on one line.
                let text = e.to_string();
                problems.push(text.split_whitespace().collect::<Vec<_>>().join(" "));
                return Err(ConfigRefused(problems));
            }
        };
        if file.security.profile.is_none() {
            problems.push(
                "security.profile is required (development, production, hipaa or gdpr)".into(),
            );
        }
        let profile = auth.as_ref().map_or(Profile::Production, |a| a.profile);
        let audit = file.security.audit.unwrap_or_default();
        if let Err(e) = audit.validate(profile) {
            problems.extend(e.problems.into_iter().map(|p| format!("security.{p}")));
        }
        let privacy = file.security.privacy.unwrap_or_default();
        if let Err(e) = privacy.validate() {
            problems.push(format!("security.privacy: {e}"));
        }
        match auth {
            Ok(auth) if problems.is_empty() => Ok(Self {
                profile,
                auth,
                audit,
                privacy,
                service: file.ticketing,
            }),
            _ => Err(ConfigRefused(problems)),
        }
    }
}
