//! The HTTP API. Each handler receives a [`Scope`] for the caller the guard verified; the
//! scope loads the caller's attributes, asks the policy, seals and opens, and records the
//! audit event in the handler's transaction. Refusals say nothing about why (the audit log
//! does); a ticket the caller may not act on is "not found", whether or not it exists.

use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use nova::auth::NewApiKey;
use nova::policy::{Attrs, Expr, Grant, ResourceTable};
use nova::tenancy::{Role, TenantContext, TenantId, UserId};
use nova::{Decision, Error, Nova, Scope, Target, bind_filter};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::BACKUP_LABEL;

type Result<T> = std::result::Result<T, Error>;
type Created = (StatusCode, Json<Value>);

/// The service's routes (add [`Nova::guard`] around them; see [`super::start`]).
pub fn router(nova: Nova) -> Router {
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
        .with_state(nova)
}

fn created(body: Value) -> Created {
    (StatusCode::CREATED, Json(body))
}

fn name_ok(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn text_ok(s: &str, max: usize) -> bool {
    !s.trim().is_empty() && s.len() <= max && !s.contains('\0')
}

fn check(ok: bool, why: &'static str) -> Result<()> {
    if ok { Ok(()) } else { Err(Error::Invalid(why)) }
}

/// Checks `action` on the tenant itself (administration) or a data subject.
async fn authorize_on(scope: &mut Scope, action: &str, kind: &str) -> Result<Decision> {
    let attrs = match kind {
        "Tenant" => Attrs::new().with("plan", "standard"),
        _ => Attrs::new().with("kind", "user"),
    };
    scope.authorize(action, Target::new(kind, &attrs)).await
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

#[derive(sqlx::FromRow, Serialize)]
struct Ticket {
    tenant_id: TenantId,
    id: Uuid,
    queue: String,
    department: String,
    priority: i32,
    status: String,
    title: Option<String>,
}

impl Ticket {
    fn attrs(&self, priority: i32) -> Attrs {
        Attrs::new()
            .with("queue", self.queue.as_str())
            .with("department", self.department.as_str())
            .with("priority", i64::from(priority))
    }
}

async fn create_ticket(mut scope: Scope, Json(t): Json<NewTicket>) -> Result<Created> {
    check(
        name_ok(&t.queue) && name_ok(&t.department),
        "queue and department: 1-64 of [a-z0-9_-]",
    )?;
    check(
        (1..=5).contains(&t.priority) && text_ok(&t.title, 200) && text_ok(&t.body, 10_000),
        "priority 1-5, title and body not empty",
    )?;
    let ticket = Ticket {
        tenant_id: scope.context().tenant(),
        id: Uuid::new_v4(),
        queue: t.queue,
        department: t.department,
        priority: t.priority,
        status: "open".into(),
        title: Some(t.title),
    };
    let allowed = scope
        .authorize("create", Target::new("Ticket", &ticket.attrs(t.priority)))
        .await?;
    let known: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM users WHERE id = $1 AND erased_at IS NULL")
            .bind(t.requester_id)
            .fetch_optional(&mut **scope.tx().await?)
            .await?;
    check(known.is_some(), "unknown requester")?;
    let body = scope
        .seal("tickets", "body", ticket.id, Some(t.requester_id), &t.body)
        .await?;
    sqlx::query(
        "INSERT INTO tickets (tenant_id, id, queue, department, priority, requester_id, title, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(ticket.tenant_id)
    .bind(ticket.id)
    .bind(&ticket.queue)
    .bind(&ticket.department)
    .bind(t.priority)
    .bind(t.requester_id)
    .bind(&ticket.title)
    .bind(&body)
    .execute(&mut **scope.tx().await?)
    .await?;
    let event = scope.event_for(&allowed, "data.write", "tickets.create");
    let resource = format!("tickets/{}", ticket.id);
    scope.commit_with(event.resource(&resource).build()).await?;
    Ok(created(json!({ "id": ticket.id })))
}

const TICKET: &str =
    "SELECT t.tenant_id, t.id, t.queue, t.department, t.priority, t.status, t.title";

/// Lists the tickets the caller may read: the policy, compiled into the `WHERE` clause,
/// under the tenant's row-level security.
async fn list_tickets(mut scope: Scope) -> Result<Json<Value>> {
    let filter = scope
        .sql_filter("read", "Ticket", &ResourceTable::new().alias("t")?, 1)
        .await?;
    let sql = format!(
        "{TICKET} FROM tickets t WHERE ({}) ORDER BY t.created_at DESC LIMIT 50",
        filter.sql
    );
    let query = sqlx::query(sqlx::AssertSqlSafe(sql));
    let rows = bind_filter(query, &filter)
        .fetch_all(&mut **scope.tx().await?)
        .await?;
    scope.commit().await?;
    let tickets = rows
        .iter()
        .map(sqlx::FromRow::from_row)
        .collect::<std::result::Result<Vec<Ticket>, _>>()?;
    Ok(Json(json!({ "tickets": tickets })))
}

/// Reads a ticket, its body and requester, and checks `action` on it; "not found" when it
/// is absent or the caller may not act on it, so that existence does not leak (the log
/// says which).
async fn ticket_for(
    scope: &mut Scope,
    id: Uuid,
    action: &str,
) -> Result<(Ticket, Option<String>, Uuid, Decision)> {
    let sql = format!("{TICKET}, t.body, t.requester_id FROM tickets t WHERE t.id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut **scope.tx().await?)
        .await?;
    let resource = format!("tickets/{id}");
    let Some(row) = row else {
        return Err(scope.not_found(action, &resource).await);
    };
    let ticket: Ticket = sqlx::FromRow::from_row(&row)?;
    let (body, requester) = (
        sqlx::Row::try_get(&row, "body")?,
        sqlx::Row::try_get(&row, "requester_id")?,
    );
    let id_text = id.to_string();
    let attrs = ticket.attrs(ticket.priority);
    match scope
        .authorize(action, Target::new("Ticket", &attrs).id(&id_text))
        .await
    {
        Ok(decision) => Ok((ticket, body, requester, decision)),
        Err(Error::Denied { .. } | Error::MfaRequired) => Err(Error::NotFound),
        Err(e) => Err(e),
    }
}

async fn get_ticket(mut scope: Scope, Path(id): Path<Uuid>) -> Result<Json<Value>> {
    let (ticket, body, requester, _) = ticket_for(&mut scope, id, "read").await?;
    let comments: Vec<(Uuid, Uuid, Option<String>)> = sqlx::query_as(
        "SELECT id, author_id, body FROM comments WHERE ticket_id = $1 ORDER BY created_at, id",
    )
    .bind(id)
    .fetch_all(&mut **scope.tx().await?)
    .await?;
    let mut out = json!(ticket);
    out["requester_id"] = json!(requester);
    out["body"] = json!(scope.open("tickets", "body", id, body.as_deref()).await?);
    let mut opened = Vec::with_capacity(comments.len());
    for (cid, author, body) in comments {
        let body = scope.open("comments", "body", cid, body.as_deref()).await?;
        opened.push(json!({ "id": cid, "author_id": author, "body": body }));
    }
    out["comments"] = json!(opened);
    scope.commit().await?;
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketChange {
    status: Option<String>,
    priority: Option<i32>,
}

async fn update_ticket(
    mut scope: Scope,
    Path(id): Path<Uuid>,
    Json(change): Json<TicketChange>,
) -> Result<StatusCode> {
    let status_ok = change
        .status
        .as_deref()
        .is_none_or(|s| matches!(s, "open" | "pending" | "closed"));
    check(status_ok, "status: open, pending or closed")?;
    check(
        change.priority.is_none_or(|p| (1..=5).contains(&p)),
        "priority 1-5",
    )?;
    let (ticket, ..) = ticket_for(&mut scope, id, "update").await?;
    // The ticket as it would be after the change must be allowed too.
    let after = ticket.attrs(change.priority.unwrap_or(ticket.priority));
    let id_text = id.to_string();
    let allowed = scope
        .authorize("update", Target::new("Ticket", &after).id(&id_text))
        .await?;
    sqlx::query(
        "UPDATE tickets SET status = coalesce($2, status), priority = coalesce($3, priority), \
         closed_at = CASE WHEN $2 = 'closed' THEN now() ELSE closed_at END WHERE id = $1",
    )
    .bind(id)
    .bind(change.status.as_deref())
    .bind(change.priority)
    .execute(&mut **scope.tx().await?)
    .await?;
    let event = scope.event_for(&allowed, "data.write", "tickets.update");
    scope
        .commit_with(event.resource(&format!("tickets/{id}")).build())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewComment {
    body: String,
}

async fn add_comment(
    mut scope: Scope,
    Path(ticket): Path<Uuid>,
    Json(c): Json<NewComment>,
) -> Result<Created> {
    check(text_ok(&c.body, 10_000), "body: 1-10000 bytes")?;
    let author = match scope.context().user() {
        Some(u) if !scope.context().has_role("service") => *u.as_uuid(),
        _ => {
            let resource = format!("tickets/{ticket}");
            return Err(scope
                .refuse("comment", &resource, "only people comment")
                .await);
        }
    };
    let (.., allowed) = ticket_for(&mut scope, ticket, "comment").await?;
    let id = Uuid::new_v4();
    let body = scope
        .seal("comments", "body", id, Some(author), &c.body)
        .await?;
    sqlx::query(
        "INSERT INTO comments (tenant_id, id, ticket_id, author_id, body) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(scope.context().tenant())
    .bind(id)
    .bind(ticket)
    .bind(author)
    .bind(&body)
    .execute(&mut **scope.tx().await?)
    .await?;
    let event = scope.event_for(&allowed, "data.write", "comments.create");
    let resource = format!("tickets/{ticket}/comments/{id}");
    scope.commit_with(event.resource(&resource).build()).await?;
    Ok(created(json!({ "id": id })))
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

async fn create_user(mut scope: Scope, Json(u): Json<NewUser>) -> Result<Created> {
    check(
        text_ok(&u.email, 254) && u.email.contains('@') && text_ok(&u.name, 200),
        "email and name",
    )?;
    let queues_ok = u.queues.len() <= 64 && u.queues.iter().all(|q| name_ok(q));
    check(
        name_ok(&u.department) && queues_ok,
        "department and queues: [a-z0-9_-]",
    )?;
    let roles = ["customer", "agent", "manager", "admin", "dpo"];
    check(roles.contains(&u.role.as_str()), "role")?;
    let allowed = authorize_on(&mut scope, "manage", "Tenant").await?;
    let queues: Vec<&str> = u.queues.iter().map(String::as_str).collect();
    let spec = UserSpec {
        email: &u.email,
        name: &u.name,
        department: &u.department,
        queues: &queues,
        role: &u.role,
    };
    let id = insert_user(&mut scope, &spec, Some(&allowed), "users.create").await?;
    scope.commit().await?;
    Ok(created(json!({ "id": id })))
}

/// A user to add: a person who signs in (agent, manager, admin, dpo) or a customer who
/// only files tickets. Email and name are personal data: never in logs (no `Debug`).
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

async fn insert_user(
    scope: &mut Scope,
    u: &UserSpec<'_>,
    allowed: Option<&Decision>,
    action: &str,
) -> Result<Uuid> {
    let id = Uuid::new_v4();
    let email = scope.seal("users", "email", id, Some(id), u.email).await?;
    let name = scope
        .seal("users", "display_name", id, Some(id), u.name)
        .await?;
    let index = scope.blind_index("users", "email", u.email).await?;
    sqlx::query(
        "INSERT INTO users (tenant_id, id, display_name, email, email_index, department, queues, role) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(scope.context().tenant())
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
    };
    scope
        .record(event.resource(&format!("users/{id}")).build())
        .await?;
    Ok(id)
}

/// Adds a user with no caller — the first admin of a new tenant, or seed data — through a
/// system context (which Nova reports), with its audit event in the same transaction.
///
/// # Errors
/// Database, key and audit errors.
pub async fn onboard_user(nova: &Nova, tenant: TenantId, spec: &UserSpec<'_>) -> Result<Uuid> {
    let mut scope = nova.scope(TenantContext::system(tenant, "ticketing: onboarding")?);
    let id = insert_user(&mut scope, spec, None, "users.onboard").await?;
    scope.commit().await?;
    Ok(id)
}

#[derive(Deserialize)]
struct ByEmail {
    email: String,
}

/// Finds users by email through the blind index: the server never sees the emails.
async fn lookup_user(mut scope: Scope, Query(q): Query<ByEmail>) -> Result<Json<Value>> {
    check(text_ok(&q.email, 254), "email")?;
    let _allowed = authorize_on(&mut scope, "manage", "Tenant").await?;
    let index = scope.blind_index("users", "email", &q.email).await?;
    let users: Vec<(Uuid, String, String)> =
        sqlx::query_as("SELECT id, department, role FROM users WHERE email_index = $1")
            .bind(index)
            .fetch_all(&mut **scope.tx().await?)
            .await?;
    scope.commit().await?;
    let users: Vec<Value> = users
        .into_iter()
        .map(|(id, department, role)| json!({ "id": id, "department": department, "role": role }))
        .collect();
    Ok(Json(json!({ "users": users })))
}

// ---------------------------------------------------------------------------------------
// Administration

/// Creates an API key for a new service account of the caller's tenant.
async fn create_api_key(mut scope: Scope) -> Result<Created> {
    let allowed = authorize_on(&mut scope, "manage", "Tenant").await?;
    let tenant = scope.context().tenant();
    let spec = NewApiKey::new(tenant, UserId::new_v4(), Role::new("service")?);
    let (key_id, secret) = scope.create_api_key(&allowed, spec).await?;
    Ok(created(
        json!({ "key_id": key_id, "secret": secret.expose() }),
    ))
}

async fn revoke_api_key(mut scope: Scope, Path(key_id): Path<String>) -> Result<StatusCode> {
    let allowed = authorize_on(&mut scope, "manage", "Tenant").await?;
    scope.revoke_api_key(&allowed, &key_id).await?;
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
async fn create_grant(mut scope: Scope, Json(g): Json<NewGrant>) -> Result<Created> {
    let ttl_ok = (1..=86_400).contains(&g.ttl_seconds);
    check(
        name_ok(&g.id) && name_ok(&g.department) && ttl_ok,
        "id, department, ttl_seconds 1-86400",
    )?;
    let dept = Attrs::new().with("name", g.department.as_str());
    let target = Target::new("Department", &dept).id(&g.department);
    let allowed = scope.authorize("delegate", target).await?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let expires = now.map_err(Error::other)?.as_secs() + g.ttl_seconds;
    let to = g.to_user.to_string();
    let grant = Grant::to_principal(&g.id, &to, ["read"], "Ticket", expires, &scope.actor())
        .when(Expr::resource("department").eq(Expr::string(&g.department)));
    scope.grant(&allowed, grant).await?;
    Ok(created(json!({ "id": g.id, "expires_at": expires })))
}

/// The tenant's data, encrypted with the tenant's stream key (see
/// [`super::restore_backup`]).
async fn backup(mut scope: Scope) -> Result<Response> {
    let allowed = authorize_on(&mut scope, "manage", "Tenant").await?;
    let dump: String = sqlx::query_scalar(
        "SELECT json_build_object(
            'users', (SELECT coalesce(json_agg(u ORDER BY u.id), '[]') FROM users u),
            'tickets', (SELECT coalesce(json_agg(t ORDER BY t.id), '[]') FROM tickets t),
            'comments', (SELECT coalesce(json_agg(c ORDER BY c.id), '[]') FROM comments c)
        )::text",
    )
    .fetch_one(&mut **scope.tx().await?)
    .await?;
    let mut bytes = Vec::with_capacity(dump.len() + 1024);
    let keyring = scope.nova().keyring();
    keyring.encrypt_stream(scope.context(), BACKUP_LABEL, dump.as_bytes(), &mut bytes)?;
    let event = scope.event_for(&allowed, "admin.backup", "backup.create");
    scope.commit_with(event.resource("backup").build()).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// Runs the retention rules of the configuration for the caller's tenant.
async fn run_retention(mut scope: Scope) -> Result<Json<Value>> {
    let allowed = authorize_on(&mut scope, "manage", "Tenant").await?;
    let report = scope.run_retention().await?;
    let event = scope.event_for(&allowed, "privacy.retention", "retention.run");
    let event = event.resource("retention").rows(report.total()).build();
    scope.commit_with(event).await?;
    let rules: Vec<Value> = report
        .entries()
        .iter()
        .map(|e| json!({ "rule": e.key, "rows": e.rows }))
        .collect();
    Ok(Json(json!({ "rules": rules })))
}

// ---------------------------------------------------------------------------------------
// Data-subject rights

async fn export_subject(mut scope: Scope, Path(subject): Path<Uuid>) -> Result<Json<Value>> {
    let allowed = authorize_on(&mut scope, "export", "Subject").await?;
    let doc = scope.export_subject(subject).await?;
    let event = scope.event_for(&allowed, "privacy.export", "subject.export");
    scope
        .commit_with(event.resource(&format!("subjects/{subject}")).build())
        .await?;
    Ok(Json(doc))
}

/// Erases the subject's rows and shreds its key; the event commits with the erasure.
async fn erase_subject(mut scope: Scope, Path(subject): Path<Uuid>) -> Result<Json<Value>> {
    let allowed = authorize_on(&mut scope, "erase", "Subject").await?;
    let erasure = scope.erase_subject(&allowed, subject).await?;
    sqlx::query("UPDATE users SET erased_at = now() WHERE id = $1")
        .bind(subject)
        .execute(&mut **scope.tx().await?)
        .await?;
    let event = scope.event_for(&allowed, "privacy.erase", "subject.erase");
    let event = event.resource(&format!("subjects/{subject}"));
    scope
        .commit_with(event.rows(erasure.report.total()).build())
        .await?;
    Ok(Json(erasure.to_json()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewConsent {
    purpose: String,
    granted: bool,
    source: String,
}

async fn record_consent(
    mut scope: Scope,
    Path(subject): Path<Uuid>,
    Json(c): Json<NewConsent>,
) -> Result<Created> {
    check(text_ok(&c.source, 200), "source")?;
    let allowed = authorize_on(&mut scope, "consent", "Subject").await?;
    let consent = scope
        .record_consent(subject, &c.purpose, c.granted, &c.source)
        .await?;
    let event = scope.event_for(&allowed, "privacy.consent", "consent.record");
    scope
        .commit_with(event.resource(&format!("subjects/{subject}")).build())
        .await?;
    Ok(created(
        json!({ "purpose": consent.purpose, "granted": consent.granted }),
    ))
}
