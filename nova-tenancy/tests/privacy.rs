//! Data-subject rights against the real PostgreSQL server: export, erasure, retention and
//! consent, each confined to the context's tenant by row-level security.
//!
//! Every test connects as a non-superuser login role it created (superusers skip row-level
//! security, so a test connected as one proves nothing), works in a database of its own,
//! and drops both at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nova_tenancy::privacy::{
    ActionTaken, ConsentLedger, ErasureAction, PrivacyConfig, PrivacyError, RetentionRule,
    SubjectMap, SubjectTable, erase_subject, export_subject, run_retention,
};
use nova_tenancy::testing::PgFixture;
use nova_tenancy::{
    AppRole, CredentialVerifier, Error, RlsMigration, TenantContext, TenantId, TenantPool,
    TenantTable, TenantTx, UserId, VerifiedIdentity,
};
use serde_json::Value;
use uuid::Uuid;

struct TestVerifier;
impl CredentialVerifier for TestVerifier {
    fn verifier_name(&self) -> &'static str {
        "test/privacy"
    }
}

fn ctx(tenant: TenantId) -> TenantContext {
    TenantContext::from_verified(
        &TestVerifier,
        VerifiedIdentity::new(tenant).user(UserId::new_v4()),
    )
}

fn sqlstate(err: &Error) -> Option<String> {
    match err {
        Error::Database(e) => e
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned()),
        _ => None,
    }
}

