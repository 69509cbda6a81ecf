//! The HTTP guard: a tower [`Layer`] that takes every request through IP rules → credential
//! (bearer JWT or API key) → [`TenantContext`] → rate limit, puts the context in the request's
//! extensions, and answers 401/403/413/429 (503 if a shared store fails) with no internal
//! detail. Every response carries HSTS; request bodies are bounded.
//!
//! Handlers take the context with the [`Authenticated`] extractor (axum), or from the
//! extensions directly. The client address comes from axum's `ConnectInfo<SocketAddr>` (serve
//! with `into_make_service_with_connect_info`), corrected through the trusted proxies only; a
//! request without a peer address is refused, never guessed about.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts};
use http::{HeaderValue, Request, Response, StatusCode, header};
use nova_tenancy::{SecurityEvent, TenantContext, TenantId, report};
use tower::{Layer, Service};

use crate::error::AuthError;
use crate::ip_rules::{IpRules, TrustedProxies};
use crate::rate_limit::{LimitKey, LocalLimiter, Quota, Tiers, Verdict};

/// Where the guard finds credentials: implement it over your verifiers, or use
/// [`Credentials`].
pub trait Authenticator: Send + Sync + 'static {
    /// Verifies a bearer token (the part after `Bearer `).
    fn bearer(&self, token: &str) -> impl Future<Output = Result<TenantContext, AuthError>> + Send;
    /// Verifies an API key presented by `client`.
    fn api_key(
        &self,
        key: &str,
        client: IpAddr,
    ) -> impl Future<Output = Result<TenantContext, AuthError>> + Send;
}

/// JWTs through a [`JwtVerifier`](crate::JwtVerifier) and API keys through
/// [`ApiKeys`](crate::ApiKeys); either may be absent (its credentials are then refused).
pub struct Credentials<K: crate::KeySource, S: crate::ApiKeyStore> {
    jwt: Option<crate::JwtVerifier<K>>,
    api_keys: Option<crate::ApiKeys<S>>,
}

impl<K: crate::KeySource, S: crate::ApiKeyStore> Credentials<K, S> {
    /// Credentials from these verifiers.
    #[must_use]
    pub fn new(jwt: Option<crate::JwtVerifier<K>>, api_keys: Option<crate::ApiKeys<S>>) -> Self {
        Self { jwt, api_keys }
    }
}

impl<K, S> Authenticator for Credentials<K, S>
where
    K: crate::KeySource + Send + Sync + 'static,
    S: crate::ApiKeyStore + 'static,
{
    async fn bearer(&self, token: &str) -> Result<TenantContext, AuthError> {
        match &self.jwt {
            Some(v) => v.verify(token).await,
            None => Err(AuthError::InvalidCredential),
        }
    }

    async fn api_key(&self, key: &str, client: IpAddr) -> Result<TenantContext, AuthError> {
        match &self.api_keys {
            Some(k) => k.verify(key, client).await,
            None => Err(AuthError::InvalidCredential),
        }
    }
}

/// Where rate-limit budgets live.
#[derive(Debug, Clone)]
pub enum LimiterStore {
    /// In this process (one replica); budgets are per key and tier.
    Local(Arc<LocalLimiter<(LimitKey, u8)>>),
    /// In Redis, shared by every replica.
    #[cfg(feature = "redis")]
    Redis(crate::rate_limit::RedisLimiter),
}

impl LimiterStore {
    /// A local store.
    #[must_use]
    pub fn local(bans: Option<crate::rate_limit::BanPolicy>) -> Self {
        Self::Local(Arc::new(LocalLimiter::new(bans)))
    }

    async fn check(&self, key: LimitKey, tier: u8, q: Quota) -> Result<Verdict, ()> {
        match self {
            Self::Local(l) => Ok(l.check(&(key, tier), q)),
            #[cfg(feature = "redis")]
            Self::Redis(r) => {
                let key = LimitKey::Custom(format!("{}#{tier}", key.to_text()).into());
                r.check(&key, q).await.map_err(|_| ())
            }
        }
    }
}

