//! Attack suite for tenant isolation, against the real PostgreSQL server.
//!
//! Every test connects as a non-superuser login role it created (superusers skip row-level
//! security), works in a database of its own, and drops both at the end.
//!
//! Every test that uses application connections runs twice: straight to PostgreSQL
//! (`<name>::direct`) and through a transaction-pooling PgBouncer (`<name>::through_pgbouncer`,
//! see `.ci/pgbouncer`), where one server session serves every client of a database and user
//! and consecutive transactions of one client may land on different sessions. So every
//! statement on an application connection either runs inside a transaction and is unnamed
//! (`.persistent(false)`), or is parameter-free and sent with the simple protocol
//! (`sqlx::raw_sql`, or `execute` with a plain string). The superuser pool (`fx.admin()`)
//! always connects directly: it seeds data and proves what is stored.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::collections::HashMap;

use nova_tenancy::testing::{PgFixture, Via};
use nova_tenancy::{
    AppRole, ConnectionPolicy, CredentialVerifier, Error, Ident, Isolation, Placement, Pooler,
    Region, RlsMigration, Role, TenantContext, TenantId, TenantPool, TenantRouter, TenantTable,
    UserId, VerifiedIdentity, region_database_sql, tenant_database_sql, tenant_schema_sql,
};
use sqlx::{AssertSqlSafe, Executor, PgPool, Row};

both!(
    no_context_gives_zero_rows_and_refuses_inserts,
    tenant_a_cannot_read_update_or_delete_tenant_b_rows_even_with_explicit_where,
    writes_into_another_tenant_are_refused_by_with_check,
    pool_of_one_connection_leaks_nothing_between_tenants,
    table_owner_is_still_filtered_under_force_rls,
    malformed_or_injected_tenant_id_never_reaches_sql,
    error_mid_transaction_leaves_the_connection_clean,
    many_concurrent_tasks_for_many_tenants_never_see_a_foreign_row,
    bypass_works_only_for_named_roles_from_a_system_context,
    connection_policy_timeouts_reach_the_server,
    router_refuses_unknown_tenants_and_isolation_or_region_mismatches,
    schema_per_tenant_routing_refuses_a_schema_not_marked_for_the_tenant,
    database_per_tenant_routing_refuses_a_database_not_marked_for_the_tenant,
    leftover_session_bypass_setting_never_reaches_a_user_transaction,
    pools_logging_in_as_a_role_that_skips_rls_are_refused,
);

struct TestVerifier;
impl CredentialVerifier for TestVerifier {
    fn verifier_name(&self) -> &'static str {
        "test/attack-suite"
    }
}

fn identity(tenant: TenantId) -> VerifiedIdentity {
    VerifiedIdentity::new(tenant)
        .user(UserId::new_v4())
        .roles([Role::new("agent").unwrap()])
}

fn ctx(tenant: TenantId) -> TenantContext {
    TenantContext::from_verified(&TestVerifier, identity(tenant))
}

fn ctx_in(tenant: TenantId, isolation: Isolation) -> TenantContext {
    TenantContext::from_verified(&TestVerifier, identity(tenant).isolation(isolation))
}

const TABLE_DDL: &str = "CREATE TABLE items (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL,
    body text NOT NULL
)";

struct Setup {
    fx: PgFixture,
    owner: String,
    app: String,
    migration: RlsMigration,
}

/// A database with `items` under tenant isolation, owned by a non-superuser `owner`, and a
/// login role `app` that is a member of `app_rw`.
async fn setup(label: &str) -> Option<Setup> {
    let mut fx = PgFixture::new(label).await?;
    let migration = RlsMigration::new(fx.roles().clone()).table(
        TenantTable::new("items")
            .unwrap()
            .index_with(["id"])
            .unwrap(),
    );
    fx.exec(&migration.roles_sql()).await;
    let owner = fx.login_role("owner", &[]).await;
    let app_rw = fx.roles().get(AppRole::AppRw).clone();
    let app = fx.login_role("app", &[&app_rw]).await;
    fx.exec(TABLE_DDL).await;
    fx.exec(&format!("ALTER TABLE items OWNER TO \"{owner}\""))
        .await;
    fx.exec(&migration.tables_sql()).await;
    // The migration leaves nothing that defeats row-level security for its roles.
    let report = migration
        .inspection()
        .run(&mut fx.admin().acquire().await.unwrap())
        .await
        .unwrap();
    assert!(report.is_clean(), "{report}");
    assert!(report.tables_inspected() >= 1, "{report}");
    Some(Setup {
        fx,
        owner,
        app,
        migration,
    })
}

