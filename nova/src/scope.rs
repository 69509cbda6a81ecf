//! [`Scope`]: one request, from the verified context to the commit.

use std::collections::HashMap;
use std::time::SystemTime;

use nova_audit::{AuditEvent, AuditEventBuilder, Outcome};
use nova_crypto::{CryptoError, Envelope, SubjectEnvelope, SubjectHandle};
use nova_policy::{Attrs, Request, ResourceTable, SqlFilter, SqlParam};
use nova_tenancy::{TenantContext, TenantTx};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::app::Nova;
use crate::error::Error;
use crate::sealed::KeyOf;

/// What an action is on: a resource type, optionally its id (for the audit event), and
/// the attributes the policy reads.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    kind: &'a str,
    id: Option<&'a str>,
    attrs: &'a Attrs,
}

impl<'a> Target<'a> {
    /// A resource of type `kind` (as the policy's schema names it) with `attrs`.
    #[must_use]
    pub fn new(kind: &'a str, attrs: &'a Attrs) -> Self {
        Self {
            kind,
            id: None,
            attrs,
        }
    }

    /// The resource's id, recorded in audit events as `kind/id`.
    #[must_use]
    pub fn id(mut self, id: &'a str) -> Self {
        self.id = Some(id);
        self
    }

    fn resource(&self) -> String {
        match self.id {
            Some(id) => format!("{}/{id}", self.kind),
            None => self.kind.to_owned(),
        }
    }
}

/// An allowed decision: the reasons the policy gave and its version. Pass it to
/// [`Scope::event_for`] so that the event of the action carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "record the action's event with Scope::event_for"]
pub struct Decision {
    reasons: Vec<String>,
    version: String,
}

impl Decision {
    /// The policy's reasons (the rule or grant that allowed).
    #[must_use]
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }

    /// The policy version that decided.
    #[must_use]
    pub fn version(&self) -> &str {
        &self.version
    }
}

/// One request's work for a verified caller: a tenant transaction opened when first
/// needed, policy decisions with the principal taken from the context, sealed columns, and
/// audit events that commit with the data.
///
/// - [`Scope::authorize`] decides with the policy store; `context.mfa` is the caller's
///   second factor within `[security.mfa] max_age`, and actions named in
///   `admin_actions` need one. A denial is written to the audit log at once (durably,
///   whatever becomes of the transaction) with the policy's reasons, and returned as
///   [`Error::Denied`] or [`Error::MfaRequired`]. An allowed decision that used a
///   delegation grant is recorded too. An allowed [`Decision`] gives its reasons to the
///   action's event ([`Scope::event_for`]).
/// - [`Scope::record`] writes an event into the audit outbox **in the transaction**: it
///   reaches the log if and only if the transaction commits.
/// - [`Scope::seal`] and [`Scope::open`] use the columns declared with
///   [`crate::NovaBuilder::sealed`]; an undeclared column is an error, never plaintext.
/// - Dropped without [`Scope::commit`], the transaction rolls back (its connection is reset
///   or closed, see [`TenantTx`]) and its events are gone with it.
pub struct Scope {
    pub(crate) nova: Nova,
    pub(crate) ctx: TenantContext,
    tx: Option<TenantTx>,
    principal: Option<Attrs>,
    tenant_keys_ready: bool,
    handles: HashMap<Uuid, SubjectHandle>,
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("tenant", &self.ctx.tenant())
            .field("in_transaction", &self.tx.is_some())
            .finish_non_exhaustive()
    }
}

impl Scope {
    pub(crate) fn new(nova: Nova, ctx: TenantContext) -> Self {
        Self {
            nova,
            ctx,
            tx: None,
            principal: None,
            tenant_keys_ready: false,
            handles: HashMap::new(),
        }
    }

    /// The verified caller.
    #[must_use]
    pub fn context(&self) -> &TenantContext {
        &self.ctx
    }

    /// The Nova this scope belongs to.
    #[must_use]
    pub fn nova(&self) -> &Nova {
        &self.nova
    }

