//! API keys, refresh tokens and sessions: every attack the issue names, against the
//! in-memory stores and against the real PostgreSQL and Redis on the machine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use nova_auth::{
    API_KEY_LEN, ApiKeyStore, ApiKeys, AuthError, InMemoryApiKeyStore, InMemoryRefreshStore,
    LockoutPolicy, NewApiKey, PgApiKeyStore, PgRefreshStore, PgSessionStore, RedisSessionStore,
    RefreshStore, RefreshTokens, SessionStore, Sessions, TimeWindow, VerifiedFactor, parse_api_key,
    schema_sql,
};
use nova_tenancy::testing::{PgFixture, service_unavailable};
use nova_tenancy::{Ident, Role, TenantId, UserId};
use proptest::prelude::*;

mod common;
use common::forge_secret;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn spec(tenant: TenantId) -> NewApiKey {
    let mut s = NewApiKey::new(tenant, UserId::new_v4(), Role::new("service").unwrap());
    s.scopes = vec![Role::new("tickets:read").unwrap()];
    s
}

// ----- API keys (generic over the store, run on memory and PostgreSQL) -----

async fn api_key_suite<S: ApiKeyStore>(keys: ApiKeys<S>) {
    let (a, b) = (TenantId::new_v4(), TenantId::new_v4());
    let client = ip("10.1.2.3");

    // Shown once, recognisable, verifies into a service-principal context.
    let (kid, secret) = keys.create(spec(a)).await.unwrap();
    assert!(secret.expose().starts_with("nova_sk_"));
    assert_eq!(secret.expose().len(), API_KEY_LEN);
    assert!(!format!("{secret:?}").contains(&secret.expose()[20..]));
    let ctx = keys.verify(secret.expose(), client).await.unwrap();
    assert_eq!(ctx.tenant(), a);
    assert!(ctx.has_role("service") && ctx.has_permission("tickets:read"));
    let stored = keys.store().get(&kid).await.unwrap().unwrap();
    assert!(stored.last_used_at.is_some(), "last-used time is tracked");

    // A key of tenant A is refused for tenant B's context.
    assert_eq!(
        keys.verify_for_tenant(secret.expose(), b, client)
            .await
            .unwrap_err(),
        AuthError::InvalidCredential
    );
    assert!(
        keys.verify_for_tenant(secret.expose(), a, client)
            .await
            .is_ok()
    );

    // Typos and truncation are caught by the checksum, before any lookup.
    let mut typo = secret.expose().to_owned().into_bytes();
    typo[30] = if typo[30] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    assert!(matches!(
        keys.verify(&typo, client).await.unwrap_err(),
        AuthError::MalformedCredential(_)
    ));
    assert!(matches!(
        keys.verify(&secret.expose()[..60], client)
            .await
            .unwrap_err(),
        AuthError::MalformedCredential(_)
    ));

    // Outside its CIDR allow-list.
    let mut limited = spec(a);
    limited.allowed_cidrs = vec![
        "192.168.10.0/24".parse().unwrap(),
        "2001:db8::/32".parse().unwrap(),
    ];
    let (_, lim) = keys.create(limited).await.unwrap();
    assert!(keys.verify(lim.expose(), ip("192.168.10.7")).await.is_ok());
    assert!(keys.verify(lim.expose(), ip("2001:db8::1")).await.is_ok());
    assert_eq!(
        keys.verify(lim.expose(), ip("192.168.11.7"))
            .await
            .unwrap_err(),
        AuthError::AddressNotAllowed
    );

    // Outside its time window: a window that excludes the current minute.
    let now_min = ((SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 60)
        % 1440) as u16;
    let mut windowed = spec(a);
    windowed.window = Some(TimeWindow {
        start_minute: (now_min + 60) % 1440,
        end_minute: (now_min + 120) % 1440,
    });
    let (_, win) = keys.create(windowed).await.unwrap();
    assert_eq!(
        keys.verify(win.expose(), client).await.unwrap_err(),
        AuthError::OutsideTimeWindow
    );

    // Revoked.
    let (rk, rsecret) = keys.create(spec(a)).await.unwrap();
    keys.revoke(&rk).await.unwrap();
    assert_eq!(
        keys.verify(rsecret.expose(), client).await.unwrap_err(),
        AuthError::Revoked
    );

    // Expired.
    let mut short = spec(a);
    short.ttl = Some(Duration::from_millis(1));
    let (_, ssecret) = keys.create(short).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        keys.verify(ssecret.expose(), client).await.unwrap_err(),
        AuthError::CredentialExpired
    );

    // Rotation with a grace period: both work during it, the old one fails after.
    let (okid, old) = keys.create(spec(a)).await.unwrap();
    let (_, new) = keys
        .rotate(&okid, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(keys.verify(old.expose(), client).await.is_ok());
    assert!(keys.verify(new.expose(), client).await.is_ok());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        keys.verify(old.expose(), client).await.unwrap_err(),
        AuthError::CredentialExpired
    );
    assert!(keys.verify(new.expose(), client).await.is_ok());

    // Lockout: wrong secrets for a real key id, five times, then even the right one fails.
    let (lkid, good) = keys.create(spec(a)).await.unwrap();
    for i in 0..5 {
        let wrong = forge_secret(&lkid);
        let err = keys.verify(&wrong, client).await.unwrap_err();
        let expected = if i < 4 {
            AuthError::InvalidCredential
        } else {
            AuthError::Locked
        };
        assert_eq!(err, expected, "attempt {i}");
    }
    assert_eq!(
        keys.verify(good.expose(), client).await.unwrap_err(),
        AuthError::Locked
    );

    // Unknown key id (well-formed): invalid, not a panic, not a lookup error.
    assert_eq!(
        keys.verify(&forge_secret("aaaaaaaaaaaaaaaa"), client)
            .await
            .unwrap_err(),
        AuthError::InvalidCredential
    );
}