/// Seeds rows as the superuser (which RLS does not filter), `n` per tenant.
async fn seed(fx: &PgFixture, tenants: &[TenantId], n: usize) {
    for t in tenants {
        for i in 0..n {
            sqlx::query("INSERT INTO items (tenant_id, body) VALUES ($1, $2)")
                .bind(t.as_uuid())
                .bind(format!("row {i} of {t}"))
                .execute(fx.admin())
                .await
                .unwrap();
        }
    }
}

async fn count_visible(pool: &TenantPool, c: &TenantContext) -> i64 {
    let mut tx = pool.begin(c).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM items")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    n
}

fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}

async fn no_context_gives_zero_rows_and_refuses_inserts(via: Via) {
    let Some(s) = setup("nocontext").await else {
        return;
    };
    let a = TenantId::new_v4();
    seed(&s.fx, &[a], 5).await;
    // A connection that never went through TenantPool::begin (a code path that forgot it).
    let Some(raw) = s.fx.app_pool(&s.app, 1, via).await else {
        return;
    };
    let n: i64 = sqlx::raw_sql("SELECT count(*) FROM items")
        .fetch_one(&raw)
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "no tenant set must mean no rows, never all rows");
    // A plain transaction (not TenantPool::begin), so the bound insert keeps one session
    // behind PgBouncer: still no tenant set.
    let mut tx = raw.begin().await.unwrap();
    let err = sqlx::query("INSERT INTO items (tenant_id, body) VALUES ($1, 'x')")
        .persistent(false)
        .bind(a.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{err}");
    drop(tx);
    // An empty setting (what remains after an earlier transaction-local setting) is the same.
    // One simple-query message, so the SELECT runs on the session the SET changed.
    let mut conn = raw.acquire().await.unwrap();
    let n: i64 = sqlx::raw_sql("SET nova.tenant_id = ''; SELECT count(*) FROM items")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    drop(conn);
    raw.close().await;
    s.fx.cleanup().await;
}

