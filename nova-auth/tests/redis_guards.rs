//! Rate limits and lockout shared through the machine's real Redis: two limiter instances
//! (two "replicas") draw on one budget, bans and locks are seen by every replica, and keys
//! carry Redis Cluster hash tags.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nova_auth::lockout::{LockKey, LockState, LockoutPolicy, RedisLockout};
use nova_auth::rate_limit::{BanPolicy, LimitKey, Quota, RedisLimiter, Verdict};
use nova_tenancy::TenantId;
use nova_tenancy::testing::service_unavailable;

fn url() -> String {
    std::env::var("NOVA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn prefix() -> String {
    format!("nova-test-{}", uuid::Uuid::new_v4().simple())
}

const START: &str =
    "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no";

async fn limiter(prefix: &str, bans: Option<BanPolicy>) -> Option<RedisLimiter> {
    match RedisLimiter::connect(&url(), prefix, bans).await {
        Ok(l) => Some(l),
        Err(e) => {
            service_unavailable("Redis", &e.to_string(), START);
            None
        }
    }
}

async fn cleanup(prefix: &str) {
    let client = redis::Client::open(url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(keys)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn two_replicas_share_one_budget() {
    let p = prefix();
    let (Some(a), Some(b)) = (limiter(&p, None).await, limiter(&p, None).await) else {
        return;
    };
    // 10 at once, then 1 per minute: the two replicas together get exactly 10.
    let q = Quota::new(
        10.try_into().unwrap(),
        1.try_into().unwrap(),
        Duration::from_secs(60),
    )
    .unwrap();
    let key = LimitKey::Tenant(TenantId::new_v4());
    let mut admitted = 0;
    let mut last = Verdict::Allowed;
    for i in 0..30 {
        let replica = if i % 2 == 0 { &a } else { &b };
        last = replica.check(&key, q).await.unwrap();
        admitted += usize::from(last.is_allowed());
    }
    assert_eq!(admitted, 10);
    let Verdict::Limited { retry_after } = last else {
        panic!("{last:?}")
    };
    assert!(
        retry_after > Duration::from_secs(50) && retry_after <= Duration::from_secs(60),
        "{retry_after:?}"
    );
    assert_eq!(
        last.retry_after_secs().map(|s| s > 50 && s <= 60),
        Some(true)
    );
    // Another key has its own budget.
    let other = LimitKey::ip("203.0.113.9".parse().unwrap());
    assert!(a.check(&other, q).await.unwrap().is_allowed());
    cleanup(&p).await;
}

#[tokio::test]
async fn the_budget_refills_at_the_sustained_rate() {
    let p = prefix();
    let Some(a) = limiter(&p, None).await else {
        return;
    };
    // Burst 2, then one per 200 ms.
    let q = Quota::new(
        2.try_into().unwrap(),
        5.try_into().unwrap(),
        Duration::from_secs(1),
    )
    .unwrap();
    let key = LimitKey::ApiKey("k_refill".into());
    assert!(a.check(&key, q).await.unwrap().is_allowed());
    assert!(a.check(&key, q).await.unwrap().is_allowed());
    let v = a.check(&key, q).await.unwrap();
    let Verdict::Limited { retry_after } = v else {
        panic!("{v:?}")
    };
    assert!(retry_after <= Duration::from_millis(200));
    tokio::time::sleep(retry_after + Duration::from_millis(20)).await;
    assert!(a.check(&key, q).await.unwrap().is_allowed());
    cleanup(&p).await;
}

#[tokio::test]
async fn a_ban_on_one_replica_holds_on_the_other() {
    let p = prefix();
    let bans = BanPolicy {
        violations: 3,
        window: Duration::from_secs(10),
        ban: Duration::from_secs(30),
    };
    let (Some(a), Some(b)) = (limiter(&p, Some(bans)).await, limiter(&p, Some(bans)).await) else {
        return;
    };
    let q = Quota::per_second(1, 1).unwrap();
    let key = LimitKey::ip("198.51.100.77".parse().unwrap());
    assert!(a.check(&key, q).await.unwrap().is_allowed());
    assert!(matches!(
        a.check(&key, q).await.unwrap(),
        Verdict::Limited { .. }
    ));
    assert!(matches!(
        b.check(&key, q).await.unwrap(),
        Verdict::Limited { .. }
    ));
    assert!(matches!(
        a.check(&key, q).await.unwrap(),
        Verdict::Banned { .. }
    ));
    // Even after the quota would have refilled, the other replica refuses.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let v = b.check(&key, q).await.unwrap();
    let Verdict::Banned { retry_after } = v else {
        panic!("{v:?}")
    };
    assert!(retry_after > Duration::from_secs(25));
    cleanup(&p).await;
}

#[tokio::test]
async fn keys_are_hash_tagged_for_redis_cluster() {
    let p = prefix();
    let Some(a) = limiter(&p, Some(BanPolicy::default())).await else {
        return;
    };
    let q = Quota::per_second(1, 1).unwrap();
    let key = LimitKey::Custom("odd{key}".into());
    assert!(a.check(&key, q).await.unwrap().is_allowed());
    let client = redis::Client::open(url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{p}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    for k in &keys {
        // One `{…}` tag naming the budget, so a script's keys share a cluster slot.
        assert_eq!(k.matches('{').count(), 1, "{k}");
        assert!(k.contains("{c:odd_key_}"), "{k}");
    }
    cleanup(&p).await;
}

#[tokio::test]
async fn lockout_is_shared_between_replicas_and_reset_on_success() {
    let p = prefix();
    let policy = LockoutPolicy {
        max_failures: 5,
        window: Duration::from_secs(900),
        lock_for: Duration::from_secs(900),
    };
    let (a, b) = match (
        RedisLockout::connect(&url(), &p, policy).await,
        RedisLockout::connect(&url(), &p, policy).await,
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            service_unavailable("Redis", &e.to_string(), START);
            return;
        }
    };
    let key = LockKey::Account {
        tenant: TenantId::new_v4(),
        account: "alice".into(),
    };
    for i in 1..=2 {
        assert_eq!(
            a.record_failure(&key).await.unwrap(),
            LockState::Open { failures: i }
        );
    }
    // A success resets the count; the next failures start over.
    b.reset(&key).await.unwrap();
    assert_eq!(
        b.check(&key).await.unwrap(),
        LockState::Open { failures: 0 }
    );
    for i in 1..=4 {
        let replica = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            replica.record_failure(&key).await.unwrap(),
            LockState::Open { failures: i }
        );
    }
    assert!(a.record_failure(&key).await.unwrap().is_locked());
    let LockState::Locked { retry_after } = b.check(&key).await.unwrap() else {
        panic!("not locked")
    };
    assert!(retry_after > Duration::from_secs(890));
    // A success does not lift a lock in force.
    a.reset(&key).await.unwrap();
    assert!(b.check(&key).await.unwrap().is_locked());
    // Another account is untouched.
    let other = LockKey::Account {
        tenant: TenantId::new_v4(),
        account: "alice".into(),
    };
    assert_eq!(
        a.check(&other).await.unwrap(),
        LockState::Open { failures: 0 }
    );
    cleanup(&p).await;
}

#[tokio::test]
async fn a_totp_step_accepted_on_one_replica_is_refused_on_every_other() {
    use nova_auth::totp::{RedisReplayGuard, TotpReplayGuard};
    let p = prefix();
    let (a, b) = match (
        RedisReplayGuard::connect(&url(), &p).await,
        RedisReplayGuard::connect(&url(), &p).await,
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            service_unavailable("Redis", &e.to_string(), START);
            return;
        }
    };
    let (tenant, user) = (TenantId::new_v4(), nova_tenancy::UserId::new_v4());
    assert!(a.accept_step(tenant, user, 59_000_000).await.unwrap());
    assert!(
        !b.accept_step(tenant, user, 59_000_000).await.unwrap(),
        "the same step on another replica"
    );
    assert!(
        !b.accept_step(tenant, user, 58_999_999).await.unwrap(),
        "an earlier step"
    );
    assert!(b.accept_step(tenant, user, 59_000_001).await.unwrap());
    assert!(!a.accept_step(tenant, user, 59_000_001).await.unwrap());
    // Another user, or the same user id in another tenant, is independent.
    assert!(
        a.accept_step(TenantId::new_v4(), user, 59_000_000)
            .await
            .unwrap()
    );
    assert!(
        a.accept_step(tenant, nova_tenancy::UserId::new_v4(), 59_000_000)
            .await
            .unwrap()
    );
    cleanup(&p).await;
}