/// A well-formed key (valid checksum) for `kid` with a random secret.

#[tokio::test]
async fn api_keys_in_memory_refuse_every_attack() {
    api_key_suite(ApiKeys::new(InMemoryApiKeyStore::new())).await;
}

fn memory_keys() -> ApiKeys<InMemoryApiKeyStore> {
    ApiKeys::new(InMemoryApiKeyStore::new())
}

#[tokio::test]
async fn api_key_from_tenant_a_is_refused_for_tenant_b() {
    let keys = memory_keys();
    let (a, b) = (TenantId::new_v4(), TenantId::new_v4());
    let (_, secret) = keys.create(spec(a)).await.unwrap();
    assert_eq!(
        keys.verify_for_tenant(secret.expose(), b, ip("10.0.0.1"))
            .await
            .unwrap_err(),
        AuthError::InvalidCredential
    );
    assert_eq!(
        keys.verify(secret.expose(), ip("10.0.0.1"))
            .await
            .unwrap()
            .tenant(),
        a
    );
}

#[tokio::test]
async fn api_key_outside_its_cidr_is_refused_including_ipv4_mapped_addresses() {
    let keys = memory_keys();
    let mut s = spec(TenantId::new_v4());
    s.allowed_cidrs = vec!["192.168.10.0/24".parse().unwrap()];
    let (_, k) = keys.create(s).await.unwrap();
    assert!(keys.verify(k.expose(), ip("192.168.10.9")).await.is_ok());
    assert!(
        keys.verify(k.expose(), ip("::ffff:192.168.10.9"))
            .await
            .is_ok()
    );
    assert_eq!(
        keys.verify(k.expose(), ip("192.168.11.9"))
            .await
            .unwrap_err(),
        AuthError::AddressNotAllowed
    );
    assert_eq!(
        keys.verify(k.expose(), ip("::ffff:192.168.11.9"))
            .await
            .unwrap_err(),
        AuthError::AddressNotAllowed
    );
}

#[tokio::test]
async fn api_key_outside_its_time_window_is_refused() {
    let keys = memory_keys();
    let now_min = ((SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 60)
        % 1440) as u16;
    let mut s = spec(TenantId::new_v4());
    s.window = Some(TimeWindow {
        start_minute: (now_min + 60) % 1440,
        end_minute: (now_min + 120) % 1440,
    });
    let (_, k) = keys.create(s).await.unwrap();
    assert_eq!(
        keys.verify(k.expose(), ip("10.0.0.1")).await.unwrap_err(),
        AuthError::OutsideTimeWindow
    );
    let mut s = spec(TenantId::new_v4());
    s.window = Some(TimeWindow {
        start_minute: 0,
        end_minute: 2000,
    });
    assert!(
        keys.create(s).await.is_err(),
        "minutes beyond a day are refused"
    );
}

