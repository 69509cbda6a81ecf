//! One request end to end against the real PostgreSQL: a `Nova` built from one
//! configuration file under the production profile (TLS to the server, its certificate
//! checked), a request scope
//! that authorizes, writes, seals, and records its audit event in the same transaction.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nova::crypto::{LocalKeyProvider, normalize};
use nova::policy::{Attrs, PolicySet, PolicyStore, Schema};
use nova::tenancy::privacy::{ErasureAction, SubjectMap, SubjectTable};
use nova::tenancy::testing::PgFixture;
use nova::tenancy::{
    AppRole, AuthMethod, CredentialVerifier, Ident, RlsMigration, TenantContext, TenantId,
    TenantTable, UserId, VerifiedIdentity,
};
use nova::{Config, Error, KeyOf, Nova, Principals, SealedTable, Target};
use sqlx::Row;
use uuid::Uuid;
use zeroize::Zeroizing;

const SCHEMA: &str = r#"
entity User { department: String };
entity Note { owner: String, department: String };
context { mfa: Bool };
principal User;
"#;

const POLICY: &str = r#"
role member;
role admin;

@id("members-work-their-department")
allow member to read, write on Note when resource.department == principal.department;

@id("admins-share")
allow admin to share on Note;

@id("secret-notes-need-mfa")
deny * to read on Note when resource.owner == "secret" && !context.mfa;
"#;

/// A fixed key, as a KMS would give (a key made up in the process is refused by strict
/// profiles).
fn test_kek() -> LocalKeyProvider {
    LocalKeyProvider::from_base64("root", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap()
}

fn policy() -> PolicyStore {
    PolicyStore::new(
        Schema::parse(SCHEMA).unwrap(),
        PolicySet::parse(POLICY).unwrap(),
    )
    .unwrap()
}

struct Test;
impl CredentialVerifier for Test {
    fn verifier_name(&self) -> &'static str {
        "test/nova-scope"
    }
}

fn user(tenant: TenantId, roles: &[&str], mfa_at: Option<SystemTime>) -> TenantContext {
    let mut id = VerifiedIdentity::new(tenant)
        .user(UserId::new_v4())
        .roles(roles.iter().map(|r| nova::tenancy::Role::new(r).unwrap()))
        .methods([AuthMethod::new("pwd").unwrap()]);
    if let Some(at) = mfa_at {
        id = id
            .methods([AuthMethod::new("otp").unwrap()])
            .second_factor_at(at);
    }
    TenantContext::from_verified(&Test, id)
}

fn config(profile: &str, audit_file: &std::path::Path, extra: &str) -> Config {
    Config::from_toml(&format!(
        r#"
        [security]
        profile = "{profile}"
        [security.database]
        tls = "verify_ca"             # the test server's self-signed certificate as the CA
        root_cert = "/etc/ssl/certs/ssl-cert-snakeoil.pem"
        [security.mfa]
        max_age = "15m"
        admin_actions = ["share"]
        [security.session]
        idle_timeout = "15m"
        [security.audit]
        file = "{}"
        retention_days = 2192
        {extra}
        "#,
        audit_file.display()
    ))
    .unwrap()
}

struct Setup {
    fx: PgFixture,
    app: String,
    nova_login: String,
    bypass_login: String,
    dir: std::path::PathBuf,
}

async fn setup(label: &str) -> Option<Setup> {
    let mut fx = PgFixture::new(label).await?;
    let migration = RlsMigration::new(fx.roles().clone())
        .table(TenantTable::new("notes").unwrap())
        .table(TenantTable::new("members").unwrap());
    fx.exec(&migration.roles_sql()).await;
    let owner = fx.login_role("owner", &[]).await;
    let app_rw = fx.roles().get(AppRole::AppRw).clone();
    let app = fx.login_role("app", &[&app_rw]).await;
    let nova_login = fx.login_role("nova", &[]).await;
    let admin_rw = fx.roles().get(AppRole::AdminRw).clone();
    let bypass_login = fx.login_role("support", &[&admin_rw]).await;
    fx.exec(&format!(
        r#"
        CREATE TABLE notes (
            tenant_id uuid NOT NULL, id uuid NOT NULL, department text NOT NULL,
            title text NOT NULL, body text, author uuid,
            PRIMARY KEY (tenant_id, id));
        ALTER TABLE notes OWNER TO "{owner}";
        CREATE TABLE members (
            tenant_id uuid NOT NULL, id uuid NOT NULL, department text, levels int[],
            left_at timestamptz, PRIMARY KEY (tenant_id, id));
        ALTER TABLE members OWNER TO "{owner}";
        -- A check that runs at commit: a title 'poison' makes the commit fail.
        CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.title = 'poison' THEN RAISE EXCEPTION 'poisoned note'; END IF;
            RETURN NULL;
        END $$;
        ALTER FUNCTION refuse_poison() OWNER TO "{owner}";
        CREATE CONSTRAINT TRIGGER notes_poison AFTER INSERT ON notes
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_poison();
        "#
    ))
    .await;
    fx.exec(&migration.tables_sql()).await;
    nova::migrate(
        fx.admin(),
        "nova",
        &[&app_rw],
        &Ident::new(&nova_login).unwrap(),
    )
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("nova-scope-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    Some(Setup {
        fx,
        app,
        nova_login,
        bypass_login,
        dir,
    })
}

