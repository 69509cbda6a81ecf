//! One configuration file for every part of Nova, typed and validated against one profile.
//!
//! The file holds a `[security]` table with a section per part (see
//! `docs/configuration.md`) and the application's own top-level tables, which
//! [`Config::app_section`] reads. Every refusal of every section is collected into one
//! [`ConfigError`], each naming its setting.
//!
//! ```
//! let config = nova::Config::from_toml(r#"
//!     [security]
//!     profile = "development"
//!     [security.database]
//!     tls = "disable"
//!     [myapp]
//!     greeting = "hello"
//! "#)?;
//! assert_eq!(config.profile, nova::Profile::Development);
//!
//! #[derive(serde::Deserialize)]
//! struct MyApp { greeting: String }
//! let app: MyApp = config.app_section("myapp")?;
//! assert_eq!(app.greeting, "hello");
//!
//! // Strict profiles refuse plaintext to the database and a made-up key-encryption key.
//! let err = nova::Config::from_toml(r#"
//!     [security]
//!     profile = "production"
//!     [security.database]
//!     tls = "disable"
//!     [security.encryption]
//!     generate_kek_if_missing = true
//! "#).unwrap_err();
//! assert!(err.to_string().contains("security.database.tls"));
//! assert!(err.to_string().contains("security.encryption.generate_kek_if_missing"));
//! # Ok::<(), nova::ConfigError>(())
//! ```

use std::path::PathBuf;
use std::time::Duration;

use nova_audit::AuditConfig;
use nova_auth::config::AuthConfig;
use nova_tenancy::privacy::PrivacyConfig;
use nova_tenancy::{ConnectionPolicy, Pooler, Profile, TlsRequirement};
use serde::Deserialize;

/// A configuration that does not load: every problem, each naming its setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// One message per refused or malformed setting.
    pub problems: Vec<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "configuration refused: {}", self.problems.join("; "))
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(problem: String) -> Self {
        Self {
            problems: vec![problem],
        }
    }
}

/// `[security.database]`: the two logins Nova connects as, and how.
///
/// - The **application login** (`url_env`) serves requests: it must not be a superuser or
///   `BYPASSRLS` role, nor reach one, and the tables it reaches must be protected by
///   row-level security; [`crate::NovaBuilder::build`] refuses it otherwise.
/// - **Nova's login** (`nova_url_env`) owns Nova's own tables in `schema`: tenant and
///   subject keys, API keys, and the audit outbox it moves into the log. It is read before a
///   tenant is known, so it is a separate login the application's SQL never runs as.
///
/// URLs come from environment variables because they hold passwords.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// The environment variable with the application login's URL (default `DATABASE_URL`).
    pub url_env: String,
    /// The environment variable with Nova's login's URL (default `NOVA_DATABASE_URL`).
    pub nova_url_env: String,
    /// The schema of Nova's own tables (default `nova`).
    pub schema: String,
    /// TLS to the server: `disable` (loopback only), `require` (no certificate check),
    /// `verify_ca` or `verify_full` (the default). Strict profiles need `verify_ca` or
    /// `verify_full`.
    pub tls: TlsSetting,
    /// A CA certificate (PEM) to verify the server with, beside the system's.
    pub root_cert: Option<PathBuf>,
    /// What sits between the service and PostgreSQL: `none` or `pgbouncer_transaction`.
    pub pooler: PoolerSetting,
    /// Connections of each pool (1..=1000).
    pub max_connections: u32,
    /// `statement_timeout`, a duration such as `"30s"` (1 ms to 1 day).
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// `lock_timeout` (1 ms to 1 day).
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// `idle_in_transaction_session_timeout` (1 ms to 1 day).
    #[serde(with = "humantime_serde")]
    pub idle_in_transaction_timeout: Duration,
    /// How long a request waits for a connection (1 ms to 10 min).
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        let policy = ConnectionPolicy::default();
        Self {
            url_env: "DATABASE_URL".into(),
            nova_url_env: "NOVA_DATABASE_URL".into(),
            schema: "nova".into(),
            tls: TlsSetting::VerifyFull,
            root_cert: None,
            pooler: PoolerSetting::None,
            max_connections: policy.max_connections,
            statement_timeout: policy.statement_timeout,
            lock_timeout: policy.lock_timeout,
            idle_in_transaction_timeout: policy.idle_in_transaction_session_timeout,
            acquire_timeout: policy.acquire_timeout,
        }
    }
}

