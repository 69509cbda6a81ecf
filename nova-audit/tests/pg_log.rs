//! The PostgreSQL sink against a real server: several processes appending to one tenant's log
//! make one valid tree, the tables refuse UPDATE, DELETE and TRUNCATE, an edit made by a
//! superuser (who can switch the trigger off) is caught by the verifier, retention keeps the
//! log verifiable, and a writer refuses to sign on top of a tampered head.
//!
//! Every connection except the fixture's own setup logs in as a non-superuser role the test
//! creates. When PostgreSQL is unreachable these tests fail under `CI=true` and otherwise
//! skip loudly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::Command;

use nova_audit::{
    AuditEvent, AuditLog, CheckpointSigner, PgLog, PgLogError, PgLogSchema, VerifierKey,
    WriterConfig,
};
use nova_tenancy::testing::PgFixture;
use nova_tenancy::{Ident, TenantId};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions as _, Connection, Executor, PgConnection};

const ORIGIN: &str = "audit.test/pg";

fn signer() -> CheckpointSigner {
    CheckpointSigner::from_seed("audit.test", &[11; 32]).unwrap()
}

fn key() -> VerifierKey {
    VerifierKey::parse(&signer().verifier_key()).unwrap()
}

fn event(tenant: TenantId, label: &str, i: u64) -> AuditEvent {
    AuditEvent::builder(tenant, "data.write", "tickets.update")
        .time_ms(1_700_000_000_000 + i)
        .actor("user:7")
        .resource(&format!("{label}/{i}"))
        .build()
}

/// A fixture with the sink's schema installed and one login role per sink role.
struct Setup {
    fx: PgFixture,
    schema: PgLogSchema,
    writer: String,
    reader: String,
    retention: String,
}

impl Setup {
    async fn new(label: &str) -> Option<Self> {
        let mut fx = PgFixture::new(label).await?;
        let schema = PgLogSchema::new(Ident::new("audit").unwrap(), fx.prefix()).unwrap();
        fx.exec(&schema.up()).await;
        // Applying the DDL twice is harmless.
        fx.exec(&schema.up()).await;
        let writer = fx.login_role("w", &[schema.writer_role()]).await;
        let reader = fx.login_role("r", &[schema.reader_role()]).await;
        let retention = fx.login_role("p", &[schema.retention_role()]).await;
        Some(Self {
            fx,
            schema,
            writer,
            reader,
            retention,
        })
    }

    fn options(&self, role: &str) -> PgConnectOptions {
        self.fx.connect_options(role)
    }

    async fn conn(&self, role: &str) -> PgConnection {
        PgConnection::connect_with(&self.options(role))
            .await
            .unwrap()
    }

    fn log(&self, tenant: TenantId) -> PgLog {
        PgLog::new(
            self.options(&self.writer),
            &self.schema,
            tenant,
            ORIGIN,
            signer(),
        )
        .unwrap()
    }

    async fn write(&self, tenant: TenantId, n: u64, batch: u64) -> Vec<String> {
        let mut log = self.log(tenant);
        let mut notes = Vec::new();
        let mut i = 0;
        while i < n {
            let events: Vec<_> = (i..(i + batch).min(n))
                .map(|k| event(tenant, "t", k))
                .collect();
            assert_eq!(log.append_batch(&events).await.unwrap(), i);
            i += batch;
            notes.push(self.head_note(tenant).await);
        }
        notes
    }

    async fn head_note(&self, tenant: TenantId) -> String {
        sqlx::query_scalar(
            "SELECT note FROM audit.checkpoints WHERE tenant = $1 ORDER BY size DESC LIMIT 1",
        )
        .bind(*tenant.as_uuid())
        .fetch_one(self.fx.admin())
        .await
        .unwrap()
    }

    async fn verify(&self, tenant: TenantId, external: Option<&str>) -> nova_audit::Verdict {
        let mut conn = self.conn(&self.reader).await;
        self.schema
            .verify(&mut conn, tenant, &key(), external)
            .await
            .unwrap()
    }

    /// Runs SQL as the superuser with triggers switched off, as an attacker with full
    /// database access would.
    async fn as_superuser_without_triggers(&self, sql: &str) {
        let mut conn = self.fx.admin().acquire().await.unwrap();
        conn.execute("SET session_replication_role = replica")
            .await
            .unwrap();
        conn.execute(AssertSqlSafe(sql.to_owned())).await.unwrap();
        conn.execute("SET session_replication_role = origin")
            .await
            .unwrap();
    }
}

const CHILD_ENV: &str = "NOVA_AUDIT_PG_CHILD";