impl Setup {
    /// A builder with the test policy and the two logins.
    fn builder(&self, config: Config) -> nova::NovaBuilder {
        Nova::builder(config)
            .policy(policy())
            .database(self.fx.connect_options(&self.app))
            .nova_database(self.fx.connect_options(&self.nova_login))
    }

    async fn nova(&self, config: Config) -> Result<Nova, Error> {
        self.builder(config)
            .sealed(
                SealedTable::new("notes")
                    .column("body", KeyOf::Subject)
                    .unwrap()
                    .indexed("title", KeyOf::Tenant, normalize::trim_lowercase)
                    .unwrap(),
            )
            .kek(Arc::new(test_kek()))
            .audit_signing_seed(Zeroizing::new([5; 32]))
            .relay_interval(Duration::from_millis(50))
            .build()
            .await
    }

    fn audit_lines(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    async fn cleanup(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        self.fx.cleanup().await;
    }
}

async fn insert_note(scope: &mut nova::Scope, id: Uuid, department: &str, title: &str) {
    let tenant = scope.context().tenant();
    let tx = scope.tx().await.unwrap();
    sqlx::query("INSERT INTO notes (tenant_id, id, department, title) VALUES ($1, $2, $3, $4)")
        .bind(tenant)
        .bind(id)
        .bind(department)
        .bind(title)
        .execute(&mut **tx)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_write_and_its_event_commit_together_and_a_failed_commit_leaves_no_event() {
    let Some(s) = setup("novacommit").await else {
        return;
    };
    let nova = s
        .nova(config("production", &s.dir.join("audit.log"), ""))
        .await
        .unwrap();
    let tenant = TenantId::new_v4();
    let member = user(tenant, &["member"], None);
    let dept = Attrs::new().with("department", "hr");

    // Allowed: the note and its event commit together; the event carries the reason.
    let ok_id = Uuid::new_v4();
    let mut scope = nova.scope(member.clone());
    scope.set_principal(dept.clone());
    let note = Attrs::new().with("department", "hr").with("owner", "x");
    let allowed = scope
        .authorize("write", Target::new("Note", &note))
        .await
        .unwrap();
    insert_note(&mut scope, ok_id, "hr", "fine").await;
    let event = scope
        .event_for(&allowed, "data.write", "notes.create")
        .resource(&format!("Note/{ok_id}"))
        .build();
    scope.record(event).await.unwrap();
    scope.commit().await.unwrap();

    // The same, with a write the database refuses at commit.
    let bad_id = Uuid::new_v4();
    let mut scope = nova.scope(member.clone());
    scope.set_principal(dept.clone());
    let allowed = scope
        .authorize("write", Target::new("Note", &note))
        .await
        .unwrap();
    insert_note(&mut scope, bad_id, "hr", "poison").await;
    let event = scope
        .event_for(&allowed, "data.write", "notes.create")
        .resource(&format!("Note/{bad_id}"))
        .build();
    scope.record(event).await.unwrap();
    let err = scope.commit().await.unwrap_err();
    assert!(matches!(err, Error::Tenancy(_)), "{err}");

    // A scope dropped after recording (a handler that returned early) leaves nothing.
    let dropped_id = Uuid::new_v4();
    let mut scope = nova.scope(member.clone());
    insert_note(&mut scope, dropped_id, "hr", "dropped").await;
    let event = scope
        .event("data.write", "notes.create")
        .resource(&format!("Note/{dropped_id}"))
        .build();
    scope.record(event).await.unwrap();
    drop(scope);

    nova.flush_audit().await.unwrap();
    assert_eq!(nova.audit_pending().await.unwrap(), 0);
    let lines = s.audit_lines("audit.log");
    let with = |id: Uuid| {
        lines
            .iter()
            .filter(|l| l.contains(&format!("Note/{id}")))
            .count()
    };
    assert_eq!(with(ok_id), 1, "{lines:?}");
    assert_eq!(
        with(bad_id),
        0,
        "an event for a write that never happened: {lines:?}"
    );
    assert_eq!(with(dropped_id), 0);
    let ok_line = lines
        .iter()
        .find(|l| l.contains(&format!("Note/{ok_id}")))
        .unwrap();
    assert!(
        ok_line.contains("\"policies\":[\"allowed by rule"),
        "the decision's reasons: {ok_line}"
    );
    assert!(ok_line.contains("\"outbox_id\""), "{ok_line}");
    // The data agrees: only the committed note exists.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(s.fx.admin())
        .await
        .unwrap();
    assert_eq!(n, 1);
    // The log verifies under its key.
    let key = nova::audit::VerifierKey::parse(nova.audit_key()).unwrap();
    let verdict = nova::audit::verify_file(s.dir.join("audit.log"), &key, None).unwrap();
    assert!(verdict.ok() && verdict.entries >= 1, "{verdict:?}");
    nova.close().await.unwrap();
    s.cleanup().await;
}

#[tokio::test]
async fn denials_are_audited_with_their_reasons_and_admin_actions_need_a_fresh_second_factor() {
    let Some(s) = setup("novadeny").await else {
        return;
    };
    let nova = s
        .nova(config("hipaa", &s.dir.join("audit.log"), ""))
        .await
        .unwrap();
    let tenant = TenantId::new_v4();
    let note = Attrs::new()
        .with("department", "finance")
        .with("owner", "x");

    // Another department's note: denied, with the rule whose condition was false.
    let mut scope = nova.scope(user(tenant, &["member"], None));
    scope.set_principal(Attrs::new().with("department", "hr"));
    let err = scope
        .authorize("read", Target::new("Note", &note).id("n-1"))
        .await
        .unwrap_err();
    let Error::Denied { reasons } = &err else {
        panic!("{err}")
    };
    assert!(
        reasons.iter().any(|r| r.contains("condition is false")),
        "{reasons:?}"
    );
    assert_eq!(err.status(), 403);
    drop(scope);

    // An admin action without a second factor, and with one older than 15 minutes.
    let now = SystemTime::now();
    for mfa in [None, Some(now - Duration::from_secs(16 * 60))] {
        let mut scope = nova.scope(user(tenant, &["admin"], mfa));
        let err = scope
            .authorize("share", Target::new("Note", &note).id("n-2"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::MfaRequired), "{err}");
    }
    // With a fresh one: allowed.
    let mut scope = nova.scope(user(
        tenant,
        &["admin"],
        Some(now - Duration::from_secs(60)),
    ));
    let allowed = scope
        .authorize("share", Target::new("Note", &note).id("n-3"))
        .await
        .unwrap();
    assert_eq!(
        allowed.reasons(),
        ["allowed by rule `admins-share`"],
        "{allowed:?}"
    );

    // Every refusal is in the log already (no flush: it was durable before the answer).
    let lines = s.audit_lines("audit.log");
    let denied: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("policy.denied"))
        .collect();
    assert_eq!(denied.len(), 3, "{lines:?}");
    assert!(
        denied[0].contains("Note/n-1") && denied[0].contains("condition is false"),
        "{}",
        denied[0]
    );
    assert!(denied[0].contains("\"outcome\":\"denied\""));
    for d in &denied[1..] {
        assert!(d.contains("Note/n-2") && d.contains("second factor"), "{d}");
    }
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("Note/n-3") && l.contains("denied"))
    );
    nova.close().await.unwrap();
    s.cleanup().await;
}

