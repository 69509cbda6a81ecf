//! The HTTP API. Each handler: the caller's verified context (from the guard), a tenant
//! transaction, the caller's attributes read inside it, a policy decision, the SQL, the
//! audit event, commit. Refusals say nothing about why; a ticket the caller may not read
//! is "not found", whether or not it exists.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use nova_audit::{AuditEvent, Outcome};
use nova_auth::{ApiKeyStore, NewApiKey};
use nova_crypto::{CryptoError, SubjectEnvelope, SubjectHandle};
use nova_policy::{Attrs, Expr, Grant, Request, ResourceTable, SqlParam, Value};
use nova_tenancy::privacy::PrivacyError;
use nova_tenancy::{
    CredentialVerifier, Role, TenantContext, TenantId, TenantTx, UserId, VerifiedIdentity,
};
use serde::Deserialize;
use serde_json::json;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Postgres, Row};
use uuid::Uuid;

use super::{AppState, Checks, Error, subject};

/// The service's routes, over `state` (add the guard layer around it; see [`super::start`]).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/tickets", get(list_tickets).post(create_ticket))
        .route("/tickets/{id}", get(get_ticket).patch(update_ticket))
        .route("/tickets/{id}/comments", post(add_comment))
        .route("/users", post(create_user))
        .route("/users/lookup", get(lookup_user))
        .route("/admin/api-keys", post(create_api_key))
        .route("/admin/api-keys/{id}", delete(revoke_api_key))
        .route("/admin/grants", post(create_grant))
        .route("/admin/backup", get(backup))
        .route("/admin/retention", post(run_retention))
        .route("/privacy/subjects/{id}/export", get(export_subject))
        .route("/privacy/subjects/{id}/erase", post(erase_subject))
        .route("/privacy/subjects/{id}/consents", post(record_consent))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------
// Errors

/// What a handler answers when it does not succeed. Internal errors are logged, never sent.
#[derive(Debug)]
pub(crate) enum ApiError {
    BadRequest(&'static str),
    Forbidden,
    NotFound,
    Internal(Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::BadRequest(why) => (StatusCode::BAD_REQUEST, why).into_response(),
            Self::Forbidden => StatusCode::FORBIDDEN.into_response(),
            Self::NotFound => StatusCode::NOT_FOUND.into_response(),
            Self::Internal(e) => {
                eprintln!("ticketing: internal error: {e}");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

macro_rules! internal_from {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for ApiError {
            fn from(e: $t) -> Self {
                Self::Internal(Box::new(e))
            }
        }
    )*};
}
internal_from!(
    sqlx::Error,
    nova_tenancy::Error,
    CryptoError,
    nova_audit::AppendError,
    nova_auth::AuthError,
    nova_policy::PolicyError,
    nova_policy::SqlError,
    serde_json::Error,
);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self::Internal(e)
    }
}

type ApiResult<T> = Result<T, ApiError>;

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadRequest(why) => write!(f, "bad request: {why}"),
            Self::Forbidden => f.write_str("forbidden"),
            Self::NotFound => f.write_str("not found"),
            Self::Internal(e) => write!(f, "internal: {e}"),
        }
    }
}

impl std::error::Error for ApiError {}

// ---------------------------------------------------------------------------------------
// The caller

/// Stands in for a credential check in the unguarded baseline only.
struct Unchecked;

impl CredentialVerifier for Unchecked {
    fn verifier_name(&self) -> &'static str {
        "ticketing/unchecked-baseline"
    }
}

/// The caller: with checks on, the context the guard verified; in the baseline, whatever
/// the `x-tenant-id`, `x-user-id` and `x-roles` headers claim.
pub(crate) struct Caller(pub(crate) TenantContext);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = StatusCode;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if state.checks == Checks::On {
            return parts
                .extensions
                .get::<TenantContext>()
                .cloned()
                .map(Self)
                .ok_or(StatusCode::UNAUTHORIZED);
        }
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let tenant: TenantId = header("x-tenant-id")
            .and_then(|t| t.parse().ok())
            .ok_or(StatusCode::UNAUTHORIZED)?;
        let user: UserId = header("x-user-id")
            .and_then(|t| t.parse().ok())
            .ok_or(StatusCode::UNAUTHORIZED)?;
        let roles: Vec<Role> = header("x-roles")
            .unwrap_or("")
            .split(',')
            .filter_map(|r| Role::new(r.trim()).ok())
            .collect();
        Ok(Self(TenantContext::from_verified(
            &Unchecked,
            VerifiedIdentity::new(tenant).user(user).roles(roles),
        )))
    }
}