/// Rate limiting as the guard applies it: one budget per client address and per API key at
/// the quota of the caller's tier, then one tenant-wide budget at its own (larger) quota, so
/// that one caller cannot spend a whole tenant's budget; unauthenticated failures spend the
/// client address's budget at the default tier, so guessing credentials is slowed too.
#[derive(Debug, Clone)]
pub struct RateLimits {
    /// Where budgets live.
    pub store: LimiterStore,
    /// Quotas by role, per address and per key.
    pub tiers: Tiers,
    /// The quota of a whole tenant, across all its callers (`None`: no tenant-wide budget).
    pub tenant: Option<Quota>,
}

/// The guard's settings. Build it in code, or from a TOML section with
/// [`crate::config::AuthConfig`].
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Network rules for the client address.
    pub ip_rules: IpRules,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// Rate limits; `None` turns them off (refused in a production profile).
    pub rate_limits: Option<RateLimits>,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// `Strict-Transport-Security` value set on every response (`None`: not set).
    pub hsts: Option<HeaderValue>,
}

impl GuardConfig {
    /// Allow every address, trust no proxy, no rate limits, 1 MiB bodies, HSTS for a year.
    #[must_use]
    pub fn permissive() -> Self {
        Self {
            ip_rules: IpRules::new(crate::ip_rules::DefaultAction::Allow),
            trusted_proxies: TrustedProxies::none(),
            rate_limits: None,
            max_body_bytes: 1 << 20,
            hsts: Some(HeaderValue::from_static(
                "max-age=31536000; includeSubDomains",
            )),
        }
    }
}

/// The request header carrying an API key (or use `Authorization: ApiKey <key>`).
pub const API_KEY_HEADER: &str = "x-api-key";
/// An optional request header naming the tenant the caller means to act in; a credential for
/// another tenant is refused (403) and reported as a cross-tenant attempt.
pub const TENANT_HEADER: &str = "x-tenant-id";

struct Shared<A> {
    config: GuardConfig,
    auth: A,
    /// Addresses this replica has seen banned, until when: refused before any credential is
    /// verified, whatever tier the credential would have had.
    banned: std::sync::Mutex<std::collections::HashMap<IpAddr, std::time::Instant>>,
}

/// Most banned addresses remembered locally (older entries are swept first).
const MAX_LOCAL_BANS: usize = 100_000;

impl<A> Shared<A> {
    fn banned_for(&self, ip: IpAddr) -> Option<u64> {
        let map = self
            .banned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let until = *map.get(&ip)?;
        let left = until.checked_duration_since(std::time::Instant::now())?;
        Some(left.as_secs() + u64::from(left.subsec_nanos() > 0))
    }

    fn remember_ban(&self, ip: IpAddr, v: Verdict) {
        if let Verdict::Banned { retry_after } = v {
            let now = std::time::Instant::now();
            let mut map = self
                .banned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if map.len() >= MAX_LOCAL_BANS {
                map.retain(|_, until| *until > now);
            }
            if map.len() < MAX_LOCAL_BANS
                && let Some(until) = now.checked_add(retry_after)
            {
                map.insert(ip, until);
            }
        }
    }
}

/// The tower layer. See the module docs.
pub struct GuardLayer<A> {
    shared: Arc<Shared<A>>,
}

impl<A> Clone for GuardLayer<A> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<A: Authenticator> GuardLayer<A> {
    /// A layer applying `config` with credentials checked by `auth`.
    #[must_use]
    pub fn new(config: GuardConfig, auth: A) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                auth,
                banned: std::sync::Mutex::default(),
            }),
        }
    }
}

