//! Fixtures for tests against a real PostgreSQL server: a throwaway database, uniquely named
//! roles, and connections that log in as a non-superuser (superusers skip row-level
//! security, so a test connected as one proves nothing).
//!
//! Enabled by the `testing` feature; Nova's own crates use it from their test suites. The
//! admin connection comes from `NOVA_TEST_PG_ADMIN_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). When the server cannot be reached the
//! fixture panics if `CI=true` and otherwise skips with a loud message: a test suite must
//! never report a pass for a test that could not run in CI. This module must never be used
//! outside tests.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgPool};

use crate::ident::Ident;
use crate::rls_sql::AppRoles;

/// Default admin URL when `NOVA_TEST_PG_ADMIN_URL` is not set.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Default address of the transaction-pooling PgBouncer in front of the test server, when
/// `NOVA_TEST_PGBOUNCER_ADDR` is not set. `.ci/pgbouncer start` runs one there.
pub const DEFAULT_PGBOUNCER_ADDR: &str = "127.0.0.1:6439";

/// How a test's application connections reach PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Straight to the server.
    Direct,
    /// Through PgBouncer in transaction pooling (`NOVA_TEST_PGBOUNCER_ADDR`), where
    /// consecutive transactions of one client may run on different server sessions and one
    /// server session serves many clients.
    PgBouncer,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether a test run is in CI, where a missing server is a failure rather than a skip.
#[must_use]
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Handles a missing service: panic in CI, otherwise print a loud skip notice.
///
/// # Panics
/// When `CI=true`.
pub fn service_unavailable(service: &str, detail: &str, how_to_start: &str) {
    assert!(
        !in_ci(),
        "{service} is required in CI but unreachable ({detail}); start it with: {how_to_start}"
    );
    eprintln!(
        "\n!!!! SKIPPED: {service} unreachable ({detail}).\n!!!! This test did NOT run. Start it with: {how_to_start}\n"
    );
}

/// A throwaway database with its own set of application roles.
pub struct PgFixture {
    admin_url: PgConnectOptions,
    db_name: String,
    prefix: String,
    roles: AppRoles,
    created_roles: Vec<String>,
    admin: PgPool,
    cleaned: bool,
}

