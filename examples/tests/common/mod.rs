//! Starts the ticketing service on loopback against the machine's PostgreSQL (a throwaway
//! database) and Redis (a throwaway key prefix), with a stand-in identity provider.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use nova_auth::{AccessClaims, SigningKey, TokenIssuer};
use std::sync::Arc;

use nova_examples::ticketing::{self, Running, Setup, UserSpec};
use nova_tenancy::testing::{PgFixture, service_unavailable};
use nova_tenancy::{Role, TenantId, UserId};
use uuid::Uuid;

/// Tests in one binary share the process-wide audit hook: they run one at a time.
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(crate) struct Harness {
    pub(crate) fixture: PgFixture,
    pub(crate) running: Running,
    pub(crate) idp: TokenIssuer,
    pub(crate) audit_path: PathBuf,
    pub(crate) client: reqwest::Client,
    /// The identity provider's TOTP check (codes are single-use).
    pub(crate) totp: nova_auth::totp::TotpVerifier<nova_auth::totp::InMemoryReplayGuard>,
}

/// Redis must be up (fail in CI, skip loudly elsewhere).
pub(crate) async fn redis_up() -> bool {
    let ok = async {
        let client = redis::Client::open("redis://127.0.0.1:6379").ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    }
    .await
    .is_some();
    if !ok {
        service_unavailable(
            "Redis",
            "no answer on 127.0.0.1:6379",
            "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no",
        );
    }
    ok
}

/// The shipped configuration with its Redis prefix made unique and `edits` applied
/// (`(old, new)` text replacements, each of which must match).
pub(crate) fn config_text(edits: &[(&str, &str)]) -> String {
    let unique = format!(
        "redis_prefix = \"nova-test-{}\"",
        &Uuid::new_v4().simple().to_string()[..12]
    );
    let mut text = ticketing::DEFAULT_CONFIG.replace("redis_prefix = \"nova-ticketing\"", &unique);
    assert!(text.contains(&unique));
    for (old, new) in edits {
        assert!(text.contains(old), "config edit does not match: {old}");
        text = text.replace(old, new);
    }
    text
}

