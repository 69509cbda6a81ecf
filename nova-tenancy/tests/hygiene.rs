//! Connection hygiene against the real PostgreSQL, straight and through a transaction-pooling
//! PgBouncer: cancelled futures at every await point, session state left by code inside a
//! tenant transaction, logins that can reach a role row-level security does not filter,
//! schema objects that defeat it, and region pools registered under the wrong region.
//!
//! After each attack two borrowers look: another tenant's Nova transaction, and a raw
//! borrower of the same pool (a health check, a migration, another store) that never goes
//! through Nova. Through PgBouncer every test database has one server session shared by
//! all clients, so whatever a client leaves on it, the next client meets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use nova_tenancy::inspect::{Finding, Inspection};
use nova_tenancy::testing::{PgFixture, Via};
use nova_tenancy::{
    AppRole, ConnectionPolicy, CredentialVerifier, Error, Ident, Placement, Pooler, Region,
    RlsMigration, TenantContext, TenantId, TenantPool, TenantRouter, TenantTable, UserId,
    VerifiedIdentity, region_database_sql,
};
use sqlx::{AssertSqlSafe, Executor, PgPool, Row};

struct TestVerifier;
impl CredentialVerifier for TestVerifier {
    fn verifier_name(&self) -> &'static str {
        "test/hygiene"
    }
}

fn ctx(tenant: TenantId) -> TenantContext {
    TenantContext::from_verified(
        &TestVerifier,
        VerifiedIdentity::new(tenant).user(UserId::new_v4()),
    )
}

struct Setup {
    fx: PgFixture,
    app: String,
    migration: RlsMigration,
    a: TenantId,
    b: TenantId,
}

/// `items` under Nova's migration, owned by a plain owner role, three rows for each of two
/// tenants, and a login `app` that is a member of `app_rw` only.
async fn setup(label: &str) -> Option<Setup> {
    let mut fx = PgFixture::new(label).await?;
    let migration = RlsMigration::new(fx.roles().clone()).table(TenantTable::new("items").unwrap());
    fx.exec(&migration.roles_sql()).await;
    let owner = fx.login_role("owner", &[]).await;
    let app_rw = fx.roles().get(AppRole::AppRw).clone();
    let app = fx.login_role("app", &[&app_rw]).await;
    fx.exec(
        "CREATE TABLE items (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), \
         tenant_id uuid NOT NULL, body text NOT NULL)",
    )
    .await;
    fx.exec(&format!("ALTER TABLE items OWNER TO \"{owner}\""))
        .await;
    fx.exec(&migration.tables_sql()).await;
    let (a, b) = (TenantId::new_v4(), TenantId::new_v4());
    for t in [a, b] {
        sqlx::query("INSERT INTO items (tenant_id, body) SELECT $1, 'row ' || g FROM generate_series(1, 3) g")
            .bind(t.as_uuid())
            .execute(fx.admin())
            .await
            .unwrap();
    }
    Some(Setup {
        fx,
        app,
        migration,
        a,
        b,
    })
}

/// What a borrower that never went through Nova finds on a connection of `pool`.
#[derive(Debug, PartialEq, Eq)]
struct RawView {
    in_transaction: bool,
    current_user: String,
    tenant_setting: String,
    bypass_setting: String,
    search_path: String,
    temp_objects: i64,
    open_cursors: i64,
    visible_items: i64,
    listening: i64,
}

async fn raw_view(pool: &PgPool) -> RawView {
    // One simple-query statement: through PgBouncer it runs on one server session, and it
    // is the first statement of its own transaction unless one was left open (then
    // `now()`, the start of that transaction, is earlier than the statement's start).
    let row = sqlx::raw_sql(
        "SELECT now() <> statement_timestamp(), current_user::text, \
         coalesce(current_setting('nova.tenant_id', true), ''), \
         coalesce(current_setting('nova.bypass_reason', true), ''), \
         current_setting('search_path'), \
         (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()), \
         (SELECT count(*) FROM pg_cursors), \
         (SELECT count(*) FROM items), \
         (SELECT count(*) FROM pg_listening_channels())",
    )
    .fetch_one(pool)
    .await
    .expect("raw borrower");
    RawView {
        in_transaction: row.try_get(0).unwrap(),
        current_user: row.try_get(1).unwrap(),
        tenant_setting: row.try_get(2).unwrap(),
        bypass_setting: row.try_get(3).unwrap(),
        search_path: row.try_get(4).unwrap(),
        temp_objects: row.try_get(5).unwrap(),
        open_cursors: row.try_get(6).unwrap(),
        visible_items: row.try_get(7).unwrap(),
        listening: row.try_get(8).unwrap(),
    }
}

fn clean_view(login: &str) -> RawView {
    RawView {
        in_transaction: false,
        current_user: login.to_owned(),
        tenant_setting: String::new(),
        bypass_setting: String::new(),
        search_path: "\"$user\", public".to_owned(),
        temp_objects: 0,
        open_cursors: 0,
        visible_items: 0,
        listening: 0,
    }
}

/// A raw borrower sees a clean session, and a Nova transaction of `tenant` sees exactly its
/// three rows, as the login, with the default search path.
async fn assert_clean(s: &Setup, pool: &PgPool, tenant: TenantId, what: &str) {
    assert_eq!(
        raw_view(pool).await,
        clean_view(&s.app),
        "raw borrower after {what}"
    );
    let nova = TenantPool::new(pool.clone());
    let mut tx = nova.begin(&ctx(tenant)).await.unwrap();
    let row = sqlx::raw_sql(
        "SELECT current_user::text, current_setting('search_path'), \
         (SELECT count(*) FROM items), \
         (SELECT count(DISTINCT tenant_id) FROM items)",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    let seen = (
        row.try_get::<String, _>(0).unwrap(),
        row.try_get::<String, _>(1).unwrap(),
        row.try_get::<i64, _>(2).unwrap(),
        row.try_get::<i64, _>(3).unwrap(),
    );
    assert_eq!(
        seen,
        (s.app.clone(), "\"$user\", public".to_owned(), 3, 1),
        "tenant transaction after {what}"
    );
    tx.commit().await.unwrap();
}

/// No backend of the app login is left inside a transaction (polled: a closed connection's
/// backend takes a moment to exit).
async fn assert_no_open_transactions(s: &Setup, what: &str) {
    let mut left = 0;
    for _ in 0..50 {
        left = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE usename = $1 AND datname = $2 AND state LIKE 'idle in transaction%'",
        )
        .bind(&s.app)
        .bind(s.fx.database())
        .fetch_one(s.fx.admin())
        .await
        .unwrap();
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    panic!("{left} sessions of the app login left idle in a transaction after {what}");
}

/// A waker that records that the future asked to be polled again.
struct Woken(tokio::sync::Notify);

impl std::task::Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.notify_one();
    }
}

