//! Connection hygiene: server-side timeouts, pool limits and TLS requirements.
//!
//! Connected directly ([`Pooler::None`]) the timeouts travel in the startup packet
//! (`options=-c ...`): they cost nothing per request, hold outside tenant transactions too,
//! and Nova's session reset (`RESET ALL` with every commit) restores them after each
//! transaction. Behind a transaction-pooling PgBouncer ([`Pooler::PgBouncerTransaction`])
//! that packet is refused (or, when PgBouncer is told to ignore it, dropped silently), so
//! the timeouts are pinned in every tenant transaction instead (`SET LOCAL` in the begin
//! message, see [`TenantPool::with_timeouts`]). Either way [`ConnectionPolicy::connect`]
//! checks inside a transaction that they are in force. This module must never weaken a TLS setting it was given: plaintext is allowed
//! only to a loopback host, and only when asked for.

use std::net::IpAddr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};

use crate::error::Error;
use crate::scoped::{SessionTimeouts, TenantPool};

/// What sits between the service and PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Pooler {
    /// Connections go straight to PostgreSQL (or through a session-mode pooler).
    #[default]
    None,
    /// PgBouncer in transaction pooling (`pool_mode = transaction`): no startup options
    /// (PgBouncer refuses `options` and `extra_float_digits` unless told to ignore them),
    /// timeouts pinned per transaction only. See the README for the sqlx settings queries
    /// need behind it.
    PgBouncerTransaction,
}

/// How a connection must be protected in transit (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsRequirement {
    /// No TLS. Refused by [`ConnectionPolicy::validate`] unless the host is loopback.
    DisableForLoopbackOnly,
    /// TLS required; the certificate is not checked (protects against passive sniffing only).
    Require,
    /// TLS required and the certificate must chain to a trusted CA.
    VerifyCa,
    /// TLS required, trusted CA, and the host name must match. The default.
    VerifyFull,
}

impl TlsRequirement {
    fn ssl_mode(self) -> PgSslMode {
        match self {
            Self::DisableForLoopbackOnly => PgSslMode::Disable,
            Self::Require => PgSslMode::Require,
            Self::VerifyCa => PgSslMode::VerifyCa,
            Self::VerifyFull => PgSslMode::VerifyFull,
        }
    }
}

/// Server-side limits and pool sizing for a service's database connections.
///
/// ```
/// use std::time::Duration;
/// use nova_tenancy::{ConnectionPolicy, TlsRequirement};
///
/// let policy = ConnectionPolicy {
///     statement_timeout: Duration::from_secs(5),
///     ..ConnectionPolicy::default()
/// };
/// assert_eq!(policy.tls, TlsRequirement::VerifyFull);
/// let opts = policy.apply("postgres://app@db.internal/app".parse()?);
/// # let _ = opts; Ok::<(), sqlx::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionPolicy {
    /// `statement_timeout`: the longest any one statement may run. Default 30 s.
    pub statement_timeout: Duration,
    /// `idle_in_transaction_session_timeout`: how long a transaction may sit idle before the
    /// server ends the session, releasing its locks. Default 60 s.
    pub idle_in_transaction_session_timeout: Duration,
    /// `lock_timeout`: the longest a statement waits for a lock. Default 10 s.
    pub lock_timeout: Duration,
    /// Largest number of connections the pool opens. Default 10.
    pub max_connections: u32,
    /// Connections kept open when idle. Default 0.
    pub min_connections: u32,
    /// How long a request waits for a free connection before failing. Default 5 s.
    pub acquire_timeout: Duration,
    /// Connections older than this are closed and replaced. Default 30 minutes.
    pub max_lifetime: Duration,
    /// TLS requirement for the connection. Default [`TlsRequirement::VerifyFull`].
    pub tls: TlsRequirement,
    /// `application_name`, shown in `pg_stat_activity`. Default `nova`.
    pub application_name: &'static str,
    /// What sits between the service and PostgreSQL. Default [`Pooler::None`].
    pub pooler: Pooler,
}

