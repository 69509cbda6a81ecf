//! Configuration for the guards, from the `[security.*]` tables of a TOML file, validated at
//! start-up. This crate reads `profile`, `http`, `network`, `jwt`, `rate_limiting`,
//! `lockout`, `mfa` and `session`; the sections of the other Nova crates
//! ([`SIBLING_SECTIONS`]) may sit in the same file and are skipped, any other section name
//! is an error. Unknown keys are errors (a misspelt setting must not silently fall back to a
//! default) and values are range-checked.
//!
//! Profiles: `development` allows insecure settings; `production`, `hipaa` and `gdpr` refuse
//! them with a message naming each one (plaintext HTTP allowed, HS256 with a secret shorter
//! than 32 bytes, rate limiting off, HSTS off, no lockout, proxies trusted too widely…);
//! `hipaa` also requires second factors no older than 15 minutes and sessions that end after
//! 15 idle minutes.
//!
//! ```
//! use nova_auth::config::AuthConfig;
//! let cfg = AuthConfig::from_toml(r#"
//!     [security]
//!     profile = "production"
//!
//!     [security.http]
//!     max_body_bytes = 1048576
//!     trusted_proxies = ["10.0.0.0/8"]
//!
//!     [security.network]
//!     default = "allow"
//!     deny = ["192.0.2.0/24"]
//!
//!     [security.rate_limiting]
//!     enabled = true
//!     end_user = { rate = 10, per_seconds = 1, burst = 20 }
//!     agent = { rate = 50, per_seconds = 1, burst = 100 }
//!     service = { rate = 500, per_seconds = 1, burst = 1000 }
//!     roles = { agent = "agent", "support.lead" = "agent", svc = "service" }
//! "#)?;
//! let guard = cfg.guard_config()?;
//! assert_eq!(guard.max_body_bytes, 1_048_576);
//!
//! let err = AuthConfig::from_toml("[security]\nprofile = \"production\"\n[security.http]\nallow_plaintext = true\n")
//!     .unwrap_err();
//! assert!(err.to_string().contains("security.http.allow_plaintext"));
//! # Ok::<(), nova_auth::config::ConfigError>(())
//! ```

use std::fmt;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

use http::HeaderValue;
use serde::Deserialize;

use crate::Alg;
use crate::ip_rules::{CidrList, DefaultAction, IpRules, TrustedProxies};
use crate::jwks::MIN_HMAC_SECRET_LEN;
use crate::layer::{GuardConfig, LimiterStore, RateLimits};
use crate::lockout::LockoutPolicy;
use crate::rate_limit::{BanPolicy, Quota, Tier, Tiers};

/// Largest configuration text accepted, in bytes.
pub const MAX_CONFIG_LEN: usize = 256 * 1024;

/// Why a configuration was refused. Each problem names its setting.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not valid TOML for this schema (unknown key, wrong type…); the parser's message.
    Syntax(String),
    /// Values out of range or insecure for the profile, one message per setting.
    Invalid(Vec<String>),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(m) => write!(f, "configuration: {m}"),
            Self::Invalid(problems) => write!(f, "configuration refused: {}", problems.join("; ")),
        }
    }
}

impl std::error::Error for ConfigError {}

pub use nova_tenancy::Profile;

/// A file: the application's own tables sit beside `[security]` and are not read here.
#[derive(Debug, Deserialize)]
struct File {
    #[serde(default)]
    security: toml::Table,
}

/// The `[security.*]` tables this crate reads; the rest belong to other Nova crates (and are
/// named in [`SIBLING_SECTIONS`]), so that one file configures them all.
const OWN_SECTIONS: [&str; 8] = [
    "profile",
    "http",
    "network",
    "jwt",
    "rate_limiting",
    "lockout",
    "mfa",
    "session",
];

/// `[security.*]` tables read by other Nova crates, skipped here. Any other name is an error,
/// so that a misspelt section is not silently ignored.
pub const SIBLING_SECTIONS: [&str; 9] = [
    "database",
    "tenancy",
    "encryption",
    "policy",
    "audit",
    "privacy",
    "retention",
    "password_policy",
    "tls",
];