#[tokio::test]
async fn revoked_api_key_is_refused_and_cannot_be_rotated_back_to_life() {
    let keys = memory_keys();
    let (kid, k) = keys.create(spec(TenantId::new_v4())).await.unwrap();
    keys.revoke(&kid).await.unwrap();
    assert_eq!(
        keys.verify(k.expose(), ip("10.0.0.1")).await.unwrap_err(),
        AuthError::Revoked
    );
    assert_eq!(
        keys.rotate(&kid, Duration::from_secs(60))
            .await
            .unwrap_err(),
        AuthError::Revoked
    );
}

#[tokio::test]
async fn rotated_api_key_after_its_grace_period_is_refused_and_grace_cannot_be_renewed() {
    let keys = memory_keys();
    let (kid, old) = keys.create(spec(TenantId::new_v4())).await.unwrap();
    let (_, new) = keys.rotate(&kid, Duration::from_millis(100)).await.unwrap();
    assert!(
        keys.verify(old.expose(), ip("10.0.0.1")).await.is_ok(),
        "within grace"
    );
    assert_eq!(
        keys.rotate(&kid, Duration::from_secs(3600))
            .await
            .unwrap_err(),
        AuthError::CredentialExpired,
        "a rotated key cannot be rotated again to extend its grace"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        keys.verify(old.expose(), ip("10.0.0.1")).await.unwrap_err(),
        AuthError::CredentialExpired
    );
    assert!(keys.verify(new.expose(), ip("10.0.0.1")).await.is_ok());
    // An expiring key's successor expires when the old one would have.
    let mut s = spec(TenantId::new_v4());
    s.ttl = Some(Duration::from_secs(3600));
    let (kid2, _) = keys.create(s).await.unwrap();
    let (new_id, _) = keys.rotate(&kid2, Duration::from_secs(1)).await.unwrap();
    let rec = keys.store().get(&new_id).await.unwrap().unwrap();
    let left = rec
        .expires_at
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(left <= Duration::from_secs(3600) && left > Duration::from_secs(3500));
}

#[tokio::test]
async fn api_key_lockout_after_five_failures() {
    let keys = memory_keys();
    let (kid, good) = keys.create(spec(TenantId::new_v4())).await.unwrap();
    for i in 0..5 {
        let err = keys
            .verify(&forge_secret(&kid), ip("10.0.0.1"))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            if i < 4 {
                AuthError::InvalidCredential
            } else {
                AuthError::Locked
            }
        );
    }
    assert_eq!(
        keys.verify(good.expose(), ip("10.0.0.1"))
            .await
            .unwrap_err(),
        AuthError::Locked
    );
}

#[tokio::test]
async fn api_keys_in_postgres_refuse_every_attack() {
    let Some(fx) = PgFixture::new("authkeys").await else {
        return;
    };
    let schema = Ident::new("auth").unwrap();
    fx.exec(&schema_sql(&schema)).await;
    api_key_suite(ApiKeys::new(PgApiKeyStore::new(
        fx.admin().clone(),
        &schema,
    )))
    .await;
    // Only hashes are stored.
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM auth.nova_api_keys WHERE length(secret_hash) = 32",
    )
    .fetch_one(fx.admin())
    .await
    .unwrap();
    assert!(n >= 8);
    fx.cleanup().await;
}

#[tokio::test]
async fn lockout_window_expires_and_success_resets_the_count() {
    let keys = ApiKeys::new(InMemoryApiKeyStore::new()).with_lockout(LockoutPolicy {
        max_failures: 3,
        window: Duration::from_millis(100),
        lock_for: Duration::from_millis(100),
    });
    let (kid, good) = keys.create(spec(TenantId::new_v4())).await.unwrap();
    let c = ip("127.0.0.1");
    for _ in 0..2 {
        keys.verify(&forge_secret(&kid), c).await.unwrap_err();
    }
    assert!(
        keys.verify(good.expose(), c).await.is_ok(),
        "success resets the count"
    );
    for _ in 0..2 {
        keys.verify(&forge_secret(&kid), c).await.unwrap_err();
    }
    assert!(keys.verify(good.expose(), c).await.is_ok());
    for _ in 0..3 {
        keys.verify(&forge_secret(&kid), c).await.unwrap_err();
    }
    assert_eq!(
        keys.verify(good.expose(), c).await.unwrap_err(),
        AuthError::Locked
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        keys.verify(good.expose(), c).await.is_ok(),
        "the lock lifts"
    );
}

// ----- refresh tokens -----

