//! The HTTP API. Each handler receives a [`Scope`] for the caller the guard verified, reads
//! the caller's attributes in it, asks the policy, runs its SQL, records its audit event in
//! the same transaction, and commits. Refusals say nothing about why (the audit log does);
//! a ticket the caller may not read is "not found", whether or not it exists.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use nova::auth::{ApiKeyStore, NewApiKey};
use nova::policy::{Attrs, Expr, Grant, ResourceTable, Value};
use nova::tenancy::privacy::PrivacyError;
use nova::tenancy::{Role, TenantContext, TenantId, UserId};
use nova::{Decision, Scope, Target, bind_filter};
use serde::Deserialize;
use serde_json::json;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

use super::{App, Error, subject};

/// The service's routes, over `app` (add [`nova::Nova::guard`] around them; see
/// [`super::start`]).
pub fn router(app: App) -> Router {
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
        .with_state(app)
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

/// Any error: a refusal Nova already audited becomes its answer, the rest an internal
/// error.
impl<E: std::error::Error + Send + Sync + 'static> From<E> for ApiError {
    fn from(e: E) -> Self {
        let e: Error = Box::new(e);
        match e.downcast::<nova::Error>().map(|e| *e) {
            Ok(nova::Error::Denied { .. } | nova::Error::MfaRequired | nova::Error::Refused) => {
                Self::Forbidden
            }
            Ok(nova::Error::NotFound) => Self::NotFound,
            Ok(e) => Self::Internal(Box::new(e)),
            Err(e) => Self::Internal(e),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

// ---------------------------------------------------------------------------------------
// The caller

/// Reads the caller's attributes for the policy in the caller's transaction. A person must
/// have a (not erased) user row in the tenant; a service account has no attributes.
async fn principal(app: &App, scope: &mut Scope) -> ApiResult<()> {
    let ctx = scope.context().clone();
    if ctx.has_role("service") {
        scope.set_principal(
            Attrs::new()
                .with("department", "")
                .with("queues", Value::strings::<_, &str>([])),
        );
        return Ok(());
    }
    let Some(user) = ctx.user() else {
        return Err(ApiError::from(
            scope
                .refuse("principal", "users", "no user in the credential")
                .await,
        ));
    };
    let sql = format!(
        "SELECT department, queues FROM {} WHERE tenant_id = $1 AND id = $2 AND erased_at IS NULL",
        app.table("users")
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(ctx.tenant())
        .bind(user)
        .fetch_optional(&mut **scope.tx().await?)
        .await?;
    let Some(row) = row else {
        return Err(ApiError::from(
            scope
                .refuse(
                    "principal",
                    &format!("users/{user}"),
                    "no such user in the tenant",
                )
                .await,
        ));
    };
    let department: String = row.try_get(0)?;
    let queues: Vec<String> = row.try_get(1)?;
    scope.set_principal(
        Attrs::new()
            .with("department", department)
            .with("queues", Value::strings(queues.iter().map(String::as_str))),
    );
    Ok(())
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

/// Checks `action` on the tenant itself (administration) or a data subject.
async fn authorize_on(scope: &mut Scope, action: &str, kind: &str) -> ApiResult<Decision> {
    let attrs = match kind {
        "Tenant" => Attrs::new().with("plan", "standard"),
        _ => Attrs::new().with("kind", "user"),
    };
    Ok(scope.authorize(action, Target::new(kind, &attrs)).await?)
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
    State(app): State<App>,
    mut scope: Scope,
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
    principal(&app, &mut scope).await?;
    let res = ticket_attrs(&t.queue, &t.department, i64::from(t.priority));
    let allowed = scope
        .authorize("create", Target::new("Ticket", &res))
        .await?;
    let tenant = scope.context().tenant();
    let requester_known: Option<i32> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT 1 FROM {} WHERE tenant_id = $1 AND id = $2 AND erased_at IS NULL",
        app.table("users")
    )))
    .bind(tenant)
    .bind(t.requester_id)
    .fetch_optional(&mut **scope.tx().await?)
    .await?;
    if requester_known.is_none() {
        return Err(ApiError::BadRequest("unknown requester"));
    }
    let id = Uuid::new_v4();
    let body = scope
        .seal("tickets", "body", id, Some(t.requester_id), &t.body)
        .await?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (tenant_id, id, queue, department, priority, requester_id, title, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        app.table("tickets")
    )))
    .bind(tenant)
    .bind(id)
    .bind(&t.queue)
    .bind(&t.department)
    .bind(t.priority)
    .bind(t.requester_id)
    .bind(&t.title)
    .bind(&body)
    .execute(&mut **scope.tx().await?)
    .await?;
    let event = scope
        .event_for(&allowed, "data.write", "tickets.create")
        .resource(&format!("tickets/{id}"))
        .build();
    scope.record(event).await?;
    scope.commit().await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

fn ticket_json(row: &PgRow) -> ApiResult<serde_json::Value> {
    Ok(json!({
        "tenant_id": row.try_get::<TenantId, _>("tenant_id")?,
        "id": row.try_get::<Uuid, _>("id")?,
        "queue": row.try_get::<String, _>("queue")?,
        "department": row.try_get::<String, _>("department")?,
        "priority": row.try_get::<i32, _>("priority")?,
        "status": row.try_get::<String, _>("status")?,
        "title": row.try_get::<Option<String>, _>("title")?,
    }))
}

const TICKET_COLUMNS: &str =
    "t.tenant_id, t.id, t.queue, t.department, t.priority, t.status, t.title";

/// Lists the tickets the caller may read: the policy, compiled into the `WHERE` clause,
/// under the tenant's row-level security.
async fn list_tickets(
    State(app): State<App>,
    mut scope: Scope,
) -> ApiResult<Json<serde_json::Value>> {
    principal(&app, &mut scope).await?;
    let filter = scope.sql_filter("read", "Ticket", &ResourceTable::new().alias("t")?, 2)?;
    let sql = format!(
        "SELECT {TICKET_COLUMNS} FROM {} t WHERE t.tenant_id = $1 AND ({}) \
         ORDER BY t.created_at DESC LIMIT 50",
        app.table("tickets"),
        filter.sql
    );
    let tenant = scope.context().tenant();
    let rows = bind_filter(sqlx::query(AssertSqlSafe(sql)).bind(tenant), &filter)
        .fetch_all(&mut **scope.tx().await?)
        .await?;
    scope.commit().await?;
    let tickets = rows
        .iter()
        .map(ticket_json)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(json!({ "tickets": tickets })))
}