/// The `[security]` table and its sub-tables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `security.profile`.
    pub profile: Profile,
    /// `[security.http]`.
    pub http: HttpConfig,
    /// `[security.network]`.
    pub network: NetworkConfig,
    /// `[security.jwt]`.
    pub jwt: Option<JwtSettings>,
    /// `[security.rate_limiting]`.
    pub rate_limiting: RateLimitConfig,
    /// `[security.lockout]`.
    pub lockout: LockoutConfig,
    /// `[security.mfa]`.
    pub mfa: MfaConfig,
    /// `[security.session]`.
    pub session: SessionConfig,
}

/// `[security.mfa]`: second factors are always required for admin actions and RLS bypass
/// ([`crate::totp::MfaPolicy`]); this sets how fresh they must be and whether every action
/// needs one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MfaConfig {
    /// How long a verified second factor counts (`"15m"`; at most 15 minutes under
    /// `hipaa`).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Require a second factor for every action, not only sensitive ones.
    pub require_for_every_action: bool,
    /// How long "remember this device" lasts (`"30d"`; at most 90 days; `"0s"`: devices
    /// are never remembered).
    #[serde(with = "humantime_serde")]
    pub remember_device: Duration,
    /// The environment variable holding the key device tokens are signed with (base64 of
    /// 32 bytes, used for nothing else). Without it no device is remembered.
    pub remember_device_key_env: Option<String>,
    /// Policy actions that are administrative (user and role management, grants, keys):
    /// they need a second factor no older than `max_age`
    /// ([`crate::totp::Sensitive::AdminAction`]), checked by whoever authorizes them (the
    /// `nova` crate's request scope does).
    pub admin_actions: Vec<String>,
}

impl Default for MfaConfig {
    fn default() -> Self {
        Self {
            max_age: MINUTE * 15,
            require_for_every_action: false,
            remember_device: DAY * 30,
            remember_device_key_env: None,
            admin_actions: Vec::new(),
        }
    }
}

/// `[security.session]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// A session ends after this long without use (`"30m"`; at most 15 minutes under
    /// `hipaa`).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in, used or not (`"12h"`).
    #[serde(with = "humantime_serde")]
    pub absolute_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_timeout: MINUTE * 30,
            absolute_timeout: HOUR * 12,
        }
    }
}

/// `[security.http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve plain HTTP (no TLS in front). Refused in production.
    pub allow_plaintext: bool,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// HSTS `max-age` (`"365d"`); `"0s"` turns HSTS off (refused in production).
    #[serde(with = "humantime_serde")]
    pub hsts_max_age: Duration,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: CidrList,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            allow_plaintext: false,
            max_body_bytes: 1 << 20,
            hsts_max_age: DAY * 365,
            trusted_proxies: CidrList::default(),
        }
    }
}

/// `[security.network]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// `"allow"` or `"deny"` for addresses no list names.
    pub default: DefaultAction,
    /// Allowed networks.
    pub allow: CidrList,
    /// Denied networks (deny wins).
    pub deny: CidrList,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            default: DefaultAction::Allow,
            allow: CidrList::default(),
            deny: CidrList::default(),
        }
    }
}

/// `[security.jwt]`: checked here; the verifier itself is built with its keys in code.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Accepted algorithms, e.g. `["ES256", "EdDSA"]`.
    pub algorithms: Vec<Alg>,
    /// With `HS256`: the environment variable holding the secret (at least 32 bytes).
    #[serde(default)]
    pub hs256_secret_env: Option<String>,
}

/// A quota in configuration: `rate` requests per `per_seconds`, bursts of `burst`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Requests per period.
    pub rate: u32,
    /// The period in seconds.
    pub per_seconds: u64,
    /// Burst size.
    pub burst: u32,
}