async fn tenant_a_cannot_read_update_or_delete_tenant_b_rows_even_with_explicit_where(via: Via) {
    let Some(s) = setup("crosstenant").await else {
        return;
    };
    let (a, b) = (TenantId::new_v4(), TenantId::new_v4());
    seed(&s.fx, &[a, b], 3).await;
    let Some(raw) = s.fx.app_pool(&s.app, 2, via).await else {
        return;
    };
    let pool = TenantPool::new(raw);

    let mut tx = pool.begin(&ctx(a)).await.unwrap();
    let read: i64 = sqlx::query_scalar("SELECT count(*) FROM items WHERE tenant_id = $1")
        .persistent(false)
        .bind(b.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        read, 0,
        "explicit WHERE on tenant B must still return nothing"
    );
    let updated = sqlx::query("UPDATE items SET body = 'pwned' WHERE tenant_id = $1")
        .persistent(false)
        .bind(b.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(updated, 0);
    let deleted = sqlx::query("DELETE FROM items WHERE tenant_id = $1")
        .persistent(false)
        .bind(b.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(deleted, 0);
    let all_mine: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT tenant_id FROM items")
        .persistent(false)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(all_mine.len(), 3);
    assert!(all_mine.iter().all(|t| t == a.as_uuid()));
    tx.commit().await.unwrap();

    // The superuser confirms B's rows are untouched.
    let intact: i64 =
        sqlx::query_scalar("SELECT count(*) FROM items WHERE tenant_id = $1 AND body <> 'pwned'")
            .bind(b.as_uuid())
            .fetch_one(s.fx.admin())
            .await
            .unwrap();
    assert_eq!(intact, 3);
    pool.close().await;
    s.fx.cleanup().await;
}

async fn writes_into_another_tenant_are_refused_by_with_check(via: Via) {
    let Some(s) = setup("withcheck").await else {
        return;
    };
    let (a, b) = (TenantId::new_v4(), TenantId::new_v4());
    seed(&s.fx, &[a], 1).await;
    let Some(raw) = s.fx.app_pool(&s.app, 1, via).await else {
        return;
    };
    let pool = TenantPool::new(raw);

    let mut tx = pool.begin(&ctx(a)).await.unwrap();
    let err = sqlx::query("INSERT INTO items (tenant_id, body) VALUES ($1, 'planted')")
        .persistent(false)
        .bind(b.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{err}");
    drop(tx);

    let mut tx = pool.begin(&ctx(a)).await.unwrap();
    let err = sqlx::query("UPDATE items SET tenant_id = $1")
        .persistent(false)
        .bind(b.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("42501"),
        "moving a row out must fail: {err}"
    );
    drop(tx);

    let in_b: i64 = sqlx::query_scalar("SELECT count(*) FROM items WHERE tenant_id = $1")
        .bind(b.as_uuid())
        .fetch_one(s.fx.admin())
        .await
        .unwrap();
    assert_eq!(in_b, 0);
    pool.close().await;
    s.fx.cleanup().await;
}

async fn pool_of_one_connection_leaks_nothing_between_tenants(via: Via) {
    let Some(s) = setup("pooledleak").await else {
        return;
    };
    let (a, b) = (TenantId::new_v4(), TenantId::new_v4());
    seed(&s.fx, &[a, b], 2).await;
    let Some(raw) = s.fx.app_pool(&s.app, 1, via).await else {
        return;
    };
    let pool = TenantPool::new(raw.clone());

    // Outside any transaction: parameter-free, simple protocol.
    let setting = |raw: PgPool| async move {
        let v: Option<String> = sqlx::raw_sql("SELECT current_setting('nova.tenant_id', true)")
            .fetch_one(&raw)
            .await
            .unwrap()
            .get(0);
        v.unwrap_or_default()
    };

    // After commit.
    assert_eq!(count_visible(&pool, &ctx(a)).await, 2);
    assert_eq!(
        setting(raw.clone()).await,
        "",
        "setting must end with the transaction"
    );
    // After explicit rollback.
    let tx = pool.begin(&ctx(a)).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(setting(raw.clone()).await, "");
    // After a drop without commit or rollback.
    let tx = pool.begin(&ctx(a)).await.unwrap();
    drop(tx);
    assert_eq!(setting(raw.clone()).await, "");

    // Tenant B on the same (only) connection sees only B.
    let mut tx = pool.begin(&ctx(b)).await.unwrap();
    let seen: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT tenant_id FROM items")
        .persistent(false)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|t| t == b.as_uuid()));
    let pid_b: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Through PgBouncer this is the one server session of its pool (`pool_size = 1`).
    let pid_raw: i32 = sqlx::raw_sql("SELECT pg_backend_pid()")
        .fetch_one(&raw)
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        pid_b, pid_raw,
        "the test must reuse one physical connection"
    );
    raw.close().await;
    s.fx.cleanup().await;
}

async fn table_owner_is_still_filtered_under_force_rls(via: Via) {
    let Some(s) = setup("owner").await else {
        return;
    };
    let (a, b) = (TenantId::new_v4(), TenantId::new_v4());
    seed(&s.fx, &[a, b], 4).await;
    let Some(owner_raw) = s.fx.app_pool(&s.owner, 1, via).await else {
        return;
    };
    let n: i64 = sqlx::raw_sql("SELECT count(*) FROM items")
        .fetch_one(&owner_raw)
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the owner without a tenant sees nothing");
    let pool = TenantPool::new(owner_raw);
    assert_eq!(count_visible(&pool, &ctx(a)).await, 4);
    // Without FORCE the owner would see all eight: prove the attribute is what protects it.
    let forced: bool =
        sqlx::query_scalar("SELECT relforcerowsecurity FROM pg_class WHERE relname = 'items'")
            .fetch_one(s.fx.admin())
            .await
            .unwrap();
    assert!(forced);
    pool.close().await;
    s.fx.cleanup().await;
}