/// Hand-driven polling: each `step` polls once and, if the future is pending, waits until
/// it is woken — so step `k` is the future's `k`-th resumption, one await point after
/// another, however long the server takes.
struct Stepper<F: Future> {
    fut: Pin<Box<F>>,
    woken: Arc<Woken>,
}

impl<F: Future> Stepper<F> {
    fn new(fut: F) -> Self {
        Self {
            fut: Box::pin(fut),
            woken: Arc::new(Woken(tokio::sync::Notify::new())),
        }
    }

    /// Polls once; `true` when the future completed.
    async fn step(&mut self, pause: Duration) -> bool {
        let waker = Waker::from(self.woken.clone());
        let mut cx = Context::from_waker(&waker);
        if self.fut.as_mut().poll(&mut cx).is_ready() {
            return true;
        }
        tokio::time::timeout(Duration::from_secs(20), self.woken.0.notified())
            .await
            .expect("a pending future was never woken");
        if !pause.is_zero() {
            // The server goes on with what it was sent before the next poll reads it.
            tokio::time::sleep(pause).await;
        }
        false
    }
}

/// Drives a fresh future from `make` through 0, 1, 2, … of its await points (with `pause`
/// before each next poll, so that the server's replies arrive at different points), drops
/// it there, and checks the pool after every drop, until the future completes on its own.
async fn cancel_at_every_poll<F, Fut, T>(s: &Setup, pool: &PgPool, what: &str, mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    for pause_us in [0_u64, 100, 1_000] {
        let pause = Duration::from_micros(pause_us);
        let mut completed = false;
        let mut polls = 0;
        while !completed {
            let mut fut = Stepper::new(make());
            for _ in 0..polls {
                if fut.step(pause).await {
                    completed = true;
                    break;
                }
            }
            drop(fut);
            assert_clean(s, pool, s.b, &format!("{what} dropped after {polls} polls")).await;
            polls += 1;
            assert!(polls < 200, "{what} never completed");
        }
    }
    assert_no_open_transactions(s, what).await;
}

async fn cancelled_begin_commit_and_bypass_leave_nothing(via: Via) {
    let Some(mut s) = setup("cancel").await else {
        return;
    };
    // A login that is a member of the bypass role, so a leaked bypass would show every row.
    let admin_rw = s.fx.roles().get(AppRole::AdminRw).clone();
    let admin_login = s.fx.login_role("adm", &[&admin_rw]).await;
    let Some(raw) = s.fx.app_pool(&s.app, 1, via).await else {
        s.fx.cleanup().await;
        return;
    };
    let pool = TenantPool::new(raw.clone());
    let a = ctx(s.a);

    let closed_before = nova_tenancy::dirty_connections_closed();
    cancel_at_every_poll(&s, &raw, "begin", || pool.begin(&a)).await;
    // Some drops came after the BEGIN was sent: those connections were closed, not reused.
    assert!(nova_tenancy::dirty_connections_closed() > closed_before);

    let attempt = std::sync::atomic::AtomicU32::new(0);
    cancel_at_every_poll(&s, &raw, "commit", || {
        let pool = pool.clone();
        let a = a.clone();
        let n = attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            let mut tx = pool.begin(&a).await.unwrap();
            // Two rows per attempt: a commit is all or nothing, whatever was cancelled.
            sqlx::query(
                "INSERT INTO items (tenant_id, body) SELECT $1, $2 FROM generate_series(1, 2)",
            )
            .persistent(false)
            .bind(a.tenant().as_uuid())
            .bind(format!("attempt {n}"))
            .execute(&mut *tx)
            .await
            .unwrap();
            // Only the commit is polled step by step.
            tokio::task::yield_now().await;
            tx.commit().await
        }
    })
    .await;

    cancel_at_every_poll(&s, &raw, "rollback", || {
        let pool = pool.clone();
        let a = a.clone();
        async move {
            let tx = pool.begin(&a).await.unwrap();
            tx.rollback().await
        }
    })
    .await;

    // begin_bypass, on a pool of the bypass-capable login: a leak would show all six rows.
    let Some(admin_raw) = s.fx.app_pool(&admin_login, 1, via).await else {
        s.fx.cleanup().await;
        return;
    };
    let admin_pool = TenantPool::new(admin_raw.clone());
    let system = TenantContext::system(s.a, "hygiene test").unwrap();
    for pause_us in [0_u64, 100, 1_000] {
        for polls in 0..200 {
            let mut fut = Stepper::new(admin_pool.begin_bypass(&system, "hygiene test"));
            let mut done = false;
            for _ in 0..polls {
                if fut.step(Duration::from_micros(pause_us)).await {
                    done = true;
                    break;
                }
            }
            drop(fut);
            let view = raw_view(&admin_raw).await;
            assert!(
                !view.in_transaction,
                "bypass dropped after {polls} polls: {view:?}"
            );
            assert_eq!(view.visible_items, 0, "bypass dropped after {polls} polls");
            assert_eq!(view.bypass_setting, "");
            if done {
                break;
            }
        }
    }
    // Whatever the cancelled commits did, each either committed whole or not at all, and
    // the ones that ran to the end did commit.
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT body, count(*) FROM items WHERE body LIKE 'attempt %' GROUP BY body",
    )
    .fetch_all(s.fx.admin())
    .await
    .unwrap();
    assert!(counts.iter().all(|(_, n)| *n == 2), "{counts:?}");
    assert!(!counts.is_empty());
    admin_raw.close().await;
    raw.close().await;
    s.fx.cleanup().await;
}