impl PgFixture {
    /// Creates a database named after `label` and a fresh role prefix. Returns `None` (after a
    /// loud message) when the server is unreachable outside CI.
    ///
    /// # Panics
    /// In CI when the server is unreachable, or whenever setup SQL fails.
    pub async fn new(label: &str) -> Option<Self> {
        let url =
            std::env::var("NOVA_TEST_PG_ADMIN_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
        let admin_url: PgConnectOptions = url
            .parse()
            .expect("NOVA_TEST_PG_ADMIN_URL is not a valid URL");
        let server = match PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(admin_url.clone())
            .await
        {
            Ok(pool) => pool,
            Err(e) => {
                service_unavailable(
                    "PostgreSQL",
                    &e.to_string(),
                    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
                );
                return None;
            }
        };
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let label: String = label
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(16)
            .collect::<String>()
            .to_ascii_lowercase();
        let rand = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("nt{}_", &rand[..8]);
        let db_name = format!("nova_test_{label}_{}_{n}", &rand[..8]);
        Ident::new(&db_name).expect("fixture database name is a valid identifier");
        server
            .execute(AssertSqlSafe(format!("CREATE DATABASE \"{db_name}\"")))
            .await
            .expect("create test database");
        server.close().await;
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(admin_url.clone().database(&db_name))
            .await
            .expect("connect to test database");
        let roles = AppRoles::prefixed(&prefix).expect("valid role prefix");
        Some(Self {
            admin_url,
            db_name,
            prefix,
            roles,
            created_roles: Vec::new(),
            admin,
            cleaned: false,
        })
    }

    /// The application role names for this fixture (uniquely prefixed).
    #[must_use]
    pub fn roles(&self) -> &AppRoles {
        &self.roles
    }

    /// The prefix of every role this fixture creates; roles a test creates under it are
    /// dropped by [`PgFixture::cleanup`] too.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The test database's name.
    #[must_use]
    pub fn database(&self) -> &str {
        &self.db_name
    }

    /// A superuser pool on the test database, for setup and for proving what is stored.
    #[must_use]
    pub fn admin(&self) -> &PgPool {
        &self.admin
    }

    /// Runs SQL (possibly several statements) as the superuser.
    ///
    /// # Panics
    /// When the SQL fails.
    pub async fn exec(&self, sql: &str) {
        self.admin
            .execute(AssertSqlSafe(sql.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("fixture SQL failed: {e}\n{sql}"));
    }

    /// Creates a `LOGIN` role (name prefixed for this fixture) that is a member of
    /// `member_of`, and returns its full name. The role is dropped by [`PgFixture::cleanup`].
    ///
    /// # Panics
    /// When the SQL fails.
    pub async fn login_role(&mut self, name: &str, member_of: &[&Ident]) -> String {
        let full = format!("{}{name}", self.prefix);
        let ident = Ident::new(&full).expect("valid role name");
        self.exec(&format!(
            "CREATE ROLE {ident} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE INHERIT"
        ))
        .await;
        self.created_roles.push(full.clone());
        for group in member_of {
            self.exec(&format!("GRANT {group} TO {ident}")).await;
        }
        full
    }

    /// Connect options for the test database as `role` (trust authentication on the test
    /// server: no password).
    #[must_use]
    pub fn connect_options(&self, role: &str) -> PgConnectOptions {
        self.admin_url
            .clone()
            .database(&self.db_name)
            .username(role)
            .password("")
    }

    /// A pool of `max` connections to the test database as `role`.
    ///
    /// # Panics
    /// When the connection fails.
    pub async fn pool_as(&self, role: &str, max: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(self.connect_options(role))
            .await
            .expect("connect as test role")
    }

    /// A pool of `max` connections as `role`, straight to the server or through PgBouncer.
    /// Returns `None` (after a loud message) when PgBouncer is unreachable outside CI.
    ///
    /// # Panics
    /// In CI when PgBouncer is unreachable, or whenever the connection fails.
    pub async fn app_pool(&self, role: &str, max: u32, via: Via) -> Option<PgPool> {
        let opts = match via {
            Via::Direct => self.connect_options(role),
            Via::PgBouncer => self.pgbouncer_options(role).await?,
        };
        Some(
            PgPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(20))
                .connect_with(opts)
                .await
                .unwrap_or_else(|e| panic!("connect as {role} via {via:?}: {e}")),
        )
    }

    /// Connect options for the test database as `role` through PgBouncer, with the
    /// settings a client needs there (no `extra_float_digits` startup parameter). Returns
    /// `None` (after a loud message) when PgBouncer is unreachable outside CI.
    ///
    /// # Panics
    /// In CI when PgBouncer is unreachable.
    pub async fn pgbouncer_options(&self, role: &str) -> Option<PgConnectOptions> {
        let addr = std::env::var("NOVA_TEST_PGBOUNCER_ADDR")
            .unwrap_or_else(|_| DEFAULT_PGBOUNCER_ADDR.into());
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
            .expect("NOVA_TEST_PGBOUNCER_ADDR is host:port");
        if let Err(e) = tokio::net::TcpStream::connect((host.as_str(), port)).await {
            service_unavailable("PgBouncer", &e.to_string(), "bash .ci/pgbouncer start");
            return None;
        }
        Some(
            self.connect_options(role)
                .host(&host)
                .port(port)
                .extra_float_digits(None),
        )
    }

    /// Creates an extra database on the same server (dropped by [`PgFixture::cleanup`]).
    ///
    /// # Panics
    /// When the SQL fails.
    pub async fn extra_database(&mut self, suffix: &str) -> String {
        let name = format!("{}_{suffix}", self.db_name);
        Ident::new(&name).expect("valid database name");
        let server = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(self.admin_url.clone())
            .await
            .expect("connect to server");
        server
            .execute(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .expect("create extra database");
        server.close().await;
        self.created_roles.push(format!("db:{name}"));
        name
    }

    /// A superuser pool on another database of this fixture.
    ///
    /// # Panics
    /// When the connection fails.
    pub async fn admin_on(&self, database: &str) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .connect_with(self.admin_url.clone().database(database))
            .await
            .expect("connect to extra database")
    }

    /// Connect options for another database of this fixture as `role`.
    #[must_use]
    pub fn connect_options_on(&self, database: &str, role: &str) -> PgConnectOptions {
        self.admin_url
            .clone()
            .database(database)
            .username(role)
            .password("")
    }

    /// Drops the database(s) and roles. Call at the end of every test; a fixture dropped
    /// without it cleans up on a helper thread.
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        drop_all(
            Some(self.admin.clone()),
            self.admin_url.clone(),
            self.db_name.clone(),
            self.prefix.clone(),
            std::mem::take(&mut self.created_roles),
        )
        .await;
    }
}