async fn malformed_or_injected_tenant_id_never_reaches_sql(via: Via) {
    let Some(s) = setup("injection").await else {
        return;
    };
    let a = TenantId::new_v4();
    seed(&s.fx, &[a], 2).await;
    for attempt in [
        "' OR '1'='1",
        "00000000-0000-0000-0000-000000000000",
        "67e55044-10b1-426f-9247-bb680e5fe0c8'; SET nova.tenant_id = '",
        "acme",
        "",
    ] {
        assert!(attempt.parse::<TenantId>().is_err(), "{attempt:?} parsed");
    }
    // Even if garbage were set by hand, the policy's cast fails the statement: an error,
    // never rows.
    let Some(raw) = s.fx.app_pool(&s.app, 1, via).await else {
        return;
    };
    let mut tx = raw.begin().await.unwrap();
    tx.execute("SELECT set_config('nova.tenant_id', $$' OR '1'='1$$, true)")
        .await
        .unwrap();
    let err = sqlx::query("SELECT * FROM items")
        .persistent(false)
        .fetch_all(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("22P02"), "{err}");
    drop(tx);
    raw.close().await;
    s.fx.cleanup().await;
}

async fn error_mid_transaction_leaves_the_connection_clean(via: Via) {
    let Some(s) = setup("midtxerror").await else {
        return;
    };
    let (a, b) = (TenantId::new_v4(), TenantId::new_v4());
    seed(&s.fx, &[a, b], 3).await;
    let Some(raw) = s.fx.app_pool(&s.app, 1, via).await else {
        return;
    };
    let pool = TenantPool::new(raw.clone());

    let mut tx = pool.begin(&ctx(a)).await.unwrap();
    sqlx::query("INSERT INTO items (tenant_id, body) VALUES ($1, 'half-written')")
        .persistent(false)
        .bind(a.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    assert!(
        tx.execute("SELECT no_such_column FROM items")
            .await
            .is_err()
    );
    drop(tx); // aborted transaction: rollback on drop

    let mut tx = pool.begin(&ctx(b)).await.unwrap();
    let rows = sqlx::query("SELECT tenant_id, body FROM items")
        .persistent(false)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(r.get::<uuid::Uuid, _>("tenant_id"), *b.as_uuid());
    }
    tx.commit().await.unwrap();
    let half: i64 = sqlx::query_scalar("SELECT count(*) FROM items WHERE body = 'half-written'")
        .fetch_one(s.fx.admin())
        .await
        .unwrap();
    assert_eq!(half, 0, "the failed transaction must not half-write");
    raw.close().await;
    s.fx.cleanup().await;
}

async fn many_concurrent_tasks_for_many_tenants_never_see_a_foreign_row(via: Via) {
    let Some(s) = setup("concurrent").await else {
        return;
    };
    let tenants: Vec<TenantId> = (0..24).map(|_| TenantId::new_v4()).collect();
    seed(&s.fx, &tenants, 5).await;
    let Some(raw) = s.fx.app_pool(&s.app, 4, via).await else {
        return;
    };
    let pool = TenantPool::new(raw);

    let mut handles = Vec::new();
    for task in 0..64u64 {
        let pool = pool.clone();
        let tenants = tenants.clone();
        handles.push(tokio::spawn(async move {
            // A small deterministic PRNG per task (xorshift), so a failure is reproducible.
            let mut x = task.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut written: HashMap<TenantId, i64> = HashMap::new();
            for _ in 0..25 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let t = tenants[(x % tenants.len() as u64) as usize];
                let mut tx = pool.begin(&ctx(t)).await.unwrap();
                if x % 3 == 0 {
                    sqlx::query("INSERT INTO items (tenant_id, body) VALUES ($1, 'concurrent')")
                        .persistent(false)
                        .bind(t.as_uuid())
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    *written.entry(t).or_default() += 1;
                }
                let seen: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT tenant_id FROM items")
                    .persistent(false)
                    .fetch_all(&mut *tx)
                    .await
                    .unwrap();
                assert!(seen.len() >= 5);
                assert!(
                    seen.iter().all(|s| s == t.as_uuid()),
                    "task {task} saw a foreign row"
                );
                tx.commit().await.unwrap();
            }
            written
        }));
    }
    let mut expected: HashMap<TenantId, i64> = tenants.iter().map(|t| (*t, 5)).collect();
    for h in handles {
        for (t, n) in h.await.unwrap() {
            *expected.get_mut(&t).unwrap() += n;
        }
    }
    for (t, n) in expected {
        assert_eq!(count_visible(&pool, &ctx(t)).await, n, "tenant {t}");
    }
    pool.close().await;
    s.fx.cleanup().await;
}