/// `security.database.tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TlsSetting {
    /// Plaintext, to a loopback host only. Refused by strict profiles.
    Disable,
    /// TLS without checking the certificate.
    Require,
    /// TLS with a certificate from a trusted CA.
    VerifyCa,
    /// TLS with a trusted certificate for the host name.
    VerifyFull,
}

/// `security.database.pooler`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PoolerSetting {
    /// Straight to PostgreSQL.
    None,
    /// PgBouncer in transaction pooling.
    PgbouncerTransaction,
}

impl DatabaseConfig {
    /// The connection policy these settings describe.
    #[must_use]
    pub fn connection_policy(&self) -> ConnectionPolicy {
        ConnectionPolicy {
            statement_timeout: self.statement_timeout,
            idle_in_transaction_session_timeout: self.idle_in_transaction_timeout,
            lock_timeout: self.lock_timeout,
            max_connections: self.max_connections,
            acquire_timeout: self.acquire_timeout,
            tls: match self.tls {
                TlsSetting::Disable => TlsRequirement::DisableForLoopbackOnly,
                TlsSetting::Require => TlsRequirement::Require,
                TlsSetting::VerifyCa => TlsRequirement::VerifyCa,
                TlsSetting::VerifyFull => TlsRequirement::VerifyFull,
            },
            pooler: match self.pooler {
                PoolerSetting::None => Pooler::None,
                PoolerSetting::PgbouncerTransaction => Pooler::PgBouncerTransaction,
            },
            ..ConnectionPolicy::default()
        }
    }

    fn validate(&self, profile: Profile, p: &mut Vec<String>) {
        match self.tls {
            TlsSetting::Disable if profile.is_strict() => p.push(format!(
                "security.database.tls = \"disable\" (plaintext) is not allowed in the {profile} profile"
            )),
            TlsSetting::Require if profile.is_strict() => p.push(format!(
                "security.database.tls = \"require\" does not check the server's certificate; the {profile} profile needs verify_ca or verify_full"
            )),
            _ => {}
        }
        if !(1..=1000).contains(&self.max_connections) {
            p.push("security.database.max_connections must be between 1 and 1000".into());
        }
        const DAY: Duration = Duration::from_secs(86_400);
        for (name, value, max, max_text) in [
            ("statement_timeout", self.statement_timeout, DAY, "1 day"),
            ("lock_timeout", self.lock_timeout, DAY, "1 day"),
            (
                "idle_in_transaction_timeout",
                self.idle_in_transaction_timeout,
                DAY,
                "1 day",
            ),
            (
                "acquire_timeout",
                self.acquire_timeout,
                Duration::from_secs(600),
                "10 minutes",
            ),
        ] {
            if value < Duration::from_millis(1) || value > max {
                p.push(format!(
                    "security.database.{name} must be between 1 ms and {max_text}"
                ));
            }
        }
        if nova_tenancy::Ident::new(&self.schema).is_err() {
            p.push("security.database.schema is not a valid identifier".into());
        }
        for (name, var) in [
            ("url_env", &self.url_env),
            ("nova_url_env", &self.nova_url_env),
        ] {
            if !env_name_ok(var) {
                p.push(format!(
                    "security.database.{name} must be an environment variable name"
                ));
            }
        }
    }
}

/// `[security.encryption]`: the key-encryption key (KEK) that wraps every tenant's keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncryptionConfig {
    /// The environment variable with the KEK: base64 of 32 bytes (default `NOVA_KEK`).
    pub kek_env: String,
    /// The KEK's id, recorded in every wrapped key (default `root`).
    pub kek_id: String,
    /// Make up a KEK at start when the variable is unset. Data sealed under it cannot be
    /// opened after a restart: for development only; strict profiles refuse it.
    pub generate_kek_if_missing: bool,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        Self {
            kek_env: "NOVA_KEK".into(),
            kek_id: "root".into(),
            generate_kek_if_missing: false,
        }
    }
}