#[tokio::test]
async fn sealed_columns_are_declared_once_and_an_erased_subject_reads_as_none() {
    let Some(s) = setup("novaseal").await else {
        return;
    };
    let nova = s
        .nova(config("production", &s.dir.join("audit.log"), ""))
        .await
        .unwrap();
    let tenant = TenantId::new_v4();
    let member = user(tenant, &["member"], None);
    let (id, subject) = (Uuid::new_v4(), Uuid::new_v4());

    let mut scope = nova.scope(member.clone());
    let body = scope
        .seal("notes", "body", id, Some(subject), "private words")
        .await
        .unwrap();
    let index = scope
        .blind_index("notes", "title", "  Hello ")
        .await
        .unwrap();
    assert!(!body.contains("private"));
    // Typos and wrong keys are errors, never plaintext.
    assert!(matches!(
        scope.seal("notes", "bodyy", id, Some(subject), "x").await,
        Err(Error::UnknownColumn { .. })
    ));
    assert!(matches!(
        scope.seal("notes", "body", id, None, "x").await,
        Err(Error::WrongKey { .. })
    ));
    assert!(matches!(
        scope.blind_index("notes", "body", "x").await,
        Err(Error::UnknownColumn { .. })
    ));
    let tx = scope.tx().await.unwrap();
    sqlx::query("INSERT INTO notes (tenant_id, id, department, title, body) VALUES ($1, $2, 'hr', 'hello', $3)")
        .bind(tenant)
        .bind(id)
        .bind(&body)
        .execute(&mut **tx)
        .await
        .unwrap();
    scope.commit().await.unwrap();

    let mut scope = nova.scope(member.clone());
    let again = scope.blind_index("notes", "title", "hello").await.unwrap();
    assert_eq!(again, index, "the index normalizes as declared");
    let tx = scope.tx().await.unwrap();
    let row = sqlx::query("SELECT body FROM notes WHERE id = $1")
        .bind(id)
        .fetch_one(&mut **tx)
        .await
        .unwrap();
    let stored: String = row.get(0);
    assert_eq!(
        scope
            .open("notes", "body", id, Some(&stored))
            .await
            .unwrap()
            .as_deref(),
        Some("private words")
    );
    // Moved to another row: refused.
    assert!(
        scope
            .open("notes", "body", Uuid::new_v4(), Some(&stored))
            .await
            .is_err()
    );
    scope.commit().await.unwrap();

    // Erased subject: the value reads as None.
    assert!(nova.subjects().shred(&member, subject).await.unwrap());
    let mut scope = nova.scope(member);
    assert_eq!(
        scope
            .open("notes", "body", id, Some(&stored))
            .await
            .unwrap(),
        None
    );
    nova.close().await.unwrap();
    s.cleanup().await;
}