async fn bypass_works_only_for_named_roles_from_a_system_context(via: Via) {
    let Some(mut s) = setup("bypass").await else {
        return;
    };
    let (a, b) = (TenantId::new_v4(), TenantId::new_v4());
    seed(&s.fx, &[a, b], 2).await;
    let admin_rw = s.fx.roles().get(AppRole::AdminRw).clone();
    let admin_login = s.fx.login_role("admin", &[&admin_rw]).await;
    let Some(admin_raw) = s.fx.app_pool(&admin_login, 1, via).await else {
        return;
    };
    let admin_pool = TenantPool::new(admin_raw);
    let Some(app_raw) = s.fx.app_pool(&s.app, 1, via).await else {
        return;
    };
    let app_pool = TenantPool::new(app_raw);

    // A verified user's context may not ask for a bypass.
    assert!(matches!(
        admin_pool.begin_bypass(&ctx(a), "looking around").await,
        Err(Error::BypassRequiresSystemContext)
    ));
    let system = TenantContext::system(a, "retention job").unwrap();
    // The bypass role without a bypass is still confined to its tenant.
    assert_eq!(count_visible(&admin_pool, &system).await, 2);
    // With a bypass it sees every tenant.
    let before = nova_tenancy::rls_bypasses_started();
    let mut tx = admin_pool
        .begin_bypass(&system, "retention job")
        .await
        .unwrap();
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM items")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(all, 4);
    tx.commit().await.unwrap();
    assert!(nova_tenancy::rls_bypasses_started() > before);

    // The same bypass on a role the migration did not name changes nothing.
    let mut tx = app_pool
        .begin_bypass(&system, "retention job")
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM items")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 2);
    drop(tx);
    // Nor does setting the bypass by hand.
    let Some(raw) = s.fx.app_pool(&s.app, 1, via).await else {
        return;
    };
    let mut tx = raw.begin().await.unwrap();
    tx.execute("SELECT set_config('nova.bypass_reason', 'sneaky', true)")
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM items")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 0);
    drop(tx);
    raw.close().await;
    admin_pool.close().await;
    app_pool.close().await;
    let _ = &s.migration;
    s.fx.cleanup().await;
}

#[tokio::test]
async fn role_ddl_refuses_an_application_role_with_bypassrls() {
    let Some(s) = setup("bypassrls").await else {
        return;
    };
    let reporting = s.fx.roles().get(AppRole::Reporting).clone();
    s.fx.exec(&format!("ALTER ROLE {reporting} BYPASSRLS"))
        .await;
    let err =
        s.fx.admin()
            .execute(AssertSqlSafe(s.migration.roles_sql()))
            .await
            .unwrap_err();
    assert!(err.to_string().contains("BYPASSRLS"), "{err}");
    s.fx.cleanup().await;
}

async fn connection_policy_timeouts_reach_the_server(via: Via) {
    let Some(s) = setup("policy").await else {
        return;
    };
    let (opts, pooler) = match via {
        Via::Direct => (s.fx.connect_options(&s.app), Pooler::None),
        Via::PgBouncer => {
            let Some(opts) = s.fx.pgbouncer_options(&s.app).await else {
                return;
            };
            (opts, Pooler::PgBouncerTransaction)
        }
    };
    let policy = ConnectionPolicy {
        statement_timeout: std::time::Duration::from_millis(200),
        max_connections: 1,
        pooler,
        ..ConnectionPolicy::local_development()
    };
    let pool = policy.connect(opts).await.unwrap();
    let system = TenantContext::system(TenantId::new_v4(), "policy test").unwrap();
    let mut tx = pool.begin(&system).await.unwrap();
    let shown: String = sqlx::query_scalar("SHOW statement_timeout")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(shown, "200ms");
    let shown: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(shown, "1min");
    let err = tx.execute("SELECT pg_sleep(2)").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    drop(tx);
    pool.close().await;
    s.fx.cleanup().await;
}

