//! A bounded load test of the reference service: many concurrent clients across many
//! tenants for a fixed time, every response checked for rows of another tenant (or of
//! queues the caller may not read), then the audit log verified and matched against the
//! writes the clients saw succeed. The same workload runs against a baseline built here,
//! in rounds alternating with the service's: the same routes and SQL with nothing of Nova
//! (identity from headers, a superuser pool over the same TLS, no row-level security,
//! policy, sealing or audit), and both are reported.
//!
//! ```text
//! cargo test -p nova-examples --test ticketing_load -- --nocapture          # 4 s per run
//! NOVA_LOAD_SECONDS=10 NOVA_LOAD_ROUNDS=3 cargo test --release -p nova-examples \
//!     --test ticketing_load -- --nocapture                                  # the documented run
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{SERIAL, config_text, start};
use nova_examples::ticketing::{UserSpec, db};
use nova_tenancy::TenantId;
use nova_tenancy::testing::PgFixture;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Generous limits: the load test measures the service, not the limiter's refusals.
fn load_config() -> String {
    config_text(&[
        (
            "agent = { rate = 200, per_seconds = 1, burst = 400 }",
            "agent = { rate = 100000, per_seconds = 1, burst = 100000 }",
        ),
        (
            "tenant = { rate = 5000, per_seconds = 1, burst = 10000 }",
            "tenant = { rate = 100000, per_seconds = 1, burst = 100000 }",
        ),
    ])
}

#[derive(Clone)]
struct Agent {
    queues: Vec<&'static str>,
    auth: Auth,
}

#[derive(Clone)]
enum Auth {
    Bearer(String),
    Headers(String, String),
}

impl Auth {
    fn apply(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Self::Bearer(t) => r.bearer_auth(t),
            Self::Headers(tenant, user) => r
                .header("x-tenant-id", tenant)
                .header("x-user-id", user)
                .header("x-roles", "agent"),
        }
    }
}