/// Reads a ticket row and checks `action` on it; "not found" when it is absent or the
/// caller may not act on it, so that existence does not leak (the log says which).
async fn ticket_for(
    app: &App,
    scope: &mut Scope,
    id: Uuid,
    action: &str,
) -> ApiResult<(PgRow, Decision)> {
    let sql = format!(
        "SELECT {TICKET_COLUMNS}, t.body, t.requester_id FROM {} t \
         WHERE t.tenant_id = $1 AND t.id = $2",
        app.table("tickets")
    );
    let tenant = scope.context().tenant();
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut **scope.tx().await?)
        .await?;
    let resource = format!("tickets/{id}");
    let Some(row) = row else {
        return Err(ApiError::from(scope.not_found(action, &resource).await));
    };
    let res = ticket_attrs(
        row.try_get("queue")?,
        row.try_get("department")?,
        i64::from(row.try_get::<i32, _>("priority")?),
    );
    let id_text = id.to_string();
    match scope
        .authorize(action, Target::new("Ticket", &res).id(&id_text))
        .await
    {
        Ok(decision) => Ok((row, decision)),
        Err(nova::Error::Denied { .. } | nova::Error::MfaRequired) => Err(ApiError::NotFound),
        Err(e) => Err(e.into()),
    }
}