// ----- isolation modes and residency routing -----

fn region(s: &str) -> Region {
    Region::new(s).unwrap()
}

/// Marks `database` as holding `name`'s data (the router checks it); run before opening the
/// sessions that must see it.
async fn mark_region(fx: &PgFixture, database: &str, name: &str) {
    fx.exec(&region_database_sql(
        &Ident::new(database).unwrap(),
        &region(name),
    ))
    .await;
}

async fn router_refuses_unknown_tenants_and_isolation_or_region_mismatches(via: Via) {
    let Some(s) = setup("routing").await else {
        return;
    };
    let (a, b) = (TenantId::new_v4(), TenantId::new_v4());
    seed(&s.fx, &[a, b], 1).await;
    // The region marker first: sessions opened after it see it.
    mark_region(&s.fx, s.fx.database(), "eu").await;
    let Some(raw) = s.fx.app_pool(&s.app, 1, via).await else {
        return;
    };
    let eu = TenantPool::new(raw);
    let router = TenantRouter::builder()
        .region_pool(region("eu"), eu.clone())
        .place(
            a,
            Placement::Logical {
                region: region("eu"),
            },
        )
        .build()
        .unwrap();

    let tx = router.begin(&ctx(a)).await.unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(
        router.begin(&ctx(b)).await,
        Err(Error::UnknownTenant { tenant }) if tenant == b
    ));
    assert!(matches!(
        router.begin(&ctx_in(a, Isolation::Schema)).await,
        Err(Error::IsolationMismatch {
            placed: Isolation::Logical,
            ..
        })
    ));
    assert!(matches!(
        router
            .begin(&TenantContext::from_verified(
                &TestVerifier,
                identity(a).region(region("us"))
            ))
            .await,
        Err(Error::ResidencyViolation { .. })
    ));
    // A placement without a pool for its region is refused when the router is built.
    assert!(matches!(
        TenantRouter::builder()
            .place(
                a,
                Placement::Logical {
                    region: region("ap")
                }
            )
            .build(),
        Err(Error::NoRegionPool { .. })
    ));
    eu.close().await;
    s.fx.cleanup().await;
}

async fn schema_per_tenant_routing_refuses_a_schema_not_marked_for_the_tenant(via: Via) {
    let Some(s) = setup("schemamode").await else {
        return;
    };
    let (a, b) = (TenantId::new_v4(), TenantId::new_v4());
    let (sa, sb) = (
        Ident::new("tenant_a").unwrap(),
        Ident::new("tenant_b").unwrap(),
    );
    for (schema, tenant) in [(&sa, a), (&sb, b)] {
        s.fx.exec(&tenant_schema_sql(schema, tenant)).await;
        s.fx.exec(&format!(
            "CREATE TABLE {schema}.notes (id serial PRIMARY KEY, tenant_id uuid NOT NULL, body text NOT NULL)"
        ))
        .await;
        let m = RlsMigration::new(s.fx.roles().clone())
            .schema(schema.clone())
            .table(TenantTable::new("notes").unwrap());
        s.fx.exec(&m.tables_sql()).await;
        s.fx.exec(&format!(
            "INSERT INTO {schema}.notes (tenant_id, body) VALUES ('{}', 'note of {}')",
            tenant,
            schema.as_str()
        ))
        .await;
    }
    mark_region(&s.fx, s.fx.database(), "eu").await;
    let Some(raw) = s.fx.app_pool(&s.app, 1, via).await else {
        return;
    };
    let shared = TenantPool::new(raw);
    let router = TenantRouter::builder()
        .region_pool(region("eu"), shared.clone())
        .place(
            a,
            Placement::Schema {
                region: region("eu"),
                schema: sa.clone(),
            },
        )
        // Misconfiguration: tenant B pointed at tenant A's schema.
        .place(
            b,
            Placement::Schema {
                region: region("eu"),
                schema: sa.clone(),
            },
        )
        .build()
        .unwrap();

    let mut tx = router.begin(&ctx_in(a, Isolation::Schema)).await.unwrap();
    let body: String = sqlx::query_scalar("SELECT body FROM notes")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(body, "note of tenant_a");
    // Naming the other tenant's schema explicitly still shows nothing (RLS inside it).
    let foreign: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_b.notes")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(foreign, 0);
    tx.commit().await.unwrap();

    assert!(matches!(
        router.begin(&ctx_in(b, Isolation::Schema)).await,
        Err(Error::PlacementMismatch {
            isolation: Isolation::Schema,
            ..
        })
    ));
    shared.close().await;
    s.fx.cleanup().await;
}

