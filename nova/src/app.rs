//! [`Nova`]: every part wired from one [`Config`], and the set-up SQL of Nova's own tables.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use nova_audit::{AuditLog, CheckpointSigner, FileLog, RedactionPolicy};
use nova_auth::layer::{Credentials, GuardLayer};
use nova_auth::totp::{MfaPolicy, Sensitive};
use nova_auth::{
    ApiKeys, JwtConfig, JwtVerifier, KeySet, PgApiKeyStore, PgSessionStore, Sessions, StaticKeys,
};
use nova_crypto::{
    KeyProvider, Keyring, LocalKeyProvider, PgSubjectKeyStore, PgTenantKeyStore, SubjectKeys,
};
use nova_policy::PolicyStore;
use nova_tenancy::{Ident, TenantContext, TenantId, TenantPool};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::error::Error;
use crate::outbox::{Outbox, Relay};
use crate::principal::Principals;
use crate::scope::Scope;
use crate::sealed::{SealedColumns, SealedTable};
use nova_tenancy::privacy::{ConsentLedger, RetentionRule, SubjectMap};

/// Where [`Nova::record_security_events`] sends the audit hook's events.
static SECURITY_LOG: std::sync::RwLock<Option<Arc<AuditLog>>> = std::sync::RwLock::new(None);

/// The credentials the guard layer checks: JWTs against the configured issuer's keys,
/// sessions from Nova's tables (a bearer token starting with
/// [`nova_auth::SESSION_PREFIX`]; its contexts carry the roles of the sign-in and any
/// step-up recorded with [`Sessions::step_up`]), and API keys from Nova's tables.
pub struct NovaCredentials {
    tokens: Credentials<StaticKeys, PgApiKeyStore>,
    sessions: Sessions<PgSessionStore>,
}

impl nova_auth::layer::Authenticator for NovaCredentials {
    async fn bearer(&self, token: &str) -> Result<TenantContext, nova_auth::AuthError> {
        if token.starts_with(nova_auth::SESSION_PREFIX) {
            self.sessions.validate(token).await
        } else {
            self.tokens.bearer(token).await
        }
    }

    async fn api_key(
        &self,
        key: &str,
        client: std::net::IpAddr,
    ) -> Result<TenantContext, nova_auth::AuthError> {
        self.tokens.api_key(key, client).await
    }
}

/// The table of subject keys in Nova's schema.
const SUBJECT_KEYS: &str = "subject_keys";

/// Nova, wired: the tenant pool, the keyring and subject keys, the policy store, the audit
/// log with its outbox relay, the guard layer, and the MFA rule. Cheap to clone.
///
/// Build it with [`Nova::builder`]; serve each request through a [`Scope`].
#[derive(Clone)]
pub struct Nova {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) profile: nova_tenancy::Profile,
    pub(crate) pool: TenantPool,
    pub(crate) nova_pool: PgPool,
    pub(crate) keyring: Arc<Keyring>,
    pub(crate) subjects: SubjectKeys,
    pub(crate) policy: PolicyStore,
    pub(crate) audit: Arc<AuditLog>,
    pub(crate) outbox: Outbox,
    pub(crate) relay: Relay,
    pub(crate) guard: GuardLayer<NovaCredentials>,
    pub(crate) api_keys: ApiKeys<PgApiKeyStore>,
    pub(crate) mfa: MfaPolicy,
    pub(crate) mfa_max_age: Duration,
    pub(crate) admin_actions: Vec<String>,
    pub(crate) every_action_mfa: bool,
    pub(crate) sealed: SealedColumns,
    pub(crate) audit_key: String,
    pub(crate) sessions: Sessions<PgSessionStore>,
    pub(crate) principals: Option<Principals>,
    pub(crate) bypass_pool: Option<TenantPool>,
    pub(crate) audit_retention_days: Option<u32>,
    pub(crate) devices: Option<(nova_auth::totp::DeviceTokens, Duration)>,
    pub(crate) data_subjects: SubjectMap,
    pub(crate) consents: Option<ConsentLedger>,
    pub(crate) retention: Vec<RetentionRule>,
}