struct Tenant {
    id: TenantId,
    agents: Vec<Agent>,
    requester: Uuid,
    /// Seed tickets: (id, queue).
    tickets: Vec<(Uuid, &'static str)>,
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    leaks: AtomicU64,
    server_errors: AtomicU64,
    unexpected: AtomicU64,
}

struct Outcome {
    tally: Tally,
    latencies_us: Vec<u32>,
    /// Latencies by operation.
    by_op: HashMap<&'static str, Vec<u32>>,
    /// Successful writes by tenant.
    writes: HashMap<TenantId, u64>,
    elapsed: Duration,
}

/// What the workload runs against: the service, or the baseline.
trait Service {
    /// Adds a user and returns how its requests authenticate.
    async fn user(&self, tenant: TenantId, spec: UserSpec<'_>) -> (Uuid, Auth);
    fn client(&self) -> &reqwest::Client;
    fn base(&self) -> String;
}

impl Service for common::Harness {
    async fn user(&self, tenant: TenantId, spec: UserSpec<'_>) -> (Uuid, Auth) {
        let user = self.onboard(tenant, spec).await;
        (user.id, Auth::Bearer(self.token(user)))
    }
    fn client(&self) -> &reqwest::Client {
        &self.client
    }
    fn base(&self) -> String {
        self.running.base.clone()
    }
}

async fn prepare<S: Service>(h: &S, tenants: usize) -> Vec<Arc<Tenant>> {
    let mut out = Vec::new();
    for n in 0..tenants {
        let id = TenantId::new_v4();
        let mut agents = Vec::new();
        for (k, queues) in [vec!["billing", "vip"], vec!["billing"]]
            .into_iter()
            .enumerate()
        {
            let email = format!("agent{k}@t{n}.example");
            let (_, auth) = h
                .user(
                    id,
                    UserSpec {
                        email: &email,
                        name: "Agent",
                        department: "support",
                        queues: &queues,
                        role: "agent",
                    },
                )
                .await;
            agents.push(Agent { queues, auth });
        }
        let (requester, _) = h
            .user(
                id,
                UserSpec {
                    email: &format!("c@t{n}.example"),
                    name: "Customer",
                    department: "customers",
                    queues: &[],
                    role: "customer",
                },
            )
            .await;
        let mut tickets = Vec::new();
        for queue in ["billing", "vip", "billing", "vip"] {
            let r = agents[0]
                .auth
                .apply(h.client().post(format!("{}/tickets", h.base())))
                .json(
                    &json!({"queue": queue, "department": "support", "priority": 2, "title": "seed",
                              "body": "seed body", "requester_id": requester}),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            let v: Value = r.json().await.unwrap();
            tickets.push((v["id"].as_str().unwrap().parse().unwrap(), queue));
        }
        out.push(Arc::new(Tenant {
            id,
            agents,
            requester,
            tickets,
        }));
    }
    out
}

async fn run<S: Service>(h: &S, tenants: &[Arc<Tenant>], clients: usize, seconds: u64) -> Outcome {
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let me = Arc::clone(&tenants[c % tenants.len()]);
        let other = Arc::clone(&tenants[(c + 1) % tenants.len()]);
        let agent = me.agents[(c / tenants.len()) % me.agents.len()].clone();
        let (client, base, tally) = (h.client().clone(), h.base(), Arc::clone(&tally));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut by_op: HashMap<&'static str, Vec<u32>> = HashMap::new();
            let mut writes = 0u64;
            let mut step: u64 = c as u64 * 7919;
            let visible: Vec<Uuid> = me.tickets.iter().filter(|(_, q)| agent.queues.contains(q)).map(|(id, _)| *id).collect();
            while Instant::now() < deadline {
                step = step.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let pick = (step >> 33) as usize;
                let sent = Instant::now();
                let op = match pick % 10 {
                    0..=2 => "create",
                    3..=5 => "list",
                    6..=7 => "read",
                    8 => "probe",
                    _ => "comment",
                };
                let (status, write, body) = match pick % 10 {
                    0..=2 => {
                        let queue = agent.queues[pick % agent.queues.len()];
                        let r = agent.auth.apply(client.post(format!("{base}/tickets")))
                            .json(&json!({"queue": queue, "department": "support", "priority": 1 + (pick % 4) as i32,
                                          "title": "load", "body": "load body", "requester_id": me.requester}))
                            .send().await.unwrap();
                        (r.status(), true, None)
                    }
                    3..=5 => {
                        let r = agent.auth.apply(client.get(format!("{base}/tickets"))).send().await.unwrap();
                        let s = r.status();
                        (s, false, r.json::<Value>().await.ok())
                    }
                    6..=7 => {
                        let id = visible[pick % visible.len()];
                        let r = agent.auth.apply(client.get(format!("{base}/tickets/{id}"))).send().await.unwrap();
                        let s = r.status();
                        (s, false, r.json::<Value>().await.ok())
                    }
                    8 => {
                        // Another tenant's ticket, by id: must be "not found".
                        let (id, _) = other.tickets[pick % other.tickets.len()];
                        let r = agent.auth.apply(client.get(format!("{base}/tickets/{id}"))).send().await.unwrap();
                        let s = r.status();
                        if s != StatusCode::NOT_FOUND {
                            tally.leaks.fetch_add(1, Ordering::Relaxed);
                        }
                        (StatusCode::OK, false, None)
                    }
                    _ => {
                        let id = visible[pick % visible.len()];
                        let r = agent.auth.apply(client.post(format!("{base}/tickets/{id}/comments")))
                            .json(&json!({"body": "load comment"}))
                            .send().await.unwrap();
                        (r.status(), true, None)
                    }
                };
                let took = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                latencies.push(took);
                by_op.entry(op).or_default().push(took);
                tally.requests.fetch_add(1, Ordering::Relaxed);
                if status.is_server_error() {
                    tally.server_errors.fetch_add(1, Ordering::Relaxed);
                } else if !(status.is_success()) {
                    tally.unexpected.fetch_add(1, Ordering::Relaxed);
                } else if write {
                    writes += 1;
                }
                // Every row returned must be of the caller's tenant, in a queue it works.
                if let Some(v) = body {
                    let rows: Vec<&Value> = match v.get("tickets") {
                        Some(Value::Array(list)) => list.iter().collect(),
                        _ => vec![&v],
                    };
                    for row in rows {
                        let tenant_ok = row["tenant_id"] == json!(me.id.to_string());
                        let queue_ok = row["queue"].as_str().is_some_and(|q| agent.queues.contains(&q));
                        if !tenant_ok || !queue_ok {
                            tally.leaks.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            (me.id, writes, latencies, by_op)
        }));
    }
    let mut latencies_us = Vec::new();
    let mut by_op: HashMap<&'static str, Vec<u32>> = HashMap::new();
    let mut writes: HashMap<TenantId, u64> = HashMap::new();
    for t in tasks {
        let (tenant, w, l, ops) = t.await.unwrap();
        *writes.entry(tenant).or_default() += w;
        latencies_us.extend(l);
        for (op, l) in ops {
            by_op.entry(op).or_default().extend(l);
        }
    }
    let elapsed = started.elapsed();
    let tally = Arc::try_unwrap(tally).unwrap_or_default();
    Outcome {
        tally,
        latencies_us,
        by_op,
        writes,
        elapsed,
    }
}

fn summary(name: &str, o: &mut Outcome) -> (f64, f64, f64) {
    o.latencies_us.sort_unstable();
    let pct = |p: f64| {
        let i = ((o.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(o.latencies_us[i]) / 1000.0
    };
    let rps = o.latencies_us.len() as f64 / o.elapsed.as_secs_f64();
    let (p50, p99) = (pct(0.50), pct(0.99));
    let mut ops: Vec<_> = o.by_op.iter_mut().collect();
    ops.sort_by_key(|(op, _)| **op);
    let per_op: Vec<String> = ops
        .into_iter()
        .map(|(op, l)| {
            l.sort_unstable();
            let at = |p: f64| f64::from(l[((l.len() as f64 - 1.0) * p).round() as usize]) / 1000.0;
            format!("{op} {:.1}/{:.1}", at(0.5), at(0.99))
        })
        .collect();
    println!(
        "{name:<12} {:>7} requests in {:.1} s: {rps:>8.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms",
        o.latencies_us.len(),
        o.elapsed.as_secs_f64()
    );
    println!("{:<12} p50/p99 ms by operation: {}", "", per_op.join(", "));
    (rps, p50, p99)
}

impl Outcome {
    /// Adds another round's outcome to this one.
    fn absorb(&mut self, o: Outcome) {
        for (mine, theirs) in [
            (&self.tally.requests, &o.tally.requests),
            (&self.tally.leaks, &o.tally.leaks),
            (&self.tally.server_errors, &o.tally.server_errors),
            (&self.tally.unexpected, &o.tally.unexpected),
        ] {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.latencies_us.extend(o.latencies_us);
        for (op, l) in o.by_op {
            self.by_op.entry(op).or_default().extend(l);
        }
        for (tenant, w) in o.writes {
            *self.writes.entry(tenant).or_default() += w;
        }
        self.elapsed += o.elapsed;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tenants_under_load_leak_nothing_and_audit_every_write() {
    let _serial = SERIAL.lock().await;
    let seconds = env_or("NOVA_LOAD_SECONDS", 4);
    let clients = env_or("NOVA_LOAD_CLIENTS", 32) as usize;
    let tenant_count = env_or("NOVA_LOAD_TENANTS", 8) as usize;
    // Rounds alternate the service and the baseline, so that a host whose speed drifts
    // (a shared VM) slows both alike.
    let rounds = env_or("NOVA_LOAD_ROUNDS", 1).max(1);

    // Nova's checks on, and the same routes and SQL with nothing of Nova, side by side.
    let Some(h) = start("tkload", &load_config()).await else {
        return;
    };
    let Some(b) = baseline::Baseline::start("tkloadoff").await else {
        h.stop().await;
        return;
    };
    let tenants = prepare(&h, tenant_count).await;
    let plain_tenants = prepare(&b, tenant_count).await;
    let seeded = h.audit_counts().await;
    let (mut on, mut off): (Option<Outcome>, Option<Outcome>) = (None, None);
    for round in 1..=rounds {
        let mut o = run(&h, &tenants, clients, seconds).await;
        let mut f = run(&b, &plain_tenants, clients, seconds).await;
        if rounds > 1 {
            println!("\nround {round}:");
            ratios(&mut o, &mut f);
        }
        match (&mut on, &mut off) {
            (Some(on), Some(off)) => {
                on.absorb(o);
                off.absorb(f);
            }
            _ => (on, off) = (Some(o), Some(f)),
        }
    }
    let (Some(mut on), Some(mut off)) = (on, off) else {
        unreachable!("at least one round");
    };
    assert!(
        on.tally.requests.load(Ordering::Relaxed) > 100,
        "too few requests to mean anything"
    );
    for (side, o) in [("service", &on), ("baseline", &off)] {
        assert_eq!(
            o.tally.leaks.load(Ordering::Relaxed),
            0,
            "{side}: rows of another tenant or queue were returned"
        );
        assert_eq!(
            o.tally.server_errors.load(Ordering::Relaxed),
            0,
            "{side}: 5xx answers"
        );
    }
    assert_eq!(
        on.tally.unexpected.load(Ordering::Relaxed),
        0,
        "refused requests"
    );
    // The audit log verifies, and holds exactly one data.write event per successful write:
    // the seeding's 4 tickets per tenant, then the clients'.
    let counts = h.audit_counts().await;
    for t in &tenants {
        let key = (t.id.to_string(), "data.write".to_owned());
        let before = seeded.get(&key).copied().unwrap_or(0);
        assert_eq!(before, 4);
        let seen = on.writes.get(&t.id).copied().unwrap_or(0);
        assert_eq!(
            counts.get(&key).copied().unwrap_or(0),
            before + seen,
            "tenant {}",
            t.id
        );
    }
    let total_writes: u64 = on.writes.values().sum();
    h.stop().await;
    b.stop().await;

    println!(
        "\n{clients} clients, {tenant_count} tenants, {rounds} round(s) of {seconds} s each; {total_writes} audited writes with checks on"
    );
    ratios(&mut on, &mut off);
}

/// Prints both sides and their ratios.
fn ratios(on: &mut Outcome, off: &mut Outcome) {
    let (rps_on, p50_on, p99_on) = summary("checks on", on);
    let (rps_off, p50_off, p99_off) = summary("baseline", off);
    println!(
        "ratio (on / off): throughput {:.2}, p50 {:.2}, p99 {:.2}",
        rps_on / rps_off,
        p50_on / p50_off,
        p99_on / p99_off
    );
}

/// The baseline the service is measured against: the service's routes for this workload
/// and the same SQL, with nothing of Nova. Identity comes from headers, queries run as the
/// set-up role (no row-level security) and filter by tenant and queue by hand; nothing is
/// sealed, decided by a policy or audited. Never a pattern for a real service.
mod baseline {
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde_json::{Value, json};
    use sqlx::{AssertSqlSafe, PgPool, Row};

    use super::*;

    #[derive(Clone)]
    struct Plain {
        pool: PgPool,
        schema: String,
    }

    pub(super) struct Baseline {
        fixture: PgFixture,
        names: db::Names,
        plain: Plain,
        base: String,
        client: reqwest::Client,
        server: tokio::task::JoinHandle<()>,
    }

    type Answer = Result<(StatusCode, Json<Value>), StatusCode>;

    fn internal<E>(_: E) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    /// The caller's tenant and user from headers, and the user's queues.
    async fn caller(
        p: &Plain,
        h: &HeaderMap,
        tx: &mut sqlx::PgConnection,
    ) -> Result<(Uuid, Vec<String>), StatusCode> {
        let header = |n: &str| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<Uuid>().ok())
        };
        let (tenant, user) = (header("x-tenant-id"), header("x-user-id"));
        let (Some(tenant), Some(user)) = (tenant, user) else {
            return Err(StatusCode::UNAUTHORIZED);
        };
        let queues: Option<Vec<String>> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT queues FROM {}.users WHERE tenant_id = $1 AND id = $2",
            p.schema
        )))
        .bind(tenant)
        .bind(user)
        .fetch_optional(tx)
        .await
        .map_err(internal)?;
        Ok((tenant, queues.ok_or(StatusCode::FORBIDDEN)?))
    }

    async fn create(State(p): State<Plain>, h: HeaderMap, Json(t): Json<Value>) -> Answer {
        let mut tx = p.pool.begin().await.map_err(internal)?;
        let (tenant, _) = caller(&p, &h, &mut tx).await?;
        let id = Uuid::new_v4();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {}.tickets (tenant_id, id, queue, department, priority, requester_id, title, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            p.schema
        )))
        .bind(tenant)
        .bind(id)
        .bind(t["queue"].as_str())
        .bind(t["department"].as_str())
        .bind(t["priority"].as_i64().map(|n| n as i32))
        .bind(t["requester_id"].as_str().and_then(|r| r.parse::<Uuid>().ok()))
        .bind(t["title"].as_str())
        .bind(t["body"].as_str())
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
    }

