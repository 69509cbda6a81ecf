//! The guard layer driven through a real HTTP server on loopback and a real client: missing,
//! invalid and expired credentials, the wrong tenant, denied and spoofed addresses, rate limits
//! with `Retry-After`, oversized bodies, HSTS, and the context reaching the handler.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::routing::{get, post};
use nova_auth::ip_rules::{DefaultAction, IpRules, TrustedProxies};
use nova_auth::layer::{
    Authenticated, ClientAddr, Credentials, GuardConfig, GuardLayer, LimiterStore, RateLimits,
};
use nova_auth::rate_limit::{Quota, Tier, Tiers};
use nova_auth::{
    AccessClaims, ApiKeys, InMemoryApiKeyStore, JwtConfig, JwtVerifier, NewApiKey, SigningKey,
    StaticKeys, TokenIssuer,
};
use nova_tenancy::{Role, TenantId, UserId};

struct Fixture {
    base: String,
    client: reqwest::Client,
    issuer: TokenIssuer,
    tenant: TenantId,
    api_key: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn whoami(
    Authenticated(ctx): Authenticated,
    axum::Extension(ClientAddr(ip)): axum::Extension<ClientAddr>,
) -> String {
    format!(
        "{} {} {ip}",
        ctx.tenant(),
        ctx.roles()
            .iter()
            .map(Role::as_str)
            .collect::<Vec<_>>()
            .join(",")
    )
}

async fn upload(Authenticated(_): Authenticated, body: axum::body::Bytes) -> String {
    body.len().to_string()
}

async fn start(config: impl FnOnce(GuardConfig) -> GuardConfig) -> Fixture {
    let issuer = TokenIssuer::new(
        "https://auth.test",
        "api",
        SigningKey::generate_ed25519("k1").unwrap(),
    );
    let verifier = JwtVerifier::new(
        JwtConfig::new("https://auth.test", "api"),
        StaticKeys::new(issuer.key_set().unwrap()),
    );
    let api_keys = ApiKeys::new(InMemoryApiKeyStore::new());
    let tenant = TenantId::new_v4();
    let (_, secret) = api_keys
        .create(NewApiKey::new(
            tenant,
            UserId::new_v4(),
            Role::new("service").unwrap(),
        ))
        .await
        .unwrap();
    let mut cfg = GuardConfig::permissive();
    cfg.max_body_bytes = 1024;
    let cfg = config(cfg);
    let app = Router::new()
        .route("/whoami", get(whoami))
        .route("/upload", post(upload))
        .layer(GuardLayer::new(
            cfg,
            Credentials::new(Some(verifier), Some(api_keys)),
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Fixture {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        issuer,
        tenant,
        api_key: secret.expose().to_owned(),
        server,
    }
}

impl Fixture {
    fn token(&self, roles: &[&str]) -> String {
        self.issuer
            .issue(
                &AccessClaims::new(self.tenant, UserId::new_v4())
                    .roles(roles.iter().map(|r| Role::new(r).unwrap())),
            )
            .unwrap()
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.base))
    }
}

fn hsts(r: &reqwest::Response) -> bool {
    r.headers()
        .get("strict-transport-security")
        .is_some_and(|v| v.to_str().unwrap().starts_with("max-age="))
}

#[tokio::test]
async fn a_valid_bearer_token_reaches_the_handler_with_its_tenant() {
    let f = start(|c| c).await;
    let r = f
        .get("/whoami")
        .bearer_auth(f.token(&["agent"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(hsts(&r));
    assert_eq!(
        r.text().await.unwrap(),
        format!("{} agent 127.0.0.1", f.tenant)
    );
    // An API key, in its header or as an Authorization scheme.
    let r = f
        .get("/whoami")
        .header("x-api-key", &f.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("service"));
    let r = f
        .get("/whoami")
        .header("authorization", format!("ApiKey {}", f.api_key))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn missing_invalid_and_expired_credentials_get_401_without_detail() {
    let f = start(|c| c).await;
    let expired = f
        .issuer
        .issue_at(
            &AccessClaims::new(f.tenant, UserId::new_v4()),
            SystemTime::now() - Duration::from_secs(7200),
        )
        .unwrap();
    let mut tampered = f.token(&["agent"]).into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("missing", f.get("/whoami")),
        ("garbage bearer", f.get("/whoami").bearer_auth("not.a.jwt")),
        ("tampered", f.get("/whoami").bearer_auth(&tampered)),
        ("expired", f.get("/whoami").bearer_auth(&expired)),
        (
            "unknown scheme",
            f.get("/whoami")
                .header("authorization", "Basic dXNlcjpwYXNz"),
        ),
        (
            "empty bearer",
            f.get("/whoami").header("authorization", "Bearer "),
        ),
        (
            "wrong api key",
            f.get("/whoami").header(
                "x-api-key",
                "nk_live_0000000000000000_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx_0000000",
            ),
        ),
        (
            "two credentials",
            f.get("/whoami")
                .bearer_auth(f.token(&[]))
                .header("x-api-key", &f.api_key),
        ),
    ];
    for (name, req) in cases {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{name}");
        assert_eq!(
            r.headers().get("www-authenticate").unwrap(),
            "Bearer",
            "{name}"
        );
        assert!(hsts(&r), "{name}");
        assert_eq!(
            r.text().await.unwrap(),
            "unauthorized",
            "{name}: no internal detail"
        );
    }
}

#[tokio::test]
async fn a_credential_for_another_tenant_is_forbidden() {
    let f = start(|c| c).await;
    let r = f
        .get("/whoami")
        .bearer_auth(f.token(&["agent"]))
        .header("x-tenant-id", TenantId::new_v4().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = f
        .get("/whoami")
        .bearer_auth(f.token(&["agent"]))
        .header("x-tenant-id", "not-a-tenant")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = f
        .get("/whoami")
        .bearer_auth(f.token(&["agent"]))
        .header("x-tenant-id", f.tenant.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_denied_address_is_forbidden_and_a_spoofed_forwarded_for_does_not_help() {
    // Loopback denied; the client is connecting from loopback and is not a trusted proxy, so
    // its X-Forwarded-For claim is ignored.
    let f = start(|mut c| {
        c.ip_rules = IpRules::new(DefaultAction::Allow).deny("127.0.0.0/8".parse().unwrap());
        c
    })
    .await;
    for xff in [None, Some("203.0.113.7"), Some("203.0.113.7, 198.51.100.1")] {
        let mut req = f.get("/whoami").bearer_auth(f.token(&["agent"]));
        if let Some(x) = xff {
            req = req.header("x-forwarded-for", x);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403, "{xff:?}");
        assert!(hsts(&r));
        assert_eq!(r.text().await.unwrap(), "forbidden");
    }
}

#[tokio::test]
async fn forwarded_for_from_a_trusted_proxy_names_the_client() {
    let f = start(|mut c| {
        c.trusted_proxies = "127.0.0.1".parse::<TrustedProxies>().unwrap();
        c.ip_rules = IpRules::new(DefaultAction::Allow).deny("203.0.113.0/24".parse().unwrap());
        c
    })
    .await;
    let ok = f
        .get("/whoami")
        .bearer_auth(f.token(&["agent"]))
        .header("x-forwarded-for", "6.6.6.6, 198.51.100.4")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(
        ok.text().await.unwrap().ends_with(" 198.51.100.4"),
        "the right-most untrusted hop"
    );
    let denied = f
        .get("/whoami")
        .bearer_auth(f.token(&["agent"]))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let garbage = f
        .get("/whoami")
        .bearer_auth(f.token(&["agent"]))
        .header("x-forwarded-for", "unknown")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 403);
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after_by_tier() {
    let f = start(|mut c| {
        let slow = Quota::new(
            3.try_into().unwrap(),
            1.try_into().unwrap(),
            Duration::from_secs(30),
        )
        .unwrap();
        let fast = Quota::per_second(1000, 1000).unwrap();
        c.rate_limits = Some(RateLimits {
            store: LimiterStore::local(None),
            tiers: Tiers::new(slow).role("service", Tier::Service, fast),
            tenant: None,
        });
        c
    })
    .await;
    let token = f.token(&["viewer"]);
    for _ in 0..3 {
        assert_eq!(
            f.get("/whoami")
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let r = f.get("/whoami").bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((25..=30).contains(&retry), "{retry}");
    assert!(hsts(&r));
    // Budgets are per tier: a service account (API key) from the same address and tenant is
    // not held back by the end user's spent budget.
    let r = f
        .get("/whoami")
        .header("x-api-key", &f.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn guessing_credentials_spends_the_address_budget() {
    let f = start(|mut c| {
        let q = Quota::new(
            2.try_into().unwrap(),
            1.try_into().unwrap(),
            Duration::from_secs(60),
        )
        .unwrap();
        c.rate_limits = Some(RateLimits {
            store: LimiterStore::local(None),
            tiers: Tiers::new(q),
            tenant: None,
        });
        c
    })
    .await;
    assert_eq!(
        f.get("/whoami")
            .bearer_auth("x")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        f.get("/whoami")
            .bearer_auth("x")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = f.get("/whoami").bearer_auth("x").send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
}

#[tokio::test]
async fn oversized_bodies_get_413_whether_announced_or_streamed() {
    let f = start(|c| c).await;
    let url = format!("{}/upload", f.base);
    let ok = f
        .client
        .post(&url)
        .bearer_auth(f.token(&[]))
        .body(vec![b'a'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1024");
    let announced = f
        .client
        .post(&url)
        .bearer_auth(f.token(&[]))
        .body(vec![b'a'; 1025])
        .send()
        .await
        .unwrap();
    assert_eq!(announced.status(), 413);
    assert!(hsts(&announced));
    // Chunked, with no Content-Length: the limit is enforced while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'b'; 512])).collect();
    let streamed = f
        .client
        .post(&url)
        .bearer_auth(f.token(&[]))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 413);
}

#[tokio::test]
async fn one_caller_cannot_spend_the_whole_tenant_budget() {
    let f = start(|mut c| {
        c.trusted_proxies = "127.0.0.1".parse::<TrustedProxies>().unwrap();
        let per_caller = Quota::new(
            3.try_into().unwrap(),
            1.try_into().unwrap(),
            Duration::from_secs(60),
        )
        .unwrap();
        let tenant = Quota::new(
            5.try_into().unwrap(),
            1.try_into().unwrap(),
            Duration::from_secs(60),
        )
        .unwrap();
        c.rate_limits = Some(RateLimits {
            store: LimiterStore::local(None),
            tiers: Tiers::new(per_caller),
            tenant: Some(tenant),
        });
        c
    })
    .await;
    let token = f.token(&[]);
    let from = |ip: &str| {
        f.get("/whoami")
            .bearer_auth(&token)
            .header("x-forwarded-for", ip.to_owned())
    };
    // Caller A uses its 3, then is limited — without spending the tenant's budget.
    for _ in 0..3 {
        assert_eq!(from("198.51.100.1").send().await.unwrap().status(), 200);
    }
    for _ in 0..3 {
        assert_eq!(from("198.51.100.1").send().await.unwrap().status(), 429);
    }
    // Caller B, same tenant, another address: the tenant has 2 left of its 5.
    assert_eq!(from("198.51.100.2").send().await.unwrap().status(), 200);
    assert_eq!(from("198.51.100.2").send().await.unwrap().status(), 200);
    assert_eq!(
        from("198.51.100.2").send().await.unwrap().status(),
        429,
        "the tenant-wide budget"
    );
}

#[tokio::test]
async fn a_repeated_tenant_header_is_refused() {
    let f = start(|c| c).await;
    let r = f
        .get("/whoami")
        .bearer_auth(f.token(&[]))
        .header("x-tenant-id", f.tenant.to_string())
        .header("x-tenant-id", TenantId::new_v4().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn two_guarded_replicas_share_budgets_through_redis() {
    use nova_auth::rate_limit::RedisLimiter;
    let url =
        std::env::var("NOVA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("nova-test-{}", uuid::Uuid::new_v4().simple());
    let limiter = match RedisLimiter::connect(&url, &prefix, None).await {
        Ok(l) => l,
        Err(e) => {
            nova_tenancy::testing::service_unavailable(
                "Redis",
                &e.to_string(),
                "redis-server --daemonize yes",
            );
            return;
        }
    };
    let q = Quota::new(
        4.try_into().unwrap(),
        1.try_into().unwrap(),
        Duration::from_secs(60),
    )
    .unwrap();
    let with_redis = |l: RedisLimiter| {
        move |mut c: GuardConfig| {
            c.rate_limits = Some(RateLimits {
                store: LimiterStore::Redis(l),
                tiers: Tiers::new(q),
                tenant: None,
            });
            c
        }
    };
    let a = start(with_redis(limiter.clone())).await;
    let b = start(with_redis(limiter)).await;
    // Same client address (loopback) and tier: one budget of 4 across both replicas.
    let mut statuses = Vec::new();
    for i in 0..6 {
        let f = if i % 2 == 0 { &a } else { &b };
        statuses.push(
            f.get("/whoami")
                .bearer_auth(f.token(&[]))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    let client = redis::Client::open(url).unwrap();
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
async fn a_banned_address_is_refused_before_any_credential_is_checked() {
    use nova_auth::rate_limit::BanPolicy;
    let f = start(|mut c| {
        let q = Quota::new(
            1.try_into().unwrap(),
            1.try_into().unwrap(),
            Duration::from_secs(60),
        )
        .unwrap();
        let bans = BanPolicy {
            violations: 2,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(600),
        };
        c.rate_limits = Some(RateLimits {
            store: LimiterStore::local(Some(bans)),
            tiers: Tiers::new(q).role(
                "service",
                Tier::Service,
                Quota::per_second(1000, 1000).unwrap(),
            ),
            tenant: None,
        });
        c
    })
    .await;
    // Guessing: 401, then limited, then banned.
    assert_eq!(
        f.get("/whoami")
            .bearer_auth("guess")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        f.get("/whoami")
            .bearer_auth("guess")
            .send()
            .await
            .unwrap()
            .status(),
        429
    );
    let banned = f.get("/whoami").bearer_auth("guess").send().await.unwrap();
    assert_eq!(banned.status(), 429);
    let secs: u64 = banned.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs > 590, "{secs}");
    // Now even a valid service credential from that address is refused, unverified.
    let r = f
        .get("/whoami")
        .header("x-api-key", &f.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}