    /// The tenant transaction, opened on first use. Run the application's SQL on it:
    /// row-level security confines every statement to the caller's tenant.
    ///
    /// # Errors
    /// [`Error::Tenancy`] when the transaction cannot begin.
    pub async fn tx(&mut self) -> Result<&mut TenantTx, Error> {
        let tx = match self.tx.take() {
            Some(tx) => tx,
            None => self.nova.inner.pool.begin(&self.ctx).await?,
        };
        Ok(self.tx.insert(tx))
    }

    /// Sets the principal's attributes the policy reads (`principal.department`, ...),
    /// instead of loading them from the table given to [`crate::NovaBuilder::principals`].
    /// The principal's id and roles always come from the context.
    pub fn set_principal(&mut self, attrs: Attrs) {
        self.principal = Some(attrs);
    }

    /// Loads the caller's attributes once (see [`crate::Principals`]); a caller the table
    /// does not know is refused, and the refusal audited.
    async fn ensure_principal(&mut self) -> Result<(), Error> {
        if self.principal.is_some() {
            return Ok(());
        }
        let inner = std::sync::Arc::clone(&self.nova.inner);
        let attrs = match &inner.principals {
            None => Attrs::new(),
            Some(p) if p.is_rowless(&self.ctx) => Attrs::new(),
            Some(p) => {
                let Some(user) = self.ctx.user() else {
                    return Err(self
                        .refuse("authorize", p.table_name(), "no user in the credential")
                        .await);
                };
                let row: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(p.sql()))
                    .bind(user)
                    .fetch_optional(&mut **self.tx().await?)
                    .await?;
                match row {
                    Some(row) => crate::principal::attrs_from_json(&row)?,
                    None => {
                        let resource = format!("{}/{user}", p.table_name());
                        return Err(self
                            .refuse("authorize", &resource, "no such principal in the tenant")
                            .await);
                    }
                }
            }
        };
        self.principal = Some(attrs);
        Ok(())
    }

    /// The actor recorded in audit events: `user:<id>`, or `system:<component>`.
    #[must_use]
    pub fn actor(&self) -> String {
        match (self.ctx.user(), self.ctx.origin()) {
            (Some(u), _) => format!("user:{u}"),
            (None, nova_tenancy::Origin::System { reason }) => format!("system:{reason}"),
            (None, nova_tenancy::Origin::Verified { verifier }) => format!("service:{verifier}"),
            (None, _) => "unknown".to_owned(),
        }
    }

    /// Decides whether the caller may do `action` on `target`.
    ///
    /// # Errors
    /// [`Error::Denied`] (with the policy's reasons) or [`Error::MfaRequired`], after the
    /// denial is in the audit log; [`Error::Audit`] when it cannot be recorded (the action
    /// is then refused all the same).
    pub async fn authorize(&mut self, action: &str, target: Target<'_>) -> Result<Decision, Error> {
        self.ensure_principal().await?;
        // Decided before any await: a request borrows attributes as `&dyn Entity`, which
        // must not be held across one (the future would not be `Send`).
        let explanation = {
            let principal = self.principal.get_or_insert_with(Attrs::new);
            let context =
                Attrs::authentication(&self.ctx, self.nova.inner.mfa_max_age, SystemTime::now());
            let user = self.ctx.user().map(|u| u.to_string()).unwrap_or_default();
            let req = Request::new(action, target.kind)
                .principal_from(&self.ctx, &user, &*principal)
                .resource(target.attrs)
                .context(&context);
            self.nova.inner.policy.explain(self.ctx.tenant(), &req)
        };
        let reasons: Vec<String> = explanation
            .reasons()
            .iter()
            .map(ToString::to_string)
            .collect();
        let version = explanation.decision.version().to_string();
        if !explanation.is_allowed() {
            self.deny(action, &target, &reasons, Some(&version)).await?;
            return Err(Error::Denied { reasons });
        }
        // Allowed by the policy; an admin action also needs a fresh second factor.
        if self.nova.check_mfa(&self.ctx, action).is_err() {
            let reason = format!(
                "`{action}` needs a second factor verified within {} minutes",
                self.nova.inner.mfa_max_age.as_secs() / 60
            );
            self.deny(
                action,
                &target,
                std::slice::from_ref(&reason),
                Some(&version),
            )
            .await?;
            return Err(Error::MfaRequired);
        }
        let decision = Decision { reasons, version };
        if explanation.used_delegation() {
            let event = self
                .event_for(&decision, "policy.delegation_used", action)
                .resource(&target.resource())
                .build();
            self.record_now(event).await?;
        }
        Ok(decision)
    }

    /// A transaction that sees every tenant's rows, for a verified caller (a support
    /// engineer's cross-tenant search, say): the policy must allow `action` on `target`
    /// as in [`Scope::authorize`], and the caller must have verified a second factor
    /// within `[security.mfa] max_age` — always, whatever `admin_actions` says
    /// ([`nova_auth::totp::Sensitive::RlsBypass`]). The bypass is in the audit log, with
    /// the caller, `reason` and the policy's reasons, before it begins; a refusal is
    /// audited like any denial. It runs on the login given to
    /// [`crate::NovaBuilder::bypass_database`], in a system context for the caller's
    /// tenant (its writes carry that tenant unless a statement names another). Commit or
    /// roll it back yourself; this scope's own transaction is untouched.
    ///
    /// # Errors
    /// [`Error::Denied`], [`Error::MfaRequired`]; [`Error::Config`] without a bypass login;
    /// [`Error::Audit`] when the bypass cannot be recorded (it then does not begin).
    pub async fn bypass(
        &mut self,
        action: &str,
        target: Target<'_>,
        reason: &'static str,
    ) -> Result<(Decision, TenantTx), Error> {
        let inner = std::sync::Arc::clone(&self.nova.inner);
        let pool = inner.bypass_pool.as_ref().ok_or_else(|| {
            Error::config("no bypass login (NovaBuilder::bypass_database)".into())
        })?;
        let decision = self.authorize(action, target).await?;
        let fresh = inner.mfa.check_context(
            nova_auth::totp::Sensitive::RlsBypass,
            &self.ctx,
            SystemTime::now(),
        );
        if fresh.is_err() {
            let reason = format!(
                "bypassing row-level security needs a second factor verified within {} minutes",
                inner.mfa_max_age.as_secs() / 60
            );
            let reasons = std::slice::from_ref(&reason);
            self.deny(action, &target, reasons, Some(&decision.version))
                .await?;
            return Err(Error::MfaRequired);
        }
        let event = self
            .event_for(&decision, "tenancy.rls_bypass", action)
            .resource(&target.resource())
            .param("reason", reason)
            .build();
        self.record_now(event).await?;
        let system = TenantContext::system(self.ctx.tenant(), reason)?;
        let tx = pool.begin_bypass(&system, reason).await?;
        Ok((decision, tx))
    }

    async fn deny(
        &self,
        action: &str,
        target: &Target<'_>,
        reasons: &[String],
        version: Option<&str>,
    ) -> Result<(), Error> {
        let mut event = AuditEvent::builder(self.ctx.tenant(), "policy.denied", action)
            .actor(&self.actor())
            .resource(&target.resource())
            .outcome(Outcome::Denied)
            .request_id(self.ctx.request_id());
        for r in reasons {
            event = event.policy(r);
        }
        if let Some(v) = version {
            event = event.param("policy_version", v);
        }
        // Durable before the caller answers 403, and independent of the transaction.
        self.nova.inner.audit.append(event.build()).await?;
        Ok(())
    }

    /// The policy for `action` on `resource_type`, compiled into a SQL predicate over
    /// `table` for listings (`WHERE ... AND (<filter.sql>)`), with the caller as principal
    /// and `context.mfa` as in [`Scope::authorize`]. Its parameters start at `$first_param`;
    /// bind them with [`bind_filter`].
    ///
    /// # Errors
    /// [`Error::Sql`] when the policy cannot be expressed in SQL; [`Error::Refused`] for a
    /// caller [`crate::Principals`] does not know; [`Error::MfaRequired`] (audited) for an
    /// action of `admin_actions` without a fresh second factor.
    pub async fn sql_filter(
        &mut self,
        action: &str,
        resource_type: &str,
        table: &ResourceTable,
        first_param: usize,
    ) -> Result<SqlFilter, Error> {
        self.ensure_principal().await?;
        // A listing of an admin action needs the same fresh second factor as one decision.
        if self.nova.check_mfa(&self.ctx, action).is_err() {
            let reason = format!(
                "`{action}` needs a second factor verified within {} minutes",
                self.nova.inner.mfa_max_age.as_secs() / 60
            );
            let none = Attrs::new();
            let target = Target::new(resource_type, &none);
            self.deny(action, &target, std::slice::from_ref(&reason), None)
                .await?;
            return Err(Error::MfaRequired);
        }
        let principal = self.principal.get_or_insert_with(Attrs::new);
        let context =
            Attrs::authentication(&self.ctx, self.nova.inner.mfa_max_age, SystemTime::now());
        let user = self.ctx.user().map(|u| u.to_string()).unwrap_or_default();
        let req = Request::new(action, resource_type)
            .principal_from(&self.ctx, &user, &*principal)
            .context(&context);
        Ok(self
            .nova
            .inner
            .policy
            .policy(self.ctx.tenant())
            .sql_filter(&req, table, first_param)?)
    }

    /// Appends `event` to the audit log now and waits until it is durable, whatever
    /// becomes of the transaction: for what happened even if nothing is written (a refused
    /// or not-found read, an export).
    ///
    /// # Errors
    /// [`Error::Audit`].
    pub async fn record_now(&self, event: AuditEvent) -> Result<(), Error> {
        self.nova.inner.audit.append(event).await?;
        Ok(())
    }

    /// Records that `action` on `resource` found nothing (or nothing the caller may see)
    /// and returns [`Error::NotFound`] to answer with: every 404 is in the audit log.
    pub async fn not_found(&self, action: &str, resource: &str) -> Error {
        self.refusal(
            action,
            resource,
            "not found",
            Outcome::Failure,
            Error::NotFound,
        )
        .await
    }

    /// Records a refusal no policy rule decided (a precondition of the application) with
    /// its reason, and returns [`Error::Refused`] to answer with (403).
    pub async fn refuse(&self, action: &str, resource: &str, reason: &str) -> Error {
        self.refusal(action, resource, reason, Outcome::Denied, Error::Refused)
            .await
    }

    async fn refusal(
        &self,
        action: &str,
        resource: &str,
        reason: &str,
        outcome: Outcome,
        answer: Error,
    ) -> Error {
        let event = self
            .event("request.refused", action)
            .resource(resource)
            .outcome(outcome)
            .param("reason", reason)
            .build();
        match self.record_now(event).await {
            Ok(()) => answer,
            Err(e) => e,
        }
    }

    /// An event of this request: tenant, actor, request id. Add to it and pass it to
    /// [`Scope::record`].
    #[must_use]
    pub fn event(&self, event_type: &str, action: &str) -> AuditEventBuilder {
        AuditEvent::builder(self.ctx.tenant(), event_type, action)
            .actor(&self.actor())
            .request_id(self.ctx.request_id())
    }

    /// [`Scope::event`] for an action `decision` allowed: with the policy's reasons and
    /// version.
    #[must_use]
    pub fn event_for(
        &self,
        decision: &Decision,
        event_type: &str,
        action: &str,
    ) -> AuditEventBuilder {
        let mut b = self
            .event(event_type, action)
            .param("policy_version", &decision.version);
        for r in &decision.reasons {
            b = b.policy(r);
        }
        b
    }

    /// Writes `event` in the transaction: it reaches the audit log if and only if the
    /// transaction commits.
    ///
    /// # Errors
    /// [`Error::Database`]; an event of another tenant is refused by row-level security.
    pub async fn record(&mut self, event: AuditEvent) -> Result<(), Error> {
        let outbox = self.nova.inner.outbox.clone();
        let tx = self.tx().await?;
        outbox.write(tx, &event).await
    }

    /// Commits the transaction (data and events together), if one was opened.
    ///
    /// # Errors
    /// [`Error::Tenancy`] when the commit fails: then neither the data nor the events are
    /// kept.
    pub async fn commit(mut self) -> Result<(), Error> {
        if let Some(tx) = self.tx.take() {
            tx.commit().await?;
            self.nova.wake_relay();
        }
        Ok(())
    }

    /// Records `event` in the transaction and commits: [`Scope::record`] then
    /// [`Scope::commit`].
    ///
    /// # Errors
    /// As those two; then neither the data nor the event is kept.
    pub async fn commit_with(mut self, event: AuditEvent) -> Result<(), Error> {
        self.record(event).await?;
        self.commit().await
    }

    /// Creates an API key for the caller's tenant as `decision` allowed, records
    /// `admin.api_key_created` in the transaction and commits. The key lives in Nova's own
    /// tables, outside the tenant transaction: should the event not commit, the key is
    /// revoked, so that no usable key lacks its event (and should revoking fail too, the
    /// event is appended to the log directly). The whole sequence runs in its own task:
    /// a caller that stops waiting (a client gone, a timeout) cannot leave it half done.
    /// The secret is the only copy: show it once.
    ///
    /// # Errors
    /// [`Error::Refused`] (audited) for a key of another tenant; [`Error::Auth`] when the
    /// key cannot be created; the commit's errors.
    pub async fn create_api_key(
        mut self,
        decision: &Decision,
        spec: nova_auth::NewApiKey,
    ) -> Result<(String, nova_auth::IssuedSecret), Error> {
        if spec.tenant != self.ctx.tenant() {
            return Err(self
                .refuse("api_keys.create", "api-keys", "a key for another tenant")
                .await);
        }
        let decision = decision.clone();
        detached(async move {
            let inner = std::sync::Arc::clone(&self.nova.inner);
            let keys = &inner.api_keys;
            let (key_id, secret) = keys.create(spec).await?;
            let event = self
                .event_for(&decision, "admin.api_key_created", "api_keys.create")
                .resource(&format!("api-keys/{key_id}"))
                .build();
            let fallback = event.clone();
            let committed = match self.record(event).await {
                Ok(()) => self.commit().await,
                Err(e) => Err(e),
            };
            if let Err(e) = committed {
                if let Err(revoke) = keys.revoke(&key_id).await {
                    tracing::error!(target: "nova::audit", error = %revoke, "an API key whose event did not commit could not be revoked");
                    let _ = inner.audit.append(fallback).await;
                }
                return Err(e);
            }
            Ok((key_id, secret))
        })
        .await
    }

    /// Revokes the caller's tenant's API key `key_id` as `decision` allowed. Another
    /// tenant's key is "not found" like a missing one (and audited as such). The event
    /// `admin.api_key_revoked` is made durable **before** the key is revoked (an event
    /// must never be missing for a revocation), and both run in their own task, so a
    /// caller that stops waiting cannot leave the event without the revocation; should
    /// revoking fail, `admin.api_key_revoke_failed` follows the event.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Audit`]; [`Error::Auth`] when revoking fails.
    pub async fn revoke_api_key(&mut self, decision: &Decision, key_id: &str) -> Result<(), Error> {
        let inner = std::sync::Arc::clone(&self.nova.inner);
        let resource = format!("api-keys/{key_id}");
        let tenant = self.ctx.tenant();
        let found = nova_auth::ApiKeyStore::get(inner.api_keys.store(), key_id).await?;
        let Some(record) = found.filter(|r| r.tenant == tenant) else {
            return Err(self.not_found("api_keys.revoke", &resource).await);
        };
        let event = self
            .event_for(decision, "admin.api_key_revoked", "api_keys.revoke")
            .resource(&resource)
            .build();
        let failed = self
            .event_for(decision, "admin.api_key_revoke_failed", "api_keys.revoke")
            .resource(&resource)
            .outcome(Outcome::Failure)
            .build();
        detached(async move {
            inner.audit.append(event).await?;
            if let Err(e) = inner.api_keys.revoke(&record.key_id).await {
                let _ = inner.audit.append(failed).await;
                return Err(e.into());
            }
            Ok(())
        })
        .await
    }

    /// Adds a delegation grant to the caller's tenant's policy as `decision` allowed,
    /// records `admin.grant_created` in the transaction and commits. Grants live in the
    /// policy store, outside the transaction: should the event not commit, the grant is
    /// withdrawn. Runs in its own task, like [`Scope::create_api_key`].
    ///
    /// # Errors
    /// [`Error::Policy`] for a grant the store refuses; the commit's errors.
    pub async fn grant(
        mut self,
        decision: &Decision,
        grant: nova_policy::Grant,
    ) -> Result<(), Error> {
        let decision = decision.clone();
        detached(async move {
            let tenant = self.ctx.tenant();
            let id = grant.id.to_string();
            let inner = std::sync::Arc::clone(&self.nova.inner);
            inner.policy.grant(tenant, grant)?;
            let event = self
                .event_for(&decision, "admin.grant_created", "grants.create")
                .resource(&format!("grants/{id}"))
                .build();
            let committed = match self.record(event).await {
                Ok(()) => self.commit().await,
                Err(e) => Err(e),
            };
            if let Err(e) = committed {
                inner.policy.revoke(tenant, &id)?;
                return Err(e);
            }
            Ok(())
        })
        .await
    }

    /// Rolls the transaction back, events included.
    ///
    /// # Errors
    /// [`Error::Tenancy`].
    pub async fn rollback(mut self) -> Result<(), Error> {
        if let Some(tx) = self.tx.take() {
            tx.rollback().await?;
        }
        Ok(())
    }

    async fn ensure_tenant_keys(&mut self) -> Result<(), Error> {
        if !self.tenant_keys_ready {
            let keyring = &self.nova.inner.keyring;
            if keyring.tenant_key_version(self.ctx.tenant())?.is_none() {
                keyring.provision_tenant(self.ctx.tenant()).await?;
            }
            self.tenant_keys_ready = true;
        }
        Ok(())
    }

    /// Seals `value` for `table.column` of row `row`, under the key the declaration names:
    /// `subject` must be the row's data subject for a subject-keyed column and `None` for a
    /// tenant-keyed one. Returns the envelope as text, for a `TEXT` column.
    ///
    /// # Errors
    /// [`Error::UnknownColumn`], [`Error::WrongKey`], [`Error::Crypto`] (for example
    /// [`CryptoError::KeyDestroyed`] for an erased subject).
    pub async fn seal(
        &mut self,
        table: &str,
        column: &str,
        row: Uuid,
        subject: Option<Uuid>,
        value: &str,
    ) -> Result<String, Error> {
        self.ensure_tenant_keys().await?;
        let sealed = self.nova.inner.sealed.get(table, column)?;
        let field = sealed.column.row(row);
        match (sealed.key, subject) {
            (KeyOf::Tenant, None) => Ok(self
                .nova
                .inner
                .keyring
                .seal(&self.ctx, &field, value.as_bytes())?
                .to_text()),
            (KeyOf::Subject, Some(subject)) => Ok(self
                .nova
                .inner
                .subjects
                .seal(&self.ctx, subject, &field, value.as_bytes())
                .await?
                .to_text()),
            (key, _) => Err(wrong_key(table, column, key)),
        }
    }

    /// Opens what [`Scope::seal`] stored for `table.column` of row `row`: `None` when the
    /// stored value is `NULL` or its data subject was erased (crypto-shredded).
    ///
    /// # Errors
    /// [`Error::UnknownColumn`]; [`Error::Crypto`] for a value that does not open (tampered,
    /// moved from another row or tenant).
    pub async fn open(
        &mut self,
        table: &str,
        column: &str,
        row: Uuid,
        stored: Option<&str>,
    ) -> Result<Option<String>, Error> {
        let Some(stored) = stored else {
            return Ok(None);
        };
        let inner = std::sync::Arc::clone(&self.nova.inner);
        let sealed = inner.sealed.get(table, column)?;
        let field = sealed.column.row(row);
        let plain = match sealed.key {
            KeyOf::Tenant => {
                let env = Envelope::from_text(stored).map_err(CryptoError::from)?;
                inner.keyring.open(&self.ctx, &field, &env)?
            }
            KeyOf::Subject => {
                let env = SubjectEnvelope::from_text(stored).map_err(CryptoError::from)?;
                let subject = env.subject();
                if !self.handles.contains_key(&subject) {
                    let handle = inner.subjects.handle(&self.ctx, subject).await?;
                    self.handles.insert(subject, handle);
                }
                let handle = self
                    .handles
                    .get(&subject)
                    .ok_or(Error::Crypto(CryptoError::Authentication))?;
                match handle.open(&field, &env) {
                    Ok(p) => p,
                    Err(CryptoError::KeyDestroyed) => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
            }
        };
        String::from_utf8(plain.expose_secret().to_vec())
            .map(Some)
            .map_err(|_| Error::Crypto(CryptoError::NotUtf8))
    }

    /// The blind index of `value` for the indexed column `table.column`, to compare with
    /// in SQL (`WHERE email_index = $1`).
    ///
    /// # Errors
    /// [`Error::UnknownColumn`] (also for a column declared without an index);
    /// [`Error::Crypto`].
    pub async fn blind_index(
        &mut self,
        table: &str,
        column: &str,
        value: &str,
    ) -> Result<Vec<u8>, Error> {
        self.ensure_tenant_keys().await?;
        let inner = std::sync::Arc::clone(&self.nova.inner);
        let sealed = inner.sealed.get(table, column)?;
        if !sealed.indexed {
            return Err(Error::UnknownColumn {
                table: table.to_owned(),
                column: format!("{column} (blind index)"),
            });
        }
        Ok(inner
            .keyring
            .blind_index(&self.ctx, &sealed.column, value)?
            .as_bytes()
            .to_vec())
    }
}