/// The service with a KEK and a checkpoint signing seed handed over in code, as from a KMS
/// and a secret store.
pub(crate) async fn start(label: &str, config: &str) -> Option<Harness> {
    let kek: Arc<dyn nova_crypto::KeyProvider> = Arc::new(
        // A fixed test key, as from a KMS (a key made up in the process is refused).
        nova_crypto::LocalKeyProvider::from_base64(
            "root",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .unwrap(),
    );
    start_with(label, config, Some(kek), Some([9; 32]))
        .await
        .map(|r| r.expect("service starts"))
}

/// The service with what the caller gives; `Some(Err)` when it refuses to start.
pub(crate) async fn start_with(
    label: &str,
    config: &str,
    kek: Option<Arc<dyn nova_crypto::KeyProvider>>,
    audit_seed: Option<[u8; 32]>,
) -> Option<Result<Harness, ticketing::Error>> {
    if !redis_up().await {
        return None;
    }
    let fixture = PgFixture::new(label).await?;
    let config = nova::Config::from_toml(config).expect("test configuration is valid");
    let jwt = config.auth.jwt.clone().expect("jwt section");
    let idp = TokenIssuer::new(
        jwt.issuer,
        jwt.audience,
        SigningKey::generate_ed25519("test-idp").unwrap(),
    );
    let audit_path =
        std::env::temp_dir().join(format!("nova-ticketing-test-{}.jsonl", Uuid::new_v4()));
    let setup = Setup {
        config,
        admin: fixture.admin().clone(),
        connect: fixture.connect_options("unused"),
        prefix: fixture.prefix().to_owned(),
        jwt_keys: idp.key_set().unwrap(),
        audit_path: audit_path.clone(),
        audit_seed,
        kek,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = match ticketing::start(setup, listener).await {
        Ok(r) => r,
        Err(e) => {
            let names = ticketing::db::Names::new(fixture.prefix()).unwrap();
            ticketing::db::drop_all(fixture.admin(), &names)
                .await
                .unwrap();
            fixture.cleanup().await;
            return Some(Err(e));
        }
    };
    Some(Ok(Harness {
        fixture,
        running,
        idp,
        audit_path,
        client: reqwest::Client::new(),
        totp: nova_auth::totp::TotpVerifier::new(nova_auth::totp::InMemoryReplayGuard::new()),
    }))
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct User {
    pub(crate) tenant: TenantId,
    pub(crate) id: Uuid,
    pub(crate) role: &'static str,
}

impl Harness {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.base)
    }

    pub(crate) async fn onboard(&self, tenant: TenantId, spec: UserSpec<'_>) -> User {
        let id = ticketing::onboard_user(&self.running.nova, tenant, &spec)
            .await
            .expect("onboard");
        let role: &'static str = match spec.role {
            "admin" => "admin",
            "agent" => "agent",
            "manager" => "manager",
            "dpo" => "dpo",
            _ => "customer",
        };
        User { tenant, id, role }
    }

    /// A token as the identity provider issues it at sign-in: staff who administer
    /// (admins, managers, DPOs) sign in with a password and a TOTP code, so their token
    /// carries a second factor verified now; agents and customers with a password only.
    pub(crate) fn token(&self, user: User) -> String {
        if matches!(user.role, "admin" | "manager" | "dpo") {
            self.token_with_mfa(user, std::time::SystemTime::now())
        } else {
            self.token_without_mfa(user)
        }
    }

    /// A token for a sign-in with a password only.
    pub(crate) fn token_without_mfa(&self, user: User) -> String {
        self.idp
            .issue(
                &AccessClaims::new(user.tenant, UserId::from_uuid(user.id).unwrap())
                    .roles([Role::new(user.role).unwrap()]),
            )
            .unwrap()
    }

    /// A token for a login with a password and a TOTP code at `at`.
    pub(crate) fn token_with_mfa(&self, user: User, at: std::time::SystemTime) -> String {
        let method = |m: &str| nova_tenancy::AuthMethod::new(m).unwrap();
        self.idp
            .issue(
                &AccessClaims::new(user.tenant, UserId::from_uuid(user.id).unwrap())
                    .roles([Role::new(user.role).unwrap()])
                    .authenticated(at, [method("pwd"), method("otp")]),
            )
            .unwrap()
    }

    /// The identity provider's step-up: it checks a TOTP code against the user's enrolled
    /// secret (each code once) and issues a token whose `amr` and `auth_time` say a second
    /// factor was verified now.
    pub(crate) async fn step_up(
        &self,
        user: User,
        secret: &nova_auth::totp::TotpSecret,
        code: &str,
    ) -> Result<String, nova_auth::totp::TotpError> {
        let totp = nova_auth::totp::Totp::default();
        self.totp
            .verify(
                user.tenant,
                UserId::from_uuid(user.id).unwrap(),
                &totp,
                secret,
                code,
            )
            .await?;
        Ok(self.token_with_mfa(user, std::time::SystemTime::now()))
    }

    /// Every event in the audit log, after verifying it with the service's public key.
    pub(crate) async fn audit_events(&self) -> Vec<serde_json::Value> {
        self.running.nova.flush_audit().await.unwrap();
        let key = nova_audit::VerifierKey::parse(self.running.nova.audit_key()).unwrap();
        let verdict = nova_audit::verify_file(&self.audit_path, &key, None).unwrap();
        assert!(
            verdict.ok(),
            "audit log does not verify: {:?}",
            verdict.reason
        );
        std::fs::read_to_string(&self.audit_path)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v.get("e").cloned())
            .collect()
    }

    /// Counts of audit events by (tenant, event type).
    pub(crate) async fn audit_counts(&self) -> BTreeMap<(String, String), u64> {
        let mut counts = BTreeMap::new();
        for e in self.audit_events().await {
            let key = (
                e["tenant"].as_str().unwrap_or_default().to_owned(),
                e["event_type"].as_str().unwrap_or_default().to_owned(),
            );
            *counts.entry(key).or_insert(0) += 1;
        }
        counts
    }

    pub(crate) async fn stop(self) {
        let names = ticketing::db::Names::new(self.fixture.prefix()).unwrap();
        self.running.stop().await.expect("clean stop");
        ticketing::db::drop_all(self.fixture.admin(), &names)
            .await
            .unwrap();
        let _ = std::fs::remove_file(&self.audit_path);
        self.fixture.cleanup().await;
    }
}
