//! nova-auth reports its security events through the root crate's audit hook, so an
//! application records them without nova-auth depending on nova-audit: a wrong secret, an
//! unknown key id and a cross-tenant attempt each arrive with the tenant and actor.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use nova_auth::{ApiKeys, AuthError, InMemoryApiKeyStore, NewApiKey};
use nova_tenancy::{Actor, AuditHook, Role, SecurityEvent, TenantId, UserId, set_audit_hook};

mod common;
use common::forge_secret;

/// (name, tenant, actor) of one reported event.
type Seen = (String, Option<TenantId>, Option<String>);

/// Every event reported in this process.
#[derive(Default)]
struct Collect(Mutex<Vec<Seen>>);

impl AuditHook for Collect {
    fn record(&self, event: &SecurityEvent<'_>) {
        let actor = event.actor_of().map(|a| match a {
            Actor::User(u) => format!("user:{u}"),
            Actor::ApiKey(k) => format!("api_key:{k}"),
            _ => "other".into(),
        });
        self.0
            .lock()
            .unwrap()
            .push((event.name().to_owned(), event.tenant_id(), actor));
    }
}

#[tokio::test]
async fn api_key_failures_and_cross_tenant_attempts_reach_the_audit_hook() {
    let hook = Arc::new(Collect::default());
    assert!(set_audit_hook(hook.clone()).is_ok());
    let client: IpAddr = "10.1.2.3".parse().unwrap();
    let keys = ApiKeys::new(InMemoryApiKeyStore::new());
    let (a, b) = (TenantId::new_v4(), TenantId::new_v4());
    let spec = |t| NewApiKey::new(t, UserId::new_v4(), Role::new("service").unwrap());
    let (kid, secret) = keys.create(spec(a)).await.unwrap();

    let wrong = forge_secret(&kid.to_string());
    assert!(keys.verify(&wrong, client).await.is_err());
    let (unknown_kid, _) = ApiKeys::new(InMemoryApiKeyStore::new())
        .create(spec(a))
        .await
        .unwrap();
    let unknown = forge_secret(&unknown_kid.to_string());
    assert_eq!(
        keys.verify(&unknown, client).await.unwrap_err(),
        AuthError::InvalidCredential
    );
    assert_eq!(
        keys.verify_for_tenant(secret.expose(), b, client)
            .await
            .unwrap_err(),
        AuthError::InvalidCredential
    );

    let seen = hook.0.lock().unwrap().clone();
    let actor = Some(format!("api_key:{kid}"));
    assert!(
        seen.contains(&("api_key_created".into(), Some(a), actor.clone())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("api_key_failure".into(), Some(a), actor)),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(
            "api_key_unknown".into(),
            None,
            Some(format!("api_key:{unknown_kid}"))
        )),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(n, t, _)| n == "cross_tenant_attempt" && *t == Some(b)),
        "{seen:?}"
    );
    // The secret itself is never part of an event.
    assert!(!format!("{seen:?}").contains(&secret.expose()[20..]));
}
