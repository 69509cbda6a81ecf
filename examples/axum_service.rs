//! A service behind Nova's HTTP guard: configuration from a `[security]` TOML section,
//! bearer JWTs for users, API keys for services, IP rules, rate limits with `Retry-After`,
//! and handlers that receive a verified `TenantContext`.
//!
//! ```text
//! cargo run --example axum_service
//! ```
//!
//! It serves on a loopback port, sends itself a few requests, prints what each got, and
//! exits (non-zero if any answer was not the expected one).

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use nova_auth::config::AuthConfig;
use nova_auth::layer::{Authenticated, Credentials, GuardLayer};
use nova_auth::{
    AccessClaims, ApiKeys, InMemoryApiKeyStore, JwtConfig, JwtVerifier, NewApiKey, SigningKey,
    StaticKeys, TokenIssuer,
};
use nova_tenancy::{Role, TenantId, UserId};

const CONFIG: &str = r#"
[security]
profile = "production"

[security.http]
max_body_bytes = 65536
trusted_proxies = []            # no proxy in front: the TCP peer is the client

[security.network]
default = "allow"
deny = ["192.0.2.0/24"]         # TEST-NET-1, for the demonstration

[security.rate_limiting]
enabled = true
store = "local"                 # "redis" with redis_url to share budgets between replicas
end_user = { rate = 1, per_seconds = 10, burst = 5 }
service = { rate = 100, per_seconds = 1, burst = 200 }
roles = { svc = "service" }
"#;

async fn tickets(Authenticated(ctx): Authenticated) -> String {
    // Everything below here may trust `ctx`: a verified tenant, user and roles.
    format!("tickets of tenant {}", ctx.tenant())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Refused at start-up if insecure for production (try allow_plaintext = true).
    let config = AuthConfig::from_toml(CONFIG)?;
    let guard = config.guard_config()?;

    let issuer = TokenIssuer::new(
        "https://auth.acme.example",
        "tickets-api",
        SigningKey::generate_ed25519("2026-11")?,
    );
    let jwt = JwtVerifier::new(
        JwtConfig::new("https://auth.acme.example", "tickets-api"),
        StaticKeys::new(issuer.key_set()?),
    );
    let api_keys = ApiKeys::new(InMemoryApiKeyStore::new());
    let tenant = TenantId::new_v4();
    let (_, secret) = api_keys
        .create(NewApiKey::new(tenant, UserId::new_v4(), Role::new("svc")?))
        .await?;

    let app = Router::new()
        .route("/tickets", get(tickets))
        .layer(GuardLayer::new(
            guard,
            Credentials::new(Some(jwt), Some(api_keys)),
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    let client = reqwest::Client::new();
    let url = format!("{base}/tickets");
    let token =
        issuer.issue(&AccessClaims::new(tenant, UserId::new_v4()).roles([Role::new("agent")?]))?;
    let mut ok = true;
    let mut show = |what: &str, r: &reqwest::Response, want: u16| {
        let retry = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(|v| format!(", Retry-After: {v} s"))
            .unwrap_or_default();
        println!("{what:<48} -> {}{retry}", r.status());
        ok &= r.status().as_u16() == want;
    };

    let r = client.get(&url).send().await?;
    show("no credential", &r, 401);
    let r = client
        .get(&url)
        .bearer_auth("forged.token.here")
        .send()
        .await?;
    show("a forged bearer token", &r, 401);
    // The two failures above spent 2 of this address's burst of 5: guessing is slowed.
    for i in 1..=3 {
        let r = client.get(&url).bearer_auth(&token).send().await?;
        show(&format!("user request {i} (3 left of the burst)"), &r, 200);
    }
    let r = client.get(&url).bearer_auth(&token).send().await?;
    show("user request 4: over the end-user quota", &r, 429);
    let r = client
        .get(&url)
        .header("x-api-key", secret.expose())
        .send()
        .await?;
    show("service account (API key, service tier)", &r, 200);
    println!("  body: {}", r.text().await?);
    let r = client
        .get(&url)
        .header("x-api-key", secret.expose())
        .header("x-tenant-id", TenantId::new_v4().to_string())
        .send()
        .await?;
    show("the same key asking for another tenant", &r, 403);

    server.abort();
    if ok {
        println!("\nevery answer was the expected one");
        Ok(())
    } else {
        Err("an answer differed from the expected one".into())
    }
}
