//! Data filtering against the real PostgreSQL: for random policies, random rows (some with
//! NULLs) and random principals, the rows a compiled SQL predicate returns, and the rows a
//! generated RLS policy lets a non-superuser role see, are exactly the rows the evaluator
//! allows one by one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use nova_policy::{
    Attrs, CompiledPolicy, PolicySet, Request, ResourceTable, RlsCommand, Schema, SqlParam, Value,
};
use nova_tenancy::Ident;
use nova_tenancy::testing::PgFixture;
use sqlx::Row;
use sqlx::postgres::{PgArguments, PgPool};
use sqlx::query::Query;

const SCHEMA: &str = r#"
    entity User { dept: String, level: Long, queues: Set<String>, home?: String, flag: Bool };
    entity Ticket {
        dept: String, queue: String, priority: Long, hr: Bool, path: String,
        tags: Set<String>, assignee?: String, levels: Set<Long>
    };
    context { mfa: Bool, hour: Long };
    principal User;
"#;

const ATOMS: &[&str] = &[
    "resource.dept == principal.dept",
    "resource.dept != \"hr\"",
    "resource.priority >= 2",
    "resource.priority < principal.level",
    "resource.priority <= 1",
    "resource.priority > context.hour",
    "resource.queue in principal.queues",
    "resource.queue in [\"q0\", \"q3\"]",
    "resource.queue in []",
    "\"urgent\" in resource.tags",
    "principal.dept in resource.tags",
    "resource.hr",
    "resource.hr == principal.flag",
    "context.mfa",
    "resource has assignee",
    "resource.assignee == \"u1\"",
    "resource.path starts_with \"/a\"",
    "resource.path starts_with principal.home",
    "principal has home",
    "principal.level > 2",
    "principal.level in resource.levels",
    "3 in resource.levels",
    "resource.priority in []",
    "resource.priority in [1, 3]",
    "(resource.hr == true) in [true]",
    "(resource.priority < 2) == principal.flag",
    "resource.priority > -9223372036854775808",
    "resource.path starts_with \"/a$n\"",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic, good enough to spread test cases.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

fn expr(rng: &mut Rng, depth: usize) -> String {
    if depth == 0 || rng.chance(35) {
        return rng.pick(ATOMS).to_owned();
    }
    match rng.below(3) {
        0 => format!("({} && {})", expr(rng, depth - 1), expr(rng, depth - 1)),
        1 => format!("({} || {})", expr(rng, depth - 1), expr(rng, depth - 1)),
        _ => format!("!({})", expr(rng, depth - 1)),
    }
}

fn random_policy(rng: &mut Rng) -> String {
    let mut text = String::from("role r0; role r1 : r0; role r2;\n");
    for _ in 0..(2 + rng.below(5)) {
        let effect = if rng.chance(25) { "deny" } else { "allow" };
        let who = rng.pick(&["*", "r0", "r1", "r2", "r1, r2"]);
        let actions = rng.pick(&["*", "read", "read, update", "update"]);
        let cond = if rng.chance(85) {
            format!(" when {}", expr(rng, 3))
        } else {
            String::new()
        };
        text.push_str(&format!("{effect} {who} to {actions} on Ticket{cond};\n"));
    }
    // Grants, live or expired, to a role or to the requesting principal.
    for g in 0..rng.below(3) {
        let to = rng.pick(&["role r2", "role r0", "principal \"u1\"", "principal \"u9\""]);
        let actions = rng.pick(&["*", "read", "update"]);
        let until = rng.pick(&["2000-01-01T00:00:00Z", "2090-01-01T00:00:00Z"]);
        let cond = if rng.chance(60) {
            format!(" when {}", expr(rng, 2))
        } else {
            String::new()
        };
        text.push_str(&format!(
            "grant \"g{g}\" to {to}: {actions} on Ticket{cond} until \"{until}\" by \"x\";\n"
        ));
    }
    text
}

struct Row_ {
    id: i32,
    attrs: Attrs,
}

fn random_row(rng: &mut Rng, id: i32) -> (String, Row_) {
    let dept = rng.pick(&["hr", "it", "ops"]);
    let queue = if rng.chance(10) {
        None
    } else {
        Some(rng.pick(&["q0", "q1", "q2", "q3"]))
    };
    let priority = i64::try_from(rng.below(5)).unwrap();
    let hr = rng.chance(30);
    let path = rng.pick(&[
        "/a/x",
        "/ab",
        "/b/a",
        "/home/it/1",
        "/home/ops/2",
        "%_odd'\\",
        "/a$n$x",
    ]);
    let mut tags: Vec<&str> = Vec::new();
    for t in ["urgent", "hr", "it", "ops"] {
        if rng.chance(30) {
            tags.push(t);
        }
    }
    let assignee = if rng.chance(50) {
        Some(rng.pick(&["u1", "u2"]))
    } else {
        None
    };
    let levels: Vec<i64> = (0..rng.below(4))
        .map(|_| i64::try_from(rng.below(5)).unwrap())
        .collect();
    let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let sql = format!(
        "({id}, {}, {}, {priority}, {hr}, {}, ARRAY[{}]::text[], {}, ARRAY[{}]::bigint[])",
        q(dept),
        queue.map_or("NULL".into(), q),
        q(path),
        tags.iter().map(|t| q(t)).collect::<Vec<_>>().join(","),
        assignee.map_or("NULL".into(), q),
        levels
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    let mut attrs = Attrs::new()
        .with("dept", dept)
        .with("priority", priority)
        .with("hr", hr)
        .with("path", path)
        .with("tags", Value::strings(tags))
        .with("levels", Value::longs(levels));
    if let Some(qv) = queue {
        attrs.insert("queue", qv);
    }
    if let Some(a) = assignee {
        attrs.insert("assignee", a);
    }
    (sql, Row_ { id, attrs })
}

struct Principal {
    roles: Vec<&'static str>,
    attrs: Attrs,
    ctx: Attrs,
}

fn random_principal(rng: &mut Rng) -> Principal {
    let mut roles = Vec::new();
    for r in ["r0", "r1", "r2", "ghost"] {
        if rng.chance(40) {
            roles.push(r);
        }
    }
    let mut queues = Vec::new();
    for q in ["q0", "q1", "q2"] {
        if rng.chance(40) {
            queues.push(q);
        }
    }
    let mut attrs = Attrs::new()
        .with("dept", rng.pick(&["hr", "it", "ops"]))
        .with("level", i64::try_from(rng.below(5)).unwrap())
        .with("queues", Value::strings(queues))
        .with("flag", rng.chance(50));
    if rng.chance(60) {
        attrs.insert("home", rng.pick(&["/home/it", "/a", "/", "/a$n", "x$n$"]));
    }
    // Sometimes a principal lacks a required attribute: conditions reading it fail, and the
    // predicate must fail the same way.
    if rng.chance(10) {
        attrs.remove("dept");
    }
    let mut ctx = Attrs::new().with("hour", i64::try_from(rng.below(4)).unwrap());
    if rng.chance(85) {
        ctx.insert("mfa", rng.chance(50));
    }
    Principal { roles, attrs, ctx }
}

fn bind<'q>(
    mut q: Query<'q, sqlx::Postgres, PgArguments>,
    params: &'q [SqlParam],
) -> Query<'q, sqlx::Postgres, PgArguments> {
    for p in params {
        q = match p {
            SqlParam::Bool(b) => q.bind(*b),
            SqlParam::Long(n) => q.bind(*n),
            SqlParam::Text(s) => q.bind(s.as_str()),
            SqlParam::Bools(v) => q.bind(v.clone()),
            SqlParam::Longs(v) => q.bind(v.clone()),
            SqlParam::Texts(v) => q.bind(v.clone()),
            other => panic!("unexpected parameter {other:?}"),
        };
    }
    q
}

