//! A multi-tenant help desk built on the `nova` crate: tenants, users, queues, departments,
//! and tickets with comments.
//!
//! - **One configuration file** (`examples/ticketing/nova.toml`) read by [`nova::Config`]:
//!   every setting it holds is applied by [`nova::Nova::builder`].
//! - **The edge** is [`nova::Nova::guard`]: JWTs for people, API keys for service accounts,
//!   IP rules, rate limits kept in Redis, body limits, lockout.
//! - **Every request** is a [`nova::Scope`]: a tenant transaction under PostgreSQL
//!   row-level security, policy decisions (with delegations that expire and a second factor
//!   for priority-5 tickets), sealed names, emails and ticket text (per data subject, so one
//!   person can be crypto-shredded), and audit events that commit with the data. Refusals
//!   are audited with their reasons.
//! - **Data-subject rights**: export, erasure, retention rules, consent records.
//!
//! Start it with `cargo run --example ticketing`.

pub mod db;

mod api;
mod subject;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use nova::auth::KeySet;
use nova::crypto::{KeyProvider, normalize};
use nova::policy::{PolicySet, PolicyStore, Schema};
use nova::tenancy::TenantId;
use nova::tenancy::privacy::{
    ConsentLedger, ErasureAction, RetentionRule, SubjectMap, SubjectTable,
};
use nova::{KeyOf, Nova, SealedTable};
use serde::Deserialize;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

pub use api::{UserSpec, onboard_user, router};
pub use subject::{BACKUP_LABEL, restore_backup};

/// Errors of set-up and of the handlers' internals (never shown to clients).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The shipped configuration (`examples/ticketing/nova.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../../ticketing/nova.toml");
/// The policy's schema and rules, as shipped.
pub const POLICY_SCHEMA: &str = include_str!("../../ticketing/ticketing.schema");
/// See [`POLICY_SCHEMA`].
pub const POLICY: &str = include_str!("../../ticketing/ticketing.policy");

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

/// The service's state, shared by every handler.
#[derive(Clone)]
pub struct App {
    /// Nova, wired from the configuration.
    pub nova: Nova,
    pub(crate) inner: Arc<AppInner>,
}

pub(crate) struct AppInner {
    pub(crate) names: db::Names,
    pub(crate) subject_map: SubjectMap,
    pub(crate) consents: ConsentLedger,
    pub(crate) retention: Vec<RetentionRule>,
}

impl axum::extract::FromRef<App> for Nova {
    fn from_ref(app: &App) -> Self {
        app.nova.clone()
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("schema", &self.inner.names.app)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Moves every committed audit event into the log and waits until it is durable.
    pub async fn audit_flush(&self) {
        let _ = self.nova.flush_audit().await;
    }

    /// The subject map's key for the rows of `table` found by `column`.
    pub(crate) fn subject_map_key(&self, table: &str, column: &str) -> String {
        format!("{}.{table}.{column}", self.inner.names.app.as_str())
    }

    pub(crate) fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.inner.names.app)
    }
}

/// The sealed columns, declared once: names and emails under their person's key (the email
/// with a blind index for lookups), ticket and comment text under their author's.
fn sealed_tables() -> Result<[SealedTable; 3], Error> {
    Ok([
        SealedTable::new("users")
            .column("display_name", KeyOf::Subject)?
            .indexed("email", KeyOf::Subject, normalize::email)?,
        SealedTable::new("tickets").column("body", KeyOf::Subject)?,
        SealedTable::new("comments").column("body", KeyOf::Subject)?,
    ])
}

/// A running service.
pub struct Running {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The state, for tests and jobs.
    pub app: App,
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
        self.app.nova.close().await?;
        Ok(())
    }
}

/// Migrates the database and builds the state. Refuses to start as [`nova::NovaBuilder`]
/// does (no KEK, a login that skips row-level security, ...).
///
/// # Errors
/// Database, key and configuration errors.
pub async fn build(setup: Setup) -> Result<App, Error> {
    let names = db::Names::new(&setup.prefix)?;
    let logins = db::migrate(&setup.admin, &names).await?;
    // Nova's tables are in this service's own keys schema (see `db::migrate`).
    let mut config = setup.config.clone();
    config.database.schema = names.keys.as_str().to_owned();
    let mut builder = Nova::builder(config)
        .policy(PolicyStore::new(
            Schema::parse(POLICY_SCHEMA)?,
            PolicySet::parse(POLICY)?,
        )?)
        .jwt_keys(setup.jwt_keys)
        .database(logins.svc(&setup.connect))
        .nova_database(logins.keys(&setup.connect))
        .audit_file(setup.audit_path);
    for table in sealed_tables()? {
        builder = builder.sealed(table);
    }
    if let Some(kek) = setup.kek {
        builder = builder.kek(kek);
    }
    if let Some(seed) = setup.audit_seed {
        builder = builder.audit_signing_seed(zeroize::Zeroizing::new(seed));
    }
    let nova = builder.build().await?;
    // Nova's own security events go to the same log; those that name no tenant are kept
    // under this operator tenant.
    nova.record_security_events(TenantId::from_uuid(uuid::Uuid::from_u128(
        0x6e6f_7661_0000_4000_8000_0000_0000_0001,
    ))?);

    let app = names.app.as_str();
    let subject_map =
        SubjectMap::new()
            .table(SubjectTable::new("users", "id")?.schema(app)?.on_erase(
                ErasureAction::anonymise(["display_name", "email", "email_index"])?,
            ))
            .table(
                SubjectTable::new("tickets", "requester_id")?
                    .schema(app)?
                    .on_erase(ErasureAction::anonymise(["title", "body"])?),
            )
            .table(
                SubjectTable::new("comments", "author_id")?
                    .schema(app)?
                    .on_erase(ErasureAction::anonymise(["body"])?),
            )
            .table(
                SubjectTable::new("consents", "subject_id")?
                    .schema(app)?
                    .on_erase(ErasureAction::Keep {
                        reason: "proof of consent (GDPR Art. 7(1))".into(),
                    }),
            );
    let retention = setup
        .config
        .privacy
        .retention
        .iter()
        .cloned()
        .map(|r| r.schema(app))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(App {
        nova,
        inner: Arc::new(AppInner {
            consents: db::consent_ledger(&names)?,
            names,
            subject_map,
            retention,
        }),
    })
}

/// Builds the state and serves on `listener` behind Nova's guard.
///
/// # Errors
/// As [`build`].
pub async fn start(setup: Setup, listener: tokio::net::TcpListener) -> Result<Running, Error> {
    let app = build(setup).await?;
    let routes = router(app.clone()).layer(app.nova.guard());
    let base = format!("http://{}", listener.local_addr()?);
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            routes.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .await
    });
    Ok(Running {
        base,
        app,
        shutdown,
        server,
    })
}