async fn get_ticket(
    State(app): State<App>,
    mut scope: Scope,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<serde_json::Value>> {
    principal(&app, &mut scope).await?;
    let (row, _) = ticket_for(&app, &mut scope, id, "read").await?;
    let tenant = scope.context().tenant();
    let comments = sqlx::query(AssertSqlSafe(format!(
        "SELECT id, author_id, body FROM {} WHERE tenant_id = $1 AND ticket_id = $2 \
         ORDER BY created_at, id",
        app.table("comments")
    )))
    .bind(tenant)
    .bind(id)
    .fetch_all(&mut **scope.tx().await?)
    .await?;
    let mut ticket = ticket_json(&row)?;
    ticket["requester_id"] = json!(row.try_get::<Uuid, _>("requester_id")?);
    let body: Option<String> = row.try_get("body")?;
    ticket["body"] = json!(scope.open("tickets", "body", id, body.as_deref()).await?);
    let mut out = Vec::with_capacity(comments.len());
    for c in &comments {
        let (cid, author, body): (Uuid, Uuid, Option<String>) = (
            c.try_get("id")?,
            c.try_get("author_id")?,
            c.try_get("body")?,
        );
        let body = scope.open("comments", "body", cid, body.as_deref()).await?;
        out.push(json!({ "id": cid, "author_id": author, "body": body }));
    }
    ticket["comments"] = json!(out);
    scope.commit().await?;
    Ok(Json(ticket))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketChange {
    status: Option<String>,
    priority: Option<i32>,
}

async fn update_ticket(
    State(app): State<App>,
    mut scope: Scope,
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
    principal(&app, &mut scope).await?;
    let (row, _) = ticket_for(&app, &mut scope, id, "update").await?;
    // The ticket as it would be after the change must be allowed too.
    let after = ticket_attrs(
        row.try_get("queue")?,
        row.try_get("department")?,
        i64::from(change.priority.unwrap_or(row.try_get("priority")?)),
    );
    let id_text = id.to_string();
    let allowed = scope
        .authorize("update", Target::new("Ticket", &after).id(&id_text))
        .await?;
    let tenant = scope.context().tenant();
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {} SET status = coalesce($3, status), priority = coalesce($4, priority), \
         closed_at = CASE WHEN $3 = 'closed' THEN now() ELSE closed_at END \
         WHERE tenant_id = $1 AND id = $2",
        app.table("tickets")
    )))
    .bind(tenant)
    .bind(id)
    .bind(change.status.as_deref())
    .bind(change.priority)
    .execute(&mut **scope.tx().await?)
    .await?;
    let event = scope
        .event_for(&allowed, "data.write", "tickets.update")
        .resource(&format!("tickets/{id}"))
        .build();
    scope.record(event).await?;
    scope.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewComment {
    body: String,
}

async fn add_comment(
    State(app): State<App>,
    mut scope: Scope,
    Path(ticket): Path<Uuid>,
    Json(c): Json<NewComment>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    if !text_ok(&c.body, 10_000) {
        return Err(ApiError::BadRequest("body: 1-10000 bytes"));
    }
    let author = match scope.context().user() {
        Some(u) if !scope.context().has_role("service") => *u.as_uuid(),
        _ => {
            let resource = format!("tickets/{ticket}");
            return Err(ApiError::from(
                scope
                    .refuse("comment", &resource, "only people comment")
                    .await,
            ));
        }
    };
    principal(&app, &mut scope).await?;
    let (_, allowed) = ticket_for(&app, &mut scope, ticket, "comment").await?;
    let id = Uuid::new_v4();
    let body = scope
        .seal("comments", "body", id, Some(author), &c.body)
        .await?;
    let tenant = scope.context().tenant();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (tenant_id, id, ticket_id, author_id, body) VALUES ($1, $2, $3, $4, $5)",
        app.table("comments")
    )))
    .bind(tenant)
    .bind(id)
    .bind(ticket)
    .bind(author)
    .bind(&body)
    .execute(&mut **scope.tx().await?)
    .await?;
    let event = scope
        .event_for(&allowed, "data.write", "comments.create")
        .resource(&format!("tickets/{ticket}/comments/{id}"))
        .build();
    scope.record(event).await?;
    scope.commit().await?;
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
    State(app): State<App>,
    mut scope: Scope,
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
    principal(&app, &mut scope).await?;
    let allowed = authorize_on(&mut scope, "manage", "Tenant").await?;
    let queues: Vec<&str> = u.queues.iter().map(String::as_str).collect();
    let spec = UserSpec {
        email: &u.email,
        name: &u.name,
        department: &u.department,
        queues: &queues,
        role: &u.role,
    };
    let id = insert_user(&app, &mut scope, &spec, Some(&allowed), "users.create").await?;
    scope.commit().await?;
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
    app: &App,
    scope: &mut Scope,
    u: &UserSpec<'_>,
    allowed: Option<&Decision>,
    action: &str,
) -> ApiResult<Uuid> {
    let id = Uuid::new_v4();
    let email = scope.seal("users", "email", id, Some(id), u.email).await?;
    let name = scope
        .seal("users", "display_name", id, Some(id), u.name)
        .await?;
    let index = scope.blind_index("users", "email", u.email).await?;
    let tenant = scope.context().tenant();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (tenant_id, id, display_name, email, email_index, department, queues, role) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        app.table("users")
    )))
    .bind(tenant)
    .bind(id)
    .bind(&name)
    .bind(&email)
    .bind(index)
    .bind(u.department)
    .bind(u.queues)
    .bind(u.role)
    .execute(&mut **scope.tx().await?)
    .await?;
    let event = match allowed {
        Some(d) => scope.event_for(d, "data.write", action),
        None => scope.event("admin.onboard", action),
    }
    .resource(&format!("users/{id}"))
    .build();
    scope.record(event).await?;
    Ok(id)
}

