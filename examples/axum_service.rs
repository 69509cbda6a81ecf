//! Protect a service with Nova: one configuration file, one `Nova`, and handlers that take
//! a `Scope`. A request goes credential → guard → tenant context → policy (with MFA) →
//! tenant transaction under row-level security → sealed column → audit event committed
//! with the data.
//!
//! ```text
//! export NOVA_KEK=$(openssl rand -base64 32) NOVA_AUDIT_SIGNING_KEY=$(openssl rand -base64 32)
//! cargo run --example axum_service
//! ```
//!
//! It needs PostgreSQL (`DATABASE_URL`, default `postgres://postgres@127.0.0.1/postgres`,
//! a role that may create roles and schemas: it creates throwaway ones and drops them),
//! serves on a loopback port, sends itself a few requests, prints what each got, verifies
//! the audit log, and exits (non-zero if any answer was not the expected one).

use std::net::SocketAddr;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use nova::auth::{AccessClaims, SigningKey, TokenIssuer};
use nova::policy::{Attrs, PolicySet, PolicyStore, Schema};
use nova::tenancy::{
    AppRole, AppRoles, AuthMethod, Ident, RlsMigration, Role, TenantId, TenantTable, UserId,
};
use nova::{KeyOf, Nova, Scope, SealedTable, Target};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Executor, Row};
use uuid::Uuid;

const CONFIG: &str = r#"
[security]
profile = "production"

[security.http]
trusted_proxies = []            # no proxy in front: the TCP peer is the client

[security.jwt]
issuer = "https://auth.acme.example"
audience = "notes-api"
algorithms = ["EdDSA"]

[security.rate_limiting]
enabled = true
store = "local"                 # "redis" with redis_url to share budgets between replicas
end_user = { rate = 50, per_seconds = 1, burst = 100 }

[security.mfa]
max_age = "15m"
admin_actions = ["share"]       # needs a second factor no older than 15 minutes

[security.database]
tls = "verify_ca"               # the server's certificate must chain to root_cert
root_cert = "/etc/ssl/certs/ssl-cert-snakeoil.pem"   # a local server's own certificate

[security.encryption]
kek_env = "NOVA_KEK"

[security.audit]
retention_days = 2192
signing_key_env = "NOVA_AUDIT_SIGNING_KEY"
"#;

const SCHEMA: &str = "entity User { id: String }; entity Note { author: String }; context { mfa: Bool }; principal User;";
const POLICY: &str = r#"
role member;
@id("members-write-and-read") allow member to write, read on Note;
@id("authors-share") allow member to share on Note when resource.author == principal.id;
"#;

/// The caller's attributes for the policy: here only its id.
fn me(scope: &mut Scope) -> String {
    let me = scope
        .context()
        .user()
        .map(|u| u.to_string())
        .unwrap_or_default();
    scope.set_principal(Attrs::new().with("id", me.as_str()));
    me
}