fn wrong_key(table: &str, column: &str, key: KeyOf) -> Error {
    Error::WrongKey {
        table: table.to_owned(),
        column: column.to_owned(),
        expected: match key {
            KeyOf::Tenant => "the tenant's key",
            KeyOf::Subject => "a data subject's key",
        },
    }
}

/// Runs `work` in a task of its own and waits for it: dropping the wait does not stop the
/// work, so a sequence that must not stop half-way (a side effect and its audit event, or
/// its compensation) completes whatever becomes of the caller.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    tokio::spawn(work)
        .await
        .map_err(|e| Error::other(format!("a detached step did not finish: {e}")))?
}

/// Binds a [`SqlFilter`]'s parameters, in order, to a query whose other parameters come
/// first.
pub fn bind_filter<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    filter: &SqlFilter,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    for p in &filter.params {
        query = match p {
            SqlParam::Bool(b) => query.bind(*b),
            SqlParam::Long(v) => query.bind(*v),
            SqlParam::Text(t) => query.bind(t.clone()),
            SqlParam::Bools(v) => query.bind(v.clone()),
            SqlParam::Longs(v) => query.bind(v.clone()),
            SqlParam::Texts(v) => query.bind(v.clone()),
            // A parameter kind this version does not know: bind NULL, which the predicate
            // treats as no match (fail closed).
            _ => query.bind(None::<String>),
        };
    }
    query
}

/// A scope's futures must be `Send`, or no web framework can run its handlers.
#[allow(dead_code, clippy::let_underscore_future)]
fn futures_are_send(scope: &mut Scope, attrs: &Attrs) {
    fn send<T: Send>(_: T) {}
    send(scope.authorize("a", Target::new("T", attrs)));
    send(scope.tx());
    send(scope.seal("t", "c", Uuid::nil(), None, "v"));
    send(scope.open("t", "c", Uuid::nil(), None));
    send(scope.record_now(AuditEvent::builder(nova_tenancy::TenantId::new_v4(), "e", "a").build()));
}
