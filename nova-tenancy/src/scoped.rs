//! Tenant-scoped transactions: the only way this crate hands out a connection for tenant data.
//!
//! [`TenantPool::begin`] opens a transaction and, in the same round trip, pins the session
//! (`SET LOCAL ROLE NONE`, the `search_path`, and the pool's timeouts when
//! [`TenantPool::with_timeouts`] asked for them) and sets `nova.tenant_id`, `nova.user_id`,
//! `nova.request_id` and `nova.bypass_reason` transaction-locally. A transaction-local
//! setting disappears at `COMMIT` or `ROLLBACK` (PostgreSQL docs, "SET").
//!
//! # Connection hygiene
//!
//! A [`TenantTx`] owns its pooled connection, and the connection goes back to the pool only
//! after Nova has put it back in a known state:
//!
//! - **Outside any transaction.** A `begin` that does not finish (an error, or a future
//!   dropped at any `.await`, for example by `tokio::time::timeout` or a client that went
//!   away) closes its connection instead of returning it: the server ends the session and
//!   rolls back whatever it had begun (behind PgBouncer the server session ends because
//!   it is inside a transaction). sqlx alone would return such a connection with the
//!   server still inside the tenant's transaction, because it counts a transaction as open
//!   only after reading the server's reply.
//! - **The login's role, default settings, no temporary objects.** `commit` and `rollback`
//!   send, in the same message as `COMMIT`/`ROLLBACK`, a reset of everything a statement
//!   inside the transaction could have left on the session: `CLOSE ALL`, `RESET ROLE`,
//!   `RESET ALL`, `UNLISTEN *`, `DISCARD TEMP`, `DISCARD SEQUENCES` ([`SESSION_RESET`]). A
//!   `TenantTx` dropped without either, or a `commit`/`rollback` future dropped half-way,
//!   leaves the connection to a spawned task that rolls back and resets before it is
//!   released; when that fails, or no runtime is left to run it, the connection is closed.
//! - **Pinned at every begin.** Whatever an earlier borrower (inside Nova or not) left on a
//!   session, a Nova transaction runs as the login role, with its own tenant settings and
//!   the login's schemas: a pool from [`TenantPool::checked`] (or
//!   [`crate::ConnectionPolicy::connect`]) pins the exact schemas read at start-up with
//!   `pg_temp` last, so no temporary table shadows a tenant table and a later
//!   `ALTER ROLE .. SET search_path` is ignored; a pool from [`TenantPool::new`] pins
//!   `search_path TO DEFAULT`, which follows the role's current default.
//!
//! Two things an earlier borrower can leave are not undone: a transaction it left open
//! (a `BEGIN` inside it only warns, so the tenant transaction joins it: its own writes,
//! made without a tenant, commit with the tenant's), and SQL-level prepared statements
//! (`PREPARE`), which survive the reset because `DEALLOCATE ALL` would also drop the
//! statements sqlx caches per connection — an injected statement could re-`PREPARE` one
//! of sqlx's statement names. Checking for them on every commit costs about 12 µs of
//! server time (a catalogue query), three times the whole reset.
//!
//! This module must never hand out a pooled connection outside such a transaction, nor
//! return one to the pool without the reset.

use std::fmt;
use std::fmt::Write as _;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Executor, PgConnection, PgPool, Postgres, SqlSafeStr};

use crate::context::{AUDIT_TARGET, TenantContext};
use crate::error::Error;
use crate::ids::TenantId;

/// Name of the transaction-local setting that row-level security policies compare with.
pub const TENANT_SETTING: &str = "nova.tenant_id";
/// Name of the transaction-local setting holding the acting user (empty for system contexts).
pub const USER_SETTING: &str = "nova.user_id";
/// Name of the transaction-local setting holding the request id.
pub const REQUEST_SETTING: &str = "nova.request_id";
/// Name of the transaction-local setting that, for the roles a migration names as bypass
/// roles, turns off tenant filtering. It holds the reason for the bypass.
pub const BYPASS_SETTING: &str = "nova.bypass_reason";

/// The text of [`SESSION_RESET`], as a macro so that `concat!` can build the end statements.
macro_rules! session_reset {
    () => {
        "CLOSE ALL; RESET ROLE; RESET ALL; UNLISTEN *; DISCARD TEMP; DISCARD SEQUENCES"
    };
}