#[tokio::test]
async fn the_outbox_takes_only_the_transactions_tenant_and_cannot_be_read_by_the_application() {
    let Some(s) = setup("novaoutbox").await else {
        return;
    };
    let nova = s
        .nova(config("production", &s.dir.join("audit.log"), ""))
        .await
        .unwrap();
    let tenant = TenantId::new_v4();
    let mut scope = nova.scope(user(tenant, &["member"], None));
    let foreign = nova::audit::AuditEvent::builder(TenantId::new_v4(), "data.write", "x").build();
    let err = scope.record(foreign).await.unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    scope.rollback().await.unwrap();

    let mut scope = nova.scope(user(tenant, &["member"], None));
    let tx = scope.tx().await.unwrap();
    let err = sqlx::query("SELECT count(*) FROM nova.audit_outbox")
        .fetch_one(&mut **tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    drop(scope);
    nova.close().await.unwrap();
    s.cleanup().await;
}

#[tokio::test]
async fn strict_profiles_refuse_a_missing_kek_a_login_that_skips_rls_and_unsigned_checkpoints() {
    let Some(s) = setup("novarefuse").await else {
        return;
    };

    // No KEK configured (the variable is unset) under production: refused before connecting.
    let cfg = config(
        "production",
        &s.dir.join("a.log"),
        "[security.encryption]\nkek_env = \"NOVA_TEST_KEK_THAT_IS_NOT_SET\"",
    );
    let err = s
        .builder(cfg)
        .audit_signing_seed(Zeroizing::new([5; 32]))
        .build()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("security.encryption.kek_env"),
        "{err}"
    );
    // Development may make one up, when asked to.
    let dev = Config::from_toml(&format!(
        "[security]\nprofile = \"development\"\n[security.database]\ntls = \"disable\"\n[security.encryption]\nkek_env = \"NOVA_TEST_KEK_THAT_IS_NOT_SET\"\ngenerate_kek_if_missing = true\n[security.audit]\nfile = \"{}\"",
        s.dir.join("dev.log").display()
    ))
    .unwrap();
    let nova = s.builder(dev).build().await.unwrap();
    nova.close().await.unwrap();

    // A superuser as the application login: refused, named.
    let err = s
        .builder(config("production", &s.dir.join("c.log"), ""))
        .database(s.fx.connect_options("postgres"))
        .kek(Arc::new(test_kek()))
        .audit_signing_seed(Zeroizing::new([5; 32]))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Tenancy(nova::tenancy::Error::LoginSkipsRls { .. })
        ),
        "{err}"
    );
    // A superuser as Nova's own login: refused too.
    let err = s
        .builder(config("production", &s.dir.join("d.log"), ""))
        .nova_database(s.fx.connect_options("postgres"))
        .kek(Arc::new(test_kek()))
        .audit_signing_seed(Zeroizing::new([5; 32]))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config(c) if c.to_string().contains("Nova's login is a superuser")),
        "{err}"
    );
    // A KEK made up in this process, handed over in code: refused under production.
    let err = s
        .builder(config("production", &s.dir.join("e.log"), ""))
        .kek(Arc::new(LocalKeyProvider::generated("root").unwrap()))
        .audit_signing_seed(Zeroizing::new([5; 32]))
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("made up in this process"), "{err}");
    // No signing key under a strict profile: refused.
    let err = s
        .builder(config("production", &s.dir.join("d.log"), ""))
        .kek(Arc::new(test_kek()))
        .build()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("security.audit.signing_key_env"),
        "{err}"
    );
    s.cleanup().await;
}

#[tokio::test]
async fn the_policy_reads_context_mfa_from_the_credential() {
    let Some(s) = setup("novactxmfa").await else {
        return;
    };
    let nova = s
        .nova(config("hipaa", &s.dir.join("audit.log"), ""))
        .await
        .unwrap();
    let tenant = TenantId::new_v4();
    let secret = Attrs::new()
        .with("department", "hr")
        .with("owner", "secret");
    let now = SystemTime::now();
    for (mfa, allowed) in [
        (None, false),
        (Some(now - Duration::from_secs(16 * 60)), false),
        (Some(now - Duration::from_secs(14 * 60)), true),
    ] {
        let mut scope = nova.scope(user(tenant, &["member"], mfa));
        scope.set_principal(Attrs::new().with("department", "hr"));
        let got = scope.authorize("read", Target::new("Note", &secret)).await;
        match (got, allowed) {
            (Ok(_), true) => {}
            (Err(Error::Denied { reasons }), false) => {
                assert!(
                    reasons.iter().any(|r| r.contains("secret-notes-need-mfa")),
                    "{reasons:?}"
                );
            }
            (other, _) => panic!("{mfa:?}: {other:?}"),
        }
    }
    nova.close().await.unwrap();
    s.cleanup().await;
}

