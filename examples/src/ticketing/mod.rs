//! A multi-tenant help desk built on the `nova` crate: tenants, users, queues, departments,
//! and tickets with comments.
//!
//! - **One configuration file** (`examples/ticketing/nova.toml`) read by [`nova::Config`]:
//!   every setting it holds is applied by [`nova::Nova::builder`].
//! - **The edge** is [`nova::Nova::guard`]: JWTs for people, API keys for service accounts,
//!   IP rules, rate limits kept in Redis, body limits, lockout.
//! - **Every request** is a [`nova::Scope`]: a tenant transaction under PostgreSQL
//!   row-level security, policy decisions on the caller's attributes (with delegations
//!   that expire and a second factor for priority-5 tickets), sealed names, emails and
//!   ticket text (per data subject, so one person can be crypto-shredded), and audit
//!   events that commit with the data. Refusals are audited with their reasons.
//! - **Data-subject rights**: export, erasure, retention rules, consent records.
//!
//! Start it with `cargo run --example ticketing`.

pub mod db;

mod api;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use nova::auth::KeySet;
use nova::crypto::{KeyProvider, normalize};
use nova::policy::{PolicySet, PolicyStore, Schema};
use nova::tenancy::privacy::{ErasureAction, SubjectMap, SubjectTable};
use nova::tenancy::{TenantContext, TenantId};
use nova::{KeyOf, Nova, Principals, SealedTable};
use serde::Deserialize;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

pub use api::{UserSpec, onboard_user, router};

/// Errors of set-up (never shown to clients).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The shipped configuration (`examples/ticketing/nova.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../../ticketing/nova.toml");
/// The policy's schema and rules, as shipped.
pub const POLICY_SCHEMA: &str = include_str!("../../ticketing/ticketing.schema");
/// See [`POLICY_SCHEMA`].
pub const POLICY: &str = include_str!("../../ticketing/ticketing.policy");
/// The label of the stream key backups are encrypted under.
pub const BACKUP_LABEL: &str = "backup";

/// `[ticketing]`: the application's own settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// Where the binary listens.
    pub listen: SocketAddr,
}

/// Everything the service needs to start.
pub struct Setup {
    /// The validated configuration.
    pub config: nova::Config,
    /// A connection allowed to create roles and schemas, for the migration.
    pub admin: PgPool,
    /// The server and database the service's logins connect to.
    pub connect: PgConnectOptions,
    /// Prefix of every schema and role the service creates.
    pub prefix: String,
    /// The keys JWTs are verified against (from the identity provider).
    pub jwt_keys: KeySet,
    /// The audit log file (instead of `security.audit.file`).
    pub audit_path: PathBuf,
    /// The audit checkpoint signing seed from a secret store; `None` reads
    /// `security.audit.signing_key_env`.
    pub audit_seed: Option<[u8; 32]>,
    /// The key-encryption key from a KMS; `None` reads `security.encryption.kek_env`.
    pub kek: Option<Arc<dyn KeyProvider>>,
}

/// Migrates the database and wires Nova: sealed columns, principals and data subjects
/// declared once. Refuses to start as [`nova::NovaBuilder`] does (no KEK, a login that
/// skips row-level security, ...).
///
/// # Errors
/// Database, key and configuration errors.
pub async fn build(setup: Setup) -> Result<Nova, Error> {
    let names = db::Names::new(&setup.prefix)?;
    let logins = db::migrate(&setup.admin, &names).await?;
    // Nova's tables are in this service's own keys schema (see `db::migrate`).
    let mut config = setup.config;
    config.database.schema = names.keys.as_str().to_owned();
    let policy = PolicyStore::new(Schema::parse(POLICY_SCHEMA)?, PolicySet::parse(POLICY)?)?;
    let anonymise = |columns: &[&str]| ErasureAction::anonymise(columns.iter().copied());
    let subjects = SubjectMap::new()
        .table(SubjectTable::new("users", "id")?.on_erase(anonymise(&[
            "display_name",
            "email",
            "email_index",
        ])?))
        .table(
            SubjectTable::new("tickets", "requester_id")?.on_erase(anonymise(&["title", "body"])?),
        )
        .table(SubjectTable::new("comments", "author_id")?.on_erase(anonymise(&["body"])?))
        .table(
            SubjectTable::new("consents", "subject_id")?
                .on_erase(ErasureAction::keep("proof of consent (GDPR Art. 7(1))")),
        );
    let mut builder = Nova::builder(config)
        .policy(policy)
        .jwt_keys(setup.jwt_keys)
        .database(logins.svc(&setup.connect))
        .nova_database(logins.keys(&setup.connect))
        .audit_file(setup.audit_path)
        // Names and emails under their person's key (the email with a blind index for
        // lookups), ticket and comment text under their author's.
        .sealed(
            SealedTable::new("users")
                .column("display_name", KeyOf::Subject)?
                .indexed("email", KeyOf::Subject, normalize::email)?,
        )
        .sealed(SealedTable::new("tickets").column("body", KeyOf::Subject)?)
        .sealed(SealedTable::new("comments").column("body", KeyOf::Subject)?)
        // A person's attributes are their (not erased) user row; service accounts have none.
        .principals(
            Principals::table("users", "id")?
                .attributes(["department", "queues"])?
                .gone_when_set("erased_at")?
                .rowless_role("service"),
        )
        .data_subjects(subjects)
        .consents(db::consent_ledger(&names)?);
    if let Some(kek) = setup.kek {
        builder = builder.kek(kek);
    }
    if let Some(seed) = setup.audit_seed {
        builder = builder.audit_signing_seed(zeroize::Zeroizing::new(seed));
    }
    let nova = builder.build().await?;
    // Nova's own security events go to the same log; those that name no tenant are kept
    // under this operator tenant.
    let operator = uuid::Uuid::from_u128(0x6e6f_7661_0000_4000_8000_0000_0000_0001);
    nova.record_security_events(TenantId::from_uuid(operator)?);
    Ok(nova)
}

/// Opens a backup made by `GET /admin/backup` for the tenant of `ctx`.
///
/// # Errors
/// When the backup does not open under the tenant's key or is not JSON.
pub fn restore_backup(
    nova: &Nova,
    ctx: &TenantContext,
    bytes: &[u8],
) -> Result<serde_json::Value, Error> {
    let mut plain = Vec::with_capacity(bytes.len());
    nova.keyring()
        .decrypt_stream(ctx, BACKUP_LABEL, bytes, &mut plain)?;
    Ok(serde_json::from_slice(&plain)?)
}

/// A running service.
pub struct Running {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Nova, for tests and jobs.
    pub nova: Nova,
    shutdown: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops serving, waits for in-flight requests, moves the outbox into the audit log,
    /// and closes the pools.
    ///
    /// # Errors
    /// When the server failed or the audit log cannot be flushed.
    pub async fn stop(self) -> Result<(), Error> {
        let _ = self.shutdown.send(());
        self.server.await??;
        self.nova.close().await?;
        Ok(())
    }
}

/// Builds the state and serves on `listener` behind Nova's guard.
///
/// # Errors
/// As [`build`].
pub async fn start(setup: Setup, listener: tokio::net::TcpListener) -> Result<Running, Error> {
    let nova = build(setup).await?;
    let routes = router(nova.clone()).layer(nova.guard());
    let base = format!("http://{}", listener.local_addr()?);
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = routes.into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move {
        axum::serve(listener, service)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    Ok(Running {
        base,
        nova,
        shutdown,
        server,
    })
}