async fn timeouts_around_begin_never_leave_a_transaction_open(via: Via) {
    let Some(s) = setup("timeouts").await else {
        return;
    };
    let Some(raw) = s.fx.app_pool(&s.app, 1, via).await else {
        s.fx.cleanup().await;
        return;
    };
    let pool = TenantPool::new(raw.clone());
    let a = ctx(s.a);
    let mut outcomes = [0_u32; 2];
    for i in 0..300_u64 {
        // 0 to 5 ms, spread over the iterations.
        let limit = Duration::from_micros((i * 7_919) % 5_001);
        match tokio::time::timeout(limit, pool.begin(&a)).await {
            Ok(Ok(tx)) => {
                outcomes[0] += 1;
                if i % 2 == 0 {
                    tx.commit().await.unwrap();
                } else {
                    drop(tx);
                }
            }
            Ok(Err(e)) => panic!("begin failed: {e}"),
            Err(_) => outcomes[1] += 1,
        }
        let view = raw_view(&raw).await;
        assert_eq!(view, clean_view(&s.app), "after iteration {i} ({limit:?})");
    }
    assert!(outcomes[1] > 0, "no timeout fired: {outcomes:?}");
    assert!(outcomes[0] > 0, "no begin completed: {outcomes:?}");
    assert_no_open_transactions(&s, "timeouts").await;
    raw.close().await;
    s.fx.cleanup().await;
}