/// The statements that return a session to the login's defaults: what a statement inside a
/// tenant transaction could otherwise leave behind for the connection's next borrower
/// (a `SET ROLE`, a session-level `set_config`, a `search_path`, a temporary table that
/// shadows a tenant table, an open `WITH HOLD` cursor over tenant rows, a `LISTEN`, a
/// sequence's `currval`). It is `DISCARD ALL` without `DEALLOCATE ALL`, which would drop
/// the prepared statements sqlx caches per connection, and without the advisory-lock
/// release, which needs a `SELECT`.
pub const SESSION_RESET: &str = session_reset!();

/// [`end_statement`]'s two forms, built at compile time.
const END_COMMIT: &str = concat!(
    "SET CONSTRAINTS ALL IMMEDIATE; COMMIT; BEGIN; ",
    session_reset!(),
    "; COMMIT AND CHAIN"
);
const END_ROLLBACK: &str = concat!("ROLLBACK; BEGIN; ", session_reset!(), "; COMMIT AND CHAIN");

/// How long a dropped transaction's clean-up may take before its connection is closed.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

static BYPASSES: AtomicU64 = AtomicU64::new(0);
static CONNECTIONS_CLOSED: AtomicU64 = AtomicU64::new(0);

/// Number of row-level security bypass transactions this process has begun, for metrics.
#[must_use]
pub fn rls_bypasses_started() -> u64 {
    BYPASSES.load(Ordering::Relaxed)
}

/// Number of connections Nova closed rather than return to the pool in an unknown state (a
/// `begin` that did not finish, a failed commit, a clean-up that failed), for metrics.
#[must_use]
pub fn dirty_connections_closed() -> u64 {
    CONNECTIONS_CLOSED.load(Ordering::Relaxed)
}

/// Server-side limits a [`TenantPool`] pins in (or expects in) every transaction it begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeouts {
    /// `statement_timeout`.
    pub statement: Duration,
    /// `idle_in_transaction_session_timeout`.
    pub idle_in_transaction: Duration,
    /// `lock_timeout`.
    pub lock: Duration,
}

/// A PostgreSQL pool that only opens tenant-scoped transactions.
///
/// Wrap the pool your service already has; from then on the tenant-data path goes through
/// [`TenantPool::begin`]. Keep the raw `PgPool` out of request handlers.
///
/// ```no_run
/// # async fn demo(ctx: nova_tenancy::TenantContext) -> Result<(), nova_tenancy::Error> {
/// use nova_tenancy::TenantPool;
/// let pool = TenantPool::checked(sqlx::PgPool::connect("postgres://app@127.0.0.1/app").await?).await?;
/// let mut tx = pool.begin(&ctx).await?;
/// let open: i64 = sqlx::query_scalar("SELECT count(*) FROM tickets WHERE status = 'open'")
///     .fetch_one(&mut *tx)
///     .await?;
/// tx.commit().await?;
/// # let _ = open; Ok(()) }
/// ```
#[derive(Clone)]
pub struct TenantPool {
    pool: PgPool,
    /// `BEGIN` and the session pins, rendered once.
    begin_prefix: Arc<str>,
    /// The timeouts [`TenantPool::check`] expects inside a transaction, and whether the
    /// begin message pins them (otherwise they come from the connections' startup options).
    timeouts: Option<(SessionTimeouts, bool)>,
    /// The login's schemas, rendered for `SET LOCAL search_path` with `pg_temp` last, once
    /// [`TenantPool::pin_login_search_path`] has read them; `TO DEFAULT` until then.
    search_path: Option<Arc<str>>,
}