    const COLUMNS: &str = "tenant_id, id, queue, department, priority, status, title";

    fn ticket(r: &sqlx::postgres::PgRow) -> Value {
        json!({
            "tenant_id": r.get::<Uuid, _>("tenant_id"), "id": r.get::<Uuid, _>("id"),
            "queue": r.get::<String, _>("queue"), "department": r.get::<String, _>("department"),
            "priority": r.get::<i32, _>("priority"), "status": r.get::<String, _>("status"),
            "title": r.get::<Option<String>, _>("title"),
        })
    }

    async fn list(State(p): State<Plain>, h: HeaderMap) -> Answer {
        let mut tx = p.pool.begin().await.map_err(internal)?;
        let (tenant, queues) = caller(&p, &h, &mut tx).await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM {}.tickets WHERE tenant_id = $1 AND queue = ANY($2) \
             ORDER BY created_at DESC LIMIT 50",
            p.schema
        )))
        .bind(tenant)
        .bind(&queues)
        .fetch_all(&mut *tx)
        .await
        .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok((
            StatusCode::OK,
            Json(json!({ "tickets": rows.iter().map(ticket).collect::<Vec<_>>() })),
        ))
    }

    /// The ticket, when it is the caller's tenant's and in one of its queues.
    async fn visible(
        p: &Plain,
        tx: &mut sqlx::PgConnection,
        tenant: Uuid,
        queues: &[String],
        id: Uuid,
    ) -> Result<Value, StatusCode> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS}, body, requester_id FROM {}.tickets WHERE tenant_id = $1 AND id = $2",
            p.schema
        )))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(internal)?
        .ok_or(StatusCode::NOT_FOUND)?;
        let mut t = ticket(&row);
        if !queues.iter().any(|q| t["queue"] == json!(q)) {
            return Err(StatusCode::NOT_FOUND);
        }
        t["body"] = json!(row.get::<Option<String>, _>("body"));
        t["requester_id"] = json!(row.get::<Uuid, _>("requester_id"));
        Ok(t)
    }

    async fn read(State(p): State<Plain>, h: HeaderMap, Path(id): Path<Uuid>) -> Answer {
        let mut tx = p.pool.begin().await.map_err(internal)?;
        let (tenant, queues) = caller(&p, &h, &mut tx).await?;
        let mut t = visible(&p, &mut tx, tenant, &queues, id).await?;
        let comments = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, author_id, body FROM {}.comments WHERE tenant_id = $1 AND ticket_id = $2 \
             ORDER BY created_at, id",
            p.schema
        )))
        .bind(tenant)
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        t["comments"] = json!(
            comments
                .iter()
                .map(|c| json!({
                    "id": c.get::<Uuid, _>("id"), "author_id": c.get::<Uuid, _>("author_id"),
                    "body": c.get::<Option<String>, _>("body"),
                }))
                .collect::<Vec<_>>()
        );
        Ok((StatusCode::OK, Json(t)))
    }

    async fn comment(
        State(p): State<Plain>,
        h: HeaderMap,
        Path(ticket): Path<Uuid>,
        Json(c): Json<Value>,
    ) -> Answer {
        let mut tx = p.pool.begin().await.map_err(internal)?;
        let (tenant, queues) = caller(&p, &h, &mut tx).await?;
        visible(&p, &mut tx, tenant, &queues, ticket).await?;
        let author = h
            .get("x-user-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Uuid>().ok());
        let id = Uuid::new_v4();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {}.comments (tenant_id, id, ticket_id, author_id, body) VALUES ($1, $2, $3, $4, $5)",
            p.schema
        )))
        .bind(tenant)
        .bind(id)
        .bind(ticket)
        .bind(author)
        .bind(c["body"].as_str())
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
    }

    impl Baseline {
        /// The service's tables (its migration) in a throwaway database, served by the
        /// baseline's handlers.
        pub(super) async fn start(label: &str) -> Option<Self> {
            let fixture = PgFixture::new(label).await?;
            let names = db::Names::new(fixture.prefix()).unwrap();
            db::migrate(fixture.admin(), &names).await.unwrap();
            // The same transport as the service: TLS as its configuration says.
            let db = nova::Config::from_toml(&load_config()).unwrap().database;
            let mut options = db
                .connection_policy()
                .apply(fixture.connect_options("postgres"));
            if let Some(ca) = &db.root_cert {
                options = options.ssl_root_cert(ca);
            }
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(db.max_connections)
                .connect_with(options)
                .await
                .unwrap();
            let plain = Plain {
                pool,
                schema: names.app.to_string(),
            };
            let routes = Router::new()
                .route("/tickets", get(list).post(create))
                .route("/tickets/{id}", get(read))
                .route("/tickets/{id}/comments", post(comment))
                .with_state(plain.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let server = tokio::spawn(async move {
                let _ = axum::serve(listener, routes).await;
            });
            Some(Self {
                fixture,
                names,
                plain,
                base,
                client: reqwest::Client::new(),
                server,
            })
        }

        pub(super) async fn stop(self) {
            self.server.abort();
            self.plain.pool.close().await;
            db::drop_all(self.fixture.admin(), &self.names)
                .await
                .unwrap();
            self.fixture.cleanup().await;
        }
    }

    impl Service for Baseline {
        async fn user(&self, tenant: TenantId, spec: UserSpec<'_>) -> (Uuid, Auth) {
            let id = Uuid::new_v4();
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {}.users (tenant_id, id, display_name, email, department, queues, role) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                self.plain.schema
            )))
            .bind(tenant)
            .bind(id)
            .bind(spec.name)
            .bind(spec.email)
            .bind(spec.department)
            .bind(spec.queues)
            .bind(spec.role)
            .execute(&self.plain.pool)
            .await
            .unwrap();
            (id, Auth::Headers(tenant.to_string(), id.to_string()))
        }
        fn client(&self) -> &reqwest::Client {
            &self.client
        }
        fn base(&self) -> String {
            self.base.clone()
        }
    }
}