/// Adds a user with no caller — the first admin of a new tenant, or seed data — through a
/// system context (which Nova reports), with its audit event in the same transaction.
///
/// # Errors
/// Database, key and audit errors.
pub async fn onboard_user(app: &App, tenant: TenantId, spec: &UserSpec<'_>) -> Result<Uuid, Error> {
    let mut scope = app
        .nova
        .scope(TenantContext::system(tenant, "ticketing: onboarding")?);
    let id = match insert_user(app, &mut scope, spec, None, "users.onboard").await {
        Ok(id) => id,
        Err(ApiError::Internal(e)) => return Err(e),
        Err(_) => return Err("onboarding refused".into()),
    };
    scope.commit().await?;
    Ok(id)
}

#[derive(Deserialize)]
struct ByEmail {
    email: String,
}

/// Finds users by email through the blind index: the server never sees the emails.
async fn lookup_user(
    State(app): State<App>,
    mut scope: Scope,
    Query(q): Query<ByEmail>,
) -> ApiResult<Json<serde_json::Value>> {
    if !text_ok(&q.email, 254) {
        return Err(ApiError::BadRequest("email"));
    }
    principal(&app, &mut scope).await?;
    let _allowed = authorize_on(&mut scope, "manage", "Tenant").await?;
    let index = scope.blind_index("users", "email", &q.email).await?;
    let tenant = scope.context().tenant();
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT id, department, role FROM {} WHERE tenant_id = $1 AND email_index = $2",
        app.table("users")
    )))
    .bind(tenant)
    .bind(index)
    .fetch_all(&mut **scope.tx().await?)
    .await?;
    scope.commit().await?;
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

/// The caller's attributes and a decision on `action` for `kind`, in a transaction that
/// ends here: for handlers whose work is outside the tenant's tables.
async fn check(app: &App, scope: &mut Scope, action: &str, kind: &str) -> ApiResult<Decision> {
    principal(app, scope).await?;
    authorize_on(scope, action, kind).await
}

/// Creates an API key for a new service account of the caller's tenant.
async fn create_api_key(
    State(app): State<App>,
    mut scope: Scope,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let allowed = check(&app, &mut scope, "manage", "Tenant").await?;
    let spec = NewApiKey::new(
        scope.context().tenant(),
        UserId::new_v4(),
        Role::new("service")?,
    );
    let (key_id, secret) = app.nova.api_keys().create(spec).await?;
    let event = scope
        .event_for(&allowed, "admin.api_key_created", "api_keys.create")
        .resource(&format!("api-keys/{key_id}"))
        .build();
    // The key lives in Nova's tables, outside this transaction: should its event not
    // commit, the key is revoked, so that no usable key lacks its event.
    let committed = match scope.record(event).await {
        Ok(()) => scope.commit().await,
        Err(e) => Err(e),
    };
    if let Err(e) = committed {
        app.nova.api_keys().revoke(&key_id).await?;
        return Err(e.into());
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({ "key_id": key_id, "secret": secret.expose() })),
    ))
}

async fn revoke_api_key(
    State(app): State<App>,
    mut scope: Scope,
    Path(key_id): Path<String>,
) -> ApiResult<StatusCode> {
    let allowed = check(&app, &mut scope, "manage", "Tenant").await?;
    // Another tenant's key is "not found", like a key that does not exist.
    let tenant = scope.context().tenant();
    let keys = app.nova.api_keys();
    let Some(record) = keys
        .store()
        .get(&key_id)
        .await?
        .filter(|r| r.tenant == tenant)
    else {
        let resource = format!("api-keys/{key_id}");
        return Err(ApiError::from(
            scope.not_found("api_keys.revoke", &resource).await,
        ));
    };
    keys.revoke(&record.key_id).await?;
    let event = scope
        .event_for(&allowed, "admin.api_key_revoked", "api_keys.revoke")
        .resource(&format!("api-keys/{key_id}"))
        .build();
    scope.record(event).await?;
    scope.commit().await?;
    Ok(StatusCode::NO_CONTENT)
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
    State(app): State<App>,
    mut scope: Scope,
    Json(g): Json<NewGrant>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    if !name_ok(&g.id) || !name_ok(&g.department) || !(1..=86_400).contains(&g.ttl_seconds) {
        return Err(ApiError::BadRequest("id, department, ttl_seconds 1-86400"));
    }
    principal(&app, &mut scope).await?;
    let dept = Attrs::new().with("name", g.department.as_str());
    let allowed = scope
        .authorize(
            "delegate",
            Target::new("Department", &dept).id(&g.department),
        )
        .await?;
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
        &scope.actor(),
    )
    .when(Expr::resource("department").eq(Expr::string(&g.department)));
    let tenant = scope.context().tenant();
    app.nova.policy().grant(tenant, grant)?;
    let event = scope
        .event_for(&allowed, "admin.grant_created", "grants.create")
        .resource(&format!("grants/{}", g.id))
        .build();
    // Grants live in the policy store: should the event not commit, the grant goes.
    let committed = match scope.record(event).await {
        Ok(()) => scope.commit().await,
        Err(e) => Err(e),
    };
    if let Err(e) = committed {
        app.nova.policy().revoke(tenant, &g.id)?;
        return Err(e.into());
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": g.id, "expires_at": expires })),
    ))
}