impl TenantPool {
    /// Takes a pool whose connections log in as an application role subject to row-level
    /// security (never a superuser or a `BYPASSRLS` role, which PostgreSQL exempts even
    /// under `FORCE ROW LEVEL SECURITY`). Does no I/O; prefer [`TenantPool::checked`], which
    /// verifies the role and the schema.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            begin_prefix: render_prefix(None, None).into(),
            timeouts: None,
            search_path: None,
        }
    }

    fn render(mut self) -> Self {
        let pinned = self.timeouts.and_then(|(t, pinned)| pinned.then_some(t));
        self.begin_prefix = render_prefix(pinned.as_ref(), self.search_path.as_deref()).into();
        self
    }

    /// Pins these timeouts in every transaction (`SET LOCAL`), so they hold behind a
    /// transaction-pooling PgBouncer, which drops or refuses startup options, and whatever
    /// an earlier borrower set on the session. [`crate::ConnectionPolicy::connect`] does this
    /// with the policy's values.
    #[must_use]
    pub fn with_timeouts(mut self, timeouts: SessionTimeouts) -> Self {
        self.timeouts = Some((timeouts, true));
        self.render()
    }

    /// Expects these timeouts inside every transaction without pinning them: the pool's
    /// connections set them at startup ([`crate::ConnectionPolicy`] does, connected
    /// directly), and Nova's session reset restores them after every transaction.
    /// [`TenantPool::check`] verifies them.
    #[must_use]
    pub fn expect_timeouts(mut self, timeouts: SessionTimeouts) -> Self {
        self.timeouts = Some((timeouts, false));
        self.render()
    }

    /// Reads the login's schema search path once (its role and database defaults, as a
    /// fresh session has them) and pins exactly those schemas in every transaction, with
    /// `pg_temp` named last: a temporary table can then never shadow a tenant table, and a
    /// later `ALTER ROLE .. SET search_path` (which a login may run on itself) does not
    /// move a tenant transaction to another schema. [`TenantPool::checked`] and
    /// [`crate::ConnectionPolicy::connect`] do this; a pool built with
    /// [`TenantPool::new`] pins `search_path TO DEFAULT` instead.
    ///
    /// # Errors
    /// [`Error::Database`] when the path cannot be read.
    pub async fn pin_login_search_path(mut self) -> Result<Self, Error> {
        self.search_path = None;
        let probe = self.render();
        let mut tx = probe
            .begin_with(probe.begin_prefix.to_string(), TenantId::new_v4())
            .await?;
        let schemas: Vec<String> = sqlx::raw_sql("SELECT current_schemas(false)::text[]")
            .fetch_one(&mut *tx)
            .await
            .and_then(|row| {
                use sqlx::Row as _;
                row.try_get(0)
            })?;
        tx.rollback().await?;
        let mut me = probe;
        me.search_path = Some(render_search_path(&schemas).into());
        Ok(me.render())
    }

    /// The timeouts in force in every transaction (pinned or from startup), if known.
    #[must_use]
    pub fn timeouts(&self) -> Option<SessionTimeouts> {
        self.timeouts.map(|(t, _)| t)
    }

    /// Takes a pool after checking, on one of its connections, that the login can reach no
    /// role that skips row-level security and that the database does not defeat it for the
    /// tables the login can reach (see [`crate::inspect`]).
    ///
    /// # Errors
    /// - [`Error::LoginSkipsRls`] naming the superuser or `BYPASSRLS` role the login is, or
    ///   reaches through membership (directly or inherited);
    /// - [`Error::RlsDefeated`] with the findings of the inspection;
    /// - [`Error::Database`] when the checks cannot run.
    pub async fn checked(pool: PgPool) -> Result<Self, Error> {
        let pool = Self::new(pool).pin_login_search_path().await?;
        pool.check().await?;
        Ok(pool)
    }

    /// Runs the checks of [`TenantPool::checked`] on this pool, and checks that the pinned
    /// timeouts are in force inside a transaction.
    ///
    /// # Errors
    /// As [`TenantPool::checked`]; [`Error::Config`] naming a timeout that is not in force.
    pub async fn check(&self) -> Result<(), Error> {
        // In a Nova transaction (pins only, no tenant), which is cancel-safe: a check
        // dropped half-way never hands a connection back inside a transaction.
        let mut tx = self
            .begin_with(self.begin_prefix.to_string(), TenantId::new_v4())
            .await?;
        let report = crate::inspect::inspect_login(&mut tx).await?;
        tx.rollback().await?;
        if let Some(role) = report.bypass_role() {
            return Err(Error::LoginSkipsRls {
                role: role.to_owned(),
            });
        }
        if !report.is_clean() {
            return Err(Error::RlsDefeated(report));
        }
        if let Some((t, _)) = self.timeouts {
            // The pins alone, without tenant settings: row-level security shows nothing.
            let mut tx = self
                .begin_with(self.begin_prefix.to_string(), TenantId::new_v4())
                .await?;
            let row: (String, String, String) = sqlx::raw_sql(
                "SELECT current_setting('statement_timeout'), \
                 current_setting('idle_in_transaction_session_timeout'), \
                 current_setting('lock_timeout')",
            )
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| {
                use sqlx::Row as _;
                Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
            })?;
            tx.rollback().await?;
            let expected = [
                ("statement_timeout", t.statement, row.0),
                (
                    "idle_in_transaction_session_timeout",
                    t.idle_in_transaction,
                    row.1,
                ),
                ("lock_timeout", t.lock, row.2),
            ];
            for (setting, want, got) in expected {
                // PostgreSQL keeps time settings in whole milliseconds.
                let want =
                    Duration::from_millis(u64::try_from(want.as_millis()).unwrap_or(u64::MAX));
                if parse_pg_duration(&got) != Some(want) {
                    return Err(Error::Config {
                        setting,
                        reason: "is not in force inside a tenant transaction",
                    });
                }
            }
        }
        Ok(())
    }

    /// Begins a transaction scoped to `ctx`'s tenant, user and request.
    ///
    /// One round trip: `BEGIN`, the session pins and the `SET LOCAL` statements travel as
    /// one simple-query message. The values are rendered from typed UUIDs, whose text form
    /// is `[0-9a-f-]{36}`; no caller-supplied text reaches the SQL.
    ///
    /// Cancel-safe: if the returned future is dropped before it completes, the connection
    /// it had taken is closed, never returned to the pool mid-transaction.
    ///
    /// # Errors
    /// [`Error::Database`] when no connection can be had or the server refuses.
    pub async fn begin(&self, ctx: &TenantContext) -> Result<TenantTx, Error> {
        let sql = begin_statement(&self.begin_prefix, ctx, None);
        self.begin_with(sql, ctx.tenant()).await
    }

    /// Begins a transaction in which the migration's bypass roles see every tenant's rows.
    ///
    /// Only a system context may ask ([`TenantContext::system`]), and only connections that
    /// log in as a bypass role named in the migration gain anything: for every other role
    /// the setting has no effect. Each bypass is reported as a `warn` event on
    /// [`AUDIT_TARGET`] and counted in [`rls_bypasses_started`]. Cancel-safe like
    /// [`TenantPool::begin`].
    ///
    /// # Errors
    /// [`Error::BypassRequiresSystemContext`] for a verified user's context;
    /// [`Error::Database`] when the server refuses.
    pub async fn begin_bypass(
        &self,
        ctx: &TenantContext,
        reason: &'static str,
    ) -> Result<TenantTx, Error> {
        if !ctx.is_system() {
            tracing::warn!(
                target: AUDIT_TARGET,
                event = "rls_bypass_refused",
                tenant = %ctx.tenant(),
                request_id = %ctx.request_id(),
                "row-level security bypass refused for a non-system context"
            );
            crate::audit_hook::report(
                &crate::SecurityEvent::new("rls_bypass_refused")
                    .tenant(ctx.tenant())
                    .request_id(ctx.request_id()),
            );
            return Err(Error::BypassRequiresSystemContext);
        }
        if reason.trim().is_empty() {
            return Err(Error::Config {
                setting: "bypass reason",
                reason: "must not be empty",
            });
        }
        let sql = begin_statement(&self.begin_prefix, ctx, Some(reason));
        let tx = self.begin_with(sql, ctx.tenant()).await?;
        BYPASSES.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            target: AUDIT_TARGET,
            event = "rls_bypass",
            tenant = %ctx.tenant(),
            request_id = %ctx.request_id(),
            reason,
            "row-level security bypass begun"
        );
        crate::audit_hook::report(
            &crate::SecurityEvent::new("rls_bypass")
                .tenant(ctx.tenant())
                .request_id(ctx.request_id())
                .details(&[("reason", &reason)]),
        );
        Ok(tx)
    }

    async fn begin_with(&self, sql: String, tenant: TenantId) -> Result<TenantTx, Error> {
        // `acquire` is cancel-safe: a connection is ours only once it returns.
        let conn = self.pool.acquire().await?;
        // From here until the server confirms the transaction, dropping `pending` (an
        // error, or this future dropped at the await below) closes the connection.
        let mut pending = Unfinished(Some(conn));
        if let Some(conn) = pending.0.as_mut() {
            sqlx_tx::begin::<Postgres>(conn, AssertSqlSafe(sql).into_sql_str()).await?;
        }
        Ok(TenantTx {
            conn: pending.0.take(),
            tenant,
        })
    }

    /// The pool underneath, for work that is not tenant data (migrations, health checks).
    /// Connections Nova returns to it are outside any transaction, with the session reset.
    #[must_use]
    pub fn raw(&self) -> &PgPool {
        &self.pool
    }

    /// Connections currently open (idle or in use), for metrics.
    #[must_use]
    pub fn size(&self) -> u32 {
        self.pool.size()
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Renders the begin message for one transaction.
///
/// `SET LOCAL` is the statement form of `set_config(name, value, true)`: the same
/// transaction-local setting. It is used because it is a utility command with nothing
/// to plan and no row to return; a `SELECT set_config(..)` added about 60 µs to each
/// transaction on the benchmark machine (see `BENCHMARKS.md`).
///
/// Safety of the splice: ids render as `[0-9a-f-]{36}` (see the properties in `ids.rs`)
/// and the bypass reason is a `&'static str` from code, escaped as a standard SQL
/// literal anyway.
fn begin_statement(prefix: &str, ctx: &TenantContext, bypass_reason: Option<&str>) -> String {
    let mut sql = String::with_capacity(prefix.len() + 200);
    sql.push_str(prefix);
    let user = ctx.user().map(|u| u.to_text());
    let _ = write!(
        sql,
        "; SET LOCAL {TENANT_SETTING} = '{}'; SET LOCAL {USER_SETTING} = '{}'; SET LOCAL {REQUEST_SETTING} = '{}'",
        ctx.tenant().to_text(),
        user.as_ref().map_or("", |u| u.as_str()),
        ctx.request_id().to_text(),
    );
    // Always written, so that a session-level `SET nova.bypass_reason` left on a pooled
    // connection (or set by `ALTER ROLE .. SET`) can never carry into a user's transaction.
    let reason = bypass_reason.map_or(String::new(), |r| r.replace('\'', "''").replace('\\', ""));
    let _ = write!(sql, "; SET LOCAL {BYPASS_SETTING} = '{reason}'");
    sql
}

/// `BEGIN` and the pins that make a transaction independent of what an earlier borrower
/// left on the session: the login's own role (a `SET ROLE` to a role the login is a member
/// of cannot carry into it), the login's `search_path` (read once, with `pg_temp` last, or
/// `TO DEFAULT`), and the pool's timeouts when they are pinned.
fn render_prefix(timeouts: Option<&SessionTimeouts>, search_path: Option<&str>) -> String {
    let mut sql = String::from("BEGIN; SET LOCAL ROLE NONE; SET LOCAL search_path ");
    sql.push_str(search_path.map_or("TO DEFAULT", |_| "= "));
    if let Some(path) = search_path {
        sql.push_str(path);
    }
    if let Some(t) = timeouts {
        let _ = write!(
            sql,
            "; SET LOCAL statement_timeout = '{}ms'; SET LOCAL idle_in_transaction_session_timeout = '{}ms'; SET LOCAL lock_timeout = '{}ms'",
            t.statement.as_millis(),
            t.idle_in_transaction.as_millis(),
            t.lock.as_millis(),
        );
    }
    sql
}

/// Schema names as quoted identifiers (any name the catalogue holds: `"` doubled), then
/// `pg_temp`, which named explicitly is searched where it stands rather than first.
fn render_search_path(schemas: &[String]) -> String {
    let mut path: Vec<String> = schemas
        .iter()
        .map(|name| format!("\"{}\"", name.replace('"', "\"\"")))
        .collect();
    if path.is_empty() {
        // Nothing else to search: still name pg_temp, or it would be searched first.
        path.push("pg_catalog".to_owned());
    }
    path.push("pg_temp".to_owned());
    path.join(", ")
}

/// Reads a duration as PostgreSQL prints a time setting (`30s`, `1min`, `250ms`, `0`).
fn parse_pg_duration(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit {
        "" | "ms" => n,
        "s" => n.checked_mul(1_000)?,
        "min" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

impl fmt::Debug for TenantPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's connect options hold a password; print only its shape.
        f.debug_struct("TenantPool")
            .field("size", &self.pool.size())
            .field("idle", &self.pool.num_idle())
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// A connection whose transaction has not been confirmed: closed if dropped while armed.
struct Unfinished(Option<PoolConnection<Postgres>>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            close(conn);
        }
    }
}

/// Closes a connection without returning it to the pool; the server ends the session and
/// rolls back anything it had open. (Behind PgBouncer the server session ends only if it
/// was inside a transaction; PgBouncer keeps an idle one. Every path that closes a
/// connection whose session may carry state leaves it inside a transaction first.)
fn close(mut conn: PoolConnection<Postgres>) {
    CONNECTIONS_CLOSED.fetch_add(1, Ordering::Relaxed);
    conn.close_on_drop();
    if tokio::runtime::Handle::try_current().is_ok() {
        // sqlx sends `Terminate` from a task and lets the pool open a replacement.
        drop(conn);
    } else if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() {
        // sqlx spawns from `Drop`; with no runtime left (a `TenantTx` dropped during
        // shutdown) give it one that is never driven: the task is dropped with the runtime,
        // and with it the socket, which ends the session as well.
        let _context = runtime.enter();
        drop(conn);
    } else {
        // Leak it rather than let sqlx's `Drop` panic without a runtime: the session
        // stays open, unused, until the process exits.
        std::mem::forget(conn);
    }
}

/// The end of a transaction that also resets the session, in one message:
/// `COMMIT` (or `ROLLBACK`), then the reset in a transaction of its own, then
/// `COMMIT AND CHAIN`.
///
/// The transaction ends first, so everything that happens at commit — deferred
/// constraints and triggers, `synchronous_commit` — sees the transaction's own settings.
/// Before `COMMIT` comes `SET CONSTRAINTS ALL IMMEDIATE`: it runs the deferred checks
/// (as `COMMIT` would, in the same transaction), and unlike `COMMIT`, which silently rolls
/// back a transaction an earlier error aborted, it fails there, so the commit reports it.
/// The reset then needs an explicit transaction: statements after `COMMIT` in one message
/// form an implicit one, which a later `BEGIN` in the same message would sweep into its
/// own.
///
/// `COMMIT AND CHAIN` commits the reset and opens an empty transaction that sqlx's own
/// bookkeeping then ends: Nova tells sqlx the transaction is over with `start_rollback`,
/// which queues a `ROLLBACK` that travels with the ping sqlx sends anyway when it releases
/// the connection. Without the chained transaction that `ROLLBACK` would log a warning on
/// the server every time; without the queued `ROLLBACK` sqlx would believe the connection
/// still inside a transaction. The reset costs no round trip. If the `COMMIT` fails
/// (a deferred constraint, a serialization failure) nothing after it runs, and the
/// connection is rolled back and reset as on rollback before anyone else can borrow it.
fn end_statement(commit: bool) -> &'static str {
    if commit { END_COMMIT } else { END_ROLLBACK }
}