impl<S, A> Layer<S> for GuardLayer<A> {
    type Service = Guard<S, A>;
    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service [`GuardLayer`] wraps around yours.
pub struct Guard<S, A> {
    inner: S,
    shared: Arc<Shared<A>>,
}

impl<S: Clone, A> Clone for Guard<S, A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Why a request was turned away (kept inside; the client sees only the status).
enum Refusal {
    Unauthorized,
    Forbidden,
    TooLarge,
    TooMany(Option<u64>),
    Unavailable,
}

fn refuse(r: &Refusal, hsts: Option<&HeaderValue>) -> Response<Body> {
    let (status, text) = match r {
        Refusal::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
        Refusal::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
        Refusal::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload too large"),
        Refusal::TooMany(_) => (StatusCode::TOO_MANY_REQUESTS, "too many requests"),
        Refusal::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if matches!(r, Refusal::Unauthorized) {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Refusal::TooMany(Some(secs)) = r {
        h.insert(header::RETRY_AFTER, HeaderValue::from(*secs));
    }
    if let Some(v) = hsts {
        h.insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
    }
    resp
}

fn refusal_for(e: &AuthError) -> Refusal {
    match e {
        AuthError::AddressNotAllowed | AuthError::OutsideTimeWindow => Refusal::Forbidden,
        AuthError::Locked => Refusal::TooMany(None),
        AuthError::Store(_) | AuthError::KeyFetch(_) => Refusal::Unavailable,
        _ => Refusal::Unauthorized,
    }
}

enum Presented<'a> {
    Bearer(&'a str),
    ApiKey(&'a str),
}

/// The credential in the headers: `Authorization: Bearer …`, `Authorization: ApiKey …` or
/// `X-Api-Key: …`. More than one, or a malformed one, is refused.
fn presented(headers: &http::HeaderMap) -> Result<Option<Presented<'_>>, Refusal> {
    let mut auth = headers.get_all(header::AUTHORIZATION).iter();
    let mut keys = headers.get_all(API_KEY_HEADER).iter();
    let (a, k) = (auth.next(), keys.next());
    if auth.next().is_some() || keys.next().is_some() || (a.is_some() && k.is_some()) {
        return Err(Refusal::Unauthorized);
    }
    if let Some(k) = k {
        let k = k.to_str().map_err(|_| Refusal::Unauthorized)?;
        return Ok(Some(Presented::ApiKey(k.trim())));
    }
    let Some(a) = a else {
        return Ok(None);
    };
    let a = a.to_str().map_err(|_| Refusal::Unauthorized)?;
    let (scheme, rest) = a.split_once(' ').ok_or(Refusal::Unauthorized)?;
    let rest = rest.trim();
    if rest.is_empty() {
        return Err(Refusal::Unauthorized);
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        Ok(Some(Presented::Bearer(rest)))
    } else if scheme.eq_ignore_ascii_case("apikey") {
        Ok(Some(Presented::ApiKey(rest)))
    } else {
        Err(Refusal::Unauthorized)
    }
}

impl<S, A> Service<Request<Body>> for Guard<S, A>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    A: Authenticator,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let hsts = shared.config.hsts.clone();
            let req = match admit(&shared, req).await {
                Ok(req) => req,
                Err(r) => return Ok(refuse(&r, hsts.as_ref())),
            };
            let mut resp = inner.call(req).await?;
            if let Some(v) = hsts {
                resp.headers_mut()
                    .insert(header::STRICT_TRANSPORT_SECURITY, v);
            }
            Ok(resp)
        })
    }
}

