//! The guard layer's added latency per request: the same axum handler called with and without
//! `GuardLayer`, in process (no sockets, so only the layer's own work differs), for a bearer
//! JWT (EdDSA) and for an API key, with rate limits on.
//!
//! ```sh
//! cargo bench -p nova-auth --bench layer
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use http::Request;
use nova_auth::layer::{Credentials, GuardConfig, GuardLayer, LimiterStore, RateLimits};
use nova_auth::rate_limit::{Quota, Tier, Tiers};
use nova_auth::{
    AccessClaims, ApiKeys, InMemoryApiKeyStore, JwtConfig, JwtVerifier, NewApiKey, SigningKey,
    StaticKeys, TokenIssuer,
};
use nova_tenancy::{Role, TenantId, UserId};
use tower::ServiceExt as _;

async fn hello() -> &'static str {
    "hello"
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let issuer = TokenIssuer::new("https://auth.bench", "api", SigningKey::generate_ed25519("k").unwrap());
        let verifier = JwtVerifier::new(JwtConfig::new("https://auth.bench", "api"), StaticKeys::new(issuer.key_set().unwrap()));
        let keys = ApiKeys::new(InMemoryApiKeyStore::new());
        let tenant = TenantId::new_v4();
        let (_, secret) = keys.create(NewApiKey::new(tenant, UserId::new_v4(), Role::new("svc").unwrap())).await.unwrap();
        let token = issuer
            .issue(&AccessClaims::new(tenant, UserId::new_v4()).roles([Role::new("agent").unwrap()]))
            .unwrap();
        let mut cfg = GuardConfig::permissive();
        let huge = Quota::per_second(1_000_000, 1_000_000).unwrap();
        cfg.rate_limits = Some(RateLimits {
            store: LimiterStore::local(None),
            tiers: Tiers::new(huge).role("svc", Tier::Service, huge),
            tenant: None,
        });
        let plain = Router::new().route("/", get(hello));
        let guarded = Router::new()
            .route("/", get(hello))
            .layer(GuardLayer::new(cfg, Credentials::new(Some(verifier), Some(keys))));
        let peer: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let request = |header: (&str, String)| {
            let mut r = Request::get("/").header(header.0, header.1).body(Body::empty()).unwrap();
            r.extensions_mut().insert(ConnectInfo(peer));
            r
        };
        let bearer = ("authorization", format!("Bearer {token}"));
        let api_key = ("x-api-key", secret.expose().to_owned());
        for (name, header, n) in [("bearer JWT (EdDSA)", bearer, 2_000u32), ("API key", api_key, 20_000)] {
            // Sanity: the guarded route admits the credential.
            let resp = guarded.clone().oneshot(request(header.clone())).await.unwrap();
            assert_eq!(resp.status(), 200, "{name}");
            let mut with = Vec::new();
            let mut without = Vec::new();
            for round in 0..20 {
                for side in [round % 2, 1 - round % 2] {
                    let start = std::time::Instant::now();
                    for _ in 0..n {
                        let router = if side == 0 { guarded.clone() } else { plain.clone() };
                        black_box(router.oneshot(request(header.clone())).await.unwrap().status());
                    }
                    let per = start.elapsed().as_nanos() as f64 / f64::from(n);
                    if side == 0 { with.push(per) } else { without.push(per) }
                }
            }
            with.sort_by(f64::total_cmp);
            without.sort_by(f64::total_cmp);
            let (w, wo) = (with[10], without[10]);
            println!(
                "{name:<20} with the guard {:8.2} µs  without {:6.2} µs  added {:8.2} µs per request",
                w / 1000.0,
                wo / 1000.0,
                (w - wo) / 1000.0
            );
        }
    });
}