/// A transaction scoped to one tenant. Use `&mut *tx` wherever sqlx wants an executor;
/// `(*tx).begin()` opens a savepoint.
///
/// Dropping it without [`TenantTx::commit`] rolls back and resets the session in a task
/// spawned on the current runtime, before the connection goes back to the pool.
pub struct TenantTx {
    /// `Some` until the transaction has ended; taken by `commit`, `rollback` or `Drop`.
    conn: Option<PoolConnection<Postgres>>,
    tenant: TenantId,
}

impl TenantTx {
    /// The tenant this transaction is scoped to.
    #[must_use]
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// Commits, and resets the session in the same round trip; the tenant settings end
    /// with the transaction.
    ///
    /// The reset follows the `COMMIT`, so deferred constraints and triggers and
    /// `synchronous_commit` see the transaction's own settings.
    ///
    /// Cancel-safe: if the returned future is dropped, the connection is rolled back (if
    /// the commit had not happened) and reset by a spawned task, or closed.
    ///
    /// # Errors
    /// [`Error::Database`] when the commit fails; the transaction is then rolled back and
    /// the session reset before the connection is released (or it is closed).
    pub async fn commit(mut self) -> Result<(), Error> {
        self.end(true).await
    }

    /// Rolls back explicitly, and resets the session in the same round trip (dropping does
    /// the same in a spawned task).
    ///
    /// # Errors
    /// [`Error::Database`] when the server cannot be reached (the connection is closed).
    pub async fn rollback(mut self) -> Result<(), Error> {
        self.end(false).await
    }