async fn admit<A: Authenticator>(
    shared: &Shared<A>,
    req: Request<Body>,
) -> Result<Request<Body>, Refusal> {
    let cfg = &shared.config;
    // 1. The client address, and the network rules.
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        tracing::error!(target: nova_tenancy::AUDIT_TARGET, event = "guard_no_peer", "request without a peer address refused: serve with into_make_service_with_connect_info");
        return Err(Refusal::Forbidden);
    };
    let forwarded = forwarded_for(req.headers())?;
    let client = cfg
        .trusted_proxies
        .client_ip(peer.ip(), forwarded.as_deref())
        .map_err(|_| Refusal::Forbidden)?;
    if !cfg.ip_rules.permits(client) {
        report(&SecurityEvent::new("ip_denied").details(&[("client", &client)]));
        return Err(Refusal::Forbidden);
    }
    // A banned address costs no credential check.
    if let Some(secs) = shared.banned_for(client) {
        return Err(Refusal::TooMany(Some(secs.max(1))));
    }
    // 2. Body size, announced or streamed.
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH) {
        let len: usize = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(Refusal::TooLarge)?;
        if len > cfg.max_body_bytes {
            return Err(Refusal::TooLarge);
        }
    }
    // 3. The credential, into a tenant context.
    let verified = match presented(req.headers()) {
        Ok(Some(Presented::Bearer(t))) => shared.auth.bearer(t).await.map(|c| (c, None)),
        Ok(Some(Presented::ApiKey(k))) => {
            let id = crate::parse_api_key(k)
                .ok()
                .map(|p| LimitKey::ApiKey(p.key_id.into()));
            shared.auth.api_key(k, client).await.map(|c| (c, id))
        }
        Ok(None) => Err(AuthError::MalformedCredential("missing")),
        Err(_) => Err(AuthError::MalformedCredential("header")),
    };
    let (ctx, key_id) = match verified {
        Ok(v) => v,
        Err(e) => {
            // Failed attempts spend the address's budget: guessing is slowed, then refused.
            if let Some(rl) = &cfg.rate_limits {
                let (tier, q) = rl.tiers.tier_for(&[]);
                match rl.store.check(LimitKey::ip(client), tier, q).await {
                    Ok(v @ (Verdict::Limited { .. } | Verdict::Banned { .. })) => {
                        shared.remember_ban(client, v);
                        return Err(Refusal::TooMany(v.retry_after_secs()));
                    }
                    Ok(Verdict::Allowed) => {}
                    Err(()) => return Err(Refusal::Unavailable),
                }
            }
            return Err(refusal_for(&e));
        }
    };
    // 4. The tenant the request means, if it says (once: two values could be read two ways).
    let mut tenant_headers = req.headers().get_all(TENANT_HEADER).iter();
    let (first, second) = (tenant_headers.next(), tenant_headers.next());
    if second.is_some() {
        return Err(Refusal::Forbidden);
    }
    if let Some(want) = first {
        let want: Option<TenantId> = want.to_str().ok().and_then(|s| s.parse().ok());
        if want != Some(ctx.tenant()) {
            report(
                &SecurityEvent::new("cross_tenant_attempt")
                    .tenant(ctx.tenant())
                    .request_id(ctx.request_id()),
            );
            return Err(Refusal::Forbidden);
        }
    }
    // 5. Rate limits: tenant, address and key, at the caller's tier.
    if let Some(rl) = &cfg.rate_limits {
        let (tier, q) = rl.tiers.tier_for(ctx.roles());
        // The caller's own budgets first: a caller over its limit must not spend the tenant's.
        let keys = [
            Some((LimitKey::ip(client), tier, q)),
            key_id.map(|k| (k, tier, q)),
            rl.tenant
                .map(|tq| (LimitKey::Tenant(ctx.tenant()), u8::MAX, tq)),
        ];
        for (key, tier, q) in keys.into_iter().flatten() {
            match rl.store.check(key, tier, q).await {
                Ok(Verdict::Allowed) => {}
                Ok(v) => {
                    shared.remember_ban(client, v);
                    return Err(Refusal::TooMany(v.retry_after_secs()));
                }
                Err(()) => return Err(Refusal::Unavailable),
            }
        }
    }
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(ctx);
    parts.extensions.insert(ClientAddr(client));
    let body = Body::new(http_body_util::Limited::new(body, cfg.max_body_bytes));
    Ok(Request::from_parts(parts, body))
}

/// `X-Forwarded-For` values joined, or `None`; a value that is not text is refused.
fn forwarded_for(headers: &http::HeaderMap) -> Result<Option<String>, Refusal> {
    let mut out: Option<String> = None;
    for v in headers.get_all("x-forwarded-for") {
        let v = v.to_str().map_err(|_| Refusal::Forbidden)?;
        match &mut out {
            Some(s) => {
                s.push(',');
                s.push_str(v);
            }
            None => out = Some(v.to_owned()),
        }
    }
    Ok(out)
}

/// The client address the guard settled on, in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The verified caller, for axum handlers: `async fn h(Authenticated(ctx): Authenticated)`.
/// Rejects with 401 when the guard did not run.
#[derive(Debug, Clone)]
pub struct Authenticated(pub TenantContext);

impl<St: Send + Sync> FromRequestParts<St> for Authenticated {
    type Rejection = StatusCode;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &St,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<TenantContext>()
            .cloned()
            .map(Self)
            .ok_or(StatusCode::UNAUTHORIZED)
    }
}