const TABLES_DDL: &str = "
CREATE TABLE users (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL,
    email text,
    display_name text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE tickets (
    tenant_id uuid NOT NULL,
    id bigserial PRIMARY KEY,
    requester_id uuid,
    title text NOT NULL,
    body text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE comments (
    tenant_id uuid NOT NULL,
    id bigserial PRIMARY KEY,
    ticket_id bigint NOT NULL,
    author_id uuid NOT NULL,
    body text,
    secret text,
    created_at timestamptz NOT NULL DEFAULT now()
);";

/// Two tenants, `a` and `b`. `alice` exists in both (the same UUID: different people's data
/// as far as each tenant is concerned); `bob` only in `a`.
struct World {
    fx: PgFixture,
    pool: TenantPool,
    ledger: ConsentLedger,
    a: TenantId,
    b: TenantId,
    alice: Uuid,
    bob: Uuid,
}

async fn setup(label: &str) -> Option<World> {
    let mut fx = PgFixture::new(label).await?;
    let ledger = ConsentLedger::new(None, "consents").unwrap();
    fx.exec(TABLES_DDL).await;
    fx.exec(&ledger.create_table_sql()).await;
    let migration = RlsMigration::new(fx.roles().clone())
        .table(
            TenantTable::new("users")
                .unwrap()
                .index_with(["id"])
                .unwrap(),
        )
        .table(
            TenantTable::new("tickets")
                .unwrap()
                .index_with(["requester_id"])
                .unwrap(),
        )
        .table(
            TenantTable::new("comments")
                .unwrap()
                .index_with(["author_id"])
                .unwrap(),
        )
        .table(ledger.tenant_table());
    fx.exec(&migration.roles_sql()).await;
    // The tables belong to a plain owner role, not the superuser that created them.
    let owner = fx.login_role("owner", &[]).await;
    fx.exec(&format!(
        "ALTER TABLE users OWNER TO \"{owner}\"; ALTER TABLE tickets OWNER TO \"{owner}\"; \
         ALTER TABLE comments OWNER TO \"{owner}\"; ALTER TABLE consents OWNER TO \"{owner}\""
    ))
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
    let app_rw = fx.roles().get(AppRole::AppRw).clone();
    let app = fx.login_role("app", &[&app_rw]).await;
    // `checked` refuses a superuser or BYPASSRLS login: the tests below prove nothing
    // unless row-level security filters this role.
    let pool = TenantPool::checked(fx.pool_as(&app, 2).await)
        .await
        .unwrap();
    let w = World {
        fx,
        pool,
        ledger,
        a: TenantId::new_v4(),
        b: TenantId::new_v4(),
        alice: Uuid::new_v4(),
        bob: Uuid::new_v4(),
    };
    seed_person(&w, w.a, w.alice, "alice-a", 2).await;
    seed_person(&w, w.a, w.bob, "bob-a", 1).await;
    seed_person(&w, w.b, w.alice, "alice-b", 1).await;
    Some(w)
}

/// As the superuser: a user row, `n` tickets and `n` comments by `subject` in `tenant`.
async fn seed_person(w: &World, tenant: TenantId, subject: Uuid, tag: &str, n: usize) {
    let admin = w.fx.admin();
    sqlx::query("INSERT INTO users (tenant_id, id, email, display_name) VALUES ($1, $2, $3, $4)")
        .bind(tenant.as_uuid())
        .bind(subject)
        .bind(format!("{tag}@example.test"))
        .bind(format!("name of {tag}"))
        .execute(admin)
        .await
        .unwrap();
    for i in 0..n {
        let ticket: i64 = sqlx::query_scalar(
            "INSERT INTO tickets (tenant_id, requester_id, title, body) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(tenant.as_uuid())
        .bind(subject)
        .bind(format!("ticket {i} of {tag}"))
        .bind(format!("body {i} of {tag}"))
        .fetch_one(admin)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO comments (tenant_id, ticket_id, author_id, body, secret) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant.as_uuid())
        .bind(ticket)
        .bind(subject)
        .bind(format!("comment {i} of {tag}"))
        .bind(format!("enc:secret {i} of {tag}"))
        .execute(admin)
        .await
        .unwrap();
    }
}

/// Counts rows as the superuser (no row-level security), to prove what is stored.
async fn stored(w: &World, sql: &str, tenant: TenantId, subject: Uuid) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(tenant.as_uuid())
        .bind(subject)
        .fetch_one(w.fx.admin())
        .await
        .unwrap()
}

fn full_map() -> SubjectMap {
    SubjectMap::new()
        .table(SubjectTable::new("users", "id").unwrap())
        .table(SubjectTable::new("tickets", "requester_id").unwrap())
        .table(SubjectTable::new("comments", "author_id").unwrap())
}

#[tokio::test]
async fn export_returns_only_the_subjects_rows_in_the_contexts_tenant_as_one_document() {
    let Some(w) = setup("privexport").await else {
        return;
    };
    let mut tx = w.pool.begin(&ctx(w.a)).await.unwrap();
    let export = export_subject(&mut tx, &full_map(), w.alice).await.unwrap();
    let again = export_subject(&mut tx, &full_map(), w.alice).await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!(export.tenant(), w.a);
    assert_eq!(export.subject(), w.alice);
    assert_eq!(
        export.keys().collect::<Vec<_>>(),
        ["comments.author_id", "tickets.requester_id", "users.id"]
    );
    assert_eq!(export.rows("users.id").len(), 1);
    assert_eq!(export.rows("tickets.requester_id").len(), 2);
    assert_eq!(export.rows("comments.author_id").len(), 2);
    assert_eq!(export.row_count(), 5);
    assert!(export.rows("no.such").is_empty());
    assert_eq!(
        export.rows("users.id")[0]["email"],
        Value::from("alice-a@example.test")
    );
    let a = w.a.to_string();
    for key in ["users.id", "tickets.requester_id", "comments.author_id"] {
        for row in export.rows(key) {
            assert_eq!(row["tenant_id"], Value::from(a.as_str()), "{key}");
        }
    }
    assert_eq!(export, again, "the export is deterministic");

    let doc = export.to_json();
    assert_eq!(doc["tenant"], Value::from(a.as_str()));
    assert_eq!(doc["subject"], Value::from(w.alice.to_string()));
    let at = doc["exported_at"].as_str().unwrap();
    assert!(
        at.len() == 20 && at.as_bytes()[10] == b'T' && at.ends_with('Z'),
        "{at}"
    );
    assert_eq!(doc["tables"].as_object().unwrap().len(), 3);
    let text = doc.to_string();
    assert!(text.contains("alice-a"));
    assert!(
        !text.contains("alice-b") && !text.contains(&w.b.to_string()),
        "the same subject UUID in another tenant is another tenant's data"
    );
    assert!(
        !text.contains("bob-a"),
        "other subjects' rows are not exported"
    );

    // An allow-list exports only the columns it names.
    let narrow = SubjectMap::new().table(
        SubjectTable::new("tickets", "requester_id")
            .unwrap()
            .export_columns(["id", "title"])
            .unwrap(),
    );
    let mut tx = w.pool.begin(&ctx(w.a)).await.unwrap();
    let export = export_subject(&mut tx, &narrow, w.alice).await.unwrap();
    tx.commit().await.unwrap();
    for row in export.rows("tickets.requester_id") {
        assert_eq!(row.keys().collect::<Vec<_>>(), ["id", "title"]);
    }

    // Tenant B sees its own Alice only.
    let mut tx = w.pool.begin(&ctx(w.b)).await.unwrap();
    let export = export_subject(&mut tx, &full_map(), w.alice).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(export.row_count(), 3);
    assert!(!export.to_json().to_string().contains("alice-a"));
    w.fx.cleanup().await;
}

#[tokio::test]
async fn map_column_transforms_values_all_or_nothing_and_debug_prints_no_row_values() {
    let Some(w) = setup("privmap").await else {
        return;
    };
    let mut tx = w.pool.begin(&ctx(w.a)).await.unwrap();
    let mut export = export_subject(&mut tx, &full_map(), w.alice).await.unwrap();
    tx.commit().await.unwrap();

    // A failing closure changes nothing, even for rows it already accepted.
    let mut calls = 0;
    let err = export
        .map_column("comments.author_id", "secret", |_, _| {
            calls += 1;
            if calls == 2 {
                Err("key unavailable")
            } else {
                Ok(Value::from("decrypted"))
            }
        })
        .unwrap_err();
    assert_eq!(err, "key unavailable");
    assert!(
        export
            .rows("comments.author_id")
            .iter()
            .all(|r| r["secret"].as_str().unwrap().starts_with("enc:"))
    );

    // The closure sees the row (for its id) and the value.
    let n = export
        .map_column("comments.author_id", "secret", |row, v| {
            let id = row["id"].as_i64().ok_or("row without id")?;
            let plain = v
                .as_str()
                .and_then(|s| s.strip_prefix("enc:"))
                .ok_or("not encrypted")?;
            Ok::<_, &str>(Value::from(format!("{plain} (row {id})")))
        })
        .unwrap();
    assert_eq!(n, 2);
    for row in export.rows("comments.author_id") {
        let s = row["secret"].as_str().unwrap();
        assert!(s.starts_with("secret ") && s.contains("(row "), "{s}");
    }
    assert_eq!(
        export
            .map_column("comments.author_id", "no_such_column", |_, v| Ok::<_, ()>(
                v.clone()
            ))
            .unwrap(),
        0
    );

    let debug = format!("{export:?}");
    assert!(debug.contains("\"users.id\": 1"), "{debug}");
    assert!(debug.contains("\"comments.author_id\": 2"), "{debug}");
    for pii in ["alice", "example.test", "secret", "ticket 0", "name of"] {
        assert!(!debug.contains(pii), "Debug leaks {pii:?}: {debug}");
    }
    w.fx.cleanup().await;
}

#[tokio::test]
async fn erase_deletes_anonymises_and_keeps_as_declared_in_the_contexts_tenant_only() {
    let Some(w) = setup("priverase").await else {
        return;
    };
    let map = SubjectMap::new()
        .table(
            SubjectTable::new("comments", "author_id")
                .unwrap()
                .on_erase(ErasureAction::keep("court order 2025-17")),
        )
        .table(
            SubjectTable::new("tickets", "requester_id")
                .unwrap()
                .on_erase(ErasureAction::anonymise(["requester_id", "body"]).unwrap()),
        )
        .table(SubjectTable::new("users", "id").unwrap());

    let mut tx = w.pool.begin(&ctx(w.a)).await.unwrap();
    let report = erase_subject(&mut tx, &map, w.alice).await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!(report.subject(), w.alice);
    let users = report.entry("users.id").unwrap();
    assert_eq!((users.action, users.rows), (ActionTaken::Deleted, 1));
    let tickets = report.entry("tickets.requester_id").unwrap();
    assert_eq!((tickets.action, tickets.rows), (ActionTaken::Anonymised, 2));
    let comments = report.entry("comments.author_id").unwrap();
    assert_eq!((comments.action, comments.rows), (ActionTaken::Kept, 2));
    assert_eq!(comments.reason.as_deref(), Some("court order 2025-17"));
    assert_eq!((report.total(), report.kept()), (3, 2));
    let debug = format!("{report:?}");
    assert!(!debug.contains("example.test") && !debug.contains("body"));

    let (a, b, alice, bob) = (w.a, w.b, w.alice, w.bob);
    let users_of = "SELECT count(*) FROM users WHERE tenant_id = $1 AND id = $2";
    let tickets_of = "SELECT count(*) FROM tickets WHERE tenant_id = $1 AND requester_id = $2";
    let comments_of = "SELECT count(*) FROM comments WHERE tenant_id = $1 AND author_id = $2";
    assert_eq!(stored(&w, users_of, a, alice).await, 0);
    assert_eq!(stored(&w, tickets_of, a, alice).await, 0);
    assert_eq!(stored(&w, comments_of, a, alice).await, 2, "kept");
    // The anonymised tickets stay, without requester or body, titles intact.
    let orphaned = "SELECT count(*) FROM tickets WHERE tenant_id = $1 AND requester_id IS NULL \
                    AND body IS NULL AND title LIKE 'ticket _ of alice-a' AND $2::uuid IS NOT NULL";
    assert_eq!(stored(&w, orphaned, a, alice).await, 2);
    // Other subjects and the other tenant's Alice are untouched.
    assert_eq!(stored(&w, users_of, a, bob).await, 1);
    assert_eq!(stored(&w, tickets_of, a, bob).await, 1);
    assert_eq!(stored(&w, users_of, b, alice).await, 1);
    assert_eq!(stored(&w, tickets_of, b, alice).await, 1);
    assert_eq!(stored(&w, comments_of, b, alice).await, 1);
    let bodies = "SELECT count(*) FROM tickets WHERE tenant_id = $1 AND requester_id = $2 AND body IS NOT NULL";
    assert_eq!(stored(&w, bodies, b, alice).await, 1);

    // Erasing again finds nothing left to change.
    let mut tx = w.pool.begin(&ctx(w.a)).await.unwrap();
    let report = erase_subject(&mut tx, &map, w.alice).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(report.total(), 0);
    w.fx.cleanup().await;
}

#[tokio::test]
async fn a_failing_erasure_entry_leaves_nothing_half_written_even_if_the_caller_commits() {
    let Some(w) = setup("privatomic").await else {
        return;
    };
    // users is deleted first; then anonymising comments.ticket_id (NOT NULL) fails.
    let map = SubjectMap::new()
        .table(SubjectTable::new("users", "id").unwrap())
        .table(
            SubjectTable::new("comments", "author_id")
                .unwrap()
                .on_erase(ErasureAction::anonymise(["ticket_id"]).unwrap()),
        );
    let mut tx = w.pool.begin(&ctx(w.a)).await.unwrap();
    let err = erase_subject(&mut tx, &map, w.alice).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("23502"), "{err}");
    // The savepoint was rolled back: the transaction is usable and the delete is undone.
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE id = $1")
        .bind(w.alice)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(visible, 1);
    tx.commit().await.unwrap();
    let users_of = "SELECT count(*) FROM users WHERE tenant_id = $1 AND id = $2";
    assert_eq!(stored(&w, users_of, w.a, w.alice).await, 1);

    // An invalid entry is refused before any statement runs.
    let bad = SubjectMap::new()
        .table(SubjectTable::new("users", "id").unwrap())
        .table(
            SubjectTable::new("comments", "author_id")
                .unwrap()
                .on_erase(ErasureAction::keep(" ")),
        );
    let mut tx = w.pool.begin(&ctx(w.a)).await.unwrap();
    let err = erase_subject(&mut tx, &bad, w.alice).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Privacy(PrivacyError::KeepWithoutReason { ref table }) if table == "comments.author_id"
        ),
        "{err:?}"
    );
    tx.commit().await.unwrap();
    assert_eq!(stored(&w, users_of, w.a, w.alice).await, 1);

    // A name that is not a valid identifier never reaches SQL.
    assert!(SubjectTable::new("users\"; DROP TABLE users; --", "id").is_err());
    assert!(ErasureAction::anonymise(["body", "Body"]).is_err());
    w.fx.cleanup().await;
}