fn expected(p: &CompiledPolicy, who: &Principal, action: &str, rows: &[Row_]) -> BTreeSet<i32> {
    rows.iter()
        .filter(|r| {
            let req = Request::new(action, "Ticket")
                .principal("u1", &who.roles, &who.attrs)
                .resource(&r.attrs)
                .context(&who.ctx);
            p.is_allowed(&req)
        })
        .map(|r| r.id)
        .collect()
}

async fn ids(pool: &PgPool, sql: &str, params: &[SqlParam]) -> BTreeSet<i32> {
    bind(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())), params)
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{sql}"))
        .iter()
        .map(|r| r.get::<i32, _>(0))
        .collect()
}

const TABLE_DDL: &str = "CREATE TABLE tickets (
    id int PRIMARY KEY, dept text NOT NULL, queue text, priority bigint NOT NULL,
    hr boolean NOT NULL, path text NOT NULL, tags text[] NOT NULL, assignee text,
    levels bigint[] NOT NULL)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_predicate_returns_exactly_the_rows_the_evaluator_allows() {
    let Some(mut fx) = PgFixture::new("policy_filter").await else {
        return;
    };
    fx.exec(TABLE_DDL).await;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut rows = Vec::new();
    let mut values = Vec::new();
    for id in 0..240 {
        let (sql, row) = random_row(&mut rng, id);
        values.push(sql);
        rows.push(row);
    }
    fx.exec(&format!("INSERT INTO tickets VALUES {}", values.join(",")))
        .await;
    // Query as a non-superuser role, as an application would.
    let reader = fx.login_role("filter_reader", &[]).await;
    fx.exec(&format!("GRANT SELECT ON tickets TO \"{reader}\""))
        .await;
    let pool = fx.pool_as(&reader, 2).await;

    let schema = Schema::parse(SCHEMA).unwrap();
    let mut checks = 0usize;
    let mut nonempty = 0usize;
    let mut partial = 0usize;
    for _ in 0..30 {
        let text = random_policy(&mut rng);
        let policy = PolicySet::parse(&text).unwrap().compile(&schema).unwrap();
        for _ in 0..8 {
            let who = random_principal(&mut rng);
            for action in ["read", "update", "delete"] {
                let req = Request::new(action, "Ticket")
                    .principal("u1", &who.roles, &who.attrs)
                    .context(&who.ctx);
                let filter = policy.sql_filter(&req, &ResourceTable::new(), 1).unwrap();
                let sql = format!("SELECT id FROM tickets WHERE {} ORDER BY id", filter.sql);
                let got = ids(&pool, &sql, &filter.params).await;
                let want = expected(&policy, &who, action, &rows);
                assert_eq!(
                    got, want,
                    "policy:\n{text}\nroles {:?}\nSQL: {}",
                    who.roles, filter.sql
                );
                checks += 1;
                nonempty += usize::from(!want.is_empty());
                partial += usize::from(!want.is_empty() && want.len() < rows.len());
            }
        }
    }
    // The cases must not be degenerate: many listings return some but not all rows.
    assert_eq!(checks, 720);
    assert!(
        partial > 100,
        "only {partial} partial listings of {nonempty} non-empty"
    );

    // With an alias and a renamed column, inside a larger query.
    let policy = PolicySet::parse(
        "role a; allow a to read on Ticket when resource.queue in principal.queues;",
    )
    .unwrap()
    .compile(&schema)
    .unwrap();
    let who = Attrs::new()
        .with("dept", "it")
        .with("level", 1)
        .with("queues", Value::strings(["q1"]))
        .with("flag", true);
    let req = Request::new("read", "Ticket").principal("u", &["a"], &who);
    let table = ResourceTable::new()
        .alias("t")
        .unwrap()
        .column("queue", "queue")
        .unwrap();
    let f = policy.sql_filter(&req, &table, 2).unwrap();
    assert!(f.sql.contains("$2::text[]"), "{}", f.sql);
    let sql = format!(
        "SELECT t.id FROM tickets t WHERE t.priority >= $1 AND {} ORDER BY t.id",
        f.sql
    );
    let mut params = vec![SqlParam::Long(0)];
    params.extend(f.params);
    let got = ids(&pool, &sql, &params).await;
    let want: BTreeSet<i32> = rows
        .iter()
        .filter(|r| {
            r.attrs
                .iter()
                .any(|(k, v)| k == "queue" && *v == Value::from("q1"))
        })
        .map(|r| r.id)
        .collect();
    assert_eq!(got, want);
    pool.close().await;
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_rls_policy_shows_a_role_exactly_the_allowed_rows() {
    let Some(mut fx) = PgFixture::new("policy_rls").await else {
        return;
    };
    fx.exec(TABLE_DDL).await;
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut rows = Vec::new();
    let mut values = Vec::new();
    for id in 0..200 {
        let (sql, row) = random_row(&mut rng, id);
        values.push(sql);
        rows.push(row);
    }
    fx.exec(&format!("INSERT INTO tickets VALUES {}", values.join(",")))
        .await;
    let svc = fx.login_role("filter_svc", &[]).await;
    fx.exec(&format!(
        "GRANT SELECT ON tickets TO \"{svc}\";
         ALTER TABLE tickets ENABLE ROW LEVEL SECURITY;
         ALTER TABLE tickets FORCE ROW LEVEL SECURITY;
         CREATE POLICY everything ON tickets AS PERMISSIVE FOR SELECT TO \"{svc}\" USING (true);"
    ))
    .await;
    let pool = fx.pool_as(&svc, 1).await;
    let schema = Schema::parse(SCHEMA).unwrap();
    let (table, name, role) = (
        Ident::new("tickets").unwrap(),
        Ident::new("nova_filter").unwrap(),
        Ident::new(&svc).unwrap(),
    );
    let mut partial = 0;
    for _ in 0..25 {
        let text = random_policy(&mut rng);
        let policy = PolicySet::parse(&text).unwrap().compile(&schema).unwrap();
        let mut who = random_principal(&mut rng);
        // A string that would break naive quoting must stay a value.
        if rng.chance(50) {
            who.attrs.insert("home", "/a'$n$ OR true --");
        }
        let req = Request::new("read", "Ticket")
            .principal("u1", &who.roles, &who.attrs)
            .context(&who.ctx);
        let ddl = policy
            .rls_policy_sql(
                &req,
                &ResourceTable::new(),
                &table,
                &name,
                &role,
                RlsCommand::Select,
            )
            .unwrap();
        fx.exec(&ddl).await;
        let got = ids(&pool, "SELECT id FROM tickets ORDER BY id", &[]).await;
        let want = expected(&policy, &who, "read", &rows);
        assert_eq!(got, want, "policy:\n{text}\nDDL:\n{ddl}");
        partial += usize::from(!want.is_empty() && want.len() < rows.len());
    }
    assert!(partial > 5, "only {partial} partial listings");
    pool.close().await;
    fx.cleanup().await;
}