impl Caller {
    fn tenant(&self) -> Uuid {
        *self.0.tenant().as_uuid()
    }

    fn user_id(&self) -> Option<Uuid> {
        self.0.user().map(|u| *u.as_uuid())
    }

    fn user_text(&self) -> String {
        self.user_id().map(|u| u.to_string()).unwrap_or_default()
    }

    fn actor(&self) -> String {
        match self.0.user() {
            Some(u) if self.0.has_role("service") => format!("service:{u}"),
            Some(u) => format!("user:{u}"),
            None => "service".into(),
        }
    }

    fn event(&self, event_type: &str, action: &str, resource: &str) -> AuditEvent {
        AuditEvent::builder(self.0.tenant(), event_type, action)
            .actor(&self.actor())
            .resource(resource)
            .request_id(self.0.request_id())
            .build()
    }
}

// ---------------------------------------------------------------------------------------
// Transactions

/// The caller's attributes for the policy, and its queues for the baseline's SQL.
pub(crate) struct Principal {
    attrs: Attrs,
    queues: Vec<String>,
}

impl std::ops::Deref for Principal {
    type Target = Attrs;

    fn deref(&self) -> &Attrs {
        &self.attrs
    }
}

/// A tenant transaction (checks on) or a plain one (the baseline).
pub(crate) enum Db {
    Tenant(TenantTx),
    Plain(sqlx::Transaction<'static, Postgres>),
}

impl Db {
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        match self {
            Self::Tenant(t) => t,
            Self::Plain(t) => t,
        }
    }

    pub(crate) async fn commit(self) -> ApiResult<()> {
        match self {
            Self::Tenant(t) => t.commit().await?,
            Self::Plain(t) => t.commit().await?,
        }
        Ok(())
    }
}

impl AppState {
    pub(crate) async fn begin(&self, caller: &Caller) -> ApiResult<Db> {
        Ok(match self.checks {
            Checks::On => Db::Tenant(self.tenants.begin(&caller.0).await?),
            Checks::Off => Db::Plain(
                self.plain
                    .as_ref()
                    .ok_or_else(|| ApiError::Internal("no baseline pool".into()))?
                    .begin()
                    .await?,
            ),
        })
    }

    fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.names.app)
    }

    /// The caller's attributes, read in the caller's transaction. A person must have a
    /// (not erased) user row in the tenant; a service account has no attributes.
    async fn principal(&self, db: &mut Db, caller: &Caller) -> ApiResult<Principal> {
        if caller.0.has_role("service") {
            return Ok(Principal {
                attrs: Attrs::new()
                    .with("department", "")
                    .with("queues", Value::strings::<_, &str>([])),
                queues: Vec::new(),
            });
        }
        let user = caller.user_id().ok_or(ApiError::Forbidden)?;
        let sql = format!(
            "SELECT department, queues FROM {} WHERE tenant_id = $1 AND id = $2 AND erased_at IS NULL",
            self.table("users")
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(caller.tenant())
            .bind(user)
            .fetch_optional(db.conn())
            .await?
            .ok_or(ApiError::Forbidden)?;
        let department: String = row.try_get(0)?;
        let queues: Vec<String> = row.try_get(1)?;
        Ok(Principal {
            attrs: Attrs::new()
                .with("department", department)
                .with("queues", Value::strings(queues.iter().map(String::as_str))),
            queues,
        })
    }

    /// A policy decision for the caller, reported to the audit hook when denied. Always
    /// allowed in the baseline.
    fn allowed(
        &self,
        caller: &Caller,
        principal: &Attrs,
        action: &str,
        resource_type: &str,
        resource: &Attrs,
    ) -> bool {
        if self.checks == Checks::Off {
            return true;
        }
        let user = caller.user_text();
        // `context.mfa` from the credential: a second factor no older than the configured
        // maximum (`auth_time` and `amr` in the token).
        let context =
            Attrs::authentication(&caller.0, self.mfa_max_age, std::time::SystemTime::now());
        let req = Request::new(action, resource_type)
            .principal_from(&caller.0, &user, principal)
            .resource(resource)
            .context(&context);
        self.policy.authorize(&caller.0, &req).is_allowed()
    }

    /// Appends `event` and waits until it is durable; with checks off, nothing.
    async fn audit(&self, event: AuditEvent) -> ApiResult<()> {
        if self.checks == Checks::On {
            self.audit.append(event).await?;
        }
        Ok(())
    }

    async fn ensure_tenant_keys(&self, tenant: TenantId) -> ApiResult<()> {
        if self.keyring.tenant_key_version(tenant)?.is_none() {
            self.keyring.provision_tenant(tenant).await?;
        }
        Ok(())
    }

    /// Seals `value` for `subject` (checks on), or stores it as it is (baseline).
    async fn seal(
        &self,
        caller: &Caller,
        subject: Uuid,
        column: &nova_crypto::Column,
        row: Uuid,
        value: &str,
    ) -> ApiResult<String> {
        if self.checks == Checks::Off {
            return Ok(value.to_owned());
        }
        self.ensure_tenant_keys(caller.0.tenant()).await?;
        let env = self
            .subjects
            .seal(&caller.0, subject, &column.row(row), value.as_bytes())
            .await?;
        Ok(env.to_text())
    }

    /// Resolves the keys of `subjects` once each, for a request that opens their fields
    /// (none with checks off).
    async fn handles(
        &self,
        caller: &Caller,
        subjects: impl IntoIterator<Item = Uuid>,
    ) -> ApiResult<HashMap<Uuid, SubjectHandle>> {
        let mut out = HashMap::new();
        if self.checks == Checks::On {
            for subject in subjects {
                if let std::collections::hash_map::Entry::Vacant(e) = out.entry(subject) {
                    e.insert(self.subjects.handle(&caller.0, subject).await?);
                }
            }
        }
        Ok(out)
    }

    /// Opens a sealed value: `None` when its subject was erased.
    fn open(
        &self,
        handles: &HashMap<Uuid, SubjectHandle>,
        subject: Uuid,
        column: &nova_crypto::Column,
        row: Uuid,
        stored: Option<String>,
    ) -> ApiResult<Option<String>> {
        let Some(stored) = stored else {
            return Ok(None);
        };
        if self.checks == Checks::Off {
            return Ok(Some(stored));
        }
        let handle = handles
            .get(&subject)
            .ok_or_else(|| ApiError::Internal("subject key not resolved".into()))?;
        let env = SubjectEnvelope::from_text(&stored).map_err(CryptoError::from)?;
        match handle.open(&column.row(row), &env) {
            Ok(plain) => Ok(Some(
                String::from_utf8(secrecy::ExposeSecret::expose_secret(&plain).to_vec())
                    .map_err(|_| ApiError::Internal("sealed value is not UTF-8".into()))?,
            )),
            Err(CryptoError::KeyDestroyed) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Input checks

fn name_ok(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn text_ok(s: &str, max: usize) -> bool {
    !s.trim().is_empty() && s.len() <= max && !s.contains('\0')
}

fn ticket_attrs(queue: &str, department: &str, priority: i64) -> Attrs {
    Attrs::new()
        .with("queue", queue)
        .with("department", department)
        .with("priority", priority)
}

fn tenant_attrs() -> Attrs {
    Attrs::new().with("plan", "standard")
}

fn subject_attrs() -> Attrs {
    Attrs::new().with("kind", "user")
}

// ---------------------------------------------------------------------------------------
// Tickets

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTicket {
    queue: String,
    department: String,
    priority: i32,
    title: String,
    body: String,
    requester_id: Uuid,
}

async fn create_ticket(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Json(t): Json<NewTicket>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    if !name_ok(&t.queue) || !name_ok(&t.department) {
        return Err(ApiError::BadRequest(
            "queue and department: 1-64 of [a-z0-9_-]",
        ));
    }
    if !(1..=5).contains(&t.priority) || !text_ok(&t.title, 200) || !text_ok(&t.body, 10_000) {
        return Err(ApiError::BadRequest(
            "priority 1-5, title and body not empty",
        ));
    }
    let mut db = s.begin(&caller).await?;
    let me = s.principal(&mut db, &caller).await?;
    let res = ticket_attrs(&t.queue, &t.department, i64::from(t.priority));
    if !s.allowed(&caller, &me, "create", "Ticket", &res) {
        return Err(ApiError::Forbidden);
    }
    let requester_known: Option<i32> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT 1 FROM {} WHERE tenant_id = $1 AND id = $2 AND erased_at IS NULL",
        s.table("users")
    )))
    .bind(caller.tenant())
    .bind(t.requester_id)
    .fetch_optional(db.conn())
    .await?;
    if requester_known.is_none() {
        return Err(ApiError::BadRequest("unknown requester"));
    }
    let id = Uuid::new_v4();
    let body = s
        .seal(&caller, t.requester_id, &s.cols.ticket_body, id, &t.body)
        .await?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (tenant_id, id, queue, department, priority, requester_id, title, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        s.table("tickets")
    )))
    .bind(caller.tenant())
    .bind(id)
    .bind(&t.queue)
    .bind(&t.department)
    .bind(t.priority)
    .bind(t.requester_id)
    .bind(&t.title)
    .bind(&body)
    .execute(db.conn())
    .await?;
    s.audit(caller.event("data.write", "tickets.create", &format!("tickets/{id}")))
        .await?;
    db.commit().await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