impl std::fmt::Debug for Nova {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nova")
            .field("profile", &self.inner.profile)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Nova`] from a validated [`Config`]. What the file does not hold (the
/// policy, the identity provider's keys, the sealed columns) is given here in code.
#[must_use = "call build()"]
pub struct NovaBuilder {
    config: Config,
    policy: Option<PolicyStore>,
    jwt_keys: KeySet,
    sealed: SealedColumns,
    sealed_error: Option<Error>,
    database: Option<PgConnectOptions>,
    nova_database: Option<PgConnectOptions>,
    kek: Option<Arc<dyn KeyProvider>>,
    signing_seed: Option<Zeroizing<[u8; 32]>>,
    audit_file: Option<std::path::PathBuf>,
    relay_interval: Duration,
    principals: Option<Principals>,
    data_subjects: SubjectMap,
    consents: Option<ConsentLedger>,
    bypass_database: Option<PgConnectOptions>,
    device_key: Option<Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for NovaBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NovaBuilder")
            .field("profile", &self.config.profile)
            .finish_non_exhaustive()
    }
}

impl Nova {
    /// Starts building from `config`.
    pub fn builder(config: Config) -> NovaBuilder {
        NovaBuilder {
            config,
            policy: None,
            jwt_keys: KeySet::new(),
            sealed: SealedColumns::default(),
            sealed_error: None,
            database: None,
            nova_database: None,
            kek: None,
            signing_seed: None,
            audit_file: None,
            relay_interval: Duration::from_secs(1),
            principals: None,
            data_subjects: SubjectMap::new(),
            consents: None,
            bypass_database: None,
            device_key: None,
        }
    }

    /// A request scope for a verified caller.
    #[must_use]
    pub fn scope(&self, ctx: TenantContext) -> Scope {
        Scope::new(self.clone(), ctx)
    }

    /// The guard layer (TLS and body limits, IP rules, rate limits, credentials), to wrap
    /// around the application's routes; handlers then receive a verified context.
    #[must_use]
    pub fn guard(&self) -> GuardLayer<NovaCredentials> {
        self.inner.guard.clone()
    }

    /// The tenant pool (the application login, checked).
    #[must_use]
    pub fn pool(&self) -> &TenantPool {
        &self.inner.pool
    }

    /// Tenant keys.
    #[must_use]
    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.inner.keyring
    }

    /// Data subjects' keys.
    #[must_use]
    pub fn subjects(&self) -> &SubjectKeys {
        &self.inner.subjects
    }

    /// The policy, with each tenant's grants.
    #[must_use]
    pub fn policy(&self) -> &PolicyStore {
        &self.inner.policy
    }

    /// The audit log (events that do not go with a transaction's data, such as denials).
    #[must_use]
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.inner.audit
    }

    /// The audit log's public key, for `nova-audit verify <file> --key <this>`.
    #[must_use]
    pub fn audit_key(&self) -> &str {
        &self.inner.audit_key
    }

    /// The declared sealed columns: `(table, column, whose key)`, sorted.
    #[must_use]
    pub fn sealed_columns(&self) -> Vec<(String, String, crate::KeyOf)> {
        self.inner.sealed.list()
    }

    /// Sessions in Nova's tables, with `[security.session]`'s idle and absolute timeouts.
    #[must_use]
    pub fn sessions(&self) -> &Sessions<PgSessionStore> {
        &self.inner.sessions
    }

    /// API keys (with the configured lockout).
    #[must_use]
    pub fn api_keys(&self) -> &ApiKeys<PgApiKeyStore> {
        &self.inner.api_keys
    }

    /// The configuration's profile.
    #[must_use]
    pub fn profile(&self) -> nova_tenancy::Profile {
        self.inner.profile
    }

    /// Whether `action` needs a fresh second factor, and if so whether `ctx` has one.
    ///
    /// # Errors
    /// [`Error::MfaRequired`].
    pub fn check_mfa(&self, ctx: &TenantContext, action: &str) -> Result<(), Error> {
        let sensitive = if self.inner.admin_actions.iter().any(|a| a == action) {
            Sensitive::AdminAction
        } else {
            Sensitive::Other
        };
        if !self.inner.every_action_mfa && sensitive == Sensitive::Other {
            return Ok(());
        }
        self.inner
            .mfa
            .check_context(sensitive, ctx, SystemTime::now())
            .map_err(|_| Error::MfaRequired)
    }

    /// A "remember this device" token for the caller on `device_id` (a random id the
    /// device keeps in its own cookie), valid for `[security.mfa] remember_device`. Only a
    /// caller who verified a second factor within `max_age` may remember a device. A
    /// remembered device lets a sign-in skip asking for a second factor
    /// ([`Nova::device_remembered`]); it never counts as one, so admin actions and bypasses
    /// still need a fresh step-up.
    ///
    /// # Errors
    /// [`Error::Config`] without `remember_device_key_env`; [`Error::MfaRequired`] for a
    /// caller without a fresh second factor; [`Error::Invalid`] for a malformed device id.
    pub fn remember_device(
        &self,
        ctx: &TenantContext,
        device_id: &str,
    ) -> Result<nova_auth::IssuedSecret, Error> {
        let (tokens, ttl) = self.inner.devices.as_ref().ok_or_else(|| {
            Error::config("security.mfa.remember_device_key_env is not set".into())
        })?;
        let user = ctx.user().ok_or(Error::MfaRequired)?;
        if !ctx.mfa_within(self.inner.mfa_max_age, SystemTime::now()) {
            return Err(Error::MfaRequired);
        }
        tokens
            .issue(ctx.tenant(), user, device_id, *ttl)
            .map_err(|_| Error::Invalid("device id"))
    }

    /// Whether `token` remembers `device_id` for `user` of `tenant` (signed with this
    /// Nova's key, for that user and device, not expired). `false` for any token that does
    /// not verify, and when devices are not remembered.
    #[must_use]
    pub fn device_remembered(
        &self,
        token: &str,
        tenant: TenantId,
        user: nova_tenancy::UserId,
        device_id: &str,
    ) -> bool {
        self.inner
            .devices
            .as_ref()
            .is_some_and(|(tokens, _)| tokens.verify(token, tenant, user, device_id).is_ok())
    }

    /// Applies `[security.audit] retention_days` now: the content of events older than that
    /// is removed from the log, their hashes kept so that it still verifies. The relay
    /// also does this at start and every six hours. Returns the number of entries pruned
    /// in total; `None` when the file sets no retention (events kept forever).
    ///
    /// # Errors
    /// [`Error::Audit`] when the log cannot be rewritten (it is then left as it was).
    pub async fn apply_audit_retention(&self) -> Result<Option<u64>, Error> {
        match self.inner.audit_retention_days {
            Some(days) => crate::outbox::apply_retention(&self.inner.audit, days).await,
            None => Ok(None),
        }
    }

    /// Moves everything in the outbox into the log now and waits until the log holds it:
    /// for tests, and before a shutdown.
    ///
    /// # Errors
    /// [`Error::Database`] or [`Error::Audit`].
    pub async fn flush_audit(&self) -> Result<(), Error> {
        loop {
            // In turn with the relay: a batch it holds is in the log before this returns.
            let _turn = self.inner.relay.turn.lock().await;
            let moved = self
                .inner
                .outbox
                .relay_batch(&self.inner.nova_pool, &self.inner.audit)
                .await?;
            if moved == 0 {
                break;
            }
        }
        self.inner.audit.flush().await?;
        Ok(())
    }

    /// Events committed and not yet moved into the log.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn audit_pending(&self) -> Result<i64, Error> {
        self.inner.outbox.pending(&self.inner.nova_pool).await
    }

    /// Moves the outbox into the log, flushes it, and closes the pools.
    ///
    /// # Errors
    /// As [`Nova::flush_audit`].
    pub async fn close(&self) -> Result<(), Error> {
        {
            // Wait for a batch in flight, then stop the relay.
            let _turn = self.inner.relay.turn.lock().await;
            self.inner.relay.stop();
        }
        self.flush_audit().await?;
        self.inner.pool.close().await;
        self.inner.nova_pool.close().await;
        Ok(())
    }

    /// Sends the security events every Nova crate reports (refused credentials, system
    /// contexts, cross-tenant attempts, policy denials outside a scope, ...) to this
    /// Nova's audit log; events that name no tenant are kept under `operator`. The hook is
    /// process-wide: the Nova that called this last receives the events. A full writer
    /// queue drops an event rather than block the reporting request (the writer's metrics
    /// count it).
    pub fn record_security_events(&self, operator: TenantId) {
        *SECURITY_LOG
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(Arc::clone(&self.inner.audit));
        // Installed once per process; later calls only redirect it.
        let _ = nova_tenancy::set_audit_hook(Arc::new(nova_audit::HookRecorder::new(
            operator,
            |event: nova_audit::AuditEvent| {
                let log = SECURITY_LOG
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                if let Some(log) = log {
                    let _ = log.try_append(event);
                }
            },
        )));
    }

    pub(crate) fn wake_relay(&self) {
        self.inner.relay.wake.notify_one();
    }
}

/// The SQL that creates Nova's own tables in `schema` (idempotent): API keys, refresh
/// tokens and sessions; tenant and subject keys; the audit outbox. `nova_login` owns their
/// use; `app_roles` (the roles the application login is a member of) may only insert
/// audit events of their transaction's tenant. Run it from the application's migrations,
/// as a role allowed to create schemas, or with [`migrate`].
///
/// # Errors
/// [`Error::Config`] when a name is not a valid identifier.
pub fn migration_sql(
    schema: &str,
    app_roles: &[&Ident],
    nova_login: &Ident,
) -> Result<String, Error> {
    if app_roles.is_empty() {
        return Err(Error::config(
            "migration_sql: name the application's roles".into(),
        ));
    }
    let schema = Ident::new(schema)
        .map_err(|_| Error::config("security.database.schema is not a valid identifier".into()))?;
    let subject_table =
        Ident::new(SUBJECT_KEYS).map_err(|_| Error::config("subject key table".into()))?;
    let subject_sql = PgSubjectKeyStore::schema_sql(Some(&schema), &subject_table);
    Ok(format!(
        "{auth}
        {tenant_keys}
        {subject_sql}
        {outbox}
        REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
        GRANT USAGE ON SCHEMA {schema} TO {nova_login}, {apps};
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {nova_login};
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {nova_login};
        ",
        auth = nova_auth::schema_sql(&schema),
        tenant_keys = PgTenantKeyStore::schema_sql(&schema),
        outbox = Outbox::create_sql(&schema, app_roles, nova_login),
        apps = app_roles
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    ))
}

/// Runs [`migration_sql`] on `admin`.
///
/// # Errors
/// As [`migration_sql`]; [`Error::Database`].
pub async fn migrate(
    admin: &PgPool,
    schema: &str,
    app_roles: &[&Ident],
    nova_login: &Ident,
) -> Result<(), Error> {
    let sql = migration_sql(schema, app_roles, nova_login)?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(admin)
        .await?;
    Ok(())
}

fn env_url(var: &str, setting: &str) -> Result<PgConnectOptions, Error> {
    let url = Zeroizing::new(std::env::var(var).map_err(|_| {
        Error::config(format!(
            "security.database.{setting}: environment variable {var} is not set"
        ))
    })?);
    // The URL holds a password: the error never repeats it.
    url.parse::<PgConnectOptions>().map_err(|_| {
        Error::config(format!(
            "security.database.{setting}: environment variable {var} is not a PostgreSQL URL"
        ))
    })
}

fn env_key(var: &str, setting: &str) -> Result<Option<Zeroizing<[u8; 32]>>, Error> {
    let Ok(text) = std::env::var(var).map(Zeroizing::new) else {
        return Ok(None);
    };
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| Error::config(format!("{setting}: {var} is not base64 of 32 bytes")))?,
    );
    let key: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| Error::config(format!("{setting}: {var} is not base64 of 32 bytes")))?;
    Ok(Some(Zeroizing::new(key)))
}

impl NovaBuilder {
    /// The policy (schema, rules and shared grants). Required.
    pub fn policy(mut self, policy: PolicyStore) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The identity provider's public keys, for the JWTs `[security.jwt]` describes. An
    /// HS256 secret named by `security.jwt.hs256_secret_env` is added to them (kid
    /// `hs256`).
    pub fn jwt_keys(mut self, keys: KeySet) -> Self {
        self.jwt_keys = keys;
        self
    }

    /// Declares a table's sealed columns. A column declared twice is refused by
    /// [`NovaBuilder::build`] (a second declaration with another key or normalizer would
    /// leave stored values unopenable).
    pub fn sealed(mut self, table: SealedTable) -> Self {
        if let Err(e) = self.sealed.add(table) {
            self.sealed_error.get_or_insert(e);
        }
        self
    }

    /// The application login's server, database and credentials, instead of the URL in
    /// `security.database.url_env`. TLS, timeouts and pooling still come from the file.
    pub fn database(mut self, options: PgConnectOptions) -> Self {
        self.database = Some(options);
        self
    }

    /// Nova's login, instead of the URL in `security.database.nova_url_env`.
    pub fn nova_database(mut self, options: PgConnectOptions) -> Self {
        self.nova_database = Some(options);
        self
    }

    /// The key-encryption key's provider (a KMS), instead of `security.encryption.kek_env`.
    pub fn kek(mut self, provider: Arc<dyn KeyProvider>) -> Self {
        self.kek = Some(provider);
        self
    }

    /// The audit checkpoint signing key's seed (from a secret manager), instead of
    /// `security.audit.signing_key_env`.
    pub fn audit_signing_seed(mut self, seed: Zeroizing<[u8; 32]>) -> Self {
        self.signing_seed = Some(seed);
        self
    }

    /// The key "remember this device" tokens are signed with (from a secret manager),
    /// instead of `security.mfa.remember_device_key_env`.
    pub fn remember_device_key(mut self, key: Zeroizing<[u8; 32]>) -> Self {
        self.device_key = Some(key);
        self
    }

    /// The audit log's file, instead of `security.audit.file`.
    pub fn audit_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.audit_file = Some(path.into());
        self
    }

    /// Where callers' policy attributes are read ([`Principals`]). Without it, a scope's
    /// principal has only what [`Scope::set_principal`] gives it.
    pub fn principals(mut self, principals: Principals) -> Self {
        self.principals = Some(principals);
        self
    }

    /// The tables that hold data subjects' rows, and what erasure does to each: used by
    /// [`Scope::export_subject`] and [`Scope::erase_subject`].
    pub fn data_subjects(mut self, map: SubjectMap) -> Self {
        self.data_subjects = map;
        self
    }

    /// A login that is a member of a bypass role of the migration (`admin_rw`), for
    /// [`Scope::bypass`] only: connected and checked like the application login (TLS,
    /// timeouts, no path to a superuser or `BYPASSRLS` role). Without it, no scope can
    /// bypass row-level security.
    pub fn bypass_database(mut self, options: PgConnectOptions) -> Self {
        self.bypass_database = Some(options);
        self
    }

    /// The consent ledger: [`Scope::record_consent`], and the history in exports.
    pub fn consents(mut self, ledger: ConsentLedger) -> Self {
        self.consents = Some(ledger);
        self
    }

    /// How often the relay looks for events committed by other replicas (default 1 s;
    /// this process's commits wake it at once).
    pub fn relay_interval(mut self, interval: Duration) -> Self {
        self.relay_interval = interval;
        self
    }

    /// Connects, checks and wires everything. Refuses (naming the setting):
    /// - an application login that is or reaches a superuser or `BYPASSRLS` role, or whose
    ///   tables are not protected by row-level security ([`TenantPool::check`]);
    /// - a missing KEK unless `generate_kek_if_missing` (development only);
    /// - a missing audit file, or (strict profiles) a missing checkpoint signing key;
    /// - a missing policy.
    ///
    /// Must run inside a Tokio runtime (the audit outbox relay is a task).
    ///
    /// # Errors
    /// [`Error::Config`] for the refusals above; [`Error::Tenancy`] for the login checks;
    /// database, key and log errors.
    pub async fn build(self) -> Result<Nova, Error> {
        let Self {
            config,
            policy,
            jwt_keys,
            sealed,
            sealed_error,
            database,
            nova_database,
            kek,
            signing_seed,
            audit_file,
            relay_interval,
            principals,
            data_subjects,
            consents,
            bypass_database,
            device_key,
        } = self;
        // Fields may have changed since the file was read: validate again.
        config.validate()?;
        if let Some(e) = sealed_error {
            return Err(e);
        }
        let profile = config.profile;
        let db = &config.database;
        let policy = policy
            .ok_or_else(|| Error::config("a policy is required (NovaBuilder::policy)".into()))?;
        // A misspelt admin action would silently need no second factor.
        for action in &config.auth.mfa.admin_actions {
            if !policy.names_action(action) {
                return Err(Error::config(format!(
                    "security.mfa.admin_actions: no rule of the policy names `{}`",
                    action.escape_debug()
                )));
            }
        }
        let schema = Ident::new(&db.schema).map_err(|_| {
            Error::config("security.database.schema is not a valid identifier".into())
        })?;

        // The key-encryption key first: nothing connects when it is missing.
        let kek: Arc<dyn KeyProvider> = match kek {
            Some(k) if k.is_ephemeral() && profile.is_strict() => {
                return Err(Error::config(format!(
                    "security.encryption: a KEK made up in this process is not allowed in the {profile} profile (every sealed value would be lost at exit)"
                )));
            }
            Some(k) => k,
            None => {
                let enc = &config.encryption;
                match LocalKeyProvider::from_env(&enc.kek_id, &enc.kek_env) {
                    Ok(p) => Arc::new(p),
                    Err(nova_crypto::CryptoError::KeyMaterialMissing { .. })
                        if enc.generate_kek_if_missing && !profile.is_strict() =>
                    {
                        tracing::warn!(target: "nova::audit", "security.encryption: a KEK made up at start; sealed data will not open after a restart (development only)");
                        Arc::new(LocalKeyProvider::generated(&enc.kek_id)?)
                    }
                    Err(nova_crypto::CryptoError::KeyMaterialMissing { .. }) => {
                        return Err(Error::config(format!(
                            "security.encryption.kek_env: environment variable {} is not set (a KEK is required; generate_kek_if_missing is for development only)",
                            enc.kek_env
                        )));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let audit_file = audit_file
            .or_else(|| config.audit.file.clone())
            .ok_or_else(|| Error::config("security.audit.file is required".into()))?;
        let origin = config
            .audit
            .origin
            .clone()
            .unwrap_or_else(|| "nova/audit".into());
        let seed = match (signing_seed, &config.audit.signing_key_env) {
            (Some(seed), _) => seed,
            (None, Some(var)) => {
                env_key(var, "security.audit.signing_key_env")?.ok_or_else(|| {
                    Error::config(format!(
                        "security.audit.signing_key_env: environment variable {var} is not set"
                    ))
                })?
            }
            (None, None) if profile.is_strict() => {
                return Err(Error::config(
                    "security.audit.signing_key_env is required".into(),
                ));
            }
            (None, None) => {
                let mut seed = Zeroizing::new([0u8; 32]);
                getrandom::fill(seed.as_mut_slice())
                    .map_err(|_| Error::Crypto(nova_crypto::CryptoError::Rng))?;
                seed
            }
        };
        let redaction = match &config.audit.redaction_key_env {
            Some(var) => match env_key(var, "security.audit.redaction_key_env")? {
                Some(key) => RedactionPolicy::with_hash_key(*key),
                None => {
                    return Err(Error::config(format!(
                        "security.audit.redaction_key_env: environment variable {var} is not set"
                    )));
                }
            },
            None => RedactionPolicy::new(),
        };

        // The application login, checked: no path to a role that skips RLS, every table it
        // reaches protected, the timeouts in force.
        let policy_db = db.connection_policy();
        let root_cert = db.root_cert.clone();
        let with_cert = |o: PgConnectOptions| match &root_cert {
            Some(path) => o.ssl_root_cert(path),
            None => o,
        };
        let app_options = match database {
            Some(o) => o,
            None => env_url(&db.url_env, "url_env")?,
        };
        let pool = policy_db.connect(with_cert(app_options)).await?;
        let pool = pool.pin_login_search_path().await?;
        let bypass_pool = match bypass_database {
            Some(o) => Some(
                policy_db
                    .connect(with_cert(o))
                    .await?
                    .pin_login_search_path()
                    .await?,
            ),
            None => None,
        };
        let nova_options = match nova_database {
            Some(o) => o,
            None => env_url(&db.nova_url_env, "nova_url_env")?,
        };
        policy_db.validate(&nova_options)?;
        // No ping before each use: on this pool every request's key lookups would pay one
        // more round trip for it (measured in BENCHMARKS.md); a connection that died is
        // dropped by sqlx on its first error and the call fails (the relay retries).
        let nova_pool = policy_db
            .pool_options()
            .test_before_acquire(false)
            .connect_with(policy_db.apply(with_cert(nova_options)))
            .await?;
        // Nova's login owns key material and the outbox; as a superuser or with BYPASSRLS it
        // would hand whoever takes over the process every tenant's rows.
        let skips_rls: bool = sqlx::query_scalar(
            "SELECT rolsuper OR rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = current_user",
        )
        .persistent(false)
        .fetch_one(&nova_pool)
        .await?;
        if skips_rls && profile.is_strict() {
            return Err(Error::config(format!(
                "security.database.nova_url_env: Nova's login is a superuser or has BYPASSRLS, which the {profile} profile refuses"
            )));
        }

        let tenant_keys = PgTenantKeyStore::open(nova_pool.clone(), &schema).await?;
        let keyring = Arc::new(Keyring::new(
            kek,
            Arc::new(tenant_keys),
            &config.encryption.kek_id,
        )?);
        let subject_store = PgSubjectKeyStore::new(
            nova_pool.clone(),
            Some(schema.clone()),
            Ident::new(SUBJECT_KEYS).map_err(|_| Error::config("subject key table".into()))?,
        );
        let subjects = SubjectKeys::new(Arc::clone(&keyring), Arc::new(subject_store));

        let signer = CheckpointSigner::from_seed(&origin, &seed).map_err(|_| {
            Error::config("security.audit.origin is not a valid checkpoint origin".into())
        })?;
        let audit_key = signer.verifier_key();
        let file = FileLog::open(&audit_file, &origin, signer, config.audit.fsync_policy())?
            .with_redaction(redaction.clone());
        let audit = Arc::new(
            AuditLog::spawn(file, config.audit.writer_config()).map_err(|e| {
                Error::config(format!(
                    "security.audit: cannot start the writer: {}",
                    e.kind()
                ))
            })?,
        );
        let outbox = Outbox::new(&schema, Arc::new(redaction), &seed)?;
        let relay = Relay::spawn(
            outbox.clone(),
            nova_pool.clone(),
            Arc::clone(&audit),
            relay_interval,
            config.audit.retention_days,
        );

        // The edge: guard settings, JWTs exactly as configured, API keys with the lockout.
        let auth = &config.auth;
        #[cfg(feature = "redis")]
        let guard_config = auth.guard_config_connected().await;
        // Without Redis, a file that asks for it is refused (per-replica budgets would
        // multiply every limit).
        #[cfg(not(feature = "redis"))]
        let guard_config = auth.guard_config();
        let guard_config = guard_config.map_err(|e| Error::config(e.to_string()))?;
        let api_keys = ApiKeys::new(PgApiKeyStore::new(nova_pool.clone(), &schema))
            .with_lockout(auth.lockout_policy());
        let jwt = match &auth.jwt {
            Some(settings) => {
                let mut keys = jwt_keys;
                if let Some(var) = &settings.hs256_secret_env {
                    let secret = Zeroizing::new(std::env::var(var).map_err(|_| {
                        Error::config(format!(
                            "security.jwt.hs256_secret_env: environment variable {var} is not set"
                        ))
                    })?);
                    keys.insert_hmac_secret("hs256", secret.as_bytes())?;
                }
                let mut jwt_config =
                    JwtConfig::new(settings.issuer.clone(), settings.audience.clone());
                jwt_config.algorithms.clone_from(&settings.algorithms);
                Some(JwtVerifier::new(jwt_config, StaticKeys::new(keys)))
            }
            None => None,
        };
        // "Remember this device": tokens signed with their own key, for the configured time.
        let ttl = auth.mfa.remember_device;
        let device_key = match (device_key, &auth.mfa.remember_device_key_env) {
            (Some(key), _) => Some(key),
            (None, Some(var)) => Some(
                env_key(var, "security.mfa.remember_device_key_env")?.ok_or_else(|| {
                    Error::config(format!(
                        "security.mfa.remember_device_key_env: environment variable {var} is not set"
                    ))
                })?,
            ),
            (None, None) => None,
        };
        let devices = match device_key {
            Some(key) if !ttl.is_zero() => {
                let tokens = nova_auth::totp::DeviceTokens::new(key.as_slice()).map_err(|_| {
                    Error::config("security.mfa.remember_device_key_env: a weak key".into())
                })?;
                Some((tokens, ttl))
            }
            _ => None,
        };
        let (idle, lifetime) = auth.session_timeouts();
        let sessions = || {
            Sessions::new(
                PgSessionStore::new(nova_pool.clone(), &schema),
                lifetime,
                idle,
            )
        };
        let guard = GuardLayer::new(
            guard_config,
            NovaCredentials {
                tokens: Credentials::new(
                    jwt,
                    Some(
                        ApiKeys::new(api_keys.store().clone()).with_lockout(auth.lockout_policy()),
                    ),
                ),
                sessions: sessions(),
            },
        );
        let sessions = sessions();
        Ok(Nova {
            inner: Arc::new(Inner {
                sessions,
                profile,
                pool,
                nova_pool,
                keyring,
                subjects,
                policy,
                audit,
                outbox,
                relay,
                guard,
                api_keys,
                mfa: auth.mfa_policy(),
                mfa_max_age: auth.mfa.max_age,
                admin_actions: auth.mfa.admin_actions.clone(),
                every_action_mfa: auth.mfa.require_for_every_action,
                sealed,
                audit_key,
                principals,
                bypass_pool,
                audit_retention_days: config.audit.retention_days,
                devices,
                data_subjects,
                consents,
                retention: config.privacy.retention.clone(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Migrations run from anywhere, also outside an async runtime: rendering the SQL
    /// opens nothing.
    #[test]
    fn migration_sql_renders_without_a_runtime() {
        let (app, login) = (
            Ident::new("app_rw").unwrap(),
            Ident::new("nova_login").unwrap(),
        );
        let sql = migration_sql("nova", &[&app], &login).unwrap();
        for table in ["subject_keys", "audit_outbox", "nova_api_keys"] {
            assert!(sql.contains(table), "{table}");
        }
        assert!(migration_sql("nova", &[], &login).is_err());
        assert!(migration_sql("no-va", &[&app], &login).is_err());
    }
}