    async fn end(&mut self, commit: bool) -> Result<(), Error> {
        // The connection stays in `self` until the session is known to be reset: if this
        // future is dropped at any await below, `Drop` hands it to `clean_up`.
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let depth = transaction_depth(conn);
        let ended = conn.execute(end_statement(commit)).await;
        let result = match ended {
            Ok(_) if depth == 1 => {
                if let Some(conn) = self.conn.take() {
                    release(conn);
                }
                return Ok(());
            }
            // A savepoint left open (a nested transaction leaked with `mem::forget`): the
            // bookkeeping no longer matches the server, so the connection is not reused.
            // It is closed inside the chained transaction, which ends the server session
            // behind PgBouncer too.
            Ok(_) => Ok(()),
            Err(e) => Err(Error::from(e)),
        };
        if depth == 1 {
            // A failed commit skipped the reset: roll back and reset, then release.
            if let Some(conn) = self.conn.as_mut() {
                let reset = tokio::time::timeout(CLEANUP_TIMEOUT, conn.execute(END_ROLLBACK)).await;
                if matches!(reset, Ok(Ok(_))) {
                    if let Some(conn) = self.conn.take() {
                        release(conn);
                    }
                    return result;
                }
            }
        }
        if let Some(conn) = self.conn.take() {
            close(conn);
        }
        result
    }
}