/// Child process body (run by `several_processes_...`): appends 120 events from three
/// threads through one `AuditLog` and prints each acknowledged index.
#[test]
#[ignore = "child process of several_processes_appending_to_one_tenant_log_make_one_valid_tree"]
fn pg_writer_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.split('|');
    let (url, prefix, tenant, label) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let schema = PgLogSchema::new(Ident::new("audit").unwrap(), prefix).unwrap();
    let tenant: TenantId = tenant.parse().unwrap();
    let options: PgConnectOptions = url.parse().unwrap();
    let sink = PgLog::new(options, &schema, tenant, ORIGIN, signer()).unwrap();
    let log = std::sync::Arc::new(AuditLog::spawn(sink, WriterConfig::new(64, 8)).unwrap());
    let threads: Vec<_> = (0..3u64)
        .map(|t| {
            let log = std::sync::Arc::clone(&log);
            let label = label.to_owned();
            std::thread::spawn(move || {
                (0..40u64)
                    .map(|i| {
                        let n = t * 100 + i;
                        (n, log.append_blocking(event(tenant, &label, n)).unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for (n, index) in t.join().unwrap() {
            println!("ack {index} {label}/{n}");
        }
    }
    std::sync::Arc::into_inner(log)
        .unwrap()
        .close_blocking()
        .unwrap();
}

#[tokio::test]
async fn several_processes_appending_to_one_tenant_log_make_one_valid_tree() {
    let Some(s) = Setup::new("auditprocs").await else {
        return;
    };
    let tenant = TenantId::new_v4();
    let url = s.options(&s.writer).to_url_lossy().to_string();
    let exe = std::env::current_exe().unwrap();
    let spawned: Vec<_> = (0..4)
        .map(|c| {
            Command::new(&exe)
                .args(["--exact", "pg_writer_child", "--ignored", "--nocapture"])
                .env(CHILD_ENV, format!("{url}|{}|{tenant}|p{c}", s.fx.prefix()))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut acked = BTreeMap::new();
    for child in spawned {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "writer process failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in stdout.lines().filter_map(|l| l.strip_prefix("ack ")) {
            let (index, resource) = line.split_once(' ').unwrap();
            let index: i64 = index.parse().unwrap();
            assert!(
                acked.insert(index, resource.to_owned()).is_none(),
                "index {index} acknowledged twice"
            );
        }
    }
    // Four processes at once, 120 events each.
    assert_eq!(acked.len(), 480);

    let verdict = s.verify(tenant, None).await;
    assert!(verdict.ok(), "{verdict:?}");
    assert_eq!(verdict.entries, 480);
    assert_eq!(verdict.origin.as_deref(), Some(ORIGIN));

    // Every acknowledged index holds exactly the event its writer was told it holds.
    let rows: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT idx, event FROM audit.entries WHERE tenant = $1 ORDER BY idx")
            .bind(*tenant.as_uuid())
            .fetch_all(s.fx.admin())
            .await
            .unwrap();
    assert_eq!(rows.len(), 480);
    for (idx, event) in rows {
        let text = String::from_utf8(event).unwrap();
        let resource = &acked[&idx];
        assert!(
            text.contains(&format!(r#""resource":"{resource}""#)),
            "index {idx} holds {text}, acknowledged as {resource}"
        );
    }
    s.fx.cleanup().await;
}

#[tokio::test]
async fn update_delete_and_truncate_are_refused() {
    let Some(mut s) = Setup::new("auditrefuse").await else {
        return;
    };
    let tenant = TenantId::new_v4();
    s.write(tenant, 6, 3).await;

    // The writer has no UPDATE or DELETE privilege at all.
    let mut w = s.conn(&s.writer).await;
    for sql in [
        "UPDATE audit.entries SET time_ms = 0",
        "DELETE FROM audit.entries",
        "UPDATE audit.checkpoints SET note = ''",
        "DELETE FROM audit.checkpoints",
        "TRUNCATE audit.entries",
    ] {
        let err = w.execute(sql).await.unwrap_err();
        assert!(
            err.to_string().contains("permission denied"),
            "{sql}: {err}"
        );
    }

    // A role holding every privilege on the tables (not a superuser) still meets the
    // trigger.
    let owner_like = s.fx.login_role("all", &[]).await;
    s.fx.exec(&format!(
        "GRANT USAGE ON SCHEMA audit TO \"{owner_like}\"; \
         GRANT ALL ON audit.entries, audit.checkpoints TO \"{owner_like}\";"
    ))
    .await;
    let mut o = s.conn(&owner_like).await;
    for sql in [
        "UPDATE audit.entries SET time_ms = 0",
        "UPDATE audit.entries SET event = convert_to('{}', 'UTF8') WHERE idx = 1",
        "DELETE FROM audit.entries WHERE idx = 5",
        "UPDATE audit.checkpoints SET note = ''",
        "DELETE FROM audit.checkpoints",
        "TRUNCATE audit.entries",
        "TRUNCATE audit.checkpoints",
    ] {
        let err = o.execute(sql).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }

    // The retention role may clear content, but nothing else.
    let mut p = s.conn(&s.retention).await;
    let err = p
        .execute("UPDATE audit.entries SET event = convert_to('{}', 'UTF8') WHERE idx = 1")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = p.execute("DELETE FROM audit.entries").await.unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");

    let verdict = s.verify(tenant, None).await;
    assert!(verdict.ok(), "{verdict:?}");
    assert_eq!(verdict.entries, 6);
    s.fx.cleanup().await;
}

#[tokio::test]
async fn an_edit_made_by_a_superuser_is_caught_by_the_verifier() {
    let Some(s) = Setup::new("auditsuper").await else {
        return;
    };
    let (a, b, c) = (TenantId::new_v4(), TenantId::new_v4(), TenantId::new_v4());
    for t in [a, b, c] {
        s.write(t, 30, 5).await;
    }
    let ok = s.verify(a, None).await;
    assert!(ok.ok(), "{ok:?}");

    // A changed event: the first entry of its batch is named.
    s.as_superuser_without_triggers(&format!(
        "UPDATE audit.entries SET event = convert_to(replace(convert_from(event, 'UTF8'), 'user:7', 'user:8'), 'UTF8') \
         WHERE tenant = '{a}' AND idx = 13"
    ))
    .await;
    let v = s.verify(a, None).await;
    assert_eq!(v.first_bad, Some(10), "{v:?}");

    // A deleted row: its index is named.
    s.as_superuser_without_triggers(&format!(
        "DELETE FROM audit.entries WHERE tenant = '{b}' AND idx = 21"
    ))
    .await;
    let v = s.verify(b, None).await;
    assert_eq!(v.first_bad, Some(21), "{v:?}");

    // The newest batch and its checkpoint removed: caught against a kept checkpoint.
    let notes_c = {
        let note = s.head_note(c).await;
        vec![note]
    };
    s.as_superuser_without_triggers(&format!(
        "DELETE FROM audit.entries WHERE tenant = '{c}' AND idx >= 25; \
         DELETE FROM audit.checkpoints WHERE tenant = '{c}' AND size = 30"
    ))
    .await;
    let v = s.verify(c, None).await;
    assert!(
        v.ok(),
        "without an external checkpoint the cut is invisible: {v:?}"
    );
    let v = s.verify(c, Some(&notes_c[0])).await;
    assert_eq!(v.first_bad, Some(25), "{v:?}");
    assert!(v.reason.unwrap().contains("truncated"));
    s.fx.cleanup().await;
}

#[tokio::test]
async fn retention_clears_old_content_and_the_log_still_verifies() {
    let Some(s) = Setup::new("auditretain").await else {
        return;
    };
    let tenant = TenantId::new_v4();
    let notes = s.write(tenant, 20, 4).await;
    let mut p = s.conn(&s.retention).await;
    let pruned = s
        .schema
        .prune_before(&mut p, tenant, 1_700_000_000_000 + 8)
        .await
        .unwrap();
    assert_eq!(pruned, 8);
    assert_eq!(
        s.schema
            .prune_before(&mut p, tenant, 1_700_000_000_000 + 8)
            .await
            .unwrap(),
        0
    );
    let cleared: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit.entries WHERE tenant = $1 AND event IS NULL",
    )
    .bind(*tenant.as_uuid())
    .fetch_one(s.fx.admin())
    .await
    .unwrap();
    assert_eq!(cleared, 8);

    let v = s.verify(tenant, Some(&notes[2])).await;
    assert!(v.ok(), "{v:?}");
    assert_eq!((v.entries, v.pruned), (20, 8));

    // Writers go on after pruning.
    let mut log = s.log(tenant);
    assert_eq!(
        log.append_batch(&[event(tenant, "t", 20)]).await.unwrap(),
        20
    );
    let v = s.verify(tenant, None).await;
    assert!(v.ok(), "{v:?}");
    assert_eq!((v.entries, v.pruned), (21, 8));

    // A pruned row whose hash a superuser changed no longer matches its checkpoint.
    s.as_superuser_without_triggers(&format!(
        "UPDATE audit.entries SET leaf = sha256(leaf) WHERE tenant = '{tenant}' AND idx = 2"
    ))
    .await;
    let v = s.verify(tenant, None).await;
    assert_eq!(v.first_bad, Some(0), "{v:?}");
    s.fx.cleanup().await;
}

#[tokio::test]
async fn a_writer_refuses_to_sign_on_top_of_a_tampered_head() {
    let Some(s) = Setup::new("audithead").await else {
        return;
    };
    let tenant = TenantId::new_v4();
    s.write(tenant, 7, 7).await;
    s.as_superuser_without_triggers(&format!(
        "UPDATE audit.checkpoints SET frontier = sha256(frontier) || substr(frontier, 33) \
         WHERE tenant = '{tenant}' AND size = 7"
    ))
    .await;
    let mut log = s.log(tenant);
    let err = log
        .append_batch(&[event(tenant, "t", 7)])
        .await
        .unwrap_err();
    assert!(matches!(err, PgLogError::HeadNotTrusted(_)), "{err:?}");

    // A head signed by another key is refused too.
    let other = TenantId::new_v4();
    let mut foreign = PgLog::new(
        s.options(&s.writer),
        &s.schema,
        other,
        ORIGIN,
        CheckpointSigner::from_seed("audit.test", &[12; 32]).unwrap(),
    )
    .unwrap();
    foreign.append_batch(&[event(other, "t", 0)]).await.unwrap();
    let mut log = s.log(other);
    let err = log.append_batch(&[event(other, "t", 1)]).await.unwrap_err();
    assert!(matches!(err, PgLogError::HeadNotTrusted(_)), "{err:?}");
    s.fx.cleanup().await;
}

#[tokio::test]
async fn a_writer_with_a_stale_head_retries_under_the_lock_without_a_fork_or_gap() {
    let Some(s) = Setup::new("auditstale").await else {
        return;
    };
    let tenant = TenantId::new_v4();
    let (mut a, mut b) = (s.log(tenant), s.log(tenant));
    assert_eq!(a.append_batch(&[event(tenant, "a", 0)]).await.unwrap(), 0);
    assert_eq!(b.append_batch(&[event(tenant, "b", 0)]).await.unwrap(), 1);
    // `a` still believes the log holds one entry: its insert at index 1 fails as a whole,
    // and it retries under the lock at index 2.
    let batch = [event(tenant, "a", 1), event(tenant, "a", 2)];
    assert_eq!(a.append_batch(&batch).await.unwrap(), 2);
    assert_eq!(a.retries(), 1);
    assert_eq!(b.append_batch(&[event(tenant, "b", 1)]).await.unwrap(), 4);
    assert_eq!(a.append_batch(&[event(tenant, "a", 3)]).await.unwrap(), 5);
    assert_eq!(a.retries(), 1, "under the lock the head is read fresh");
    let v = s.verify(tenant, None).await;
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.entries, 6);
    s.fx.cleanup().await;
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nova-audit"))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_cli_verifies_a_database_log_and_names_the_first_bad_entry() {
    let Some(s) = Setup::new("auditcli").await else {
        return;
    };
    let (a, b) = (TenantId::new_v4(), TenantId::new_v4());
    s.write(a, 12, 4).await;
    s.write(b, 5, 5).await;
    let url = s.options(&s.reader).to_url_lossy().to_string();
    let key = signer().verifier_key();
    let (ta, tb) = (a.to_string(), b.to_string());

    let out = cli(&["verify", &url, "--key", &key, "--schema", "audit"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!("tenant {a}: OK: 12 entries of {ORIGIN}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("tenant {b}: OK: 5 entries")),
        "{stdout}"
    );

    s.as_superuser_without_triggers(&format!(
        "UPDATE audit.entries SET time_ms = time_ms + 1, \
         event = convert_to(replace(convert_from(event, 'UTF8'), 'tickets.update', 'tickets.delete'), 'UTF8') \
         WHERE tenant = '{a}' AND idx = 9"
    ))
    .await;
    let out = cli(&["verify", &url, "--key", &key, "--schema", "audit"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("tenant {a}: FAILED: first bad entry is 8")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("tenant {b}: OK")), "{stdout}");

    let out = cli(&[
        "verify", &url, "--key", &key, "--schema", "audit", "--tenant", &tb,
    ]);
    assert_eq!(out.status.code(), Some(0));
    let out = cli(&[
        "verify", &url, "--key", &key, "--schema", "audit", "--tenant", &ta,
    ]);
    assert_eq!(out.status.code(), Some(1));

    // Usage errors: an option that needs --tenant, a bad schema name, an unreachable server
    // whose URL carries a password that must not be echoed.
    let out = cli(&["verify", &url, "--key", &key, "--origin", ORIGIN]);
    assert_eq!(out.status.code(), Some(2));
    let out = cli(&["verify", &url, "--key", &key, "--schema", "Audit; DROP"]);
    assert_eq!(out.status.code(), Some(2));
    let out = cli(&[
        "verify",
        "postgres://someone:hunter2secret@127.0.0.1:1/nowhere",
        "--key",
        &key,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("hunter2secret"), "{all}");
    s.fx.cleanup().await;
}