async fn refresh_suite<S: RefreshStore>(tokens: RefreshTokens<S>) {
    let (t, u) = (TenantId::new_v4(), UserId::new_v4());
    let first = tokens.issue(t, u).await.unwrap();
    assert!(first.expose().starts_with("nova_rt_"));
    let second = tokens.rotate(first.expose()).await.unwrap();
    assert_eq!((second.tenant, second.user), (t, u));
    let third = tokens.rotate(second.token.expose()).await.unwrap();
    // Reusing a spent token revokes the whole family, including the newest token.
    assert_eq!(
        tokens.rotate(first.expose()).await.unwrap_err(),
        AuthError::RefreshReuse
    );
    assert_eq!(
        tokens.rotate(third.token.expose()).await.unwrap_err(),
        AuthError::Revoked
    );
    // Malformed and unknown.
    assert!(matches!(
        tokens.rotate("nova_rt_short").await.unwrap_err(),
        AuthError::MalformedCredential(_)
    ));
    let other = tokens.issue(t, u).await.unwrap();
    let mut bytes = other.expose().to_owned().into_bytes();
    let i = 20;
    bytes[i] = if bytes[i] == b'x' { b'y' } else { b'x' };
    assert!(matches!(
        tokens
            .rotate(&String::from_utf8(bytes).unwrap())
            .await
            .unwrap_err(),
        AuthError::MalformedCredential(_)
    ));
    // Another family is unaffected by the reuse above.
    assert!(tokens.rotate(other.expose()).await.is_ok());
}

#[tokio::test]
async fn refresh_tokens_in_memory_rotate_and_detect_reuse() {
    refresh_suite(RefreshTokens::new(InMemoryRefreshStore::new())).await;
    let short = RefreshTokens::new(InMemoryRefreshStore::new()).with_ttl(Duration::from_millis(1));
    let tok = short
        .issue(TenantId::new_v4(), UserId::new_v4())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        short.rotate(tok.expose()).await.unwrap_err(),
        AuthError::CredentialExpired
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_in_postgres_rotate_detect_reuse_and_survive_a_race() {
    let Some(fx) = PgFixture::new("authrefresh").await else {
        return;
    };
    let schema = Ident::new("auth").unwrap();
    fx.exec(&schema_sql(&schema)).await;
    let tokens = std::sync::Arc::new(RefreshTokens::new(PgRefreshStore::new(
        fx.admin().clone(),
        &schema,
    )));
    refresh_suite(RefreshTokens::new(PgRefreshStore::new(
        fx.admin().clone(),
        &schema,
    )))
    .await;
    // Two concurrent rotations of one token are a reuse: at most one gets a successor, and
    // whatever it got is dead too, because the family is revoked either way.
    for _ in 0..10 {
        let tok = tokens
            .issue(TenantId::new_v4(), UserId::new_v4())
            .await
            .unwrap();
        let s = tok.expose().to_owned();
        let (t1, t2) = (tokens.clone(), tokens.clone());
        let (s1, s2) = (s.clone(), s.clone());
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { t1.rotate(&s1).await }),
            tokio::spawn(async move { t2.rotate(&s2).await })
        );
        let results = [r1.unwrap(), r2.unwrap()];
        assert!(
            results.iter().filter(|r| r.is_ok()).count() <= 1,
            "at most one rotation wins"
        );
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(AuthError::RefreshReuse | AuthError::Revoked)))
        );
        if let Some(winner) = results.iter().find_map(|r| r.as_ref().ok()) {
            assert_eq!(
                tokens.rotate(winner.token.expose()).await.unwrap_err(),
                AuthError::Revoked
            );
        }
        assert!(tokens.rotate(&s).await.is_err());
    }
    let hashes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM auth.nova_refresh_tokens WHERE length(token_hash) = 32",
    )
    .fetch_one(fx.admin())
    .await
    .unwrap();
    assert!(hashes > 20);
    fx.cleanup().await;
}

// ----- sessions -----