fn ticket_json(row: &PgRow) -> ApiResult<serde_json::Value> {
    Ok(json!({
        "tenant_id": row.try_get::<Uuid, _>("tenant_id")?,
        "id": row.try_get::<Uuid, _>("id")?,
        "queue": row.try_get::<String, _>("queue")?,
        "department": row.try_get::<String, _>("department")?,
        "priority": row.try_get::<i32, _>("priority")?,
        "status": row.try_get::<String, _>("status")?,
        "title": row.try_get::<Option<String>, _>("title")?,
    }))
}

fn bind_param<'q>(
    q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    p: &SqlParam,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    match p {
        SqlParam::Bool(b) => q.bind(*b),
        SqlParam::Long(v) => q.bind(*v),
        SqlParam::Text(t) => q.bind(t.clone()),
        SqlParam::Bools(v) => q.bind(v.clone()),
        SqlParam::Longs(v) => q.bind(v.clone()),
        SqlParam::Texts(v) => q.bind(v.clone()),
        _ => q,
    }
}

const TICKET_COLUMNS: &str =
    "t.tenant_id, t.id, t.queue, t.department, t.priority, t.status, t.title";

/// Lists the tickets the caller may read: the policy, compiled into the `WHERE` clause,
/// under the tenant's row-level security.
async fn list_tickets(
    State(s): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<serde_json::Value>> {
    let mut db = s.begin(&caller).await?;
    let me = s.principal(&mut db, &caller).await?;
    let rows = if s.checks == Checks::On {
        // Built before any await: a request borrows attributes that are not `Send`.
        let filter = {
            let user = caller.user_text();
            let context =
                Attrs::authentication(&caller.0, s.mfa_max_age, std::time::SystemTime::now());
            let req = Request::new("read", "Ticket")
                .principal_from(&caller.0, &user, &me.attrs)
                .context(&context);
            s.policy.policy(caller.0.tenant()).sql_filter(
                &req,
                &ResourceTable::new().alias("t")?,
                2,
            )?
        };
        let sql = format!(
            "SELECT {TICKET_COLUMNS} FROM {} t WHERE t.tenant_id = $1 AND ({}) \
             ORDER BY t.created_at DESC LIMIT 50",
            s.table("tickets"),
            filter.sql
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(caller.tenant());
        for p in &filter.params {
            q = bind_param(q, p);
        }
        q.fetch_all(db.conn()).await?
    } else {
        // The baseline's hand-written equivalent of the agents' rule.
        let queues = &me.queues;
        let sql = format!(
            "SELECT {TICKET_COLUMNS} FROM {} t WHERE t.tenant_id = $1 AND t.queue = ANY($2) \
             ORDER BY t.created_at DESC LIMIT 50",
            s.table("tickets")
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(caller.tenant())
            .bind(queues)
            .fetch_all(db.conn())
            .await?
    };
    db.commit().await?;
    let tickets = rows
        .iter()
        .map(ticket_json)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(json!({ "tickets": tickets })))
}

/// Reads a ticket row and checks `action` on it; "not found" when it is absent or the
/// caller may not act on it, so that existence does not leak.
async fn ticket_for(
    s: &AppState,
    db: &mut Db,
    caller: &Caller,
    me: &Attrs,
    id: Uuid,
    action: &str,
) -> ApiResult<PgRow> {
    let sql = format!(
        "SELECT {TICKET_COLUMNS}, t.body, t.requester_id FROM {} t \
         WHERE t.tenant_id = $1 AND t.id = $2",
        s.table("tickets")
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(caller.tenant())
        .bind(id)
        .fetch_optional(db.conn())
        .await?
        .ok_or(ApiError::NotFound)?;
    let res = ticket_attrs(
        row.try_get("queue")?,
        row.try_get("department")?,
        i64::from(row.try_get::<i32, _>("priority")?),
    );
    if s.allowed(caller, me, action, "Ticket", &res) {
        Ok(row)
    } else {
        Err(ApiError::NotFound)
    }
}

async fn get_ticket(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<serde_json::Value>> {
    let mut db = s.begin(&caller).await?;
    let me = s.principal(&mut db, &caller).await?;
    let row = ticket_for(&s, &mut db, &caller, &me, id, "read").await?;
    let requester: Uuid = row.try_get("requester_id")?;
    let comments = sqlx::query(AssertSqlSafe(format!(
        "SELECT id, author_id, body FROM {} WHERE tenant_id = $1 AND ticket_id = $2 \
         ORDER BY created_at, id",
        s.table("comments")
    )))
    .bind(caller.tenant())
    .bind(id)
    .fetch_all(db.conn())
    .await?;
    db.commit().await?;
    // One key lookup per person whose text is on the page.
    let mut people = vec![requester];
    for c in &comments {
        people.push(c.try_get("author_id")?);
    }
    let handles = s.handles(&caller, people).await?;
    let mut ticket = ticket_json(&row)?;
    let body = s.open(
        &handles,
        requester,
        &s.cols.ticket_body,
        id,
        row.try_get("body")?,
    )?;
    ticket["requester_id"] = json!(requester);
    ticket["body"] = json!(body);
    let mut out = Vec::with_capacity(comments.len());
    for c in &comments {
        let (cid, author): (Uuid, Uuid) = (c.try_get("id")?, c.try_get("author_id")?);
        let body = s.open(
            &handles,
            author,
            &s.cols.comment_body,
            cid,
            c.try_get("body")?,
        )?;
        out.push(json!({ "id": cid, "author_id": author, "body": body }));
    }
    ticket["comments"] = json!(out);
    Ok(Json(ticket))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketChange {
    status: Option<String>,
    priority: Option<i32>,
}

async fn update_ticket(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(change): Json<TicketChange>,
) -> ApiResult<StatusCode> {
    if let Some(st) = &change.status
        && !matches!(st.as_str(), "open" | "pending" | "closed")
    {
        return Err(ApiError::BadRequest("status: open, pending or closed"));
    }
    if change.priority.is_some_and(|p| !(1..=5).contains(&p)) {
        return Err(ApiError::BadRequest("priority 1-5"));
    }
    let mut db = s.begin(&caller).await?;
    let me = s.principal(&mut db, &caller).await?;
    let row = ticket_for(&s, &mut db, &caller, &me, id, "update").await?;
    // The ticket as it would be after the change must be allowed too.
    let after = ticket_attrs(
        row.try_get("queue")?,
        row.try_get("department")?,
        i64::from(change.priority.unwrap_or(row.try_get("priority")?)),
    );
    if !s.allowed(&caller, &me, "update", "Ticket", &after) {
        return Err(ApiError::Forbidden);
    }
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {} SET status = coalesce($3, status), priority = coalesce($4, priority), \
         closed_at = CASE WHEN $3 = 'closed' THEN now() ELSE closed_at END \
         WHERE tenant_id = $1 AND id = $2",
        s.table("tickets")
    )))
    .bind(caller.tenant())
    .bind(id)
    .bind(change.status.as_deref())
    .bind(change.priority)
    .execute(db.conn())
    .await?;
    s.audit(caller.event("data.write", "tickets.update", &format!("tickets/{id}")))
        .await?;
    db.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewComment {
    body: String,
}

async fn add_comment(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(ticket): Path<Uuid>,
    Json(c): Json<NewComment>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    if !text_ok(&c.body, 10_000) {
        return Err(ApiError::BadRequest("body: 1-10000 bytes"));
    }
    let author = match caller.user_id() {
        Some(u) if !caller.0.has_role("service") => u,
        _ => return Err(ApiError::Forbidden),
    };
    let mut db = s.begin(&caller).await?;
    let me = s.principal(&mut db, &caller).await?;
    ticket_for(&s, &mut db, &caller, &me, ticket, "comment").await?;
    let id = Uuid::new_v4();
    let body = s
        .seal(&caller, author, &s.cols.comment_body, id, &c.body)
        .await?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (tenant_id, id, ticket_id, author_id, body) VALUES ($1, $2, $3, $4, $5)",
        s.table("comments")
    )))
    .bind(caller.tenant())
    .bind(id)
    .bind(ticket)
    .bind(author)
    .bind(&body)
    .execute(db.conn())
    .await?;
    s.audit(caller.event(
        "data.write",
        "comments.create",
        &format!("tickets/{ticket}/comments/{id}"),
    ))
    .await?;
    db.commit().await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

// ---------------------------------------------------------------------------------------
// Users

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    email: String,
    name: String,
    department: String,
    queues: Vec<String>,
    role: String,
}

