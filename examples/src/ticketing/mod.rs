//! A multi-tenant help desk built only from Nova's public APIs: tenants, users, queues,
//! departments, and tickets with comments.
//!
//! - **The edge** is `nova-auth`'s [`GuardLayer`]: JWTs for people, API keys for service
//!   accounts, IP rules, rate limits kept in Redis, body limits.
//! - **Every query** runs in a [`TenantTx`](nova_tenancy::TenantTx): PostgreSQL row-level
//!   security confines it to the caller's tenant, whatever the handler's SQL says.
//! - **What a caller may do** comes from one policy file (`examples/ticketing/`), checked
//!   per ticket and compiled into the `WHERE` clause of listings. Delegations (an HR manager
//!   lends HR tickets to an admin for an hour) are grants that expire.
//! - **PII** (names, emails, ticket and comment bodies) is sealed under a key of its data
//!   subject, within the tenant's keys, so one person can be crypto-shredded; emails have a
//!   blind index for lookups.
//! - **Every write and every security event** goes to a tamper-evident audit log.
//! - **Data-subject rights**: export, erasure, retention rules, consent records.
//!
//! Start it with `cargo run --example ticketing`.

pub mod config;
pub mod db;

mod api;
mod subject;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use nova_audit::{AuditEvent, AuditLog, CheckpointSigner, FileLog, HookRecorder};
use nova_auth::layer::{Credentials, GuardLayer};
use nova_auth::{ApiKeys, JwtConfig, JwtVerifier, KeySet, PgApiKeyStore, StaticKeys};
use nova_crypto::{Column, Keyring, LocalKeyProvider, PgTenantKeyStore, SubjectKeys, normalize};
use nova_policy::{PolicySet, PolicyStore, Schema};
use nova_tenancy::privacy::{
    ConsentLedger, ErasureAction, RetentionRule, SubjectMap, SubjectTable,
};
use nova_tenancy::{TenantId, TenantPool};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

pub use api::{UserSpec, onboard_user, router};
pub use config::TicketingConfig;
pub use subject::{BACKUP_LABEL, restore_backup};

/// Errors of set-up and of the handlers' internals (never shown to clients).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The policy's schema and rules, as shipped.
pub const POLICY_SCHEMA: &str = include_str!("../../ticketing/ticketing.schema");
/// See [`POLICY_SCHEMA`].
pub const POLICY: &str = include_str!("../../ticketing/ticketing.policy");

/// Whether Nova's checks run: `Off` serves the same handlers and SQL with no guard, no
/// tenant transaction (a plain one, filtering by tenant in the query), no policy, no
/// encryption and no audit: the baseline the load test measures Nova against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checks {
    /// Everything on.
    On,
    /// The unguarded baseline (never for production).
    Off,
}

/// Everything the service needs to start.
pub struct Setup {
    /// The validated configuration.
    pub config: TicketingConfig,
    /// A connection allowed to create roles and schemas, for the migration.
    pub admin: PgPool,
    /// The server and database the service's logins connect to.
    pub connect: PgConnectOptions,
    /// Prefix of every schema and role the service creates.
    pub prefix: String,
    /// The keys JWTs are verified against (from the identity provider).
    pub jwt_keys: KeySet,
    /// The audit log file.
    pub audit_path: PathBuf,
    /// The audit checkpoint signing seed (from a secret store in production).
    pub audit_seed: [u8; 32],
    /// Whether Nova's checks run.
    pub checks: Checks,
    /// Connections of the request-serving pool.
    pub max_connections: u32,
}

/// Sealed columns.
pub(crate) struct Columns {
    pub(crate) email: Column,
    pub(crate) name: Column,
    pub(crate) ticket_body: Column,
    pub(crate) comment_body: Column,
}

/// The service's state, shared by every handler.
pub struct AppState {
    pub(crate) checks: Checks,
    pub(crate) tenants: TenantPool,
    /// The baseline's own pool (checks off only): the set-up role, no RLS.
    pub(crate) plain: Option<PgPool>,
    pub(crate) names: db::Names,
    /// The policy, with each tenant's delegations.
    pub policy: PolicyStore,
    /// Tenant keys.
    pub keyring: Arc<Keyring>,
    /// Data subjects' keys.
    pub subjects: SubjectKeys,
    pub(crate) api_keys: ApiKeys<PgApiKeyStore>,
    pub(crate) audit: Arc<AuditLog>,
    /// The audit log's file.
    pub audit_path: PathBuf,
    /// The audit log's public key (`nova-audit verify <file> --key <this>`).
    pub audit_key: String,
    pub(crate) subject_map: SubjectMap,
    pub(crate) consents: ConsentLedger,
    pub(crate) retention: Vec<RetentionRule>,
    pub(crate) cols: Columns,
    /// `[security.mfa] max_age_minutes`: how long a second factor counts for the policy's
    /// `context.mfa`.
    pub(crate) mfa_max_age: std::time::Duration,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("checks", &self.checks)
            .field("schema", &self.names.app)
            .finish_non_exhaustive()
    }
}

/// The log that Nova's own security events (the audit hook) go to. The hook is installed
/// once per process; the most recently started service receives the events.
static HOOK_LOG: RwLock<Option<Arc<AuditLog>>> = RwLock::new(None);