/// Releases a connection whose session was reset in the message that ended its
/// transaction: sqlx's bookkeeping is told the transaction is over (see [`end_statement`]).
fn release(mut conn: PoolConnection<Postgres>) {
    sqlx_tx::start_rollback::<Postgres>(&mut conn);
    drop(conn);
}

/// sqlx's transaction bookkeeping, reached through `Database::TransactionManager` (the
/// trait itself is not re-exported by `sqlx`). Nova uses it so that `(*tx).begin()` inside
/// a `TenantTx` opens a savepoint, exactly as inside a `sqlx::Transaction`.
mod sqlx_tx {
    use sqlx::{Database, SqlStr};
    use sqlx_core::transaction::TransactionManager as _;

    pub(super) async fn begin<DB: Database>(
        conn: &mut DB::Connection,
        statement: SqlStr,
    ) -> Result<(), sqlx::Error> {
        DB::TransactionManager::begin(conn, Some(statement)).await
    }

    pub(super) fn start_rollback<DB: Database>(conn: &mut DB::Connection) {
        DB::TransactionManager::start_rollback(conn);
    }

    pub(super) fn depth<DB: Database>(conn: &DB::Connection) -> usize {
        DB::TransactionManager::get_transaction_depth(conn)
    }
}

fn transaction_depth(conn: &PgConnection) -> usize {
    sqlx_tx::depth::<Postgres>(conn)
}