async fn session_suite<S: SessionStore>(sessions: Sessions<S>, idle: Duration) {
    let (t, u) = (TenantId::new_v4(), UserId::new_v4());
    let s1 = sessions
        .create(t, u, ip("10.0.0.1"), "Mozilla/5.0\n\u{7}")
        .await
        .unwrap();
    let ctx = sessions.validate(s1.expose()).await.unwrap();
    assert_eq!((ctx.tenant(), ctx.user()), (t, Some(u)));
    // Revoke one.
    assert!(sessions.revoke(s1.expose()).await.unwrap());
    assert_eq!(
        sessions.validate(s1.expose()).await.unwrap_err(),
        AuthError::InvalidCredential
    );
    // Idle timeout: activity keeps it alive, silence ends it.
    let s3 = sessions.create(t, u, ip("10.0.0.4"), "x").await.unwrap();
    tokio::time::sleep(idle / 2).await;
    assert!(sessions.validate(s3.expose()).await.is_ok());
    tokio::time::sleep(idle / 2).await;
    assert!(
        sessions.validate(s3.expose()).await.is_ok(),
        "touched, so not idle"
    );
    tokio::time::sleep(idle + Duration::from_millis(50)).await;
    let err = sessions.validate(s3.expose()).await.unwrap_err();
    assert!(
        matches!(err, AuthError::SessionIdle | AuthError::InvalidCredential),
        "{err:?}"
    );
    // Revoke all of a user's sessions; another user's stays.
    let s2 = sessions
        .create(t, u, ip("10.0.0.2"), "curl/8")
        .await
        .unwrap();
    let s4 = sessions.create(t, u, ip("10.0.0.5"), "x").await.unwrap();
    let other_user = sessions
        .create(t, UserId::new_v4(), ip("10.0.0.3"), "x")
        .await
        .unwrap();
    assert!(sessions.revoke_all(t, u).await.unwrap() >= 2);
    assert!(sessions.validate(s2.expose()).await.is_err());
    assert!(sessions.validate(s4.expose()).await.is_err());
    assert!(sessions.validate(other_user.expose()).await.is_ok());
    assert!(matches!(
        sessions.validate("nova_ss_garbage").await.unwrap_err(),
        AuthError::MalformedCredential(_)
    ));
    step_ups(&sessions).await;
}

/// A password login, then a TOTP step-up: the session's contexts carry both methods and
/// the step-up's time, which the MFA policy counts from.
async fn step_ups<S: SessionStore>(sessions: &Sessions<S>) {
    use nova_auth::totp::{MfaPolicy, Sensitive};
    let method = |m: &str| nova_tenancy::AuthMethod::new(m).unwrap();
    let (t, u) = (TenantId::new_v4(), UserId::new_v4());
    let token = sessions
        .create_with_methods(t, u, ip("10.0.0.9"), "x", &[method("pwd")])
        .await
        .unwrap();
    let before = sessions.validate(token.expose()).await.unwrap();
    assert!(!before.has_mfa());
    assert!(
        before.roles().is_empty(),
        "create_with_methods names no role"
    );
    // A sign-in's roles ride with every context of its session, through the store.
    let role = |r: &str| nova_tenancy::Role::new(r).unwrap();
    let login = nova_auth::SessionLogin::new(t, u)
        .roles([role("manager"), role("agent"), role("agent")])
        .methods([method("pwd")]);
    let with_roles = sessions.start(login, ip("10.0.0.9"), "x").await.unwrap();
    let ctx = sessions.validate(with_roles.expose()).await.unwrap();
    let roles: Vec<&str> = ctx.roles().iter().map(|r| r.as_str()).collect();
    assert_eq!(roles, ["agent", "manager"]);
    assert!(ctx.has_role("manager") && !ctx.has_mfa());
    assert!(before.auth_time().is_some(), "the login time");
    let hipaa = MfaPolicy::new().max_age(Duration::from_secs(900));
    let now = SystemTime::now();
    assert!(
        hipaa
            .check_context(Sensitive::AdminAction, &before, now)
            .is_err()
    );
    // A password again is not a second factor.
    assert_eq!(
        VerifiedFactor::attested(t, u, method("pwd")).unwrap_err(),
        AuthError::NotASecondFactor
    );
    // A factor verified for someone else does not step up this session.
    for (other_t, other_u) in [(t, UserId::new_v4()), (TenantId::new_v4(), u)] {
        let theirs = VerifiedFactor::attested(other_t, other_u, method("otp")).unwrap();
        assert_eq!(
            sessions
                .step_up_at(token.expose(), theirs, now)
                .await
                .unwrap_err(),
            AuthError::InvalidCredential
        );
    }
    assert!(!sessions.validate(token.expose()).await.unwrap().has_mfa());
    let otp = || VerifiedFactor::attested(t, u, method("otp")).unwrap();
    let stepped = sessions
        .step_up_at(token.expose(), otp(), now)
        .await
        .unwrap();
    assert!(stepped.has_mfa());
    // Every later request on the session sees the step-up, through the store.
    let later = sessions.validate(token.expose()).await.unwrap();
    let names: Vec<&str> = later.auth_methods().iter().map(|m| m.as_str()).collect();
    assert_eq!(names, ["otp", "pwd"]);
    let at = later.second_factor_time().unwrap();
    let skew = now.duration_since(at).unwrap_or_else(|e| e.duration());
    assert!(skew < Duration::from_millis(2), "{skew:?}");
    assert!(
        hipaa
            .check_context(Sensitive::AdminAction, &later, now)
            .is_ok()
    );
    assert!(
        hipaa
            .check_context(
                Sensitive::AdminAction,
                &later,
                now + Duration::from_secs(901)
            )
            .is_err()
    );
    // A revoked session cannot be stepped up, and the store says so too.
    assert!(sessions.revoke(token.expose()).await.unwrap());
    assert_eq!(
        sessions.step_up(token.expose(), otp()).await.unwrap_err(),
        AuthError::InvalidCredential
    );
    let hash = nova_auth::parse_session_token(token.expose()).unwrap();
    assert!(
        !sessions
            .store()
            .record_step_up(&hash, &[method("otp")], SystemTime::now())
            .await
            .unwrap()
    );
    // A session whose login methods were not recorded gains one kind only.
    let unknown = sessions.create(t, u, ip("10.0.0.9"), "x").await.unwrap();
    let one_kind = sessions.step_up(unknown.expose(), otp()).await.unwrap();
    assert!(!one_kind.has_mfa());
    assert!(
        hipaa
            .check_context(Sensitive::AdminAction, &one_kind, SystemTime::now())
            .is_err()
    );
}

