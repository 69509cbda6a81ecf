//! Nova quickstart: typed tenant identity, and PostgreSQL row-level security enforcing it.
//!
//! ```text
//! cargo run --example quickstart                      # no server needed
//! DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo run --example quickstart
//! ```
//!
//! With `DATABASE_URL` (a role that may create roles and schemas), the program creates a
//! throwaway schema and roles, shows RLS refusing a cross-tenant read, and removes them.

use nova_tenancy::{
    AppRole, AppRoles, CredentialVerifier, Ident, RlsMigration, Role, TenantContext, TenantId,
    TenantPool, TenantTable, UserId, VerifiedIdentity,
};
use sqlx::{AssertSqlSafe, Executor};

/// Stands in for `nova-auth`'s JWT verifier, which will be the real source of contexts.
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

    // 2. A context comes from a verified credential (or the reported system path).
    let alice = TenantContext::from_verified(
        &DemoVerifier,
        VerifiedIdentity::new(acme)
            .user(UserId::new_v4())
            .roles([Role::new("agent")?]),
    );
    println!("\ncontext: {alice:?}");
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

    match std::env::var("DATABASE_URL") {
        Ok(url) => rls_demo(&url, acme, globex, &alice).await?,
        Err(_) => println!(
            "\nSet DATABASE_URL (e.g. postgres://postgres@127.0.0.1/postgres) to watch \
             PostgreSQL refuse a cross-tenant read."
        ),
    }
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
    let setup = format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.tickets (id serial PRIMARY KEY, tenant_id uuid NOT NULL, title text NOT NULL);
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
    let result = async {
        admin.execute(AssertSqlSafe(setup)).await?;
        let opts: sqlx::postgres::PgConnectOptions = url.parse()?;
        let pool = TenantPool::new(
            sqlx::PgPool::connect_with(opts.username(login.as_str()).password(&password)).await?,
        );

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
        "DROP SCHEMA IF EXISTS {schema} CASCADE; DROP ROLE IF EXISTS {login}; {}",
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