#[tokio::test]
async fn retention_removes_only_rows_older_than_the_rule_and_only_in_the_tenant() {
    let Some(w) = setup("privretain").await else {
        return;
    };
    // Age some rows: in each tenant, Alice's first comment and ticket are 400 days old.
    for t in [w.a, w.b] {
        for table in ["comments", "tickets"] {
            let sql = format!(
                "UPDATE {table} SET created_at = now() - interval '400 days' \
                 WHERE id = (SELECT min(id) FROM {table} WHERE tenant_id = $1)"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(t.as_uuid())
                .execute(w.fx.admin())
                .await
                .unwrap();
        }
    }
    let rules = [
        RetentionRule::delete_after("comments", "created_at", 365).unwrap(),
        RetentionRule::anonymise_after("tickets", "created_at", 365, ["body", "requester_id"])
            .unwrap(),
    ];
    let rules = &rules[..];

    let mut tx = w.pool.begin(&ctx(w.a)).await.unwrap();
    let report = run_retention(&mut tx, rules).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        report
            .entries()
            .iter()
            .map(|e| (e.key.as_str(), e.action, e.rows))
            .collect::<Vec<_>>(),
        [
            ("comments.created_at", ActionTaken::Deleted, 1),
            ("tickets.created_at", ActionTaken::Anonymised, 1),
        ]
    );
    assert_eq!(report.total(), 2);

    let count = |sql: &'static str, t: TenantId| {
        let admin = w.fx.admin().clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(t.as_uuid())
                .fetch_one(&admin)
                .await
                .unwrap()
        }
    };
    let comments = "SELECT count(*) FROM comments WHERE tenant_id = $1";
    let anonymised = "SELECT count(*) FROM tickets WHERE tenant_id = $1 AND body IS NULL";
    let old = "SELECT count(*) FROM comments WHERE tenant_id = $1 AND created_at < now() - interval '1 year'";
    assert_eq!(count(comments, w.a).await, 2, "3 in tenant a, 1 old");
    assert_eq!(count(old, w.a).await, 0);
    assert_eq!(count(anonymised, w.a).await, 1);
    // The other tenant's old rows are untouched.
    assert_eq!(count(comments, w.b).await, 1);
    assert_eq!(count(old, w.b).await, 1);
    assert_eq!(count(anonymised, w.b).await, 0);

    // A rerun finds nothing: already-anonymised rows are not rewritten.
    let mut tx = w.pool.begin(&ctx(w.a)).await.unwrap();
    assert_eq!(run_retention(&mut tx, rules).await.unwrap().total(), 0);
    tx.commit().await.unwrap();

    // A failing rule undoes the rules before it.
    sqlx::query(
        "UPDATE comments SET created_at = now() - interval '400 days' WHERE tenant_id = $1",
    )
    .bind(w.a.as_uuid())
    .execute(w.fx.admin())
    .await
    .unwrap();
    let failing = [
        RetentionRule::delete_after("comments", "created_at", 365).unwrap(),
        RetentionRule::anonymise_after("users", "display_name", 1, ["display_name"]).unwrap(),
    ];
    let mut tx = w.pool.begin(&ctx(w.a)).await.unwrap();
    let err = run_retention(&mut tx, &failing).await.unwrap_err();
    assert!(matches!(err, Error::Database(_)), "{err:?}");
    tx.commit().await.unwrap();
    assert_eq!(count(comments, w.a).await, 2);
    w.fx.cleanup().await;
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AppToml {
    privacy: PrivacyConfig,
}