#[tokio::test]
async fn a_row_written_around_nova_is_rejected_not_trusted() {
    let Some(s) = setup("novaforge").await else {
        return;
    };
    let nova = s
        .nova(config("production", &s.dir.join("audit.log"), ""))
        .await
        .unwrap();
    let tenant = TenantId::new_v4();
    // The application login, as an injected statement would: a forged record for its own
    // tenant (RLS allows the insert), claiming to be an event of another tenant.
    let forged = nova::audit::AuditEvent::builder(TenantId::new_v4(), "admin.forged", "x").build();
    let mut scope = nova.scope(user(tenant, &["member"], None));
    let tx = scope.tx().await.unwrap();
    sqlx::query("INSERT INTO nova.audit_outbox (tenant_id, record_id, record) VALUES ($1, $2, $3)")
        .bind(tenant)
        .bind(Uuid::new_v4())
        .bind(forged.to_record(&nova::audit::RedactionPolicy::new()))
        .execute(&mut **tx)
        .await
        .unwrap();
    scope.commit().await.unwrap();
    nova.flush_audit().await.unwrap();
    let lines = s.audit_lines("audit.log");
    assert!(
        !lines.iter().any(|l| l.contains("admin.forged")),
        "{lines:?}"
    );
    let rejected: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("audit.outbox_record_rejected"))
        .collect();
    assert_eq!(rejected.len(), 1, "{lines:?}");
    assert!(rejected[0].contains(&tenant.to_string()) && rejected[0].contains("does not open"));
    // A real event still goes through.
    let mut scope = nova.scope(user(tenant, &["member"], None));
    let event = scope
        .event("data.write", "x")
        .param("note", "a-visible-parameter")
        .build();
    scope.record(event).await.unwrap();
    scope.commit().await.unwrap();
    nova.close().await.unwrap();
    let lines = s.audit_lines("audit.log");
    assert!(
        lines.iter().any(|l| l.contains("a-visible-parameter")),
        "the event reached the log"
    );
    s.cleanup().await;
}

#[tokio::test]
async fn misspelt_admin_actions_and_twice_declared_columns_are_refused() {
    let Some(s) = setup("novatypos").await else {
        return;
    };
    let cfg = Config::from_toml(&format!(
        "[security]\nprofile = \"development\"\n[security.database]\ntls = \"disable\"\n[security.mfa]\nadmin_actions = [\"shrae\"]\n[security.audit]\nfile = \"{}\"",
        s.dir.join("a.log").display()
    ))
    .unwrap();
    let err = s
        .builder(cfg)
        .kek(Arc::new(test_kek()))
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("shrae"), "{err}");
    let err = s
        .builder(config("production", &s.dir.join("b.log"), ""))
        .sealed(
            SealedTable::new("notes")
                .column("body", KeyOf::Subject)
                .unwrap(),
        )
        .sealed(
            SealedTable::new("notes")
                .column("body", KeyOf::Tenant)
                .unwrap(),
        )
        .kek(Arc::new(test_kek()))
        .audit_signing_seed(Zeroizing::new([5; 32]))
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("declared twice"), "{err}");
    s.cleanup().await;
}

/// A caller with a given user id.
fn caller(tenant: TenantId, id: Uuid, roles: &[&str]) -> TenantContext {
    let id = VerifiedIdentity::new(tenant)
        .user(UserId::from_uuid(id).unwrap())
        .roles(roles.iter().map(|r| nova::tenancy::Role::new(r).unwrap()))
        .methods([AuthMethod::new("pwd").unwrap()]);
    TenantContext::from_verified(&Test, id)
}