/// Rolls back and resets a connection whose `TenantTx` was dropped, then releases it; closes
/// it if that fails or takes too long (a statement still running, a broken protocol state
/// after a future was dropped mid-message).
async fn clean_up(mut conn: PoolConnection<Postgres>) {
    let depth = transaction_depth(&conn);
    let reset = tokio::time::timeout(CLEANUP_TIMEOUT, conn.execute(END_ROLLBACK)).await;
    match reset {
        Ok(Ok(_)) if depth == 1 => release(conn),
        _ => close(conn),
    }
}

impl Drop for TenantTx {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                // The task owns the connection: nobody else can borrow it until it is clean.
                drop(runtime.spawn(clean_up(conn)));
            }
            Err(_) => close(conn),
        }
    }
}

impl Deref for TenantTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match &self.conn {
            Some(conn) => conn,
            None => unreachable!("a TenantTx is consumed when its transaction ends"),
        }
    }
}

impl DerefMut for TenantTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match &mut self.conn {
            Some(conn) => conn,
            None => unreachable!("a TenantTx is consumed when its transaction ends"),
        }
    }
}

impl fmt::Debug for TenantTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantTx")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{CredentialVerifier, VerifiedIdentity};
    use crate::ids::UserId;

    struct V;
    impl CredentialVerifier for V {
        fn verifier_name(&self) -> &'static str {
            "test"
        }
    }

    #[test]
    fn begin_statement_contains_only_rendered_ids() {
        let t = TenantId::new_v4();
        let u = UserId::new_v4();
        let ctx = TenantContext::from_verified(&V, VerifiedIdentity::new(t).user(u));
        let sql = begin_statement(&render_prefix(None, None), &ctx, None);
        assert!(sql.starts_with(
            "BEGIN; SET LOCAL ROLE NONE; SET LOCAL search_path TO DEFAULT; SET LOCAL nova.tenant_id = '"
        ));
        assert!(sql.contains(&t.to_string()));
        assert!(sql.contains(&u.to_string()));
        assert!(sql.ends_with("SET LOCAL nova.bypass_reason = ''"), "{sql}");
        assert_eq!(sql.matches(';').count(), 6);
    }

    #[test]
    fn bypass_reason_is_escaped_as_a_literal() {
        let ctx = TenantContext::system(TenantId::new_v4(), "job").unwrap();
        let sql = begin_statement(
            &render_prefix(None, None),
            &ctx,
            Some("it's'); DROP TABLE t; --"),
        );
        assert!(sql.contains("'it''s''); DROP TABLE t; --'"));
        // the user id of a system context is the empty string, which policies read as NULL
        assert!(sql.contains("SET LOCAL nova.user_id = ''"));
    }

    #[test]
    fn timeouts_are_pinned_in_milliseconds_after_the_role_and_path() {
        let prefix = render_prefix(
            Some(&SessionTimeouts {
                statement: Duration::from_secs(5),
                idle_in_transaction: Duration::from_millis(1500),
                lock: Duration::from_secs(1),
            }),
            None,
        );
        assert_eq!(
            prefix,
            "BEGIN; SET LOCAL ROLE NONE; SET LOCAL search_path TO DEFAULT; \
             SET LOCAL statement_timeout = '5000ms'; \
             SET LOCAL idle_in_transaction_session_timeout = '1500ms'; SET LOCAL lock_timeout = '1000ms'"
        );
    }

    #[test]
    fn a_pinned_search_path_quotes_every_schema_and_names_pg_temp_last() {
        let path = render_search_path(&["public".to_owned(), "we\"ird".to_owned()]);
        assert_eq!(path, "\"public\", \"we\"\"ird\", pg_temp");
        assert_eq!(render_search_path(&[]), "pg_catalog, pg_temp");
        let prefix = render_prefix(None, Some(&path));
        assert!(prefix.ends_with("SET LOCAL search_path = \"public\", \"we\"\"ird\", pg_temp"));
    }

    #[test]
    fn the_reset_follows_the_commit_in_a_transaction_of_its_own_and_leaves_an_empty_one_for_sqlx() {
        let commit = end_statement(true);
        assert!(commit.contains(SESSION_RESET));
        assert!(commit.ends_with("; COMMIT AND CHAIN"));
        assert!(commit.starts_with("SET CONSTRAINTS ALL IMMEDIATE; COMMIT; BEGIN; CLOSE ALL"));
        let rollback = end_statement(false);
        assert!(rollback.starts_with("ROLLBACK; BEGIN; CLOSE ALL"));
        assert!(rollback.ends_with("; COMMIT AND CHAIN"));
    }

    proptest::proptest! {
        #[test]
        fn any_duration_postgres_prints_reads_back(n in 0_u64..1_000_000_000, unit in 0_usize..5) {
            let (suffix, ms) = [("ms", 1), ("s", 1_000), ("min", 60_000), ("h", 3_600_000), ("d", 86_400_000)][unit];
            proptest::prop_assert_eq!(
                parse_pg_duration(&format!("{n}{suffix}")),
                Some(Duration::from_millis(n * ms))
            );
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,40}") {
            let _ = parse_pg_duration(&text);
        }
    }

    #[test]
    fn postgres_durations_are_read_in_every_unit_it_prints() {
        assert_eq!(parse_pg_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_pg_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_pg_duration("1min"), Some(Duration::from_secs(60)));
        assert_eq!(parse_pg_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_pg_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_pg_duration("1.5s"), None);
        assert_eq!(parse_pg_duration(""), None);
    }
}