/// `[security.rate_limiting]`. `Debug` leaves out `redis_url` (it may hold a password).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Whether rate limits apply (refused off in production).
    pub enabled: bool,
    /// `"local"` (one replica) or `"redis"` (shared).
    pub store: StoreKind,
    /// With `store = "redis"`.
    pub redis_url: Option<String>,
    /// With `store = "redis"`: the prefix of every budget's key (default `nova`), so that
    /// services sharing one Redis keep apart budgets; 1 to 64 of `[a-z0-9_.:-]`.
    pub redis_prefix: String,
    /// The default (end-user) tier.
    pub end_user: QuotaConfig,
    /// The agent tier.
    pub agent: Option<QuotaConfig>,
    /// The service tier.
    pub service: Option<QuotaConfig>,
    /// A whole tenant's budget, across all its callers.
    pub tenant: QuotaConfig,
    /// Role name → `"agent"` or `"service"`.
    pub roles: std::collections::BTreeMap<String, TierName>,
    /// Limited answers within `ban_window` that ban a key (0: no bans).
    pub ban_after: u32,
    /// The window for `ban_after` (`"60s"`).
    #[serde(with = "humantime_serde")]
    pub ban_window: Duration,
    /// How long a ban lasts (`"15m"`).
    #[serde(with = "humantime_serde")]
    pub ban_duration: Duration,
}

impl fmt::Debug for RateLimitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitConfig")
            .field("enabled", &self.enabled)
            .field("store", &self.store)
            .field("redis_url", &self.redis_url.as_ref().map(|_| "[REDACTED]"))
            .field("redis_prefix", &self.redis_prefix)
            .field("end_user", &self.end_user)
            .field("agent", &self.agent)
            .field("service", &self.service)
            .field("tenant", &self.tenant)
            .field("roles", &self.roles)
            .field("ban_after", &self.ban_after)
            .finish_non_exhaustive()
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            store: StoreKind::Local,
            redis_url: None,
            redis_prefix: "nova".into(),
            end_user: QuotaConfig {
                rate: 10,
                per_seconds: 1,
                burst: 20,
            },
            agent: None,
            service: None,
            tenant: QuotaConfig {
                rate: 1000,
                per_seconds: 1,
                burst: 2000,
            },
            roles: std::collections::BTreeMap::new(),
            ban_after: 50,
            ban_window: MINUTE,
            ban_duration: MINUTE * 15,
        }
    }
}

/// Where rate-limit budgets live (`security.rate_limiting.store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum StoreKind {
    /// In this process: one replica's budgets.
    Local,
    /// In Redis (`redis_url`): budgets shared by every replica.
    Redis,
}

/// A rate-limit tier a role can be put in (`security.rate_limiting.roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TierName {
    /// The `agent` quota.
    Agent,
    /// The `service` quota.
    Service,
}

/// `[security.lockout]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    /// Failures that lock (0 turns lockout off; refused in production).
    pub max_failed_attempts: u32,
    /// The window failures are counted in (`"15m"`).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long a lock lasts (`"15m"`).
    #[serde(with = "humantime_serde")]
    pub lockout_duration: Duration,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        Self {
            max_failed_attempts: 5,
            window: MINUTE * 15,
            lockout_duration: MINUTE * 15,
        }
    }
}

fn quota(q: QuotaConfig, name: &str, problems: &mut Vec<String>) -> Option<Quota> {
    let (Some(burst), Some(rate)) = (
        std::num::NonZeroU32::new(q.burst),
        std::num::NonZeroU32::new(q.rate),
    ) else {
        problems.push(format!("{name}: rate and burst must be at least 1"));
        return None;
    };
    match Quota::new(burst, rate, Duration::from_secs(q.per_seconds)) {
        Ok(q) => Some(q),
        Err(_) => {
            problems.push(format!(
                "{name}: the interval between requests must be between 1 µs and 1 day"
            ));
            None
        }
    }
}