#[tokio::test]
async fn principals_are_read_from_their_table_and_unknown_or_gone_callers_are_refused() {
    let Some(s) = setup("novaprincipal").await else {
        return;
    };
    let nova = s
        .builder(config("production", &s.dir.join("audit.log"), ""))
        .principals(
            Principals::table("members", "id")
                .and_then(|p| p.attributes(["department", "levels"]))
                .and_then(|p| p.gone_when_set("left_at"))
                .unwrap()
                .rowless_role("robot"),
        )
        .kek(Arc::new(test_kek()))
        .audit_signing_seed(Zeroizing::new([5; 32]))
        .build()
        .await
        .unwrap();
    let (tenant, other) = (TenantId::new_v4(), TenantId::new_v4());
    let (active, gone) = (Uuid::new_v4(), Uuid::new_v4());
    let mut seed = nova.scope(TenantContext::system(tenant, "test: members").unwrap());
    let tx = seed.tx().await.unwrap();
    sqlx::query(
        "INSERT INTO members (tenant_id, id, department, levels, left_at) VALUES \
         ($1, $2, 'hr', '{1,2}', NULL), ($1, $3, 'hr', NULL, now())",
    )
    .bind(tenant)
    .bind(active)
    .bind(gone)
    .execute(&mut **tx)
    .await
    .unwrap();
    for (id, department) in [(Uuid::new_v4(), "hr"), (Uuid::new_v4(), "finance")] {
        insert_note(&mut seed, id, department, "t").await;
    }
    seed.commit().await.unwrap();
    let hr = Attrs::new().with("department", "hr").with("owner", "x");
    let finance = Attrs::new()
        .with("department", "finance")
        .with("owner", "x");

    // A member's department comes from their row: their own department's note is
    // allowed, another's denied.
    let mut scope = nova.scope(caller(tenant, active, &["member"]));
    let allowed = scope
        .authorize("read", Target::new("Note", &hr))
        .await
        .unwrap();
    assert_eq!(
        allowed.reasons(),
        ["allowed by rule `members-work-their-department`"]
    );
    assert!(matches!(
        scope.authorize("read", Target::new("Note", &finance)).await,
        Err(Error::Denied { .. })
    ));
    // A listing's filter uses the same attributes: only the hr note.
    let filter = scope
        .sql_filter("write", "Note", &nova::policy::ResourceTable::new(), 1)
        .await
        .unwrap();
    let sql = format!("SELECT department FROM notes WHERE {}", filter.sql);
    let query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
    let mut query = query;
    for p in &filter.params {
        query = match p {
            nova::policy::SqlParam::Text(t) => query.bind(t.clone()),
            other => panic!("unexpected parameter {other:?}"),
        };
    }
    let departments = query
        .fetch_all(&mut **scope.tx().await.unwrap())
        .await
        .unwrap();
    assert_eq!(departments, ["hr"]);
    scope.rollback().await.unwrap();

    // Unknown, gone, and the active member's id in another tenant: refused, audited.
    for (t, id, why) in [
        (tenant, Uuid::new_v4(), "unknown"),
        (tenant, gone, "gone"),
        (other, active, "other tenant"),
    ] {
        let mut scope = nova.scope(caller(t, id, &["member"]));
        let err = scope
            .authorize("read", Target::new("Note", &hr))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Refused), "{why}: {err}");
        assert_eq!(err.status(), 403);
    }
    let refusals = s
        .audit_lines("audit.log")
        .into_iter()
        .filter(|l| l.contains("no such principal in the tenant"))
        .count();
    assert_eq!(refusals, 3);
    // A rowless role is not looked up and has no attributes: rules reading them do not
    // match (denied, not refused).
    let mut robot = nova.scope(caller(tenant, Uuid::new_v4(), &["member", "robot"]));
    assert!(matches!(
        robot.authorize("read", Target::new("Note", &hr)).await,
        Err(Error::Denied { .. })
    ));
    // A context without a user (a system context) is refused when a table is declared.
    let mut system = nova.scope(TenantContext::system(tenant, "test: job").unwrap());
    assert!(matches!(
        system.authorize("read", Target::new("Note", &hr)).await,
        Err(Error::Refused)
    ));
    nova.close().await.unwrap();
    s.cleanup().await;
}

#[tokio::test]
async fn a_subject_export_opens_only_its_own_fields_and_erasure_shreds_its_key() {
    let Some(s) = setup("novaprivacy").await else {
        return;
    };
    let nova = s
        .builder(config("production", &s.dir.join("audit.log"), ""))
        .sealed(
            SealedTable::new("notes")
                .column("body", KeyOf::Subject)
                .and_then(|t| t.column("title", KeyOf::Tenant))
                .unwrap(),
        )
        .data_subjects(
            SubjectMap::new().table(
                SubjectTable::new("notes", "author")
                    .unwrap()
                    .on_erase(ErasureAction::anonymise(["body"]).unwrap()),
            ),
        )
        .kek(Arc::new(test_kek()))
        .audit_signing_seed(Zeroizing::new([5; 32]))
        .build()
        .await
        .unwrap();
    let tenant = TenantId::new_v4();
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let ctx = TenantContext::system(tenant, "test: privacy").unwrap();
    // Alice's note, Bob's note, and a note in Alice's name whose body is sealed under
    // Bob's key (a quote of Bob, say): not Alice's to read.
    let mut scope = nova.scope(ctx.clone());
    for (author, key_of, body) in [
        (alice, alice, "alice's words"),
        (bob, bob, "bob's words"),
        (alice, bob, "bob quoted"),
    ] {
        let id = Uuid::new_v4();
        let body = scope
            .seal("notes", "body", id, Some(key_of), body)
            .await
            .unwrap();
        let title = scope
            .seal("notes", "title", id, None, "a title")
            .await
            .unwrap();
        let tx = scope.tx().await.unwrap();
        sqlx::query("INSERT INTO notes (tenant_id, id, department, title, body, author) VALUES ($1, $2, 'hr', $3, $4, $5)")
            .bind(tenant).bind(id).bind(&title).bind(&body).bind(author)
            .execute(&mut **tx).await.unwrap();
    }
    scope.commit().await.unwrap();

    let mut scope = nova.scope(ctx.clone());
    let export = scope.export_subject(alice).await.unwrap();
    scope.commit().await.unwrap();
    let rows = export["tables"]["notes.author"]
        .as_array()
        .unwrap_or_else(|| panic!("{export}"));
    assert_eq!(rows.len(), 2, "only Alice's rows");
    let mut bodies: Vec<serde_json::Value> = rows.iter().map(|r| r["body"].clone()).collect();
    bodies.sort_by_key(ToString::to_string);
    assert_eq!(
        bodies,
        [serde_json::json!("alice's words"), serde_json::Value::Null]
    );
    assert!(rows.iter().all(|r| r["title"] == "a title"), "{rows:?}");
    assert!(!export.to_string().contains("bob"), "{export}");

    // Erasure, as an admin with a fresh second factor decided: rows anonymised and the
    // key destroyed, the key's destruction in the log before it happened.
    let admin = user(tenant, &["admin"], Some(SystemTime::now()));
    let mut scope = nova.scope(admin);
    let note = Attrs::new().with("department", "hr").with("owner", "x");
    let allowed = scope
        .authorize("share", Target::new("Note", &note))
        .await
        .unwrap();
    let erasure = scope.erase_subject(&allowed, alice).await.unwrap();
    let lines = s.audit_lines("audit.log");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("privacy.subject_key_destroyed")
                && l.contains(&format!("subjects/{alice}"))
                && l.contains("admins-share")),
        "{lines:?}"
    );
    scope.commit().await.unwrap();
    assert!(erasure.key_destroyed);
    assert_eq!(erasure.report.total(), 2);
    assert_eq!(erasure.to_json()["key_destroyed"], true);
    let mut scope = nova.scope(ctx);
    let export = scope.export_subject(alice).await.unwrap();
    let rows = export["tables"]["notes.author"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["body"].is_null()), "{rows:?}");
    scope.rollback().await.unwrap();
    nova.close().await.unwrap();
    s.cleanup().await;
}