async fn create_user(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Json(u): Json<NewUser>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    if !text_ok(&u.email, 254) || !u.email.contains('@') || !text_ok(&u.name, 200) {
        return Err(ApiError::BadRequest("email and name"));
    }
    if !name_ok(&u.department) || u.queues.len() > 64 || !u.queues.iter().all(|q| name_ok(q)) {
        return Err(ApiError::BadRequest("department and queues: [a-z0-9_-]"));
    }
    if !matches!(
        u.role.as_str(),
        "customer" | "agent" | "manager" | "admin" | "dpo"
    ) {
        return Err(ApiError::BadRequest("role"));
    }
    let mut db = s.begin(&caller).await?;
    let me = s.principal(&mut db, &caller).await?;
    if !s.allowed(&caller, &me, "manage", "Tenant", &tenant_attrs()) {
        return Err(ApiError::Forbidden);
    }
    let queues: Vec<&str> = u.queues.iter().map(String::as_str).collect();
    let spec = UserSpec {
        email: &u.email,
        name: &u.name,
        department: &u.department,
        queues: &queues,
        role: &u.role,
    };
    let id = insert_user(&s, &caller, &mut db, &spec).await?;
    s.audit(caller.event("data.write", "users.create", &format!("users/{id}")))
        .await?;
    db.commit().await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

/// A user to add: a person who signs in (agent, manager, admin, dpo) or a customer who
/// only files tickets.
#[derive(Clone, Copy)]
pub struct UserSpec<'a> {
    /// Sealed, with a blind index for lookups.
    pub email: &'a str,
    /// Sealed.
    pub name: &'a str,
    /// `[a-z0-9_-]`.
    pub department: &'a str,
    /// The queues an agent works.
    pub queues: &'a [&'a str],
    /// `customer`, `agent`, `manager`, `admin` or `dpo`.
    pub role: &'a str,
}