/// `POST /notes`: the body is sealed under the tenant's key; the note and its audit event
/// commit together.
async fn create(
    mut scope: Scope,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<Value>), nova::Error> {
    let me = me(&mut scope);
    let allowed = scope
        .authorize(
            "write",
            Target::new("Note", &Attrs::new().with("author", me.as_str())),
        )
        .await?;
    let id = Uuid::new_v4();
    let sealed = scope
        .seal(
            "notes",
            "body",
            id,
            None,
            body["body"].as_str().unwrap_or_default(),
        )
        .await?;
    let tenant = scope.context().tenant();
    sqlx::query("INSERT INTO notes (tenant_id, id, author, body) VALUES ($1, $2, $3, $4)")
        .bind(tenant)
        .bind(id)
        .bind(&me)
        .bind(&sealed)
        .execute(&mut **scope.tx().await?)
        .await?;
    let event = scope
        .event_for(&allowed, "data.write", "notes.create")
        .resource(&format!("notes/{id}"))
        .build();
    scope.record(event).await?;
    scope.commit().await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

/// `GET /notes/{id}`: row-level security hides other tenants' notes, whatever the SQL says.
async fn read(mut scope: Scope, Path(id): Path<Uuid>) -> Result<Json<Value>, nova::Error> {
    me(&mut scope);
    let row = sqlx::query("SELECT author, body FROM notes WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **scope.tx().await?)
        .await?;
    let Some(row) = row else {
        // Audited, like every refusal.
        return Err(scope.not_found("read", &format!("notes/{id}")).await);
    };
    let author: String = row.get(0);
    let _allowed = scope
        .authorize(
            "read",
            Target::new("Note", &Attrs::new().with("author", author.as_str())).id(&id.to_string()),
        )
        .await?;
    let body = scope
        .open(
            "notes",
            "body",
            id,
            row.get::<Option<String>, _>(1).as_deref(),
        )
        .await?;
    scope.commit().await?;
    Ok(Json(json!({ "id": id, "body": body })))
}

/// `POST /notes/{id}/share`: an admin action, so it needs a fresh second factor.
async fn share(mut scope: Scope, Path(id): Path<Uuid>) -> Result<StatusCode, nova::Error> {
    me(&mut scope);
    let author: Option<String> = sqlx::query_scalar("SELECT author FROM notes WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **scope.tx().await?)
        .await?;
    let Some(author) = author else {
        return Err(scope.not_found("share", &format!("notes/{id}")).await);
    };
    let note = Attrs::new().with("author", author.as_str());
    let allowed = scope
        .authorize("share", Target::new("Note", &note).id(&id.to_string()))
        .await?;
    let event = scope
        .event_for(&allowed, "data.share", "notes.share")
        .resource(&format!("notes/{id}"))
        .build();
    scope.record(event).await?;
    scope.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1/postgres".into());
    let admin = sqlx::PgPool::connect(&url).await?;
    let db = Demo::create(&admin).await?;
    // Refused at start if insecure for production (try tls = "disable").
    let text = CONFIG.replace(
        "[security.database]",
        &format!("[security.database]\nschema = \"{}\"", db.nova_schema),
    );
    let config = nova::Config::from_toml(&text)?;
    let audit_file =
        std::env::temp_dir().join(format!("nova-axum-service-{}.jsonl", std::process::id()));
    let result = serve(config, &url, &db, &audit_file).await;
    db.drop(&admin).await?;
    let _ = std::fs::remove_file(&audit_file);
    result
}

async fn serve(
    config: nova::Config,
    url: &str,
    db: &Demo,
    audit_file: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    // A stand-in identity provider; a real one publishes its keys (JWKS).
    let idp = TokenIssuer::new(
        "https://auth.acme.example",
        "notes-api",
        SigningKey::generate_ed25519("2026-12")?,
    );
    let server: sqlx::postgres::PgConnectOptions = url.parse()?;
    let nova = Nova::builder(config)
        .policy(PolicyStore::new(
            Schema::parse(SCHEMA)?,
            PolicySet::parse(POLICY)?,
        )?)
        .jwt_keys(idp.key_set()?)
        .sealed(SealedTable::new("notes").column("body", KeyOf::Tenant)?)
        .database(
            server
                .clone()
                .username(db.app.as_str())
                .password(&db.password),
        )
        .nova_database(server.username(db.nova.as_str()).password(&db.password))
        .audit_file(audit_file)
        .build()
        .await?;

    let app = Router::new()
        .route("/notes", post(create))
        .route("/notes/{id}", get(read))
        .route("/notes/{id}/share", post(share))
        .layer(nova.guard())
        .with_state(nova.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let serving = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    let (acme, globex) = (TenantId::new_v4(), TenantId::new_v4());
    let (alice_id, gil_id) = (UserId::new_v4(), UserId::new_v4());
    let role = Role::new("member")?;
    let member = |tenant, user| AccessClaims::new(tenant, user).roles([role.clone()]);
    let alice = idp.issue(&member(acme, alice_id))?;
    let gil = idp.issue(&member(globex, gil_id))?;
    let now = std::time::SystemTime::now();
    let otp = [AuthMethod::new("pwd")?, AuthMethod::new("otp")?];
    let client = reqwest::Client::new();
    let mut ok = true;
    let mut show = |what: &str, status: reqwest::StatusCode, want: u16| {
        println!("{what:<58} -> {status}");
        ok &= status.as_u16() == want;
    };

    let r = client
        .post(format!("{base}/notes"))
        .json(&json!({"body": "x"}))
        .send()
        .await?;
    show("no credential", r.status(), 401);
    let r = client
        .post(format!("{base}/notes"))
        .bearer_auth(&alice)
        .json(&json!({"body": "the plan"}))
        .send()
        .await?;
    show("alice (acme) writes a note", r.status(), 201);
    let id = r.json::<Value>().await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let r = client
        .get(format!("{base}/notes/{id}"))
        .bearer_auth(&alice)
        .send()
        .await?;
    show(
        "alice reads it back (opened from its sealed column)",
        r.status(),
        200,
    );
    println!("  body: {}", r.text().await?);
    let r = client
        .get(format!("{base}/notes/{id}"))
        .bearer_auth(&gil)
        .send()
        .await?;
    show(
        "gil (globex) asks for it by id: row-level security",
        r.status(),
        404,
    );
    let r = client
        .post(format!("{base}/notes/{id}/share"))
        .bearer_auth(&alice)
        .send()
        .await?;
    show(
        "alice shares it with a password-only token",
        r.status(),
        403,
    );
    // The identity provider verifies a TOTP code and issues a token saying so (amr, auth_time).
    let stepped = idp.issue(&member(acme, alice_id).authenticated(now, otp))?;
    let r = client
        .post(format!("{base}/notes/{id}/share"))
        .bearer_auth(&stepped)
        .send()
        .await?;
    show("alice shares it after a TOTP step-up", r.status(), 204);
    let raw = sqlx::query_scalar::<_, String>(AssertSqlSafe(format!(
        "SELECT body FROM {}.notes",
        db.schema
    )))
    .fetch_one(&sqlx::PgPool::connect(url).await?)
    .await?;
    println!("what the database holds: {}…", &raw[..raw.len().min(32)]);
    ok &= !raw.contains("the plan");

    serving.abort();
    nova.close().await?;
    let key = nova::audit::VerifierKey::parse(nova.audit_key())?;
    let verdict = nova::audit::verify_file(audit_file, &key, None)?;
    let log = std::fs::read_to_string(audit_file)?;
    let refusals = log.matches("policy.denied").count() + log.matches("request.refused").count();
    println!(
        "audit log: {} events, verified: {}; refusals recorded with their reasons: {refusals}",
        verdict.entries,
        verdict.ok(),
    );
    ok &= verdict.ok()
        && log.contains("notes.create")
        && log.contains("notes.share")
        && refusals == 2;
    if ok {
        println!("\nevery answer was the expected one");
        Ok(())
    } else {
        Err("an answer differed from the expected one".into())
    }
}

/// Throwaway roles and schema: the notes table under row-level security, owned by a role
/// that is neither a superuser nor the service's login; the application login; Nova's
/// login and tables.
struct Demo {
    schema: Ident,
    nova_schema: String,
    roles: AppRoles,
    owner: Ident,
    app: Ident,
    nova: Ident,
    password: String,
}

impl Demo {
    async fn create(admin: &sqlx::PgPool) -> Result<Self, Box<dyn std::error::Error>> {
        let tag = &Uuid::new_v4().simple().to_string()[..8];
        let ident = |s: &str| Ident::new(&format!("nova_demo_{tag}_{s}"));
        let d = Self {
            schema: ident("app")?,
            nova_schema: format!("nova_demo_{tag}"),
            roles: AppRoles::prefixed(&format!("nova_demo_{tag}_"))?,
            owner: ident("owner")?,
            app: ident("svc")?,
            nova: ident("nova")?,
            password: Uuid::new_v4().simple().to_string(),
        };
        let migration = RlsMigration::new(d.roles.clone())
            .schema(d.schema.clone())
            .table(TenantTable::new("notes")?);
        let (schema, owner, app, nova_login, password) =
            (&d.schema, &d.owner, &d.app, &d.nova, &d.password);
        let app_rw = d.roles.get(AppRole::AppRw);
        admin
            .execute(AssertSqlSafe(format!(
                "CREATE ROLE {owner} NOLOGIN NOSUPERUSER NOBYPASSRLS;
                 CREATE SCHEMA {schema} AUTHORIZATION {owner};
                 CREATE TABLE {schema}.notes (tenant_id uuid NOT NULL, id uuid PRIMARY KEY, author text NOT NULL, body text);
                 ALTER TABLE {schema}.notes OWNER TO {owner};
                 {roles}
                 {tables}
                 CREATE ROLE {app} LOGIN PASSWORD '{password}' IN ROLE {app_rw};
                 ALTER ROLE {app} SET search_path = {schema};
                 CREATE ROLE {nova_login} LOGIN PASSWORD '{password}' NOSUPERUSER NOBYPASSRLS;
                 {nova_sql}",
                roles = migration.roles_sql(),
                tables = migration.tables_sql(),
                nova_sql = nova::migration_sql(&d.nova_schema, &[app_rw], nova_login)?,
            )))
            .await?;
        Ok(d)
    }

    async fn drop(&self, admin: &sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
        let nova_schema = &self.nova_schema;
        let mut sql = format!(
            "DROP SCHEMA IF EXISTS {} CASCADE; DROP SCHEMA IF EXISTS {nova_schema} CASCADE;
             DROP ROLE IF EXISTS {}; DROP ROLE IF EXISTS {}; DROP ROLE IF EXISTS {};",
            self.schema, self.app, self.nova, self.owner
        );
        for r in [
            AppRole::AppReadonly,
            AppRole::AppRw,
            AppRole::AdminRw,
            AppRole::Reporting,
            AppRole::Audit,
        ] {
            sql.push_str(&format!("DROP ROLE IF EXISTS {};", self.roles.get(r)));
        }
        admin.execute(AssertSqlSafe(sql)).await?;
        Ok(())
    }
}
