//! Nova quickstart: verified credentials into a tenant context, PostgreSQL row-level
//! security enforcing it, a policy with explained decisions and SQL data filtering,
//! per-tenant field encryption, and a tamper-evident audit log.
//!
//! ```text
//! cargo run --example quickstart                      # no server needed
//! DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo run --example quickstart
//! ```
//!
//! With `DATABASE_URL` (a role that may create roles and schemas), the program creates a
//! throwaway schema and roles, shows RLS refusing a cross-tenant read, and removes them.

use std::sync::Arc;

use nova_audit::{
    AuditEvent, CheckpointSigner, FileLog, FsyncPolicy, VerifierKey, prove_file, verify_file,
};
use nova_auth::{
    AccessClaims, ApiKeys, InMemoryApiKeyStore, JwtConfig, JwtVerifier, NewApiKey, SigningKey,
    StaticKeys, TokenIssuer,
};
use nova_crypto::{Column, InMemoryTenantKeyStore, Keyring, LocalKeyProvider, normalize};
use nova_policy::{Attrs, Grant, PolicySet, Request, ResourceTable, Schema, Value};
use nova_tenancy::{
    AppRole, AppRoles, CredentialVerifier, Ident, RlsMigration, Role, TenantContext, TenantId,
    TenantPool, TenantTable, UserId, VerifiedIdentity,
};
use secrecy::ExposeSecret;
use sqlx::{AssertSqlSafe, Executor};

/// A stand-in verifier: every context names the component that vouched for it, so a
/// context made this way is visibly not from `nova-auth`.
struct DemoVerifier;

impl CredentialVerifier for DemoVerifier {
    fn verifier_name(&self) -> &'static str {
        "quickstart/demo-verifier"
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("== Nova quickstart ==\n");

    // 1. Ids are parsed once, at the edge, and refused when malformed.
    let acme: TenantId = "6f1c2f7e-3b1a-4c55-9a59-0a4b3c2d1e0f".parse()?;
    let globex = TenantId::new_v4();
    println!("tenant ids: acme={acme} globex={globex}");
    for bad in [
        "acme",
        "' OR '1'='1",
        "00000000-0000-0000-0000-000000000000",
    ] {
        if let Err(err) = bad.parse::<TenantId>() {
            println!("  refused {bad:?}: {err}");
        }
    }

    // 2. A context comes from a verified credential: here a JWT access token...
    let issuer = TokenIssuer::new(
        "https://auth.acme.example",
        "tickets-api",
        SigningKey::generate_ed25519("2026-11")?,
    );
    let token =
        issuer.issue(&AccessClaims::new(acme, UserId::new_v4()).roles([Role::new("agent")?]))?;
    let verifier = JwtVerifier::new(
        JwtConfig::new("https://auth.acme.example", "tickets-api"),
        StaticKeys::new(issuer.key_set()?),
    );
    let alice = verifier.verify_cached(&token)?;
    println!(
        "\naccess token ({} bytes) verified into: {alice:?}",
        token.len()
    );
    // Change one character of the payload (the tenant claim's segment).
    let mid = token.find('.').map_or(0, |i| i + 10);
    let mut forged = token.clone().into_bytes();
    forged[mid] = if forged[mid] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged)?;
    match verifier.verify_cached(&forged) {
        Ok(_) => return Err("a modified token was accepted".into()),
        Err(e) => println!("  the same token with one payload character changed: refused ({e})"),
    }
    //    ...or a scoped API key for a service account (shown once, stored as a hash).
    let api_keys = ApiKeys::new(InMemoryApiKeyStore::new());
    let (key_id, secret) = api_keys
        .create(NewApiKey::new(
            acme,
            UserId::new_v4(),
            Role::new("service")?,
        ))
        .await?;
    let service = api_keys
        .verify(secret.expose(), "10.0.0.7".parse()?)
        .await?;
    println!(
        "API key {key_id} ({}…) verified into a context for tenant {} with roles {:?}",
        &secret.expose()[..12],
        service.tenant(),
        service.roles()
    );
    //    A context that no credential backs is possible only through a demo verifier or
    //    the reported system path:
    let _demo = TenantContext::from_verified(
        &DemoVerifier,
        VerifiedIdentity::new(acme)
            .user(UserId::new_v4())
            .roles([Role::new("agent")?]),
    );
    let job = TenantContext::system(globex, "quickstart: demonstration")?;
    println!("system context (reported on the nova::audit target): {job:?}");

    // 3. The SQL that makes PostgreSQL enforce it.
    let migration = RlsMigration::new(AppRoles::standard())
        .table(TenantTable::new("tickets")?.index_with(["id"])?);
    let sql = migration.tables_sql();
    println!("\nmigration excerpt:");
    for line in sql
        .lines()
        .filter(|l| l.contains("ROW LEVEL") || l.contains("USING"))
        .take(4)
    {
        println!("  {line}");
    }

    // 4. What the caller may do comes from one policy, checked in-process with reasons and
    //    compiled into the WHERE clause of a listing.
    policy_demo(&alice)?;

    // 5. PII encrypted per tenant: one line per field, bound to tenant, table, column and row.
    encryption_demo(&alice, globex).await?;

    // 6. Every action above goes to a tamper-evident audit log that anyone with the public
    //    key can verify offline (also with `nova-audit verify <file> --key <key>`).
    audit_demo(&alice, &service)?;

    match std::env::var("DATABASE_URL") {
        Ok(url) => rls_demo(&url, acme, globex, &alice).await?,
        Err(_) => println!(
            "\nSet DATABASE_URL (e.g. postgres://postgres@127.0.0.1/postgres) to watch \
             PostgreSQL refuse a cross-tenant read."
        ),
    }
    Ok(())
}

