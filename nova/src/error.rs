//! Errors of set-up and of a request scope. None carries a secret, a token or a value
//! being sealed.

use crate::config::ConfigError;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration, or something the builder was given, is refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The policy denied the action (the denial is in the audit log with these reasons).
    #[error("denied: {}", reasons.join("; "))]
    Denied {
        /// Why, as the policy explained it.
        reasons: Vec<String>,
    },
    /// The action needs a second factor fresher than the caller's (the refusal is audited).
    #[error("a fresh second factor is required")]
    MfaRequired,
    /// Nothing the caller may see (recorded by [`crate::Scope::not_found`]).
    #[error("not found")]
    NotFound,
    /// A refusal no policy rule decided (recorded by [`crate::Scope::refuse`]).
    #[error("refused")]
    Refused,
    /// The request's input is invalid. The message, a constant the application chose, is
    /// the answer's body (400): never put a submitted value in it.
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// The principal's attributes could not be read as policy values (a column of a type
    /// the policy has no value for).
    #[error("principal attribute `{attribute}` is not a policy value")]
    PrincipalAttribute {
        /// The attribute (column) name.
        attribute: String,
    },
    /// A sealed column that was not declared (a typo must not store a value in clear).
    #[error("`{table}.{column}` is not a declared sealed column")]
    UnknownColumn {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A tenant-keyed column was given a data subject, or a subject-keyed one none.
    #[error("`{table}.{column}` is sealed under {expected}")]
    WrongKey {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// `the tenant's key` or `a data subject's key`.
        expected: &'static str,
    },
    /// An audit event too large for the outbox ([`nova_audit::MAX_RECORD_LEN`]); nothing
    /// was written.
    #[error("audit event too large for the outbox")]
    AuditRecordTooLarge,
    /// Tenancy: the pool, the tenant transaction, the database checks.
    #[error(transparent)]
    Tenancy(#[from] nova_tenancy::Error),
    /// A database statement failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Keys and envelopes.
    #[error(transparent)]
    Crypto(#[from] nova_crypto::CryptoError),
    /// The audit log refused or failed an append.
    #[error(transparent)]
    Audit(#[from] nova_audit::AppendError),
    /// The audit log could not be opened.
    #[error(transparent)]
    AuditLog(#[from] nova_audit::LogError),
    /// Credentials.
    #[error(transparent)]
    Auth(#[from] nova_auth::AuthError),
    /// The policy or its schema.
    #[error(transparent)]
    Policy(#[from] nova_policy::PolicyError),
    /// The policy could not be compiled into SQL.
    #[error(transparent)]
    Sql(#[from] nova_policy::SqlError),
    /// An error of the application's own (answered as 500, logged, never sent).
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// Errors of `nova-tenancy`'s parts (names, ids, contexts, privacy) as [`Error::Tenancy`].
macro_rules! tenancy_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Self::Tenancy(e.into())
            }
        }
    )*};
}
tenancy_errors!(
    nova_tenancy::IdentError,
    nova_tenancy::NameError,
    nova_tenancy::IdError,
    nova_tenancy::ContextError,
    nova_tenancy::privacy::PrivacyError
);

impl Error {
    pub(crate) fn config(problem: String) -> Self {
        Self::Config(ConfigError {
            problems: vec![problem],
        })
    }

    /// An application error, kept as the source of a 500.
    pub fn other(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Other(e.into())
    }

    /// The HTTP status this error answers with: 400 for invalid input, 403 for denials and
    /// refusals, 404 for not found, 500 for the rest (whose detail is logged, never sent).
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::Invalid(_) => 400,
            Self::Denied { .. } | Self::MfaRequired | Self::Refused => 403,
            Self::NotFound => 404,
            _ => 500,
        }
    }
}