async fn database_per_tenant_routing_refuses_a_database_not_marked_for_the_tenant(via: Via) {
    let Some(mut s) = setup("dbmode").await else {
        return;
    };
    let (a, b) = (TenantId::new_v4(), TenantId::new_v4());
    let db_a = s.fx.extra_database("a").await;
    let db_b = s.fx.extra_database("b").await;
    for (db, tenant) in [(&db_a, a), (&db_b, b)] {
        s.fx.exec(&tenant_database_sql(&Ident::new(db).unwrap(), tenant))
            .await;
        mark_region(&s.fx, db, "eu").await;
        let admin = s.fx.admin_on(db).await;
        admin
            .execute(AssertSqlSafe(format!(
                "GRANT CONNECT ON DATABASE \"{db}\" TO \"{}\"",
                s.app
            )))
            .await
            .unwrap();
        admin.close().await;
    }
    let opts_a = match via {
        Via::Direct => s.fx.connect_options_on(&db_a, &s.app),
        Via::PgBouncer => {
            let Some(opts) = s.fx.pgbouncer_options(&s.app).await else {
                return;
            };
            opts.database(&db_a)
        }
    };
    let pool_a = TenantPool::new(sqlx::PgPool::connect_with(opts_a).await.unwrap());
    let c = TenantId::new_v4();
    let placed_in = |db: &str| Placement::Database {
        region: region("eu"),
        database: Ident::new(db).unwrap(),
    };
    let router = TenantRouter::builder()
        .dedicated_pool(a, pool_a.clone())
        .place(a, placed_in(&db_a))
        // Misconfiguration 1: tenant B's pool reaches tenant A's database.
        .dedicated_pool(b, pool_a.clone())
        .place(b, placed_in(&db_b))
        // Misconfiguration 2: tenant C's directory entry and pool both name A's database.
        .dedicated_pool(c, pool_a.clone())
        .place(c, placed_in(&db_a))
        .build()
        .unwrap();

    let tx = router.begin(&ctx_in(a, Isolation::Database)).await.unwrap();
    tx.commit().await.unwrap();
    for wrong in [b, c] {
        assert!(matches!(
            router.begin(&ctx_in(wrong, Isolation::Database)).await,
            Err(Error::PlacementMismatch {
                isolation: Isolation::Database,
                ..
            })
        ));
    }
    // A logical-mode context for a database tenant is refused before any connection.
    assert!(matches!(
        router.begin(&ctx(a)).await,
        Err(Error::IsolationMismatch {
            placed: Isolation::Database,
            ..
        })
    ));
    pool_a.close().await;
    s.fx.cleanup().await;
}

async fn leftover_session_bypass_setting_never_reaches_a_user_transaction(via: Via) {
    let Some(mut s) = setup("leftoverbypass").await else {
        return;
    };
    let (a, b) = (TenantId::new_v4(), TenantId::new_v4());
    seed(&s.fx, &[a, b], 2).await;
    let admin_rw = s.fx.roles().get(AppRole::AdminRw).clone();
    let admin_login = s.fx.login_role("admin", &[&admin_rw]).await;
    // Role-level default, as `ALTER ROLE .. SET` would leave it on every new session.
    s.fx.exec(&format!(
        "ALTER ROLE \"{admin_login}\" SET nova.bypass_reason = 'left over'"
    ))
    .await;
    let Some(raw) = s.fx.app_pool(&admin_login, 1, via).await else {
        return;
    };
    // And a session-level SET on the one pooled connection (simple protocol; through
    // PgBouncer it lands on the one server session of this database and login).
    raw.execute("SET nova.bypass_reason = 'also left over'")
        .await
        .unwrap();
    let pool = TenantPool::new(raw.clone());
    assert_eq!(
        count_visible(&pool, &ctx(a)).await,
        2,
        "a user transaction on a bypass-capable login must still see one tenant"
    );
    raw.close().await;
    s.fx.cleanup().await;
}