impl Default for ConnectionPolicy {
    fn default() -> Self {
        Self {
            statement_timeout: Duration::from_secs(30),
            idle_in_transaction_session_timeout: Duration::from_secs(60),
            lock_timeout: Duration::from_secs(10),
            max_connections: 10,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            max_lifetime: Duration::from_secs(30 * 60),
            tls: TlsRequirement::VerifyFull,
            application_name: "nova",
            pooler: Pooler::None,
        }
    }
}

impl ConnectionPolicy {
    /// The defaults, with TLS turned off: for a server on this machine only.
    #[must_use]
    pub fn local_development() -> Self {
        Self {
            tls: TlsRequirement::DisableForLoopbackOnly,
            ..Self::default()
        }
    }

    /// Checks the policy against the host it will connect to.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting that is unsafe or inconsistent.
    pub fn validate(&self, opts: &PgConnectOptions) -> Result<(), Error> {
        let zero = Duration::ZERO;
        if self.statement_timeout == zero {
            return Err(config(
                "statement_timeout",
                "must be greater than zero (zero means no limit)",
            ));
        }
        if self.idle_in_transaction_session_timeout == zero {
            return Err(config(
                "idle_in_transaction_session_timeout",
                "must be greater than zero (zero means no limit)",
            ));
        }
        if self.lock_timeout == zero {
            return Err(config(
                "lock_timeout",
                "must be greater than zero (zero means no limit)",
            ));
        }
        if self.max_connections == 0 {
            return Err(config("max_connections", "must be at least 1"));
        }
        if self.min_connections > self.max_connections {
            return Err(config("min_connections", "must not exceed max_connections"));
        }
        if self.tls == TlsRequirement::DisableForLoopbackOnly && !is_loopback(opts.get_host()) {
            return Err(config(
                "tls",
                "plaintext is allowed only to a loopback host",
            ));
        }
        if self.tls != TlsRequirement::DisableForLoopbackOnly && !cfg!(feature = "tls-rustls") {
            return Err(config(
                "tls",
                "TLS is required but nova-tenancy was built without the `tls-rustls` feature",
            ));
        }
        Ok(())
    }

    /// Applies the TLS mode and application name to connect options, and the timeouts as
    /// startup options when connecting without a transaction pooler.
    #[must_use]
    pub fn apply(&self, opts: PgConnectOptions) -> PgConnectOptions {
        let opts = opts
            .ssl_mode(self.tls.ssl_mode())
            .application_name(self.application_name);
        match self.pooler {
            Pooler::None => opts.options([
                ("statement_timeout", millis(self.statement_timeout)),
                (
                    "idle_in_transaction_session_timeout",
                    millis(self.idle_in_transaction_session_timeout),
                ),
                ("lock_timeout", millis(self.lock_timeout)),
            ]),
            Pooler::PgBouncerTransaction => opts.extra_float_digits(None),
        }
    }

    /// The timeouts a [`TenantPool`] pins in every transaction.
    #[must_use]
    pub fn timeouts(&self) -> SessionTimeouts {
        SessionTimeouts {
            statement: self.statement_timeout,
            idle_in_transaction: self.idle_in_transaction_session_timeout,
            lock: self.lock_timeout,
        }
    }