#[tokio::test]
async fn api_keys_are_revoked_only_in_their_tenant_and_every_step_is_audited() {
    let Some(s) = setup("novaapikey").await else {
        return;
    };
    let nova = s
        .nova(config("production", &s.dir.join("audit.log"), ""))
        .await
        .unwrap();
    let (tenant, other) = (TenantId::new_v4(), TenantId::new_v4());
    let admin = |t| user(t, &["admin"], Some(SystemTime::now()));
    let note = Attrs::new().with("department", "hr").with("owner", "x");
    let mut scope = nova.scope(admin(tenant));
    let allowed = scope
        .authorize("share", Target::new("Note", &note))
        .await
        .unwrap();
    let spec = nova::auth::NewApiKey::new(
        tenant,
        UserId::new_v4(),
        nova::tenancy::Role::new("member").unwrap(),
    );
    let (key_id, secret) = scope.create_api_key(&allowed, spec).await.unwrap();
    assert!(
        nova.api_keys()
            .verify(secret.expose(), std::net::Ipv4Addr::LOCALHOST.into())
            .await
            .is_ok()
    );

    // Another tenant's admin: "not found", and the key still works.
    let mut scope = nova.scope(admin(other));
    let allowed = scope
        .authorize("share", Target::new("Note", &note))
        .await
        .unwrap();
    let err = scope.revoke_api_key(&allowed, &key_id).await.unwrap_err();
    assert!(matches!(err, Error::NotFound), "{err}");
    assert!(
        nova.api_keys()
            .verify(secret.expose(), std::net::Ipv4Addr::LOCALHOST.into())
            .await
            .is_ok()
    );
    // Its own tenant's: revoked, with its event durable before the answer.
    let mut scope = nova.scope(admin(tenant));
    let allowed = scope
        .authorize("share", Target::new("Note", &note))
        .await
        .unwrap();
    scope.revoke_api_key(&allowed, &key_id).await.unwrap();
    scope.commit().await.unwrap();
    assert!(
        nova.api_keys()
            .verify(secret.expose(), std::net::Ipv4Addr::LOCALHOST.into())
            .await
            .is_err()
    );
    assert!(
        s.audit_lines("audit.log")
            .iter()
            .any(|l| l.contains("admin.api_key_revoked") && l.contains(&key_id))
    );
    nova.flush_audit().await.unwrap();
    let lines = s.audit_lines("audit.log");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("admin.api_key_created") && l.contains(&key_id))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("request.refused") && l.contains(&format!("api-keys/{key_id}")))
    );
    nova.close().await.unwrap();
    s.cleanup().await;
}