impl AuthConfig {
    /// Parses and validates a TOML file with a `[security]` table.
    ///
    /// # Errors
    /// [`ConfigError`] naming every bad or (in production) insecure setting.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        if text.len() > MAX_CONFIG_LEN {
            return Err(ConfigError::Syntax(format!(
                "longer than {MAX_CONFIG_LEN} bytes"
            )));
        }
        let file: File =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.message().to_owned()))?;
        let mut own = toml::Table::new();
        for (key, value) in file.security {
            if OWN_SECTIONS.contains(&key.as_str()) {
                own.insert(key, value);
            } else if !SIBLING_SECTIONS.contains(&key.as_str()) {
                return Err(ConfigError::Syntax(format!(
                    "unknown section `security.{}`",
                    key.escape_debug()
                )));
            }
        }
        // The error names the setting (`security.network.deny[1]: ...`).
        let cfg: Self = serde_path_to_error::deserialize(toml::Value::Table(own)).map_err(
            |e: serde_path_to_error::Error<toml::de::Error>| {
                let path = e.path().to_string();
                ConfigError::Syntax(format!("security.{path}: {}", e.inner().message()))
            },
        )?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and, in production, refuses insecure settings.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with one message per setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        let prod = self.profile.is_strict();
        let hipaa = self.profile == Profile::Hipaa;
        if hipaa && self.mfa.max_age > MINUTE * 15 {
            p.push(
                "security.mfa.max_age over 15 minutes is not allowed in the hipaa profile".into(),
            );
        }
        if hipaa && self.session.idle_timeout > MINUTE * 15 {
            p.push(
                "security.session.idle_timeout over 15 minutes is not allowed in the hipaa profile"
                    .into(),
            );
        }
        if self.mfa.max_age < SECOND || self.mfa.max_age > DAY {
            p.push("security.mfa.max_age must be between 1 second and 1 day".into());
        }
        if self.mfa.remember_device > DAY * 90 {
            p.push("security.mfa.remember_device is at most 90 days".into());
        }
        if self.session.idle_timeout < SECOND || self.session.idle_timeout > DAY {
            p.push("security.session.idle_timeout must be between 1 second and 1 day".into());
        }
        if self.session.absolute_timeout < SECOND || self.session.absolute_timeout > DAY * 30 {
            p.push("security.session.absolute_timeout must be between 1 second and 30 days".into());
        }
        if prod && self.http.allow_plaintext {
            p.push(
                "security.http.allow_plaintext = true is not allowed in the production profile"
                    .into(),
            );
        }
        if prod && self.http.hsts_max_age < DAY {
            p.push(
                "security.http.hsts_max_age must be at least 1 day in the production profile"
                    .into(),
            );
        }
        if self.http.max_body_bytes == 0 || self.http.max_body_bytes > 1 << 30 {
            p.push("security.http.max_body_bytes must be between 1 and 1 GiB".into());
        }
        // Trusting everyone (or a huge block) would make X-Forwarded-For the client address.
        for n in self.http.trusted_proxies.networks() {
            let too_wide = match n {
                ipnet::IpNet::V4(v4) => v4.prefix_len() < if prod { 8 } else { 1 },
                ipnet::IpNet::V6(v6) => v6.prefix_len() < if prod { 16 } else { 1 },
            };
            if too_wide {
                p.push(format!(
                    "security.http.trusted_proxies: `{n}` trusts too many addresses to be proxies"
                ));
            }
        }
        if let Some(jwt) = &self.jwt {
            if jwt.algorithms.is_empty() {
                p.push("security.jwt.algorithms must name at least one algorithm".into());
            }
            if jwt.algorithms.contains(&Alg::HS256) {
                let len = jwt
                    .hs256_secret_env
                    .as_deref()
                    .and_then(std::env::var_os)
                    .map_or(0, |v| v.len());
                if len < MIN_HMAC_SECRET_LEN {
                    p.push(format!(
                        "security.jwt.hs256_secret_env: HS256 needs a secret of at least {MIN_HMAC_SECRET_LEN} bytes in that environment variable"
                    ));
                }
                if prod && jwt.algorithms.len() > 1 {
                    p.push("security.jwt.algorithms: HS256 mixed with public-key algorithms is not allowed in the production profile".into());
                }
            }
        }
        let rl = &self.rate_limiting;
        if prod && !rl.enabled {
            p.push(
                "security.rate_limiting.enabled = false is not allowed in the production profile"
                    .into(),
            );
        }
        if rl.store == StoreKind::Redis && rl.redis_url.is_none() {
            p.push("security.rate_limiting.redis_url is required with store = \"redis\"".into());
        }
        if rl.redis_prefix.is_empty()
            || rl.redis_prefix.len() > 64
            || !rl
                .redis_prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.:-".contains(&b))
        {
            p.push("security.rate_limiting.redis_prefix must be 1 to 64 of [a-z0-9_.:-]".into());
        }
        let _ = quota(rl.end_user, "security.rate_limiting.end_user", &mut p);
        let _ = quota(rl.tenant, "security.rate_limiting.tenant", &mut p);
        let tiers = [
            ("end_user", Some(rl.end_user)),
            ("agent", rl.agent),
            ("service", rl.service),
            ("tenant", Some(rl.tenant)),
        ];
        for (name, q) in tiers {
            if prod && q.is_some_and(|q| q.burst > 1_000_000) {
                p.push(format!(
                    "security.rate_limiting.{name}.burst over 1000000 is no limit; not allowed in the production profile"
                ));
            }
        }
        if rl.ban_window > DAY || rl.ban_duration > DAY * 7 {
            p.push("security.rate_limiting: ban_window is at most 1 day and ban_duration at most 7 days".into());
        }
        if let Some(q) = rl.agent {
            let _ = quota(q, "security.rate_limiting.agent", &mut p);
        }
        if let Some(q) = rl.service {
            let _ = quota(q, "security.rate_limiting.service", &mut p);
        }
        for (role, tier) in &rl.roles {
            if nova_tenancy::Role::new(role).is_err() {
                p.push(format!(
                    "security.rate_limiting.roles: `{}` is not a role name",
                    role.escape_debug()
                ));
            }
            let (declared, name) = match tier {
                TierName::Agent => (rl.agent.is_some(), "agent"),
                TierName::Service => (rl.service.is_some(), "service"),
            };
            if !declared {
                p.push(format!(
                    "security.rate_limiting.roles.{role}: the {name} tier has no quota"
                ));
            }
        }
        if rl.ban_after > 0 && (rl.ban_window < SECOND || rl.ban_duration < SECOND) {
            p.push("security.rate_limiting: ban_window and ban_duration must be at least 1 second with ban_after".into());
        }
        let lo = &self.lockout;
        if prod && lo.max_failed_attempts == 0 {
            p.push("security.lockout.max_failed_attempts = 0 (no lockout) is not allowed in the production profile".into());
        }
        if lo.max_failed_attempts > 0 && (lo.window < SECOND || lo.lockout_duration < SECOND) {
            p.push(
                "security.lockout: window and lockout_duration must be at least 1 second".into(),
            );
        }
        if lo.window > DAY || lo.lockout_duration > DAY * 7 {
            p.push(
                "security.lockout: window is at most 1 day and lockout_duration at most 7 days"
                    .into(),
            );
        }
        if prod && lo.max_failed_attempts > 20 {
            p.push("security.lockout.max_failed_attempts over 20 is not allowed in the production profile".into());
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(p))
        }
    }

    /// The guard settings with a local rate-limit store. With `store = "redis"` use
    /// [`AuthConfig::guard_config_connected`].
    ///
    /// # Errors
    /// [`ConfigError`] if the configuration does not validate.
    pub fn guard_config(&self) -> Result<GuardConfig, ConfigError> {
        self.validate()?;
        if self.rate_limiting.enabled && self.rate_limiting.store == StoreKind::Redis {
            // Silently falling back to per-replica budgets would multiply every limit.
            return Err(ConfigError::Invalid(vec![
                "security.rate_limiting.store = \"redis\" needs guard_config_connected()".into(),
            ]));
        }
        let bans = self.bans();
        self.build(LimiterStore::local(bans))
    }

    /// The guard settings, connecting to Redis when the store is `redis`.
    ///
    /// # Errors
    /// [`ConfigError`] if the configuration does not validate or Redis cannot be reached.
    #[cfg(feature = "redis")]
    pub async fn guard_config_connected(&self) -> Result<GuardConfig, ConfigError> {
        self.validate()?;
        let bans = self.bans();
        let store = match (self.rate_limiting.store, &self.rate_limiting.redis_url) {
            (StoreKind::Redis, Some(url)) => LimiterStore::Redis(
                crate::rate_limit::RedisLimiter::connect(
                    url,
                    &self.rate_limiting.redis_prefix,
                    bans,
                )
                .await
                .map_err(|e| {
                    ConfigError::Invalid(vec![format!("security.rate_limiting.redis_url: {e}")])
                })?,
            ),
            _ => LimiterStore::local(bans),
        };
        self.build(store)
    }

    fn bans(&self) -> Option<BanPolicy> {
        let rl = &self.rate_limiting;
        (rl.ban_after > 0).then_some(BanPolicy {
            violations: rl.ban_after,
            window: rl.ban_window,
            ban: rl.ban_duration,
        })
    }

    /// The MFA policy: admin actions and RLS bypass (or every action) need a second factor
    /// verified within `max_age`.
    #[must_use]
    pub fn mfa_policy(&self) -> crate::totp::MfaPolicy {
        let policy = crate::totp::MfaPolicy::new().max_age(self.mfa.max_age);
        if self.mfa.require_for_every_action {
            policy.for_every_action()
        } else {
            policy
        }
    }

    /// Session lifetimes: `(idle, absolute)`, for [`crate::Sessions::new`].
    #[must_use]
    pub fn session_timeouts(&self) -> (Duration, Duration) {
        (self.session.idle_timeout, self.session.absolute_timeout)
    }

    /// The lockout policy.
    #[must_use]
    pub fn lockout_policy(&self) -> LockoutPolicy {
        LockoutPolicy {
            max_failures: self.lockout.max_failed_attempts,
            window: self.lockout.window,
            lock_for: self.lockout.lockout_duration,
        }
    }

    fn build(&self, store: LimiterStore) -> Result<GuardConfig, ConfigError> {
        let bad = |m: String| ConfigError::Invalid(vec![m]);
        let ip_rules = IpRules::new(self.network.default)
            .allow(self.network.allow.clone())
            .deny(self.network.deny.clone());
        let trusted_proxies = TrustedProxies::new(self.http.trusted_proxies.clone());
        let rl = &self.rate_limiting;
        let rate_limits = if rl.enabled {
            let mut p = Vec::new();
            let base = quota(rl.end_user, "security.rate_limiting.end_user", &mut p);
            let agent = rl
                .agent
                .and_then(|q| quota(q, "security.rate_limiting.agent", &mut p));
            let service = rl
                .service
                .and_then(|q| quota(q, "security.rate_limiting.service", &mut p));
            let Some(base) = base else {
                return Err(ConfigError::Invalid(p));
            };
            let mut tiers = Tiers::new(base);
            for (role, tier) in &rl.roles {
                match (tier, agent, service) {
                    (TierName::Agent, Some(q), _) => tiers = tiers.role(role, Tier::Agent, q),
                    (TierName::Service, _, Some(q)) => tiers = tiers.role(role, Tier::Service, q),
                    _ => {
                        return Err(bad(format!(
                            "security.rate_limiting.roles.{role}: no such tier quota"
                        )));
                    }
                }
            }
            let tenant = quota(rl.tenant, "security.rate_limiting.tenant", &mut p);
            Some(RateLimits {
                store,
                tiers,
                tenant,
            })
        } else {
            None
        };
        let hsts = (!self.http.hsts_max_age.is_zero())
            .then(|| {
                HeaderValue::try_from(format!(
                    "max-age={}; includeSubDomains",
                    self.http.hsts_max_age.as_secs()
                ))
                .ok()
            })
            .flatten();
        Ok(GuardConfig {
            ip_rules,
            trusted_proxies,
            rate_limits,
            max_body_bytes: self.http.max_body_bytes,
            hsts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match AuthConfig::from_toml(text) {
            Err(ConfigError::Invalid(p)) => p,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn production_refuses_every_insecure_setting_by_name() {
        let p = problems(
            r#"
            [security]
            profile = "production"
            [security.http]
            allow_plaintext = true
            hsts_max_age = "0s"
            [security.rate_limiting]
            enabled = false
            [security.lockout]
            max_failed_attempts = 0
            "#,
        );
        for setting in [
            "security.http.allow_plaintext",
            "security.http.hsts_max_age",
            "security.rate_limiting.enabled",
            "security.lockout.max_failed_attempts",
        ] {
            assert!(
                p.iter().any(|m| m.starts_with(setting)),
                "{setting} in {p:?}"
            );
        }
        // The same file is accepted for development.
        let dev = r#"
            [security]
            profile = "development"
            [security.http]
            allow_plaintext = true
            [security.rate_limiting]
            enabled = false
        "#;
        assert!(AuthConfig::from_toml(dev).is_ok());
    }

    #[test]
    fn production_refuses_trusting_everyone_and_unbounded_durations() {
        let p = problems(
            r#"
            [security]
            profile = "production"
            [security.http]
            trusted_proxies = ["0.0.0.0/0", "::/0", "10.0.0.0/8"]
            [security.lockout]
            max_failed_attempts = 1000
            lockout_duration = "100years"
            [security.rate_limiting]
            end_user = { rate = 10, per_seconds = 1, burst = 4000000000 }
            "#,
        );
        assert_eq!(
            p.iter().filter(|m| m.contains("trusts too many")).count(),
            2,
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.contains("lockout_duration at most")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("security.lockout.max_failed_attempts")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("security.rate_limiting.end_user.burst")),
            "{p:?}"
        );
        // `0.0.0.0/0` is refused in every profile.
        assert!(
            AuthConfig::from_toml("[security.http]\ntrusted_proxies = [\"0.0.0.0/0\"]").is_err()
        );
        // A Redis store cannot be silently replaced by a local one.
        let cfg = AuthConfig::from_toml(
            "[security.rate_limiting]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1\"",
        )
        .unwrap();
        assert!(cfg.guard_config().is_err());
    }

    #[test]
    fn hipaa_requires_fresh_second_factors_and_short_idle_sessions() {
        let p = problems(
            r#"
            [security]
            profile = "hipaa"
            [security.mfa]
            max_age = "60m"
            [security.session]
            idle_timeout = "30m"
            [security.http]
            allow_plaintext = true
            "#,
        );
        assert!(
            p.iter().any(|m| m.starts_with("security.mfa.max_age")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("security.session.idle_timeout")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("security.http.allow_plaintext")),
            "hipaa is strict: {p:?}"
        );
        let ok = AuthConfig::from_toml(
            "[security]\nprofile = \"hipaa\"\n[security.session]\nidle_timeout = \"15m\"",
        )
        .unwrap();
        assert_eq!(ok.session_timeouts().0, Duration::from_secs(900));
        assert_eq!(
            ok.mfa_policy(),
            crate::totp::MfaPolicy::new().max_age(Duration::from_secs(900))
        );
        // GDPR is strict too.
        assert!(
            AuthConfig::from_toml(
                "[security]\nprofile = \"gdpr\"\n[security.rate_limiting]\nenabled = false"
            )
            .is_err()
        );
    }

    #[test]
    fn one_file_configures_every_crate_but_misspelt_sections_are_refused() {
        let text = r#"
            [security]
            profile = "production"
            [security.audit]
            retention_days = 2190
            [security.encryption]
            key_provider = "kms"
            [security.rate_limiting]
            enabled = true
        "#;
        assert!(AuthConfig::from_toml(text).is_ok());
        let err = AuthConfig::from_toml("[security.rate_limting]\nenabled = false").unwrap_err();
        assert!(err.to_string().contains("security.rate_limting"), "{err}");
    }

    #[test]
    fn hs256_needs_a_long_secret() {
        let text = r#"
            [security.jwt]
            issuer = "i"
            audience = "a"
            algorithms = ["HS256"]
            hs256_secret_env = "NOVA_TEST_UNSET_SECRET_VARIABLE"
        "#;
        let p = problems(text);
        assert!(p[0].starts_with("security.jwt.hs256_secret_env"), "{p:?}");
    }

    #[test]
    fn unknown_keys_bad_values_and_bad_networks_are_refused() {
        assert!(matches!(
            AuthConfig::from_toml("[security]\nprofil = \"production\""),
            Err(ConfigError::Syntax(_))
        ));
        assert!(matches!(
            AuthConfig::from_toml("[security.http]\nmax_body_bytes = \"big\""),
            Err(ConfigError::Syntax(_))
        ));
        assert!(matches!(
            AuthConfig::from_toml("[security]\nprofile = \"prod\""),
            Err(ConfigError::Syntax(_))
        ));
        // A bad value is refused with the setting's path.
        for (text, path) in [
            (
                "[security.network]\ndefault = \"maybe\"",
                "security.network.default",
            ),
            (
                "[security.network]\ndeny = [\"10.0.0.0/8\", \"10.0.0.1/8\"]",
                "security.network.deny",
            ),
            (
                "[security.http]\ntrusted_proxies = [\"proxy.example\"]",
                "security.http.trusted_proxies",
            ),
            (
                "[security.jwt]\nissuer = \"i\"\naudience = \"a\"\nalgorithms = [\"none\"]",
                "security.jwt.algorithms",
            ),
            (
                "[security.rate_limiting]\nstore = \"memcached\"",
                "security.rate_limiting.store",
            ),
            (
                "[security.rate_limiting]\nroles = { svc = \"boss\" }",
                "security.rate_limiting.roles",
            ),
        ] {
            match AuthConfig::from_toml(text) {
                Err(ConfigError::Syntax(m)) => assert!(m.starts_with(path), "{m} for {path}"),
                other => panic!("{path}: {other:?}"),
            }
        }
        let p = problems(
            "[security.rate_limiting]\nend_user = { rate = 0, per_seconds = 1, burst = 1 }\nroles = { agent = \"agent\" }",
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("security.rate_limiting.end_user"))
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("security.rate_limiting.roles.agent"))
        );
        assert!(matches!(
            AuthConfig::from_toml(&"#".repeat(MAX_CONFIG_LEN + 1)),
            Err(ConfigError::Syntax(_))
        ));
    }

    #[test]
    fn debug_leaves_out_the_redis_password() {
        let cfg = AuthConfig::from_toml(
            "[security.rate_limiting]\nstore = \"redis\"\nredis_url = \"redis://:hunter2secret@10.0.0.5\"",
        )
        .unwrap();
        let text = format!("{cfg:?}");
        assert!(
            !text.contains("hunter2secret") && text.contains("[REDACTED]"),
            "{text}"
        );
    }

    #[test]
    fn a_valid_file_builds_the_guard() {
        let cfg = AuthConfig::from_toml(
            r#"
            [security]
            profile = "production"
            [security.http]
            trusted_proxies = ["10.0.0.0/8"]
            [security.network]
            default = "deny"
            allow = ["192.0.2.0/24"]
            [security.rate_limiting]
            service = { rate = 100, per_seconds = 1, burst = 100 }
            roles = { svc = "service" }
            "#,
        )
        .unwrap();
        let g = cfg.guard_config().unwrap();
        assert!(g.ip_rules.permits("192.0.2.1".parse().unwrap()));
        assert!(!g.ip_rules.permits("198.51.100.1".parse().unwrap()));
        assert!(g.rate_limits.is_some());
        assert_eq!(g.hsts.unwrap(), "max-age=31536000; includeSubDomains");
        assert_eq!(cfg.lockout_policy(), LockoutPolicy::default());
    }
}