impl std::fmt::Debug for UserSpec<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Email and name are personal data: never in logs.
        f.debug_struct("UserSpec")
            .field("department", &self.department)
            .field("queues", &self.queues)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

async fn insert_user(
    s: &AppState,
    caller: &Caller,
    db: &mut Db,
    u: &UserSpec<'_>,
) -> ApiResult<Uuid> {
    let id = Uuid::new_v4();
    let (email, name) = (
        s.seal(caller, id, &s.cols.email, id, u.email).await?,
        s.seal(caller, id, &s.cols.name, id, u.name).await?,
    );
    let index = match s.checks {
        Checks::On => Some(
            s.keyring
                .blind_index(&caller.0, &s.cols.email, u.email)?
                .as_bytes()
                .to_vec(),
        ),
        Checks::Off => None,
    };
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (tenant_id, id, display_name, email, email_index, department, queues, role) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        s.table("users")
    )))
    .bind(caller.tenant())
    .bind(id)
    .bind(&name)
    .bind(&email)
    .bind(index)
    .bind(u.department)
    .bind(u.queues)
    .bind(u.role)
    .execute(db.conn())
    .await?;
    Ok(id)
}

/// Adds a user with no caller — the first admin of a new tenant, or seed data — through a
/// system context (which Nova reports), and records it in the audit log.
///
/// # Errors
/// Database, key and audit errors.
pub async fn onboard_user(
    s: &AppState,
    tenant: TenantId,
    spec: &UserSpec<'_>,
) -> Result<Uuid, Error> {
    let caller = Caller(TenantContext::system(tenant, "ticketing: onboarding")?);
    let mut db = s.begin(&caller).await?;
    let id = insert_user(s, &caller, &mut db, spec).await?;
    s.audit(caller.event("admin.onboard", "users.onboard", &format!("users/{id}")))
        .await?;
    db.commit().await?;
    Ok(id)
}