async fn drop_all(
    admin: Option<PgPool>,
    admin_url: PgConnectOptions,
    db_name: String,
    prefix: String,
    created: Vec<String>,
) {
    if let Some(admin) = admin {
        admin.close().await;
    }
    let Ok(server) = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(admin_url)
        .await
    else {
        return;
    };
    let mut dbs = vec![db_name];
    dbs.extend(
        created
            .iter()
            .filter_map(|c| c.strip_prefix("db:").map(str::to_owned)),
    );
    for db in dbs {
        let sql = format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)");
        if let Err(e) = server.execute(AssertSqlSafe(sql)).await {
            eprintln!("warning: test database {db} was not dropped: {e}");
        }
    }
    // Roles are cluster-wide: drop every role this fixture's prefix names, including the
    // group roles a migration created.
    let names: Vec<String> =
        sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1)")
            .bind(&prefix)
            .fetch_all(&server)
            .await
            .unwrap_or_default();
    // Members first (login roles), then the groups they belonged to.
    let (logins, groups): (Vec<_>, Vec<_>) = names.into_iter().partition(|n| created.contains(n));
    for role in logins.into_iter().chain(groups) {
        if Ident::new(&role).is_ok() {
            let sql = format!("DROP ROLE IF EXISTS \"{role}\"");
            if let Err(e) = server.execute(AssertSqlSafe(sql)).await {
                eprintln!("warning: test role {role} was not dropped: {e}");
            }
        }
    }
    server.close().await;
}

impl Drop for PgFixture {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // The admin pool's connections belong to the test's runtime; leave them to
        // `DROP DATABASE .. WITH (FORCE)` rather than closing them from another one.
        let url = self.admin_url.clone();
        let db = self.db_name.clone();
        let prefix = self.prefix.clone();
        let created = std::mem::take(&mut self.created_roles);
        // Async cleanup from Drop: run it on a private runtime on its own thread.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(drop_all(None, url, db, prefix, created));
            }
        })
        .join();
    }
}

/// Times two operations in alternating batches (the order swapped every round) and returns
/// the median time per operation of each, in nanoseconds. Used by Nova's benchmarks to
/// report a ratio against a peer that drift on a shared machine cannot skew.
pub fn paired_medians(
    rounds: usize,
    batch: usize,
    mut a: impl FnMut(),
    mut b: impl FnMut(),
) -> (f64, f64) {
    let (mut ta, mut tb) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for round in 0..rounds {
        for side in [round % 2, 1 - round % 2] {
            let start = std::time::Instant::now();
            for _ in 0..batch {
                if side == 0 {
                    a();
                } else {
                    b();
                }
            }
            let per_op = start.elapsed().as_secs_f64() * 1e9 / batch as f64;
            if side == 0 {
                ta.push(per_op);
            } else {
                tb.push(per_op);
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(ta), median(tb))
}