impl EncryptionConfig {
    fn validate(&self, profile: Profile, p: &mut Vec<String>) {
        if profile.is_strict() && self.generate_kek_if_missing {
            p.push(format!(
                "security.encryption.generate_kek_if_missing = true is not allowed in the {profile} profile (a made-up KEK loses every sealed value at restart)"
            ));
        }
        if !env_name_ok(&self.kek_env) {
            p.push("security.encryption.kek_env must be an environment variable name".into());
        }
        if self.kek_id.is_empty()
            || self.kek_id.len() > 64
            || !self
                .kek_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            p.push("security.encryption.kek_id must be 1 to 64 of [A-Za-z0-9-_.:]".into());
        }
    }
}

fn env_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

/// The whole file, validated.
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// `security.profile`: what every section was checked against.
    pub profile: Profile,
    /// `[security.http]`, `network`, `jwt`, `rate_limiting`, `lockout`, `mfa`, `session`.
    pub auth: AuthConfig,
    /// `[security.audit]`.
    pub audit: AuditConfig,
    /// `[security.privacy]`.
    pub privacy: PrivacyConfig,
    /// `[security.database]`.
    pub database: DatabaseConfig,
    /// `[security.encryption]`.
    pub encryption: EncryptionConfig,
    app: toml::Table,
}

/// The sections; of the application's own tables only their names (they may hold anything).
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("profile", &self.profile)
            .field("auth", &self.auth)
            .field("audit", &self.audit)
            .field("privacy", &self.privacy)
            .field("database", &self.database)
            .field("encryption", &self.encryption)
            .field("app_tables", &self.app.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Deserialize)]
struct Sections {
    /// Required: a file that names no profile must not load as `development`.
    profile: Option<Profile>,
    #[serde(default)]
    audit: Option<AuditConfig>,
    #[serde(default)]
    privacy: Option<PrivacyConfig>,
    #[serde(default)]
    database: Option<DatabaseConfig>,
    #[serde(default)]
    encryption: Option<EncryptionConfig>,
}

impl Config {
    /// Reads and validates the file at `path`.
    ///
    /// # Errors
    /// [`ConfigError`] when the file cannot be read or is refused.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::one(format!("cannot read {}: {}", path.display(), e.kind()))
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates `text`, collecting the refusals of every section.
    ///
    /// # Errors
    /// [`ConfigError`] listing each refused or malformed setting.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        if text.len() > nova_auth::config::MAX_CONFIG_LEN {
            return Err(ConfigError::one(format!(
                "the configuration is longer than {} bytes",
                nova_auth::config::MAX_CONFIG_LEN
            )));
        }
        let mut p = Vec::new();
        let auth = AuthConfig::from_toml(text).map_err(|e| match e {
            nova_auth::config::ConfigError::Invalid(problems) => p.extend(problems),
            other => p.push(other.to_string()),
        });
        let mut file: toml::Table = toml::from_str(text).map_err(|e| {
            // The parser's message and the line number, never the line itself: it may hold
            // a secret.
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
            p.push(format!("not valid TOML{at}: {}", e.message()));
            ConfigError {
                problems: std::mem::take(&mut p),
            }
        })?;
        let mut security = match file.remove("security") {
            Some(toml::Value::Table(t)) => t,
            Some(_) => return Err(ConfigError::one("security must be a table".into())),
            None => toml::Table::new(),
        };
        // The sections `AuthConfig` reads were checked there.
        for own in [
            "http",
            "network",
            "jwt",
            "rate_limiting",
            "lockout",
            "mfa",
            "session",
        ] {
            security.remove(own);
        }
        for other in ["tenancy", "policy", "retention", "password_policy", "tls"] {
            if security.contains_key(other) {
                p.push(format!("security.{other} is not read by any part of Nova"));
                security.remove(other);
            }
        }
        let sections: Sections =
            match serde_path_to_error::deserialize(toml::Value::Table(security)) {
                Ok(s) => s,
                Err(e) => {
                    p.push(format!("security.{}: {}", e.path(), e.inner().message()));
                    return Err(ConfigError { problems: p });
                }
            };
        let Some(profile) = sections.profile else {
            p.push("security.profile is required (development, production, hipaa or gdpr)".into());
            return Err(ConfigError { problems: p });
        };
        let audit = sections.audit.unwrap_or_default();
        let privacy = sections.privacy.unwrap_or_default();
        let database = sections.database.unwrap_or_default();
        let encryption = sections.encryption.unwrap_or_default();
        let Ok(auth) = auth else {
            // Every section's problems at once.
            check_parts(profile, &audit, &privacy, &database, &encryption, &mut p);
            return Err(ConfigError { problems: p });
        };
        let config = Self {
            profile,
            auth,
            audit,
            privacy,
            database,
            encryption,
            app: file,
        };
        if let Err(e) = config.validate() {
            p.extend(e.problems);
        }
        if p.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems: p })
        }
    }

    /// Checks every section against the profile (again, for a configuration changed in
    /// code after it was read; [`crate::NovaBuilder::build`] calls it).
    ///
    /// # Errors
    /// [`ConfigError`] listing each refused setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        let profile = self.profile;
        if self.auth.profile != profile {
            p.push(
                "security.profile differs from the profile the guard settings were read with"
                    .into(),
            );
        }
        if let Err(e) = self.auth.validate() {
            match e {
                nova_auth::config::ConfigError::Invalid(problems) => p.extend(problems),
                other => p.push(other.to_string()),
            }
        }
        check_parts(
            profile,
            &self.audit,
            &self.privacy,
            &self.database,
            &self.encryption,
            &mut p,
        );
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: p })
        }
    }

    /// The application's own top-level table `name`, deserialized (unknown keys are refused
    /// when `T` says `#[serde(deny_unknown_fields)]`).
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting when the table is missing or does not fit `T`.
    pub fn app_section<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<T, ConfigError> {
        let table = self
            .app
            .get(name)
            .cloned()
            .ok_or_else(|| ConfigError::one(format!("[{name}] is missing")))?;
        serde_path_to_error::deserialize(table)
            .map_err(|e| ConfigError::one(format!("{name}.{}: {}", e.path(), e.inner().message())))
    }
}