#[derive(Deserialize)]
struct ByEmail {
    email: String,
}

/// Finds users by email through the blind index: the server never sees the emails.
async fn lookup_user(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<ByEmail>,
) -> ApiResult<Json<serde_json::Value>> {
    if !text_ok(&q.email, 254) {
        return Err(ApiError::BadRequest("email"));
    }
    let mut db = s.begin(&caller).await?;
    let me = s.principal(&mut db, &caller).await?;
    if !s.allowed(&caller, &me, "manage", "Tenant", &tenant_attrs()) {
        return Err(ApiError::Forbidden);
    }
    let index = s.keyring.blind_index(&caller.0, &s.cols.email, &q.email)?;
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT id, department, role FROM {} WHERE tenant_id = $1 AND email_index = $2",
        s.table("users")
    )))
    .bind(caller.tenant())
    .bind(index.as_bytes())
    .fetch_all(db.conn())
    .await?;
    db.commit().await?;
    let users = rows
        .iter()
        .map(|r| {
            Ok(json!({
                "id": r.try_get::<Uuid, _>("id")?,
                "department": r.try_get::<String, _>("department")?,
                "role": r.try_get::<String, _>("role")?,
            }))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(json!({ "users": users })))
}

// ---------------------------------------------------------------------------------------
// Administration

async fn admin_check(s: &AppState, caller: &Caller) -> ApiResult<()> {
    let mut db = s.begin(caller).await?;
    let me = s.principal(&mut db, caller).await?;
    db.commit().await?;
    if s.allowed(caller, &me, "manage", "Tenant", &tenant_attrs()) {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

/// Creates an API key for a new service account of the caller's tenant.
async fn create_api_key(
    State(s): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    admin_check(&s, &caller).await?;
    let spec = NewApiKey::new(caller.0.tenant(), UserId::new_v4(), Role::new("service")?);
    let (key_id, secret) = s.api_keys.create(spec).await?;
    s.audit(caller.event(
        "admin.api_key_created",
        "api_keys.create",
        &format!("api-keys/{key_id}"),
    ))
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "key_id": key_id, "secret": secret.expose() })),
    ))
}