/// The tenant's data, encrypted with the tenant's stream key (see `restore_backup`).
async fn backup(State(app): State<App>, mut scope: Scope) -> ApiResult<Response> {
    let allowed = check(&app, &mut scope, "manage", "Tenant").await?;
    let bytes = subject::backup(&app, &mut scope).await?;
    let event = scope
        .event_for(&allowed, "admin.backup", "backup.create")
        .resource("backup")
        .build();
    scope.record(event).await?;
    scope.commit().await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// Runs the retention rules for the caller's tenant.
async fn run_retention(
    State(app): State<App>,
    mut scope: Scope,
) -> ApiResult<Json<serde_json::Value>> {
    let allowed = check(&app, &mut scope, "manage", "Tenant").await?;
    let report = subject::retention(&app, &mut scope).await?;
    let rows = report.iter().map(|(_, n)| n).sum();
    let event = scope
        .event_for(&allowed, "privacy.retention", "retention.run")
        .resource("retention")
        .rows(rows)
        .build();
    scope.record(event).await?;
    scope.commit().await?;
    Ok(Json(json!({ "rules": report
        .iter()
        .map(|(rule, rows)| json!({ "rule": rule, "rows": rows }))
        .collect::<Vec<_>>() })))
}

// ---------------------------------------------------------------------------------------
// Data-subject rights

async fn export_subject(
    State(app): State<App>,
    mut scope: Scope,
    Path(subject): Path<Uuid>,
) -> ApiResult<Json<serde_json::Value>> {
    let allowed = check(&app, &mut scope, "export", "Subject").await?;
    let doc = subject::export(&app, &mut scope, subject).await?;
    let event = scope
        .event_for(&allowed, "privacy.export", "subject.export")
        .resource(&format!("subjects/{subject}"))
        .build();
    scope.record(event).await?;
    scope.commit().await?;
    Ok(Json(doc))
}

async fn erase_subject(
    State(app): State<App>,
    mut scope: Scope,
    Path(subject): Path<Uuid>,
) -> ApiResult<Json<serde_json::Value>> {
    let allowed = check(&app, &mut scope, "erase", "Subject").await?;
    Ok(Json(subject::erase(&app, scope, &allowed, subject).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewConsent {
    purpose: String,
    granted: bool,
    source: String,
}

async fn record_consent(
    State(app): State<App>,
    mut scope: Scope,
    Path(subject): Path<Uuid>,
    Json(c): Json<NewConsent>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    if !text_ok(&c.source, 200) {
        return Err(ApiError::BadRequest("source"));
    }
    let allowed = check(&app, &mut scope, "consent", "Subject").await?;
    let consent = app
        .inner
        .consents
        .record(scope.tx().await?, subject, &c.purpose, c.granted, &c.source)
        .await
        .map_err(|e| match e {
            nova::tenancy::Error::Privacy(
                PrivacyError::InvalidPurpose | PrivacyError::InvalidSource,
            ) => ApiError::BadRequest("purpose: 1-64 of [a-z0-9_.-]; source: 1-256 bytes"),
            e => e.into(),
        })?;
    let event = scope
        .event_for(&allowed, "privacy.consent", "consent.record")
        .resource(&format!("subjects/{subject}"))
        .build();
    scope.record(event).await?;
    scope.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "purpose": consent.purpose, "granted": consent.granted })),
    ))
}