#[tokio::test]
async fn sessions_in_postgres_expire_idle_and_revoke() {
    let Some(fx) = PgFixture::new("authsess").await else {
        return;
    };
    let schema = Ident::new("auth").unwrap();
    fx.exec(&schema_sql(&schema)).await;
    let idle = Duration::from_millis(400);
    let store = PgSessionStore::new(fx.admin().clone(), &schema);
    session_suite(
        Sessions::new(store.clone(), Duration::from_secs(60), idle),
        idle,
    )
    .await;
    // Absolute expiry.
    let short = Sessions::new(store, Duration::from_millis(50), Duration::from_secs(60));
    let s = short
        .create(TenantId::new_v4(), UserId::new_v4(), ip("::1"), "x")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(
        short.validate(s.expose()).await.unwrap_err(),
        AuthError::CredentialExpired
    );
    fx.cleanup().await;
}

#[tokio::test]
async fn sessions_in_redis_expire_idle_and_revoke() {
    let url =
        std::env::var("NOVA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("nova-test-{}", uuid::Uuid::new_v4().simple());
    let store = match RedisSessionStore::connect(&url, &prefix).await {
        Ok(s) => s,
        Err(e) => {
            service_unavailable(
                "Redis",
                &e.to_string(),
                "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no",
            );
            return;
        }
    };
    let idle = Duration::from_millis(400);
    session_suite(
        Sessions::new(store.clone(), Duration::from_secs(60), idle),
        idle,
    )
    .await;
    // Redis expires the key by itself: no validate call needed for it to disappear.
    let sessions = Sessions::new(store, Duration::from_millis(150), Duration::from_secs(60));
    let s = sessions
        .create(TenantId::new_v4(), UserId::new_v4(), ip("::1"), "x")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        sessions.validate(s.expose()).await.unwrap_err(),
        AuthError::InvalidCredential
    );
}

proptest! {
    #[test]
    fn created_api_keys_parse_back_to_their_key_id(n in 1usize..20) {
        let keys = memory_keys();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for _ in 0..n {
            let (kid, secret) = rt.block_on(keys.create(spec(TenantId::new_v4()))).unwrap();
            let parsed = parse_api_key(secret.expose()).unwrap();
            prop_assert_eq!(parsed.key_id, kid.as_str());
        }
    }

    #[test]
    fn api_key_parser_never_panics_and_accepts_only_checksummed_keys(s in "\\PC{0,100}") {
        if let Ok(p) = parse_api_key(&s) {
            prop_assert_eq!(s.len(), API_KEY_LEN);
            prop_assert!(s.starts_with("nova_sk_"));
            prop_assert_eq!(p.key_id.len(), 16);
        }
    }

    #[test]
    fn every_single_character_change_to_an_api_key_is_caught(pos in 8usize..API_KEY_LEN, c in "[a-zA-Z0-9_]") {
        let key = forge_secret("abcdefgh12345678");
        let mut bytes = key.clone().into_bytes();
        let c = c.as_bytes()[0];
        prop_assume!(bytes[pos] != c);
        bytes[pos] = c;
        let changed = String::from_utf8(bytes).unwrap();
        prop_assert!(parse_api_key(&changed).is_err());
    }
}