fn install_hook(log: &Arc<AuditLog>) {
    *HOOK_LOG
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::clone(log));
    // Events that name no tenant are kept under this operator tenant.
    let operator = TenantId::from_uuid(uuid::Uuid::from_u128(
        0x6e6f_7661_0000_4000_8000_0000_0000_0001,
    ))
    .unwrap_or_else(|_| TenantId::new_v4());
    let _ = nova_tenancy::set_audit_hook(Arc::new(HookRecorder::new(
        operator,
        |event: AuditEvent| {
            let log = HOOK_LOG
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if let Some(log) = log {
                // Never block the reporting request; a full queue drops the event and
                // the writer's own metrics show it.
                let _ = log.try_append(event);
            }
        },
    )));
}

/// A running service.
pub struct Running {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The state, for tests and jobs.
    pub state: Arc<AppState>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops serving, waits for in-flight requests, and flushes the audit log.
    ///
    /// # Errors
    /// When the server failed or the audit log cannot be flushed.
    pub async fn stop(self) -> Result<(), Error> {
        let _ = self.shutdown.send(());
        self.server.await??;
        self.state.audit.flush().await?;
        self.state.tenants.close().await;
        Ok(())
    }
}

impl AppState {
    /// Waits until every audit event queued so far is in the log.
    pub async fn audit_flush(&self) {
        let _ = self.audit.flush().await;
    }

    /// The subject map's key for the rows of `table` found by `column`.
    pub(crate) fn subject_map_key(&self, table: &str, column: &str) -> String {
        format!("{}.{table}.{column}", self.names.app.as_str())
    }
}

/// Migrates the database and builds the state.
///
/// # Errors
/// Database, Redis, key and configuration errors.
pub async fn build(setup: Setup) -> Result<Arc<AppState>, Error> {
    let names = db::Names::new(&setup.prefix)?;
    let pools = db::migrate(&setup.admin, &setup.connect, &names, setup.max_connections).await?;

    let schema = Schema::parse(POLICY_SCHEMA)?;
    let policy = PolicyStore::new(schema, PolicySet::parse(POLICY)?)?;

    // A development KEK; a deployment plugs its KMS in through `KeyProvider`.
    let kek = match LocalKeyProvider::from_env("root", "NOVA_KEK") {
        Ok(p) => p,
        Err(nova_crypto::CryptoError::KeyMaterialMissing { .. }) => {
            LocalKeyProvider::generated("root")?
        }
        Err(e) => return Err(e.into()),
    };
    let tenant_keys = PgTenantKeyStore::open(pools.keys.clone(), &names.keys).await?;
    let keyring = Arc::new(Keyring::new(Arc::new(kek), Arc::new(tenant_keys), "root")?);
    let subject_store = db::subject_keys(pools.keys.clone(), &names)?;
    let subjects = SubjectKeys::new(Arc::clone(&keyring), Arc::new(subject_store));

    let signer = CheckpointSigner::from_seed("helpdesk.example/audit", &setup.audit_seed)?;
    let audit_key = signer.verifier_key();
    let file = FileLog::open(
        &setup.audit_path,
        "helpdesk.example/audit",
        signer,
        setup.config.audit.fsync_policy(),
    )?;
    let audit = Arc::new(AuditLog::spawn(file, setup.config.audit.writer_config())?);
    if setup.checks == Checks::On {
        install_hook(&audit);
    }

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

    let plain = match setup.checks {
        Checks::On => None,
        Checks::Off => Some(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(setup.max_connections)
                .connect_with((*setup.admin.connect_options()).clone())
                .await?,
        ),
    };
    let mfa_max_age = std::time::Duration::from_secs(60 * setup.config.auth.mfa.max_age_minutes);
    Ok(Arc::new(AppState {
        mfa_max_age,
        checks: setup.checks,
        tenants: TenantPool::new(pools.svc),
        plain,
        consents: db::consent_ledger(&names)?,
        api_keys: ApiKeys::new(PgApiKeyStore::new(pools.keys.clone(), &names.keys)),
        names,
        policy,
        keyring,
        subjects,
        audit,
        audit_path: setup.audit_path,
        audit_key,
        subject_map,
        retention,
        cols: Columns {
            email: Column::new("users", "email")?.with_normalizer(normalize::email),
            name: Column::new("users", "display_name")?,
            ticket_body: Column::new("tickets", "body")?,
            comment_body: Column::new("comments", "body")?,
        },
    }))
}

/// Builds the state and serves on `listener` behind the guard (with checks on).
///
/// # Errors
/// As [`build`], and when Redis (for shared rate limits) cannot be reached.
pub async fn start(setup: Setup, listener: tokio::net::TcpListener) -> Result<Running, Error> {
    let checks = setup.checks;
    let guard = setup.config.auth.guard_config_connected().await?;
    let jwt_settings = setup.config.auth.jwt.clone();
    let jwt_keys = setup.jwt_keys.clone();
    let state = build(setup).await?;
    let mut app = router(Arc::clone(&state));
    if checks == Checks::On {
        let (issuer, audience, algorithms) = jwt_settings
            .map(|j| (j.issuer, j.audience, j.algorithms))
            .ok_or("security.jwt is required: issuer and audience")?;
        let mut jwt_config = JwtConfig::new(issuer, audience);
        // Exactly the algorithms the file allows.
        jwt_config.algorithms = algorithms;
        let jwt = JwtVerifier::new(jwt_config, StaticKeys::new(jwt_keys));
        let keys = ApiKeys::new(state.api_keys.store().clone());
        app = app.layer(GuardLayer::new(
            guard,
            Credentials::new(Some(jwt), Some(keys)),
        ));
    }
    let base = format!("http://{}", listener.local_addr()?);
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .await
    });
    Ok(Running {
        base,
        state,
        shutdown,
        server,
    })
}