/// One attack: SQL run inside tenant A's transaction, which is then committed, rolled back
/// or dropped.
/// The outer result is the attack's own; the inner one is the commit's.
async fn attack(
    s: &Setup,
    pool: &PgPool,
    sql: &str,
    end: End,
) -> Result<Result<(), Error>, sqlx::Error> {
    let nova = TenantPool::new(pool.clone());
    let mut tx = nova.begin(&ctx(s.a)).await.unwrap();
    let result = tx.execute(AssertSqlSafe(sql.to_owned())).await.map(|_| ());
    if let Err(e) = result {
        tx.rollback().await.unwrap();
        return Err(e);
    }
    match end {
        End::Commit => return Ok(tx.commit().await),
        End::Rollback => tx.rollback().await.unwrap(),
        End::Drop => {
            drop(tx);
            // Let the spawned clean-up run before the next borrower (it would wait anyway
            // on a pool of one, but a PgBouncer client pool is not that pool).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(Ok(()))
}

/// A tenant transaction that writes through the unqualified table name, as a handler would.
async fn probe(pool: &PgPool, tenant: TenantId) {
    let nova = TenantPool::new(pool.clone());
    let mut tx = nova.begin(&ctx(tenant)).await.unwrap();
    tx.execute(
        "INSERT INTO items (tenant_id, body) \
         VALUES (NULLIF(current_setting('nova.tenant_id'), '')::uuid, 'probe')",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[derive(Debug, Clone, Copy)]
enum End {
    Commit,
    Rollback,
    Drop,
}

async fn session_state_left_inside_a_tenant_transaction_never_outlives_it(via: Via) {
    let Some(s) = setup("session").await else {
        return;
    };
    // The login is (wrongly) a member of a BYPASSRLS role: `SET ROLE` to it inside one
    // request must not carry into the next.
    let wide = format!("{}wide", s.fx.prefix());
    s.fx.exec(&format!("CREATE ROLE \"{wide}\" NOLOGIN BYPASSRLS"))
        .await;
    s.fx.exec(&format!("GRANT \"{wide}\" TO \"{}\"", s.app))
        .await;
    s.fx.exec(&format!("GRANT SELECT, INSERT ON items TO \"{wide}\""))
        .await;
    // A schema the app can write to, with a table that would capture the next tenant's
    // writes if a search_path survived.
    s.fx.exec(&format!(
        "CREATE SCHEMA shadow AUTHORIZATION \"{}\"; CREATE TABLE shadow.items (LIKE public.items INCLUDING ALL); \
         ALTER TABLE shadow.items OWNER TO \"{}\"",
        s.app, s.app
    ))
    .await;
    // One connection, so every check after an attack meets the session it was made on.
    let Some(pool) = s.fx.app_pool(&s.app, 1, via).await else {
        s.fx.cleanup().await;
        return;
    };
    // A second client pool: through PgBouncer it shares the one server session.
    let Some(other) = s.fx.app_pool(&s.app, 2, via).await else {
        s.fx.cleanup().await;
        return;
    };
    let a = s.a.to_string();
    let attacks = [
        format!("SET ROLE \"{wide}\""),
        format!("SELECT set_config('nova.tenant_id', '{a}', false)"),
        format!("SET nova.tenant_id = '{a}'"),
        "SELECT set_config('nova.bypass_reason', 'leaked', false)".to_owned(),
        "SET search_path = shadow, public".to_owned(),
        "DECLARE leak CURSOR WITH HOLD FOR SELECT * FROM items".to_owned(),
        "LISTEN tenant_a_events".to_owned(),
        "SET statement_timeout = 0".to_owned(),
        // A statement that ends Nova's transaction itself, then leaves state behind.
        format!("COMMIT; SET ROLE \"{wide}\"; SET search_path = shadow, public"),
    ];
    let mut probes = 0_i64;
    for sql in &attacks {
        for end in [End::Commit, End::Rollback, End::Drop] {
            attack(&s, &pool, sql, end)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .unwrap_or_else(|e| {
                    // Committing a transaction a statement inside already ended is refused.
                    assert!(sql.starts_with("COMMIT;"), "{sql}: commit failed: {e}");
                });
            probes += 1;
            probe(&pool, s.a).await;
            let what = format!("`{sql}` then {end:?}");
            assert_clean(&s, &pool, s.b, &what).await;
            assert_clean(&s, &other, s.b, &what).await;
        }
    }
    // Temporary tables: the migration revoked the privilege, so none can be created...
    let err = attack(
        &s,
        &pool,
        "CREATE TEMP TABLE items (tenant_id uuid, body text)",
        End::Commit,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("42501"),
        "{err}"
    );
    // ...and where a database still grants it, one never outlives its transaction.
    s.fx.exec(&format!(
        "GRANT TEMPORARY ON DATABASE \"{}\" TO \"{}\"",
        s.fx.database(),
        s.app
    ))
    .await;
    for end in [End::Commit, End::Drop] {
        attack(
            &s,
            &pool,
            "CREATE TEMP TABLE items (id uuid, tenant_id uuid, body text); \
             INSERT INTO pg_temp.items VALUES (gen_random_uuid(), gen_random_uuid(), 'shadow')",
            end,
        )
        .await
        .unwrap()
        .unwrap();
        assert_clean(&s, &pool, s.b, &format!("a temporary table then {end:?}")).await;
        probes += 1;
        probe(&pool, s.a).await;
    }
    // Every probe reached the tenant table; the shadow table and no temporary table
    // received one.
    let (captured, reached): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM shadow.items), \
         (SELECT count(*) FROM public.items WHERE body = 'probe')",
    )
    .fetch_one(s.fx.admin())
    .await
    .unwrap();
    assert_eq!((captured, reached), (0, probes));
    assert_no_open_transactions(&s, "session attacks").await;
    pool.close().await;
    other.close().await;
    s.fx.cleanup().await;
}

async fn nested_savepoints_still_work_inside_a_tenant_transaction(via: Via) {
    let Some(s) = setup("savepoint").await else {
        return;
    };
    let Some(raw) = s.fx.app_pool(&s.app, 1, via).await else {
        s.fx.cleanup().await;
        return;
    };
    let pool = TenantPool::new(raw.clone());
    let mut tx = pool.begin(&ctx(s.a)).await.unwrap();
    {
        use sqlx::Connection as _;
        let mut sp = (*tx).begin().await.unwrap();
        sp.execute("INSERT INTO items (tenant_id, body) VALUES (NULLIF(current_setting('nova.tenant_id'), '')::uuid, 'undone')")
            .await
            .unwrap();
        sp.rollback().await.unwrap();
        let mut sp = (*tx).begin().await.unwrap();
        sp.execute("INSERT INTO items (tenant_id, body) VALUES (NULLIF(current_setting('nova.tenant_id'), '')::uuid, 'kept')")
            .await
            .unwrap();
        sp.commit().await.unwrap();
    }
    tx.commit().await.unwrap();
    let bodies: Vec<String> =
        sqlx::query_scalar("SELECT body FROM items WHERE body IN ('undone', 'kept') ORDER BY body")
            .fetch_all(s.fx.admin())
            .await
            .unwrap();
    assert_eq!(bodies, ["kept"]);
    assert_eq!(raw_view(&raw).await, clean_view(&s.app));
    raw.close().await;
    s.fx.cleanup().await;
}

async fn logins_that_can_reach_a_bypass_role_are_refused_by_name(via: Via) {
    let Some(mut s) = setup("reach").await else {
        return;
    };
    let p = s.fx.prefix().to_owned();
    s.fx.exec(&format!(
        "CREATE ROLE \"{p}bypass\" NOLOGIN BYPASSRLS; CREATE ROLE \"{p}super\" NOLOGIN SUPERUSER; \
         CREATE ROLE \"{p}middle\" NOLOGIN NOINHERIT; GRANT \"{p}bypass\" TO \"{p}middle\""
    ))
    .await;
    let app_rw = s.fx.roles().get(AppRole::AppRw).clone();
    let direct = s.fx.login_role("direct", &[&app_rw]).await;
    s.fx.exec(&format!("GRANT \"{p}bypass\" TO \"{direct}\""))
        .await;
    let inherited = s.fx.login_role("inherited", &[&app_rw]).await;
    s.fx.exec(&format!("GRANT \"{p}middle\" TO \"{inherited}\""))
        .await;
    let superish = s.fx.login_role("superish", &[&app_rw]).await;
    s.fx.exec(&format!("GRANT \"{p}super\" TO \"{superish}\""))
        .await;
    for (login, role) in [
        (&direct, format!("{p}bypass")),
        (&inherited, format!("{p}bypass")),
        (&superish, format!("{p}super")),
    ] {
        let Some(pool) = s.fx.app_pool(login, 1, via).await else {
            s.fx.cleanup().await;
            return;
        };
        match TenantPool::checked(pool.clone()).await {
            Err(Error::LoginSkipsRls { role: named }) => assert_eq!(named, role, "{login}"),
            other => panic!("{login}: {other:?}"),
        }
        pool.close().await;
        let opts = match via {
            Via::Direct => s.fx.connect_options(login),
            Via::PgBouncer => s.fx.pgbouncer_options(login).await.unwrap(),
        };
        let policy = ConnectionPolicy {
            pooler: match via {
                Via::Direct => Pooler::None,
                Via::PgBouncer => Pooler::PgBouncerTransaction,
            },
            max_connections: 1,
            ..ConnectionPolicy::local_development()
        };
        match policy.connect(opts).await {
            Err(Error::LoginSkipsRls { role: named }) => assert_eq!(named, role, "{login}"),
            other => panic!("connect as {login}: {other:?}"),
        }
    }
    // The plain app login passes both.
    let Some(pool) = s.fx.app_pool(&s.app, 1, via).await else {
        s.fx.cleanup().await;
        return;
    };
    TenantPool::checked(pool.clone()).await.unwrap();
    pool.close().await;
    s.fx.cleanup().await;
}

async fn timeouts_are_in_force_inside_every_tenant_transaction(via: Via) {
    let Some(s) = setup("timeoutpin").await else {
        return;
    };
    let policy = ConnectionPolicy {
        statement_timeout: Duration::from_millis(1_234),
        idle_in_transaction_session_timeout: Duration::from_millis(5_678),
        lock_timeout: Duration::from_millis(910),
        max_connections: 2,
        pooler: match via {
            Via::Direct => Pooler::None,
            Via::PgBouncer => Pooler::PgBouncerTransaction,
        },
        ..ConnectionPolicy::local_development()
    };
    let opts = match via {
        Via::Direct => s.fx.connect_options(&s.app),
        Via::PgBouncer => match s.fx.pgbouncer_options(&s.app).await {
            Some(o) => o,
            None => {
                s.fx.cleanup().await;
                return;
            }
        },
    };
    let pool = policy.connect(opts.clone()).await.unwrap();
    match via {
        // Behind PgBouncer the timeouts are pinned in every transaction: a session-level
        // change left by an earlier client does not reach it.
        Via::PgBouncer => {
            pool.raw()
                .execute("SET statement_timeout = 0")
                .await
                .unwrap();
        }
        // Connected directly they come from the startup packet, and a change made inside a
        // tenant transaction is undone by the reset that ends it.
        Via::Direct => {
            let mut tx = pool.begin(&ctx(s.a)).await.unwrap();
            tx.execute("SET statement_timeout = 0; SET lock_timeout = 0")
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    }
    let mut tx = pool.begin(&ctx(s.a)).await.unwrap();
    let row = sqlx::raw_sql(
        "SELECT current_setting('statement_timeout'), \
         current_setting('idle_in_transaction_session_timeout'), current_setting('lock_timeout')",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    let got: Vec<String> = (0..3).map(|i| row.try_get(i).unwrap()).collect();
    assert_eq!(got, ["1234ms", "5678ms", "910ms"]);
    // The pinned statement timeout cancels a long statement.
    let err = sqlx::raw_sql("SELECT pg_sleep(3)")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("57014"),
        "{err}"
    );
    drop(tx);
    if via == Via::PgBouncer {
        // What PgBouncer does with timeouts sent as startup options: told to ignore them,
        // it drops them without a word. Without Nova's pins nothing would be in force.
        let direct_style = ConnectionPolicy {
            pooler: Pooler::None,
            ..policy.clone()
        };
        let plain = direct_style
            .pool_options()
            .connect_with(direct_style.apply(opts))
            .await
            .unwrap();
        let raw: String = sqlx::raw_sql("SHOW statement_timeout")
            .fetch_one(&plain)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(raw, "0", "PgBouncer passed startup options on after all");
        plain.close().await;
    }
    pool.close().await;
    s.fx.cleanup().await;
}

async fn region_pools_must_reach_a_database_marked_for_their_region(via: Via) {
    let Some(s) = setup("region").await else {
        return;
    };
    let db = Ident::new(s.fx.database()).unwrap();
    let eu = Region::new("eu-west").unwrap();
    let us = Region::new("us-east").unwrap();
    s.fx.exec(&region_database_sql(&db, &eu)).await;
    let Some(raw) = s.fx.app_pool(&s.app, 1, via).await else {
        s.fx.cleanup().await;
        return;
    };
    let pool = TenantPool::new(raw.clone());
    // The EU database registered as the US region's pool: refused before any transaction.
    let wrong = TenantRouter::builder()
        .region_pool(us.clone(), pool.clone())
        .place(s.a, Placement::Logical { region: us.clone() })
        .build()
        .unwrap();
    for _ in 0..2 {
        match wrong.begin(&ctx(s.a)).await {
            Err(Error::RegionMismatch { region }) => assert_eq!(region, us),
            other => panic!("{other:?}"),
        }
    }
    let right = TenantRouter::builder()
        .region_pool(eu.clone(), pool.clone())
        .place(s.a, Placement::Logical { region: eu.clone() })
        .build()
        .unwrap();
    let mut tx = right.begin(&ctx(s.a)).await.unwrap();
    let n: i64 = sqlx::raw_sql("SELECT count(*) FROM items")
        .fetch_one(&mut *tx)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(n, 3);
    tx.commit().await.unwrap();
    // The marker is read from the catalogue: a session-level setting cannot spoof it.
    raw.execute("SET nova.region = 'us-east'").await.unwrap();
    let spoofed = TenantRouter::builder()
        .region_pool(us.clone(), pool.clone())
        .place(s.a, Placement::Logical { region: us.clone() })
        .build()
        .unwrap();
    match spoofed.begin(&ctx(s.a)).await {
        Err(Error::RegionMismatch { region }) => assert_eq!(region, us),
        other => panic!("{other:?}"),
    }
    raw.execute("RESET nova.region").await.unwrap();
    // An unmarked database is refused too, even on sessions opened while it was marked.
    s.fx.exec(&format!("ALTER DATABASE {db} RESET nova.region"))
        .await;
    let unmarked = TenantRouter::builder()
        .region_pool(eu.clone(), pool.clone())
        .place(s.a, Placement::Logical { region: eu.clone() })
        .build()
        .unwrap();
    match unmarked.begin(&ctx(s.a)).await {
        Err(Error::RegionMismatch { region }) => assert_eq!(region, eu),
        other => panic!("{other:?}"),
    }
    raw.close().await;
    s.fx.cleanup().await;
}

async fn inspection_finds_every_planted_object_and_nothing_on_a_clean_migration(via: Via) {
    let Some(s) = setup("inspect").await else {
        return;
    };
    let admin = s.fx.admin().clone();
    let mut conn = admin.acquire().await.unwrap();
    let clean = s.migration.inspection().run(&mut conn).await.unwrap();
    assert!(clean.is_clean(), "{clean}");
    assert_eq!(clean.tables_inspected(), 1);
    let Some(app_pool) = s.fx.app_pool(&s.app, 1, via).await else {
        s.fx.cleanup().await;
        return;
    };
    let login = Inspection::login()
        .run(&mut app_pool.acquire().await.unwrap())
        .await
        .unwrap();
    assert!(login.is_clean(), "{login}");
    assert_eq!(login.tables_inspected(), 1);
    TenantPool::checked(app_pool.clone()).await.unwrap();

    // Plant one of each, as the superuser.
    let r = s.fx.roles().clone();
    let app_rw = r.get(AppRole::AppRw);
    let p = s.fx.prefix().to_owned();
    s.fx.exec(&format!(
        "ALTER TABLE items NO FORCE ROW LEVEL SECURITY;
         CREATE VIEW items_by_owner AS SELECT * FROM items;
         CREATE VIEW items_invoker WITH (security_invoker = true) AS SELECT * FROM items;
         CREATE VIEW items_chain WITH (security_invoker = true) AS SELECT * FROM items_by_owner;
         CREATE MATERIALIZED VIEW items_snapshot AS SELECT * FROM items;
         GRANT SELECT ON items_by_owner, items_invoker, items_chain, items_snapshot TO {app_rw};
         CREATE FUNCTION all_items() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS 'SELECT count(*) FROM items';
         CREATE POLICY everything ON items AS PERMISSIVE FOR SELECT TO {app_rw} USING (true);
         GRANT TRUNCATE, REFERENCES ON items TO {app_rw};
         GRANT TEMPORARY ON DATABASE \"{db}\" TO {app_rw};
         CREATE ROLE \"{p}wide\" NOLOGIN BYPASSRLS;
         GRANT \"{p}wide\" TO {app_rw};
         CREATE TABLE unprotected (tenant_id uuid);
         CREATE TABLE dropped_policies (tenant_id uuid);
         ALTER TABLE dropped_policies DISABLE ROW LEVEL SECURITY;",
        db = s.fx.database(),
    ))
    .await;
    let su: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&admin)
        .await
        .unwrap();
    let public_ident = Ident::new("public").unwrap();
    let report = s
        .migration
        .inspection()
        .table(&public_ident, &Ident::new("dropped_policies").unwrap())
        .table(&public_ident, &Ident::new("nowhere").unwrap())
        .run(&mut conn)
        .await
        .unwrap();
    let app_rw_name = app_rw.as_str().to_owned();
    let expected = vec![
        Finding::ReachesBypassRole {
            role: app_rw_name.clone(),
            bypass_role: format!("{p}wide"),
        },
        Finding::BypassingFunction {
            function: "public.all_items()".into(),
            owner: su.clone(),
        },
        Finding::MissingTable {
            table: "public.nowhere".into(),
        },
        Finding::NoTenantPolicy {
            table: "public.dropped_policies".into(),
        },
        Finding::OwnedByBypassRole {
            table: "public.dropped_policies".into(),
            owner: su.clone(),
        },
        Finding::RlsNotEnabled {
            table: "public.dropped_policies".into(),
        },
        Finding::RlsNotForced {
            table: "public.dropped_policies".into(),
        },
        Finding::RlsNotForced {
            table: "public.items".into(),
        },
        Finding::UnfilteredPrivilege {
            table: "public.items".into(),
            role: app_rw_name.clone(),
            privilege: "REFERENCES".into(),
        },
        Finding::UnfilteredPrivilege {
            table: "public.items".into(),
            role: app_rw_name.clone(),
            privilege: "TRUNCATE".into(),
        },
        Finding::TemporaryPrivilege {
            role: app_rw_name.clone(),
        },
        Finding::PermissiveTruePolicy {
            table: "public.items".into(),
            policy: "everything".into(),
        },
        Finding::OwnerRightsView {
            view: "public.items_by_owner".into(),
            table: "public.items".into(),
        },
        Finding::OwnerRightsView {
            view: "public.items_snapshot".into(),
            table: "public.items".into(),
        },
    ];
    let mut got = report.findings().to_vec();
    let key = |f: &Finding| format!("{f:?}");
    got.sort_by_key(key);
    let mut want = expected;
    want.sort_by_key(key);
    assert_eq!(got, want, "{report}");
    // dropped_policies has no grants: the app roles cannot reach it, but it was named.
    // The login reaches the same objects through app_rw, and `checked` refuses its pool.
    match TenantPool::checked(app_pool.clone()).await {
        Err(Error::LoginSkipsRls { role }) => assert_eq!(role, format!("{p}wide")),
        other => panic!("{other:?}"),
    }
    s.fx.exec(&format!("REVOKE \"{p}wide\" FROM {app_rw}"))
        .await;
    match TenantPool::checked(app_pool.clone()).await {
        Err(Error::RlsDefeated(report)) => {
            let text = report.to_string();
            assert!(!report.is_clean());
            assert!(
                report.findings().iter().any(|f| matches!(f, Finding::OwnerRightsView { view, .. } if view == "public.items_by_owner")),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    drop(conn);
    app_pool.close().await;
    s.fx.cleanup().await;
}

async fn many_clients_sharing_sessions_never_see_a_foreign_row(via: Via) {
    let Some(s) = setup("shared").await else {
        return;
    };
    let Some(one) = s.fx.app_pool(&s.app, 4, via).await else {
        s.fx.cleanup().await;
        return;
    };
    let Some(two) = s.fx.app_pool(&s.app, 4, via).await else {
        s.fx.cleanup().await;
        return;
    };
    let pools = [TenantPool::new(one.clone()), TenantPool::new(two.clone())];
    let mut tasks = Vec::new();
    for i in 0..16_u32 {
        let pool = pools[(i % 2) as usize].clone();
        let (mine, theirs) = if i % 3 == 0 { (s.a, s.b) } else { (s.b, s.a) };
        tasks.push(tokio::spawn(async move {
            for j in 0..25_u32 {
                let mut tx = pool.begin(&ctx(mine)).await.unwrap();
                let seen: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT tenant_id FROM items")
                    .persistent(false)
                    .fetch_all(&mut *tx)
                    .await
                    .unwrap();
                assert!(
                    seen.iter().all(|t| t == mine.as_uuid()),
                    "task {i} saw {theirs}'s rows"
                );
                assert!(seen.len() >= 3);
                match j % 3 {
                    0 => tx.commit().await.unwrap(),
                    1 => tx.rollback().await.unwrap(),
                    _ => drop(tx),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(raw_view(&one).await, clean_view(&s.app));
    assert_eq!(raw_view(&two).await, clean_view(&s.app));
    assert_no_open_transactions(&s, "concurrent clients").await;
    one.close().await;
    two.close().await;
    s.fx.cleanup().await;
}

async fn failed_commits_and_deferred_triggers_keep_the_session_clean(via: Via) {
    let Some(s) = setup("deferred").await else {
        return;
    };
    let app_rw = s.fx.roles().get(AppRole::AppRw).clone();
    // A deferred foreign key (checked at commit) and a deferred constraint trigger that
    // records the tenant setting it runs under.
    s.fx.exec(&format!(
        "CREATE TABLE pairs (id int PRIMARY KEY, other int REFERENCES pairs (id) DEFERRABLE INITIALLY DEFERRED);
         CREATE TABLE seen (tenant text);
         CREATE FUNCTION record_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO seen VALUES (current_setting('nova.tenant_id', true)); RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER record AFTER INSERT ON pairs DEFERRABLE INITIALLY DEFERRED
           FOR EACH ROW EXECUTE FUNCTION record_tenant();
         GRANT SELECT, INSERT, DELETE ON pairs, seen TO {app_rw};"
    ))
    .await;
    let Some(raw) = s.fx.app_pool(&s.app, 1, via).await else {
        s.fx.cleanup().await;
        return;
    };
    let pool = TenantPool::new(raw.clone());

    // The deferred trigger runs at commit, before the reset, with the tenant still set.
    let mut tx = pool.begin(&ctx(s.a)).await.unwrap();
    tx.execute("INSERT INTO pairs VALUES (1, NULL)")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let seen: Vec<Option<String>> = sqlx::query_scalar("SELECT tenant FROM seen")
        .fetch_all(s.fx.admin())
        .await
        .unwrap();
    assert_eq!(seen, [Some(s.a.to_string())]);

    // A commit refused by a deferred check: an error, nothing kept, a clean session.
    let mut tx = pool.begin(&ctx(s.a)).await.unwrap();
    tx.execute("SET ROLE NONE; SET search_path = pg_catalog, public; INSERT INTO public.pairs VALUES (2, 99)")
        .await
        .unwrap();
    let err = tx.commit().await.unwrap_err();
    match &err {
        Error::Database(e) => assert_eq!(
            e.as_database_error().and_then(|d| d.code()).as_deref(),
            Some("23503"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
    assert_clean(&s, &raw, s.b, "a commit refused by a deferred foreign key").await;

    // A refused commit dropped at every await point: the clean-up still happens.
    let attempt = std::sync::atomic::AtomicI32::new(100);
    cancel_at_every_poll(&s, &raw, "a refused commit", || {
        let pool = pool.clone();
        let n = attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let a = ctx(s.a);
        async move {
            let mut tx = pool.begin(&a).await.unwrap();
            tx.execute(AssertSqlSafe(format!(
                "SET ROLE NONE; SET search_path = pg_catalog, public; \
                 INSERT INTO public.pairs VALUES ({n}, 99)"
            )))
            .await
            .unwrap();
            tx.commit().await
        }
    })
    .await;

    // A commit after an error inside the transaction reports it rather than pretending.
    let mut tx = pool.begin(&ctx(s.a)).await.unwrap();
    tx.execute("SET search_path = pg_catalog").await.unwrap();
    assert!(tx.execute("SELECT 1/0").await.is_err());
    assert!(tx.commit().await.is_err());
    assert_clean(&s, &raw, s.b, "a commit of an aborted transaction").await;
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM pairs")
        .fetch_one(s.fx.admin())
        .await
        .unwrap();
    assert_eq!(kept, 1);
    raw.close().await;
    s.fx.cleanup().await;
}

async fn state_left_by_a_raw_client_never_reaches_a_tenant_transaction(via: Via) {
    let Some(s) = setup("rawleft").await else {
        return;
    };
    let wide = format!("{}wide", s.fx.prefix());
    s.fx.exec(&format!(
        "CREATE ROLE \"{wide}\" NOLOGIN BYPASSRLS; GRANT \"{wide}\" TO \"{app}\"; \
         GRANT SELECT, INSERT ON items TO \"{wide}\"; \
         CREATE SCHEMA shadow AUTHORIZATION \"{app}\"; \
         CREATE TABLE shadow.items (LIKE public.items INCLUDING ALL); \
         ALTER TABLE shadow.items OWNER TO \"{app}\"; \
         GRANT TEMPORARY ON DATABASE \"{db}\" TO \"{app}\"",
        app = s.app,
        db = s.fx.database(),
    ))
    .await;
    let Some(raw) = s.fx.app_pool(&s.app, 1, via).await else {
        s.fx.cleanup().await;
        return;
    };
    // The login's search path, read once and pinned with pg_temp last.
    let pool = TenantPool::new(raw.clone())
        .pin_login_search_path()
        .await
        .unwrap();
    let a = s.a.to_string();
    let leftovers = [
        format!("SET ROLE \"{wide}\""),
        "SET search_path = shadow, public".to_owned(),
        format!("SET nova.tenant_id = '{a}'"),
        "SET nova.bypass_reason = 'leaked'".to_owned(),
        // A temporary table that would shadow the tenant table, left by a raw client.
        "CREATE TEMP TABLE items (id uuid DEFAULT gen_random_uuid(), tenant_id uuid, body text); \
         INSERT INTO pg_temp.items (tenant_id, body) VALUES (gen_random_uuid(), 'shadow')"
            .to_owned(),
    ];
    let mut probes = 0_i64;
    for sql in &leftovers {
        // Straight on the pool's session, as a health check or another store would.
        raw.execute(AssertSqlSafe(sql.clone())).await.unwrap();
        let mut tx = pool.begin(&ctx(s.b)).await.unwrap();
        let row = sqlx::raw_sql(
            "SELECT current_user::text, (SELECT count(*) FROM items WHERE body <> 'probe'), \
             (SELECT count(DISTINCT tenant_id) FROM items)",
        )
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        let seen: (String, i64, i64) = (
            row.try_get(0).unwrap(),
            row.try_get(1).unwrap(),
            row.try_get(2).unwrap(),
        );
        assert_eq!(seen, (s.app.clone(), 3, 1), "after a raw `{sql}`");
        tx.execute(
            "INSERT INTO items (tenant_id, body) \
             VALUES (NULLIF(current_setting('nova.tenant_id'), '')::uuid, 'probe')",
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        probes += 1;
        // Nova's reset cleaned what the raw client left.
        assert_eq!(
            raw_view(&raw).await,
            clean_view(&s.app),
            "after a raw `{sql}`"
        );
    }
    // The login moves its own default search path (any role may): a pool that pinned the
    // path at start-up does not follow it, even on new sessions.
    let mut tx = pool.begin(&ctx(s.b)).await.unwrap();
    tx.execute("ALTER ROLE CURRENT_USER SET search_path = shadow, public")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND datname = $2")
        .bind(&s.app)
        .bind(s.fx.database())
        .execute(s.fx.admin())
        .await
        .unwrap();
    let mut written = false;
    for _ in 0..3 {
        // The first use after the termination may meet the dead session.
        let Ok(mut tx) = pool.begin(&ctx(s.b)).await else {
            continue;
        };
        tx.execute(
            "INSERT INTO items (tenant_id, body) \
             VALUES (NULLIF(current_setting('nova.tenant_id'), '')::uuid, 'probe')",
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        written = true;
        break;
    }
    assert!(written);
    probes += 1;
    let (captured, reached): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM shadow.items), \
         (SELECT count(*) FROM public.items WHERE body = 'probe')",
    )
    .fetch_one(s.fx.admin())
    .await
    .unwrap();
    assert_eq!((captured, reached), (0, probes));
    s.fx.exec(&format!("ALTER ROLE \"{}\" RESET search_path", s.app))
        .await;
    raw.close().await;
    s.fx.cleanup().await;
}

/// What one extra login, with only the grant named, lets the login inspection see.
async fn login_findings(s: &mut Setup, name: &str, grants: &str, via: Via) -> Option<Vec<Finding>> {
    let login = s.fx.login_role(name, &[]).await;
    s.fx.exec(&grants.replace("{login}", &format!("\"{login}\"")))
        .await;
    let pool = s.fx.app_pool(&login, 1, via).await?;
    let report = Inspection::login()
        .run(&mut pool.acquire().await.unwrap())
        .await
        .unwrap();
    // `checked` refuses the same pool, naming the first finding.
    let refused = TenantPool::checked(pool.clone()).await;
    assert_eq!(
        refused.is_err(),
        !report.is_clean(),
        "{name}: checked and the inspection disagree: {report}"
    );
    pool.close().await;
    let mut findings = report.findings().to_vec();
    findings.sort_by_key(|f| format!("{f:?}"));
    Some(findings)
}

async fn the_login_inspection_sees_every_path_to_other_tenants_rows(via: Via) {
    let Some(mut s) = setup("inspectlogin").await else {
        return;
    };
    let p = s.fx.prefix().to_owned();
    // Objects owned by superusers or BYPASSRLS roles, and tables the migration missed.
    s.fx.exec(&format!(
        "CREATE VIEW by_owner AS SELECT * FROM items;
         CREATE VIEW writable AS SELECT id, tenant_id, body FROM items;
         CREATE ROLE \"{p}bypasser\" NOLOGIN BYPASSRLS;
         CREATE FUNCTION count_all() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS 'SELECT count(*) FROM items';
         ALTER FUNCTION count_all() OWNER TO \"{p}bypasser\";
         REVOKE EXECUTE ON FUNCTION count_all() FROM PUBLIC;
         CREATE TABLE forgotten (id int, tenant_id uuid);
         CREATE TABLE parts (tenant_id uuid NOT NULL, n int) PARTITION BY HASH (tenant_id);
         CREATE TABLE parts_0 PARTITION OF parts FOR VALUES WITH (MODULUS 1, REMAINDER 0);
         ALTER TABLE parts OWNER TO \"{p}owner\"; ALTER TABLE parts_0 OWNER TO \"{p}owner\";
         ALTER TABLE parts ENABLE ROW LEVEL SECURITY; ALTER TABLE parts FORCE ROW LEVEL SECURITY;
         CREATE POLICY nova_tenant_isolation ON parts USING (tenant_id = NULLIF(current_setting('nova.tenant_id', true), '')::uuid);"
    ))
    .await;
    let su: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(s.fx.admin())
        .await
        .unwrap();
    let app_rw = s.fx.roles().get(AppRole::AppRw).clone();
    let cases: Vec<(&str, String, Vec<Finding>)> = vec![
        (
            "viewonly",
            "GRANT SELECT ON by_owner TO {login}".to_owned(),
            vec![
                Finding::OwnedByBypassRole {
                    table: "public.items".into(),
                    owner: su.clone(),
                },
                Finding::OwnerRightsView {
                    view: "public.by_owner".into(),
                    table: "public.items".into(),
                },
            ],
        ),
        (
            "writeonly",
            "GRANT UPDATE (body) ON writable TO {login}".to_owned(),
            vec![
                Finding::OwnedByBypassRole {
                    table: "public.items".into(),
                    owner: su.clone(),
                },
                Finding::OwnerRightsView {
                    view: "public.writable".into(),
                    table: "public.items".into(),
                },
            ],
        ),
        (
            "colrefs",
            format!(
                "GRANT {app_rw} TO {{login}}; GRANT REFERENCES (tenant_id) ON items TO {{login}}"
            ),
            vec![Finding::UnfilteredPrivilege {
                table: "public.items".into(),
                role: format!("{p}colrefs"),
                privilege: "REFERENCES".into(),
            }],
        ),
        (
            "trigger",
            format!("GRANT {app_rw} TO {{login}}; GRANT TRIGGER ON items TO {{login}}"),
            vec![Finding::UnfilteredPrivilege {
                table: "public.items".into(),
                role: format!("{p}trigger"),
                privilege: "TRIGGER".into(),
            }],
        ),
        (
            "definer",
            format!(
                "GRANT {app_rw} TO {{login}}; GRANT EXECUTE ON FUNCTION count_all() TO {{login}}"
            ),
            vec![Finding::BypassingFunction {
                function: "public.count_all()".into(),
                owner: format!("{p}bypasser"),
            }],
        ),
        (
            "forgot",
            format!("GRANT {app_rw} TO {{login}}; GRANT SELECT ON forgotten TO {{login}}"),
            vec![
                Finding::NoTenantPolicy {
                    table: "public.forgotten".into(),
                },
                Finding::OwnedByBypassRole {
                    table: "public.forgotten".into(),
                    owner: su.clone(),
                },
                Finding::RlsNotEnabled {
                    table: "public.forgotten".into(),
                },
                Finding::RlsNotForced {
                    table: "public.forgotten".into(),
                },
            ],
        ),
        (
            "partition",
            "GRANT SELECT ON parts, parts_0 TO {login}".to_owned(),
            vec![
                Finding::NoTenantPolicy {
                    table: "public.parts_0".into(),
                },
                Finding::RlsNotEnabled {
                    table: "public.parts_0".into(),
                },
                Finding::RlsNotForced {
                    table: "public.parts_0".into(),
                },
            ],
        ),
        (
            // Last: the policy stays on the table.
            "oneisone",
            format!(
                "GRANT {app_rw} TO {{login}}; \
                 CREATE POLICY one_is_one ON items AS PERMISSIVE FOR SELECT TO {{login}} USING (1 = 1)"
            ),
            vec![Finding::PermissiveTruePolicy {
                table: "public.items".into(),
                policy: "one_is_one".into(),
            }],
        ),
        (
            "creator",
            format!("GRANT {app_rw} TO {{login}}; ALTER ROLE {{login}} CREATEROLE"),
            vec![
                Finding::PermissiveTruePolicy {
                    table: "public.items".into(),
                    policy: "one_is_one".into(),
                },
                Finding::ReachesBypassRole {
                    role: format!("{p}creator"),
                    bypass_role: format!("{p}creator"),
                },
            ],
        ),
    ];
    // The migration's own table is owned by a plain owner role: hand `items` to the
    // superuser only for the two view cases, whose views the superuser owns anyway.
    for (name, grants, mut want) in cases {
        let owned_by_su = name == "viewonly" || name == "writeonly";
        if owned_by_su {
            s.fx.exec(&format!("ALTER TABLE items OWNER TO \"{su}\""))
                .await;
        }
        let Some(got) = login_findings(&mut s, name, &grants, via).await else {
            s.fx.cleanup().await;
            return;
        };
        if owned_by_su {
            s.fx.exec(&format!("ALTER TABLE items OWNER TO \"{p}owner\""))
                .await;
        }
        want.sort_by_key(|f| format!("{f:?}"));
        assert_eq!(got, want, "{name}");
    }
    s.fx.cleanup().await;
}

both!(
    cancelled_begin_commit_and_bypass_leave_nothing,
    timeouts_around_begin_never_leave_a_transaction_open,
    session_state_left_inside_a_tenant_transaction_never_outlives_it,
    nested_savepoints_still_work_inside_a_tenant_transaction,
    failed_commits_and_deferred_triggers_keep_the_session_clean,
    logins_that_can_reach_a_bypass_role_are_refused_by_name,
    timeouts_are_in_force_inside_every_tenant_transaction,
    region_pools_must_reach_a_database_marked_for_their_region,
    inspection_finds_every_planted_object_and_nothing_on_a_clean_migration,
    many_clients_sharing_sessions_never_see_a_foreign_row,
    state_left_by_a_raw_client_never_reaches_a_tenant_transaction,
    the_login_inspection_sees_every_path_to_other_tenants_rows,
);