async fn pools_logging_in_as_a_role_that_skips_rls_are_refused(via: Via) {
    let Some(s) = setup("checkedpool").await else {
        return;
    };
    // The fixture's admin pool is a superuser: PostgreSQL would show it every row.
    let admin_login: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(s.fx.admin())
        .await
        .unwrap();
    let err = TenantPool::checked(s.fx.admin().clone()).await.unwrap_err();
    match &err {
        Error::LoginSkipsRls { role } => assert_eq!(role, &admin_login, "{err}"),
        other => panic!("expected LoginSkipsRls, got {other:?}: {other}"),
    }
    let Some(raw) = s.fx.app_pool(&s.app, 1, via).await else {
        return;
    };
    let ok = TenantPool::checked(raw).await;
    assert!(ok.is_ok());
    ok.unwrap().close().await;
    s.fx.cleanup().await;
}

/// A login that existed as a superuser is made a plain one, whatever its password holds;
/// the owner role and schema come from the migration and refuse a bypassing owner.
#[tokio::test]
async fn login_ddl_resets_a_superuser_login_and_survives_a_hostile_password() {
    let Some(s) = setup("loginddl").await else {
        return;
    };
    let prefix = s.fx.prefix().to_owned();
    let login = Ident::new(&format!("{prefix}svc")).unwrap();
    let owner = Ident::new(&format!("{prefix}schema_owner")).unwrap();
    s.fx.exec(&format!(
        "CREATE ROLE {login} LOGIN SUPERUSER BYPASSRLS CREATEROLE"
    ))
    .await;
    let m = RlsMigration::new(s.fx.roles().clone())
        .schema(Ident::new(&format!("{prefix}app")).unwrap())
        .owner(owner.clone());
    s.fx.exec(&m.roles_sql()).await;
    for password in [
        r"x'; ALTER ROLE CURRENT_USER SUPERUSER; --",
        r"back\'slash\\",
        "plain",
    ] {
        s.fx.exec(&m.login_sql(&login, password, Some(AppRole::AppRw)))
            .await;
        let (superuser, bypass, createrole): (bool, bool, bool) = sqlx::query_as(
            "SELECT rolsuper, rolbypassrls, rolcreaterole FROM pg_roles WHERE rolname = $1",
        )
        .bind(login.as_str())
        .fetch_one(s.fx.admin())
        .await
        .unwrap();
        assert_eq!(
            (superuser, bypass, createrole),
            (false, false, false),
            "{password}"
        );
    }
    let member: bool = sqlx::query_scalar("SELECT pg_has_role($1, $2, 'MEMBER')")
        .bind(login.as_str())
        .bind(s.fx.roles().get(AppRole::AppRw).as_str())
        .fetch_one(s.fx.admin())
        .await
        .unwrap();
    assert!(member);
    let path: Vec<String> = sqlx::query_scalar(
        "SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole \
         WHERE r.rolname = $1 AND s.setdatabase = 0",
    )
    .bind(login.as_str())
    .fetch_one(s.fx.admin())
    .await
    .unwrap();
    assert_eq!(path, [format!("search_path={prefix}app")]);
    // An owner that skips row-level security stops the migration.
    s.fx.exec(&format!("ALTER ROLE {owner} BYPASSRLS")).await;
    let err =
        s.fx.admin()
            .execute(AssertSqlSafe(m.roles_sql()))
            .await
            .unwrap_err();
    assert!(err.to_string().contains("BYPASSRLS"), "{err}");
    s.fx.exec(&format!(
        "DROP SCHEMA IF EXISTS \"{prefix}app\"; DROP ROLE IF EXISTS {login}; DROP ROLE IF EXISTS {owner}"
    ))
    .await;
    s.fx.cleanup().await;
}