fn parse(text: &str) -> Result<PrivacyConfig, String> {
    toml::from_str::<AppToml>(text)
        .map(|a| a.privacy)
        .map_err(|e| e.to_string())
}

#[test]
fn privacy_config_loads_from_toml_and_refuses_unknown_keys_and_bad_identifiers() {
    let config = parse(
        r#"
        [privacy]
        [[privacy.retention]]
        table = "sessions"
        time_column = "created_at"
        keep_days = 30
        action = "delete"

        [[privacy.retention]]
        schema = "support"
        table = "tickets"
        time_column = "closed_at"
        keep_days = 365
        action = "anonymise"
        columns = ["requester_email", "requester_name"]
        "#,
    )
    .unwrap();
    config.validate().unwrap();
    assert_eq!(config.retention.len(), 2);
    assert_eq!(
        config.retention[0],
        RetentionRule::delete_after("sessions", "created_at", 30).unwrap()
    );
    assert_eq!(
        config.retention[1],
        RetentionRule::anonymise_after(
            "tickets",
            "closed_at",
            365,
            ["requester_email", "requester_name"]
        )
        .unwrap()
        .schema("support")
        .unwrap()
    );
    assert!(parse("[privacy]\n").unwrap().retention.is_empty());

    let rule = |body: &str| {
        parse(&format!(
            "[privacy]\n[[privacy.retention]]\ntable = \"t\"\ntime_column = \"at\"\n{body}"
        ))
    };
    assert!(rule("keep_days = 7\naction = \"delete\"").is_ok());
    for (body, why) in [
        (
            "keep_days = 7\naction = \"delete\"\nkeep_dayz = 8",
            "keep_dayz",
        ),
        ("keep_days = 7\naction = \"shred\"", "shred"),
        ("keep_days = 0\naction = \"delete\"", "keep_days"),
        ("keep_days = -1\naction = \"delete\"", ""),
        ("keep_days = 7\naction = \"anonymise\"", "names no column"),
        (
            "keep_days = 7\naction = \"delete\"\ncolumns = [\"a\"]",
            "only to action",
        ),
        (
            "keep_days = 7\naction = \"anonymise\"\ncolumns = [\"a; DROP TABLE t\"]",
            "identifier",
        ),
        (
            "keep_days = 7\naction = \"delete\"\nschema = \"pg_catalog\"",
            "pg_",
        ),
    ] {
        let err = rule(body).unwrap_err();
        assert!(err.contains(why), "{body:?}: {err}");
    }
    let err = parse(
        "[privacy]\n[[privacy.retention]]\ntable = \"Users\"\ntime_column = \"at\"\nkeep_days = 7\naction = \"delete\"",
    )
    .unwrap_err();
    assert!(err.contains("identifier"), "{err}");
    let err = parse("[privacy]\nretension = []").unwrap_err();
    assert!(err.contains("retension"), "{err}");

    // Two delete rules for the same rows are ambiguous.
    let twice = parse(
        r#"
        [[privacy.retention]]
        table = "t"
        time_column = "at"
        keep_days = 7
        action = "delete"
        [[privacy.retention]]
        table = "t"
        time_column = "at"
        keep_days = 30
        action = "delete"
        "#,
    )
    .unwrap();
    assert!(matches!(
        twice.validate(),
        Err(PrivacyError::ConflictingRules { .. })
    ));
}