#[tokio::test]
async fn bypassing_rls_needs_the_policy_and_a_fresh_second_factor_and_is_audited() {
    let Some(s) = setup("novabypass").await else {
        return;
    };
    let nova = s
        .builder(config("hipaa", &s.dir.join("audit.log"), ""))
        .bypass_database(s.fx.connect_options(&s.bypass_login))
        .kek(Arc::new(test_kek()))
        .audit_signing_seed(Zeroizing::new([5; 32]))
        .build()
        .await
        .unwrap();
    let (tenant, other) = (TenantId::new_v4(), TenantId::new_v4());
    for t in [tenant, other] {
        let mut scope = nova.scope(TenantContext::system(t, "test: notes").unwrap());
        insert_note(&mut scope, Uuid::new_v4(), "hr", "t").await;
        scope.commit().await.unwrap();
    }
    let hr = Attrs::new().with("department", "hr").with("owner", "x");
    let finance = Attrs::new()
        .with("department", "finance")
        .with("owner", "x");
    let now = SystemTime::now();
    let member = |mfa| {
        let mut scope = nova.scope(user(tenant, &["member"], mfa));
        scope.set_principal(Attrs::new().with("department", "hr"));
        scope
    };
    // The policy allows the read, but a bypass also needs a fresh second factor (reading
    // is no admin action: this is the bypass's own rule).
    for mfa in [None, Some(now - Duration::from_secs(16 * 60))] {
        let err = member(mfa)
            .bypass("read", Target::new("Note", &hr), "test: support search")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::MfaRequired), "{err}");
    }
    // The policy still decides first.
    let err = member(Some(now))
        .bypass(
            "read",
            Target::new("Note", &finance),
            "test: support search",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Denied { .. }), "{err}");
    // Allowed: the transaction sees both tenants' notes.
    let mut scope = member(Some(now));
    let (decision, mut tx) = scope
        .bypass(
            "read",
            Target::new("Note", &hr).id("all"),
            "test: support search",
        )
        .await
        .unwrap();
    assert_eq!(
        decision.reasons(),
        ["allowed by rule `members-work-their-department`"]
    );
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, 2);
    tx.rollback().await.unwrap();
    // The scope's own transaction still sees only its tenant.
    let own: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&mut **scope.tx().await.unwrap())
        .await
        .unwrap();
    assert_eq!(own, 1);
    scope.rollback().await.unwrap();

    let lines = s.audit_lines("audit.log");
    let bypasses: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("tenancy.rls_bypass"))
        .collect();
    assert_eq!(bypasses.len(), 1, "{lines:?}");
    assert!(bypasses[0].contains("test: support search") && bypasses[0].contains("Note/all"));
    let refused = lines
        .iter()
        .filter(|l| l.contains("bypassing row-level security needs a second factor"))
        .count();
    assert_eq!(refused, 2);
    nova.close().await.unwrap();

    // Without a bypass login nothing bypasses.
    let plain = s
        .nova(config("hipaa", &s.dir.join("audit2.log"), ""))
        .await
        .unwrap();
    let mut scope = plain.scope(user(tenant, &["member"], Some(now)));
    scope.set_principal(Attrs::new().with("department", "hr"));
    let err = scope
        .bypass("read", Target::new("Note", &hr), "test: support search")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    plain.close().await.unwrap();
    s.cleanup().await;
}

#[tokio::test]
async fn the_audit_retention_of_the_file_is_applied_and_the_log_still_verifies() {
    let Some(s) = setup("novaretention").await else {
        return;
    };
    let nova = s
        .nova(config("hipaa", &s.dir.join("audit.log"), ""))
        .await
        .unwrap();
    let tenant = TenantId::new_v4();
    let day_ms = 86_400_000u64;
    let now_ms = u64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    // The file keeps events 2,192 days: one older than that, one recent.
    for (age_days, resource) in [(2_200, "old-one"), (1, "recent-one")] {
        let event = nova::audit::AuditEvent::builder(tenant, "data.read", "read")
            .time_ms(now_ms - age_days * day_ms)
            .resource(resource)
            .build();
        nova.audit().append(event).await.unwrap();
    }
    assert_eq!(nova.apply_audit_retention().await.unwrap(), Some(1));
    let text = std::fs::read_to_string(s.dir.join("audit.log")).unwrap();
    assert!(!text.contains("old-one") && text.contains("recent-one"));
    let key = nova::audit::VerifierKey::parse(nova.audit_key()).unwrap();
    let verdict = nova::audit::verify_file(s.dir.join("audit.log"), &key, None).unwrap();
    assert!(verdict.ok(), "{verdict:?}");
    assert_eq!(verdict.pruned, 1);
    nova.close().await.unwrap();
    s.cleanup().await;
}

#[tokio::test]
async fn a_device_is_remembered_only_after_a_fresh_second_factor_and_only_for_its_owner() {
    let Some(s) = setup("novadevice").await else {
        return;
    };
    let nova = s
        .builder(config("hipaa", &s.dir.join("audit.log"), ""))
        .remember_device_key(Zeroizing::new([9; 32]))
        .kek(Arc::new(test_kek()))
        .audit_signing_seed(Zeroizing::new([5; 32]))
        .build()
        .await
        .unwrap();
    let tenant = TenantId::new_v4();
    let stale = user(
        tenant,
        &["member"],
        Some(SystemTime::now() - Duration::from_secs(16 * 60)),
    );
    assert!(matches!(
        nova.remember_device(&stale, "dev-1"),
        Err(Error::MfaRequired)
    ));
    let fresh = user(tenant, &["member"], Some(SystemTime::now()));
    let me = fresh.user().unwrap();
    let token = nova.remember_device(&fresh, "dev-1").unwrap();
    assert!(nova.device_remembered(token.expose(), tenant, me, "dev-1"));
    assert!(
        !nova.device_remembered(token.expose(), tenant, me, "dev-2"),
        "another device"
    );
    assert!(!nova.device_remembered(token.expose(), tenant, UserId::new_v4(), "dev-1"));
    assert!(!nova.device_remembered(token.expose(), TenantId::new_v4(), me, "dev-1"));
    assert!(!nova.device_remembered("nova_rd_garbage", tenant, me, "dev-1"));
    nova.close().await.unwrap();

    // Another key (or none) remembers nothing.
    let other = s
        .nova(config("hipaa", &s.dir.join("audit2.log"), ""))
        .await
        .unwrap();
    assert!(!other.device_remembered(token.expose(), tenant, me, "dev-1"));
    assert!(matches!(
        other.remember_device(&fresh, "dev-1"),
        Err(Error::Config(_))
    ));
    other.close().await.unwrap();
    s.cleanup().await;
}