    /// Pool options with this policy's limits.
    #[must_use]
    pub fn pool_options(&self) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(self.min_connections)
            .acquire_timeout(self.acquire_timeout)
            .max_lifetime(self.max_lifetime)
    }

    /// Validates the policy, opens a pool with it whose transactions pin the timeouts, and
    /// runs [`TenantPool::check`]: the login, the schema, and the timeouts in force.
    ///
    /// # Errors
    /// [`Error::Config`] for an unsafe policy or a timeout not in force;
    /// [`Error::LoginSkipsRls`] or [`Error::RlsDefeated`] as in [`TenantPool::checked`];
    /// [`Error::Database`] when the server cannot be reached.
    pub async fn connect(&self, opts: PgConnectOptions) -> Result<TenantPool, Error> {
        self.validate(&opts)?;
        let pool = self.pool_options().connect_with(self.apply(opts)).await?;
        // Connected directly, the startup options set the timeouts and Nova's session reset
        // restores them after every transaction: pinning them again would cost three
        // statements per transaction. Behind PgBouncer the startup options never arrive.
        let pool = match self.pooler {
            Pooler::None => TenantPool::new(pool).expect_timeouts(self.timeouts()),
            Pooler::PgBouncerTransaction => TenantPool::new(pool).with_timeouts(self.timeouts()),
        };
        if let Err(e) = pool.check().await {
            pool.close().await;
            return Err(e);
        }
        Ok(pool)
    }
}

fn config(setting: &'static str, reason: &'static str) -> Error {
    Error::Config { setting, reason }
}

fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn is_loopback(host: &str) -> bool {
    if host == "localhost" || host.starts_with('/') {
        // A Unix-domain socket path never leaves the machine.
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(url: &str) -> PgConnectOptions {
        url.parse().unwrap()
    }

    #[test]
    fn plaintext_is_refused_to_a_remote_host() {
        let p = ConnectionPolicy::local_development();
        let err = p
            .validate(&opts("postgres://app@db.example.com/app"))
            .unwrap_err();
        assert!(matches!(err, Error::Config { setting: "tls", .. }));
        assert!(p.validate(&opts("postgres://app@127.0.0.1/app")).is_ok());
        assert!(p.validate(&opts("postgres://app@localhost/app")).is_ok());
        assert!(p.validate(&opts("postgres://app@[::1]/app")).is_ok());
    }

    #[test]
    fn zero_timeouts_and_inverted_pool_limits_are_refused() {
        let base = opts("postgres://app@127.0.0.1/app");
        let cases = [
            (
                ConnectionPolicy {
                    statement_timeout: Duration::ZERO,
                    ..ConnectionPolicy::local_development()
                },
                "statement_timeout",
            ),
            (
                ConnectionPolicy {
                    idle_in_transaction_session_timeout: Duration::ZERO,
                    ..ConnectionPolicy::local_development()
                },
                "idle_in_transaction_session_timeout",
            ),
            (
                ConnectionPolicy {
                    max_connections: 0,
                    ..ConnectionPolicy::local_development()
                },
                "max_connections",
            ),
            (
                ConnectionPolicy {
                    min_connections: 11,
                    ..ConnectionPolicy::local_development()
                },
                "min_connections",
            ),
        ];
        for (policy, name) in cases {
            match policy.validate(&base) {
                Err(Error::Config { setting, .. }) => assert_eq!(setting, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn tls_default_needs_the_tls_feature() {
        let r = ConnectionPolicy::default().validate(&opts("postgres://app@db.example.com/app"));
        assert_eq!(r.is_ok(), cfg!(feature = "tls-rustls"));
    }

    #[test]
    fn behind_pgbouncer_no_startup_options_are_sent() {
        let direct =
            ConnectionPolicy::local_development().apply(opts("postgres://app@127.0.0.1/app"));
        assert!(
            direct
                .get_options()
                .is_some_and(|o| o.contains("statement_timeout"))
        );
        let pooled = ConnectionPolicy {
            pooler: Pooler::PgBouncerTransaction,
            ..ConnectionPolicy::local_development()
        }
        .apply(opts("postgres://app@127.0.0.1/app"));
        assert_eq!(pooled.get_options(), None);
    }

    #[test]
    fn apply_sets_verify_full_by_default() {
        let o = ConnectionPolicy::default()
            .apply(opts("postgres://app@db.example.com/app?sslmode=disable"));
        assert!(matches!(o.get_ssl_mode(), PgSslMode::VerifyFull));
    }
}