#[tokio::test]
async fn consent_is_recorded_per_tenant_read_fail_closed_and_append_only() {
    let Some(w) = setup("privconsent").await else {
        return;
    };
    let (l, alice) = (&w.ledger, w.alice);
    let mut tx = w.pool.begin(&ctx(w.a)).await.unwrap();
    // Never asked: no consent.
    assert_eq!(
        l.current(&mut tx, alice, "marketing.email").await.unwrap(),
        None
    );
    assert!(
        !l.has_consent(&mut tx, alice, "marketing.email")
            .await
            .unwrap()
    );

    let given = l
        .record(&mut tx, alice, "marketing.email", true, "web:signup")
        .await
        .unwrap();
    assert_eq!(
        (
            given.subject,
            given.purpose.as_str(),
            given.granted,
            given.source.as_str()
        ),
        (alice, "marketing.email", true, "web:signup")
    );
    assert!(given.recorded_at > 1_700_000_000);
    assert!(
        l.has_consent(&mut tx, alice, "marketing.email")
            .await
            .unwrap()
    );
    l.record(&mut tx, alice, "analytics", false, "web:banner")
        .await
        .unwrap();
    l.record(&mut tx, alice, "marketing.email", false, "web:settings")
        .await
        .unwrap();
    // The latest decision counts: withdrawn.
    let current = l
        .current(&mut tx, alice, "marketing.email")
        .await
        .unwrap()
        .unwrap();
    assert!(!current.granted);
    assert_eq!(current.source, "web:settings");
    assert!(
        !l.has_consent(&mut tx, alice, "marketing.email")
            .await
            .unwrap()
    );
    let history = l.history(&mut tx, alice).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|c| (c.purpose.as_str(), c.granted))
            .collect::<Vec<_>>(),
        [
            ("marketing.email", true),
            ("analytics", false),
            ("marketing.email", false)
        ]
    );

    // Invalid purposes and sources are typed errors, never a silent "no consent".
    for bad in [
        "",
        "Marketing",
        "marketing email",
        "x'; --",
        &"a".repeat(65),
    ] {
        let err = l.has_consent(&mut tx, alice, bad).await.unwrap_err();
        assert!(
            matches!(err, Error::Privacy(PrivacyError::InvalidPurpose)),
            "{err:?}"
        );
        let err = l
            .record(&mut tx, alice, bad, true, "web")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Privacy(PrivacyError::InvalidPurpose)));
    }
    let err = l
        .record(&mut tx, alice, "analytics", true, "")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Privacy(PrivacyError::InvalidSource)));
    tx.commit().await.unwrap();

    // Append-only, even for a role granted UPDATE and DELETE by the migration.
    for sql in ["UPDATE consents SET granted = true", "DELETE FROM consents"] {
        let mut tx = w.pool.begin(&ctx(w.a)).await.unwrap();
        let err: Error = sqlx::query(sql).execute(&mut *tx).await.unwrap_err().into();
        assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{sql}: {err}");
    }

    // Stored under tenant a; tenant b's Alice has decided nothing.
    let stored_a = "SELECT count(*) FROM consents WHERE tenant_id = $1 AND subject_id = $2";
    assert_eq!(stored(&w, stored_a, w.a, alice).await, 3);
    let mut tx = w.pool.begin(&ctx(w.b)).await.unwrap();
    assert!(l.history(&mut tx, alice).await.unwrap().is_empty());
    assert!(!l.has_consent(&mut tx, alice, "analytics").await.unwrap());
    tx.commit().await.unwrap();

    // The ledger is kept on erasure, and counted.
    let map = SubjectMap::new().table(
        SubjectTable::new("consents", "subject_id")
            .unwrap()
            .on_erase(ErasureAction::keep("GDPR Art. 7(1): proof of consent")),
    );
    let mut tx = w.pool.begin(&ctx(w.a)).await.unwrap();
    let report = erase_subject(&mut tx, &map, alice).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(report.kept(), 3);
    assert!(ConsentLedger::new(Some("Bad"), "consents").is_err());
    w.fx.cleanup().await;
}

/// Compile-time check: the futures can be spawned on a multi-threaded runtime.
#[allow(dead_code)]
fn futures_are_send(tx: &mut TenantTx, map: &SubjectMap, l: &ConsentLedger) {
    fn send<T: Send>(_: T) {}
    let s = Uuid::nil();
    send(export_subject(tx, map, s));
    send(erase_subject(tx, map, s));
    send(run_retention(tx, &[]));
    send(l.record(tx, s, "p", true, "s"));
    send(l.current(tx, s, "p"));
    send(l.has_consent(tx, s, "p"));
    send(l.history(tx, s));
}