fn check_parts(
    profile: Profile,
    audit: &AuditConfig,
    privacy: &PrivacyConfig,
    database: &DatabaseConfig,
    encryption: &EncryptionConfig,
    p: &mut Vec<String>,
) {
    if let Err(e) = audit.validate(profile) {
        p.extend(e.problems.into_iter().map(|m| format!("security.{m}")));
    }
    if let Err(e) = privacy.validate() {
        p.push(format!("security.privacy: {e}"));
    }
    database.validate(profile, p);
    encryption.validate(profile, p);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match Config::from_toml(text) {
            Err(e) => e.problems,
            Ok(_) => panic!("accepted: {text}"),
        }
    }

    #[test]
    fn strict_profiles_refuse_each_unsafe_setting_by_name() {
        for profile in ["production", "hipaa", "gdpr"] {
            let p = problems(&format!(
                r#"
                [security]
                profile = "{profile}"
                [security.http]
                allow_plaintext = true
                [security.database]
                tls = "disable"
                [security.encryption]
                generate_kek_if_missing = true
                [security.audit]
                fsync = "never"
                "#
            ));
            for setting in [
                "security.http.allow_plaintext",
                "security.database.tls",
                "security.encryption.generate_kek_if_missing",
                "security.audit.fsync",
            ] {
                assert!(
                    p.iter().any(|m| m.starts_with(setting)),
                    "{profile}: {setting} in {p:?}"
                );
            }
        }
        // The same settings load for development.
        let dev = Config::from_toml(
            r#"
            [security]
            profile = "development"
            [security.http]
            allow_plaintext = true
            [security.database]
            tls = "disable"
            [security.encryption]
            generate_kek_if_missing = true
            "#,
        )
        .unwrap();
        assert_eq!(dev.database.tls, TlsSetting::Disable);
        let timed = Config::from_toml(
            "[security]\nprofile = \"development\"\n[security.database]\nstatement_timeout = \"5s\"\nlock_timeout = \"250ms\"",
        )
        .unwrap();
        let policy = timed.database.connection_policy();
        assert_eq!(policy.statement_timeout, Duration::from_secs(5));
        assert_eq!(policy.lock_timeout, Duration::from_millis(250));
        assert_eq!(
            dev.database.connection_policy().tls,
            TlsRequirement::DisableForLoopbackOnly
        );
    }

    #[test]
    fn typed_values_and_unknown_keys_are_checked_with_their_path() {
        for (text, path) in [
            (
                "[security]\nprofile = \"development\"\n[security.database]\ntls = \"maybe\"",
                "security.database.tls",
            ),
            (
                "[security]\nprofile = \"development\"\n[security.database]\npooler = \"pgpool\"",
                "security.database.pooler",
            ),
            (
                "[security]\nprofile = \"development\"\n[security.database]\nmax_conections = 3",
                "security.database",
            ),
            (
                "[security]\nprofile = \"development\"\n[security.encryption]\nkek = \"abc\"",
                "security.encryption",
            ),
            (
                "[security]\nprofile = \"development\"\n[security.database]\nmax_connections = 0",
                "security.database.max_connections",
            ),
            (
                "[security]\nprofile = \"development\"\n[security.database]\nstatement_timeout = 30",
                "security.database.statement_timeout",
            ),
            (
                "[security]\nprofile = \"development\"\n[security.database]\nlock_timeout = \"soon\"",
                "security.database.lock_timeout",
            ),
            (
                "[security]\nprofile = \"development\"\n[security.database]\nacquire_timeout = \"1h\"",
                "security.database.acquire_timeout",
            ),
            (
                "[security]\nprofile = \"development\"\n[security.database]\nstatement_timeout = \"0s\"",
                "security.database.statement_timeout",
            ),
            (
                "[security]\nprofile = \"development\"\n[security.database]\nurl_env = \"postgres://u:secret@h/db\"",
                "security.database.url_env",
            ),
            (
                "[security]\nprofile = \"development\"\n[security.tenancy]\nx = 1",
                "security.tenancy",
            ),
            ("[security.database]\ntls = \"require\"", "security.profile"),
        ] {
            let p = problems(text);
            assert!(p.iter().any(|m| m.starts_with(path)), "{path} in {p:?}");
            // A value that looks like a secret is never echoed.
            assert!(!p.iter().any(|m| m.contains("secret@")), "{p:?}");
        }
    }

    const VALID: &str = "[security]\nprofile = \"production\"\n[security.database]\ntls = \"verify_full\"\nmax_connections = 8\n[security.encryption]\nkek_env = \"NOVA_KEK\"\n[security.audit]\nretention_days = 400\n";

    proptest::proptest! {
        /// Arbitrary text, and a valid file with one byte changed, never panic; what loads
        /// validates again.
        #[test]
        fn arbitrary_files_never_panic(text in "\\PC{0,300}", at in 0usize..200, byte in 0u8..128) {
            for candidate in [text, {
                let mut b = VALID.as_bytes().to_vec();
                let i = at % b.len();
                b[i] = byte;
                String::from_utf8_lossy(&b).into_owned()
            }] {
                if let Ok(c) = Config::from_toml(&candidate) {
                    proptest::prop_assert!(c.validate().is_ok());
                }
            }
        }
    }

    #[test]
    fn syntax_errors_name_the_line_but_never_repeat_it() {
        let e = Config::from_toml(
            "[security]\nprofile = \"development\"\nurl = postgres://u:hunter2@h/db\n",
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("line 3") && !text.contains("hunter2"),
            "{text}"
        );
        assert!(Config::from_toml(&"#".repeat(nova_auth::config::MAX_CONFIG_LEN + 1)).is_err());
        assert!(Config::from_toml(VALID).is_ok());
    }

    #[test]
    fn the_application_reads_its_own_tables() {
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct App {
            #[allow(dead_code)]
            listen: std::net::SocketAddr,
        }
        let c = Config::from_toml(
            "[security]\nprofile = \"development\"\n[app]\nlisten = \"127.0.0.1:80\"\n[bad]\nlisten = 3\n[typo]\nlistn = \"127.0.0.1:80\"",
        )
        .unwrap();
        assert!(c.app_section::<App>("app").is_ok());
        let e = c.app_section::<App>("bad").unwrap_err();
        assert!(e.problems[0].starts_with("bad.listen"), "{e}");
        assert!(c.app_section::<App>("typo").is_err());
        assert!(c.app_section::<App>("missing").is_err());
    }
}