async fn revoke_api_key(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> ApiResult<StatusCode> {
    admin_check(&s, &caller).await?;
    // Another tenant's key is "not found", like a key that does not exist.
    let record = s
        .api_keys
        .store()
        .get(&key_id)
        .await?
        .filter(|r| r.tenant == caller.0.tenant())
        .ok_or(ApiError::NotFound)?;
    s.api_keys.revoke(&record.key_id).await?;
    s.audit(caller.event(
        "admin.api_key_revoked",
        "api_keys.revoke",
        &format!("api-keys/{key_id}"),
    ))
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

impl From<nova_tenancy::NameError> for ApiError {
    fn from(e: nova_tenancy::NameError) -> Self {
        Self::Internal(Box::new(e))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGrant {
    id: String,
    to_user: Uuid,
    department: String,
    ttl_seconds: u64,
}

/// Lends read access to one department's tickets to one user, until it expires. Only a
/// manager of that department may.
async fn create_grant(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Json(g): Json<NewGrant>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    if !name_ok(&g.id) || !name_ok(&g.department) || !(1..=86_400).contains(&g.ttl_seconds) {
        return Err(ApiError::BadRequest("id, department, ttl_seconds 1-86400"));
    }
    let mut db = s.begin(&caller).await?;
    let me = s.principal(&mut db, &caller).await?;
    db.commit().await?;
    let dept = Attrs::new().with("name", g.department.as_str());
    if !s.allowed(&caller, &me, "delegate", "Department", &dept) {
        return Err(ApiError::Forbidden);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| ApiError::Internal(Box::new(e)))?
        .as_secs();
    let expires = now + g.ttl_seconds;
    let grant = Grant::to_principal(
        &g.id,
        &g.to_user.to_string(),
        ["read"],
        "Ticket",
        expires,
        &caller.actor(),
    )
    .when(Expr::resource("department").eq(Expr::string(&g.department)));
    s.policy.grant(caller.0.tenant(), grant)?;
    s.audit(caller.event(
        "admin.grant_created",
        "grants.create",
        &format!("grants/{}", g.id),
    ))
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": g.id, "expires_at": expires })),
    ))
}

/// The tenant's data, encrypted with the tenant's stream key (see `restore_backup`).
async fn backup(State(s): State<Arc<AppState>>, caller: Caller) -> ApiResult<Response> {
    admin_check(&s, &caller).await?;
    let bytes = subject::backup(&s, &caller.0).await?;
    s.audit(caller.event("admin.backup", "backup.create", "backup"))
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// Runs the retention rules for the caller's tenant.
async fn run_retention(
    State(s): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<serde_json::Value>> {
    admin_check(&s, &caller).await?;
    let report = subject::retention(&s, &caller.0).await?;
    let mut event = caller.event("privacy.retention", "retention.run", "retention");
    event.rows = Some(report.iter().map(|(_, n)| n).sum());
    s.audit(event).await?;
    Ok(Json(json!({ "rules": report
        .iter()
        .map(|(rule, rows)| json!({ "rule": rule, "rows": rows }))
        .collect::<Vec<_>>() })))
}

// ---------------------------------------------------------------------------------------
// Data-subject rights

async fn dpo_check(s: &AppState, caller: &Caller, action: &str) -> ApiResult<()> {
    let mut db = s.begin(caller).await?;
    let me = s.principal(&mut db, caller).await?;
    db.commit().await?;
    if s.allowed(caller, &me, action, "Subject", &subject_attrs()) {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

async fn export_subject(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(subject): Path<Uuid>,
) -> ApiResult<Json<serde_json::Value>> {
    dpo_check(&s, &caller, "export").await?;
    let doc = subject::export(&s, &caller.0, subject).await?;
    s.audit(caller.event(
        "privacy.export",
        "subject.export",
        &format!("subjects/{subject}"),
    ))
    .await?;
    Ok(Json(doc))
}

async fn erase_subject(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(subject): Path<Uuid>,
) -> ApiResult<Json<serde_json::Value>> {
    dpo_check(&s, &caller, "erase").await?;
    let mut event = caller.event(
        "privacy.erase",
        "subject.erase",
        &format!("subjects/{subject}"),
    );
    let report = subject::erase(&s, &caller.0, subject, &mut event).await?;
    Ok(Json(report))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewConsent {
    purpose: String,
    granted: bool,
    source: String,
}

async fn record_consent(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(subject): Path<Uuid>,
    Json(c): Json<NewConsent>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    if !text_ok(&c.source, 200) {
        return Err(ApiError::BadRequest("source"));
    }
    dpo_check(&s, &caller, "consent").await?;
    let Db::Tenant(mut tx) = s.begin(&caller).await? else {
        return Err(ApiError::Forbidden);
    };
    let consent = s
        .consents
        .record(&mut tx, subject, &c.purpose, c.granted, &c.source)
        .await
        .map_err(|e| match e {
            nova_tenancy::Error::Privacy(
                PrivacyError::InvalidPurpose | PrivacyError::InvalidSource,
            ) => ApiError::BadRequest("purpose: 1-64 of [a-z0-9_.-]; source: 1-256 bytes"),
            e => e.into(),
        })?;
    let mut event = caller.event(
        "privacy.consent",
        "consent.record",
        &format!("subjects/{subject}"),
    );
    event.outcome = Outcome::Success;
    s.audit(event).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "purpose": consent.purpose, "granted": consent.granted })),
    ))
}