fn audit_demo(
    alice: &TenantContext,
    service: &TenantContext,
) -> Result<(), Box<dyn std::error::Error>> {
    println!("\n== tamper-evident audit log ==");
    let dir = std::env::temp_dir().join(format!("nova-quickstart-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("audit.jsonl");
    let result = (|| -> Result<(), Box<dyn std::error::Error>> {
        // A demo signing seed; a service loads its own from its secret store.
        let signer = CheckpointSigner::from_seed("quickstart.audit", &[42; 32])?;
        let public = signer.verifier_key();
        let mut log = FileLog::open(
            &path,
            "nova.example/quickstart",
            signer,
            FsyncPolicy::Always,
        )?;
        let actor =
            |ctx: &TenantContext| ctx.user().map_or("service".into(), |u| format!("user:{u}"));
        let events = [
            AuditEvent::builder(alice.tenant(), "auth.login", "token.verify")
                .actor(&actor(alice))
                .request_id(alice.request_id())
                .build(),
            AuditEvent::builder(service.tenant(), "auth.login", "api_key.verify")
                .actor(&actor(service))
                .ip("10.0.0.7".parse()?)
                .build(),
            AuditEvent::builder(alice.tenant(), "data.write", "customers.update")
                .actor(&actor(alice))
                .resource("customers/1")
                .rows(1)
                .sensitive_param("email", "alice@acme.example")
                .build(),
        ];
        log.append_batch(&events)?;
        drop(log);
        let key = VerifierKey::parse(&public)?;
        let verdict = verify_file(&path, &key, None)?;
        println!(
            "{} events written; verified with the public key: {}",
            verdict.entries,
            if verdict.ok() { "OK" } else { "FAILED" }
        );
        let text = std::fs::read_to_string(&path)?;
        if text.contains("alice@acme.example") {
            return Err("a sensitive parameter reached the audit file".into());
        }
        let proof = prove_file(&path, &key, 2)?;
        let checkpoint = proof.verify(&key)?;
        println!(
            "inclusion proof for entry 2: {} hashes against the signed root of size {}",
            proof.path.len(),
            checkpoint.size
        );
        // An administrator edits one row...
        std::fs::write(&path, text.replace("customers/1", "customers/2"))?;
        let verdict = verify_file(&path, &key, None)?;
        match verdict.first_bad {
            Some(bad) => println!(
                "after editing one event: refused, first bad entry {bad} ({})",
                verdict.reason.unwrap_or_default()
            ),
            None => return Err("an edited audit log verified".into()),
        }
        Ok(())
    })();
    std::fs::remove_dir_all(&dir)?;
    result
}

fn policy_demo(alice: &TenantContext) -> Result<(), Box<dyn std::error::Error>> {
    println!("\n== policy: decisions with reasons, and the SQL for a listing ==");
    let schema = Schema::parse(include_str!("policy/helpdesk.schema"))?;
    let policy = PolicySet::parse(include_str!("policy/helpdesk.policy"))?.compile(&schema)?;
    let user_id = alice.user().map(|u| u.to_string()).unwrap_or_default();
    let alice_attrs = Attrs::new()
        .with("department", "support")
        .with("queues", Value::strings(["billing", "vip"]));
    let billing = Attrs::new()
        .with("queue", "billing")
        .with("department", "support")
        .with("priority", 2);
    let hr = Attrs::new()
        .with("queue", "people")
        .with("department", "hr")
        .with("priority", 1);
    let ctx = Attrs::new().with("mfa", false);

    let read = Request::new("read", "Ticket")
        .principal_from(alice, &user_id, &alice_attrs)
        .resource(&billing)
        .context(&ctx);
    println!(
        "alice (agent) reads a billing ticket: {}",
        policy.explain(&read)
    );
    let update = Request::new("update", "Ticket")
        .principal_from(alice, &user_id, &alice_attrs)
        .resource(&billing)
        .context(&ctx);
    println!("alice updates it: {}", policy.explain(&update));
    let admin = Attrs::new()
        .with("department", "it")
        .with("queues", Value::strings::<_, &str>([]));
    let admin_hr = Request::new("read", "Ticket")
        .principal("bob", &["admin"], &admin)
        .resource(&hr)
        .context(&ctx);
    let explained = policy.explain(&admin_hr);
    println!("bob (admin) reads an HR ticket: {explained}");
    if !explained.used_delegation() {
        return Err("the HR grant should have been used".into());
    }
    let after =
        policy.explain(&admin_hr.at(Grant::parse_time("2099-01-01T00:00:00Z").unwrap_or(0)));
    println!("the same request once the grant expires: {after}");

    // The listing: one predicate, bind parameters only.
    let listing = Request::new("read", "Ticket")
        .principal_from(alice, &user_id, &alice_attrs)
        .context(&ctx);
    let filter = policy.sql_filter(&listing, &ResourceTable::new(), 1)?;
    println!(
        "alice's ticket listing: SELECT * FROM tickets WHERE {}\n  with parameters {:?}",
        filter.sql, filter.params
    );
    Ok(())
}

async fn encryption_demo(
    alice: &TenantContext,
    globex: TenantId,
) -> Result<(), Box<dyn std::error::Error>> {
    println!("\n== per-tenant field encryption ==");
    // Development key from the environment when set (base64 of 32 bytes), else a fresh one.
    let provider = match LocalKeyProvider::from_env("root", "NOVA_KEK") {
        Ok(p) => p,
        Err(nova_crypto::CryptoError::KeyMaterialMissing { .. }) => {
            LocalKeyProvider::generated("root")?
        }
        Err(e) => return Err(e.into()),
    };
    let keyring = Keyring::new(
        Arc::new(provider),
        Arc::new(InMemoryTenantKeyStore::new()),
        "root",
    )?;
    let email = Column::new("customers", "email")?.with_normalizer(normalize::email);
    let globex_ops = TenantContext::system(globex, "quickstart: globex data")?;

    let acme_env = keyring.seal(alice, &email.row(1_i64), b"wile.e@acme.example")?;
    let globex_env = keyring.seal(&globex_ops, &email.row(1_i64), b"hank@globex.example")?;
    let text = acme_env.to_text();
    println!(
        "acme's customer #1 email, stored as TEXT: {}…",
        &text[..48.min(text.len())]
    );
    let opened = keyring.open(alice, &email.row(1_i64), &acme_env)?;
    println!(
        "acme opens it: {}",
        String::from_utf8_lossy(opened.expose_secret())
    );
    match keyring.open(&globex_ops, &email.row(1_i64), &acme_env) {
        Ok(_) => return Err("globex opened acme's ciphertext".into()),
        Err(e) => println!("globex's context opening acme's ciphertext: refused ({e})"),
    }
    match keyring.open(alice, &email.row(2_i64), &acme_env) {
        Ok(_) => return Err("a ciphertext opened at another row".into()),
        Err(e) => println!("acme opening it as row #2: refused ({e})"),
    }
    let lookup = keyring.blind_index(alice, &email, "Wile.E@ACME.example")?;
    println!("blind index for an equality lookup (case-insensitive): {lookup:?}");
    let report = keyring.shred_tenant(globex).await?;
    let after = keyring.open(&globex_ops, &email.row(1_i64), &globex_env);
    println!(
        "globex crypto-shredded ({} key version destroyed): its data now gives {:?}",
        report.versions_destroyed,
        after.err().map(|e| e.to_string())
    );
    Ok(())
}

async fn rls_demo(
    url: &str,
    acme: TenantId,
    globex: TenantId,
    alice: &TenantContext,
) -> Result<(), Box<dyn std::error::Error>> {
    println!("\n== row-level security against {} ==", redact_url(url));
    let admin = sqlx::PgPool::connect(url).await?;
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let schema = Ident::new(&format!("nova_quickstart_{tag}"))?;
    let roles = AppRoles::prefixed(&format!("nova_qs_{tag}_"))?;
    let login = Ident::new(&format!("nova_qs_{tag}_svc"))?;
    let password = uuid::Uuid::new_v4().simple().to_string();

    let migration = RlsMigration::new(roles.clone())
        .schema(schema.clone())
        .table(TenantTable::new("tickets")?.index_with(["id"])?);
    // The schema belongs to an owner role that is neither a superuser nor the service's
    // login: a table owned by a superuser would let every view or function it creates
    // bypass row-level security (the inspection below refuses that).
    let owner = Ident::new(&format!("nova_qs_{tag}_owner"))?;
    let setup = format!(
        "CREATE ROLE {owner} NOLOGIN NOSUPERUSER NOBYPASSRLS;
         CREATE SCHEMA {schema} AUTHORIZATION {owner};
         CREATE TABLE {schema}.tickets (id serial PRIMARY KEY, tenant_id uuid NOT NULL, title text NOT NULL);
         ALTER TABLE {schema}.tickets OWNER TO {owner};
         {roles_sql}
         {tables_sql}
         CREATE ROLE {login} LOGIN PASSWORD '{password}' IN ROLE {app_rw};
         ALTER ROLE {login} SET search_path = {schema};
         INSERT INTO {schema}.tickets (tenant_id, title) VALUES
           ('{acme}', 'acme: printer on fire'), ('{globex}', 'globex: merger plans');",
        roles_sql = migration.roles_sql(),
        tables_sql = migration.tables_sql(),
        app_rw = roles.get(AppRole::AppRw),
    );
    // The migration revokes TEMPORARY on the database from PUBLIC (a temporary table can
    // shadow a tenant table for a pooled session); give it back afterwards if it was there.
    let public_had_temporary: bool = sqlx::query_scalar(
        "SELECT has_database_privilege('public', current_database(), 'TEMPORARY')",
    )
    .fetch_one(&admin)
    .await?;
    let result = async {
        admin.execute(AssertSqlSafe(setup)).await?;
        // What the migration set up, inspected for anything that defeats row-level security.
        let report = migration
            .inspection()
            .run(&mut *admin.acquire().await?)
            .await?;
        println!("schema inspection: {report}");
        if !report.is_clean() {
            return Err(format!("the schema defeats row-level security: {report}").into());
        }
        let opts: sqlx::postgres::PgConnectOptions = url.parse()?;
        // `checked` refuses a login that can reach a superuser or BYPASSRLS role, and a
        // schema that would leak to it.
        let pool = TenantPool::checked(
            sqlx::PgPool::connect_with(opts.username(login.as_str()).password(&password)).await?,
        )
        .await?;

        let mut tx = pool.begin(alice).await?;
        let mine: Vec<String> = sqlx::query_scalar("SELECT title FROM tickets ORDER BY id")
            .fetch_all(&mut *tx)
            .await?;
        let theirs: i64 = sqlx::query_scalar("SELECT count(*) FROM tickets WHERE tenant_id = $1")
            .bind(globex.as_uuid())
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        println!("acme's agent sees: {mine:?}");
        println!("acme's agent asking for globex's rows by id gets {theirs} rows");
        if theirs != 0 || mine.len() != 1 {
            return Err("row-level security did not isolate the tenants".into());
        }
        pool.close().await;
        Ok::<_, Box<dyn std::error::Error>>(())
    }
    .await;

    let teardown = format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; DROP ROLE IF EXISTS {login}; DROP ROLE IF EXISTS {owner}; {}",
        [
            AppRole::AppReadonly,
            AppRole::AppRw,
            AppRole::AdminRw,
            AppRole::Reporting,
            AppRole::Audit
        ]
        .iter()
        .map(|r| format!("DROP ROLE IF EXISTS {};", roles.get(*r)))
        .collect::<String>()
    );
    admin.execute(AssertSqlSafe(teardown)).await?;
    if public_had_temporary {
        admin
            .execute("DO $$ BEGIN EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO PUBLIC', current_database()); END $$")
            .await?;
    }
    admin.close().await;
    result
}

/// Prints a connection URL without its password.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}
