//! Scenario tests of the reference service: a real HTTP client against the service on
//! loopback, over the machine's PostgreSQL and Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{Harness, SERIAL, User, config_text, start, start_with};
use nova_crypto::{CryptoError, SubjectEnvelope};
use nova_examples::ticketing::{UserSpec, restore_backup};
use nova_tenancy::{TenantContext, TenantId, UserId};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

struct Acme {
    admin: User,
    agent: User,
    hr_manager: User,
    dpo: User,
    customer: User,
}

async fn acme(h: &Harness, tenant: TenantId) -> Acme {
    Acme {
        admin: h
            .onboard(
                tenant,
                UserSpec {
                    email: "ada@acme.example",
                    name: "Ada Admin",
                    department: "it",
                    queues: &[],
                    role: "admin",
                },
            )
            .await,
        agent: h
            .onboard(
                tenant,
                UserSpec {
                    email: "bo@acme.example",
                    name: "Bo Agent",
                    department: "support",
                    queues: &["billing", "vip"],
                    role: "agent",
                },
            )
            .await,
        hr_manager: h
            .onboard(
                tenant,
                UserSpec {
                    email: "hal@acme.example",
                    name: "Hal HR",
                    department: "hr",
                    queues: &["people"],
                    role: "manager",
                },
            )
            .await,
        dpo: h
            .onboard(
                tenant,
                UserSpec {
                    email: "dee@acme.example",
                    name: "Dee DPO",
                    department: "legal",
                    queues: &[],
                    role: "dpo",
                },
            )
            .await,
        customer: h
            .onboard(
                tenant,
                UserSpec {
                    email: "Cy.Customer@Example.com",
                    name: "Cy Customer",
                    department: "customers",
                    queues: &[],
                    role: "customer",
                },
            )
            .await,
    }
}

async fn file_ticket(
    h: &Harness,
    as_user: User,
    queue: &str,
    dept: &str,
    requester: Uuid,
    body: &str,
) -> Uuid {
    let r = h
        .client
        .post(h.url("/tickets"))
        .bearer_auth(h.token(as_user))
        .json(&json!({
            "queue": queue, "department": dept, "priority": 2,
            "title": "a ticket", "body": body, "requester_id": requester,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().parse().unwrap()
}

async fn get(h: &Harness, user: User, path: &str) -> (StatusCode, Value) {
    let r = h
        .client
        .get(h.url(path))
        .bearer_auth(h.token(user))
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn send(
    h: &Harness,
    user: User,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> StatusCode {
    h.client
        .request(method, h.url(path))
        .bearer_auth(h.token(user))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

fn listed_ids(v: &Value) -> Vec<Uuid> {
    v["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn cross_tenant_reads_updates_and_listings_are_refused() {
    let _serial = SERIAL.lock().await;
    let Some(h) = start("tkcross", &config_text(&[])).await else {
        return;
    };
    let (acme_t, globex_t) = (TenantId::new_v4(), TenantId::new_v4());
    let a = acme(&h, acme_t).await;
    let globex_agent = h
        .onboard(
            globex_t,
            UserSpec {
                email: "gil@globex.example",
                name: "Gil",
                department: "support",
                queues: &["billing", "vip"],
                role: "agent",
            },
        )
        .await;
    let globex_admin = h
        .onboard(
            globex_t,
            UserSpec {
                email: "gia@globex.example",
                name: "Gia",
                department: "it",
                queues: &[],
                role: "admin",
            },
        )
        .await;
    let ticket = file_ticket(
        &h,
        a.agent,
        "billing",
        "support",
        a.customer.id,
        "acme secret",
    )
    .await;
    let theirs = file_ticket(
        &h,
        globex_agent,
        "billing",
        "support",
        globex_agent.id,
        "globex own",
    )
    .await;

    // Same queue names in both tenants: only the tenant separates them.
    let (s, mine) = get(&h, a.agent, &format!("/tickets/{ticket}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(mine["body"], "acme secret");
    for user in [globex_agent, globex_admin] {
        let (s, _) = get(&h, user, &format!("/tickets/{ticket}")).await;
        assert_eq!(
            s,
            StatusCode::NOT_FOUND,
            "cross-tenant read by {}",
            user.role
        );
        let s = send(
            &h,
            user,
            reqwest::Method::PATCH,
            &format!("/tickets/{ticket}"),
            json!({"status": "closed"}),
        )
        .await;
        assert_eq!(
            s,
            StatusCode::NOT_FOUND,
            "cross-tenant update by {}",
            user.role
        );
        let s = send(
            &h,
            user,
            reqwest::Method::POST,
            &format!("/tickets/{ticket}/comments"),
            json!({"body": "hi"}),
        )
        .await;
        assert_eq!(
            s,
            StatusCode::NOT_FOUND,
            "cross-tenant comment by {}",
            user.role
        );
        let (s, list) = get(&h, user, "/tickets").await;
        assert_eq!(s, StatusCode::OK);
        let ids = listed_ids(&list);
        assert!(!ids.contains(&ticket), "acme's ticket listed to globex");
        for t in list["tickets"].as_array().unwrap() {
            assert_eq!(t["tenant_id"], json!(globex_t.to_string()));
        }
    }
    let (_, list) = get(&h, globex_agent, "/tickets").await;
    assert_eq!(listed_ids(&list), vec![theirs]);

    // A globex token that names acme in X-Tenant-Id: refused by the guard, and reported.
    let r = h
        .client
        .get(h.url("/tickets"))
        .bearer_auth(h.token(globex_agent))
        .header("x-tenant-id", acme_t.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Within the tenant, the policy still applies.
    let s = send(
        &h,
        a.agent,
        reqwest::Method::PATCH,
        &format!("/tickets/{ticket}"),
        json!({"status": "closed"}),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "an agent may not update (not in the policy)"
    );

    // Underneath: the service's database login sees nothing without a tenant.
    let names = nova_examples::ticketing::db::Names::new(h.fixture.prefix()).unwrap();
    let mut conn = h.fixture.admin().acquire().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("SET ROLE {}", names.svc_login)))
        .execute(&mut *conn)
        .await
        .unwrap();
    let visible: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}.tickets",
        names.app
    )))
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        visible, 0,
        "rows visible to the service login with no tenant set"
    );
    sqlx::query("RESET ROLE").execute(&mut *conn).await.unwrap();
    drop(conn);

    let events = h.audit_events().await;
    assert!(
        events
            .iter()
            .any(|e| e["event_type"] == "security.cross_tenant_attempt"
                || e["event_type"]
                    .as_str()
                    .is_some_and(|t| t.contains("cross_tenant"))),
        "no cross-tenant event in the audit log"
    );
    assert!(events.iter().any(|e| {
        e["event_type"]
            .as_str()
            .is_some_and(|t| t == "policy.denied")
    }));
    h.stop().await;
}

#[tokio::test]
async fn an_agent_cannot_become_an_admin() {
    let _serial = SERIAL.lock().await;
    let Some(h) = start("tkescalate", &config_text(&[])).await else {
        return;
    };
    let a = acme(&h, TenantId::new_v4()).await;
    let ticket = file_ticket(&h, a.agent, "billing", "support", a.customer.id, "body").await;

    let new_admin = json!({"email": "eve@acme.example", "name": "Eve", "department": "it", "queues": [], "role": "admin"});
    assert_eq!(
        send(
            &h,
            a.agent,
            reqwest::Method::POST,
            "/users",
            new_admin.clone()
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(
            &h,
            a.agent,
            reqwest::Method::POST,
            "/admin/api-keys",
            json!({})
        )
        .await,
        StatusCode::FORBIDDEN
    );
    let grant =
        json!({"id": "self-grant", "to_user": a.agent.id, "department": "hr", "ttl_seconds": 60});
    assert_eq!(
        send(&h, a.agent, reqwest::Method::POST, "/admin/grants", grant).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&h, a.agent, "/admin/backup").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(
            &h,
            a.agent,
            &format!("/privacy/subjects/{}/export", a.customer.id)
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(
            &h,
            a.agent,
            reqwest::Method::POST,
            &format!("/privacy/subjects/{}/erase", a.customer.id),
            json!({})
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(
            &h,
            a.agent,
            reqwest::Method::PATCH,
            &format!("/tickets/{ticket}"),
            json!({"priority": 1})
        )
        .await,
        StatusCode::NOT_FOUND
    );
    // The same calls as the admin work: the refusals above were about the role.
    assert_eq!(
        send(&h, a.admin, reqwest::Method::POST, "/users", new_admin).await,
        StatusCode::CREATED
    );

    // Forging the role: a token signed by another key, a payload edited to say admin, and
    // an unsigned token.
    let rogue = nova_auth::TokenIssuer::new(
        "https://auth.helpdesk.example",
        "ticketing-api",
        nova_auth::SigningKey::generate_ed25519("test-idp").unwrap(),
    );
    let forged = rogue
        .issue(
            &nova_auth::AccessClaims::new(
                a.agent.tenant,
                nova_tenancy::UserId::from_uuid(a.agent.id).unwrap(),
            )
            .roles([nova_tenancy::Role::new("admin").unwrap()]),
        )
        .unwrap();
    let real = h.token(a.agent);
    let parts: Vec<&str> = real.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = String::from_utf8(b64.decode(parts[1]).unwrap()).unwrap();
    assert!(payload.contains("\"agent\""));
    let edited = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(payload.replace("\"agent\"", "\"admin\"")),
        parts[2]
    );
    let unsigned = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(payload.replace("\"agent\"", "\"admin\""))
    );
    for token in [forged, edited, unsigned] {
        let r = h
            .client
            .post(h.url("/admin/api-keys"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let body = r.text().await.unwrap();
        // The same word for every failure: nothing says which check failed.
        assert_eq!(body, "unauthorized", "a refusal carries no detail");
    }
    h.stop().await;
}

#[tokio::test]
async fn a_delegation_opens_hr_tickets_until_it_expires() {
    let _serial = SERIAL.lock().await;
    let Some(h) = start("tkdelegate", &config_text(&[])).await else {
        return;
    };
    let a = acme(&h, TenantId::new_v4()).await;
    let hr = file_ticket(
        &h,
        a.hr_manager,
        "people",
        "hr",
        a.customer.id,
        "salary dispute",
    )
    .await;
    let path = format!("/tickets/{hr}");

    assert_eq!(get(&h, a.hr_manager, &path).await.0, StatusCode::OK);
    assert_eq!(
        get(&h, a.admin, &path).await.0,
        StatusCode::NOT_FOUND,
        "admins see no HR tickets"
    );
    assert!(!listed_ids(&get(&h, a.admin, "/tickets").await.1).contains(&hr));

    // Only a manager of HR may lend HR tickets; the admin may not lend them to itself.
    let grant =
        json!({"id": "hr-review", "to_user": a.admin.id, "department": "hr", "ttl_seconds": 5});
    assert_eq!(
        send(
            &h,
            a.admin,
            reqwest::Method::POST,
            "/admin/grants",
            grant.clone()
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(
            &h,
            a.hr_manager,
            reqwest::Method::POST,
            "/admin/grants",
            grant
        )
        .await,
        StatusCode::CREATED
    );
    let granted_at = std::time::Instant::now();

    let (s, t) = get(&h, a.admin, &path).await;
    assert_eq!(s, StatusCode::OK, "the delegation opens the ticket");
    assert_eq!(t["body"], "salary dispute");
    assert!(
        listed_ids(&get(&h, a.admin, "/tickets").await.1).contains(&hr),
        "and lists it"
    );
    // It lends reading only.
    assert_eq!(
        send(
            &h,
            a.admin,
            reqwest::Method::PATCH,
            &path,
            json!({"status": "closed"})
        )
        .await,
        StatusCode::NOT_FOUND
    );

    // Expiry is checked in whole seconds: past 6 s it has expired whatever the rounding.
    tokio::time::sleep(Duration::from_secs(7).saturating_sub(granted_at.elapsed())).await;
    assert_eq!(
        get(&h, a.admin, &path).await.0,
        StatusCode::NOT_FOUND,
        "expired"
    );
    assert!(!listed_ids(&get(&h, a.admin, "/tickets").await.1).contains(&hr));

    let events = h.audit_events().await;
    assert!(
        events
            .iter()
            .any(|e| e["event_type"] == "admin.grant_created")
    );
    assert!(events.iter().any(|e| {
        e["event_type"]
            .as_str()
            .is_some_and(|t| t.contains("delegation_used"))
    }));
    h.stop().await;
}

#[tokio::test]
async fn an_api_key_revoked_mid_run_stops_working_at_once() {
    let _serial = SERIAL.lock().await;
    let Some(h) = start("tkrevoke", &config_text(&[])).await else {
        return;
    };
    let a = acme(&h, TenantId::new_v4()).await;
    let r = h
        .client
        .post(h.url("/admin/api-keys"))
        .bearer_auth(h.token(a.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let key: Value = r.json().await.unwrap();
    let (key_id, secret) = (
        key["key_id"].as_str().unwrap().to_owned(),
        key["secret"].as_str().unwrap().to_owned(),
    );

    // An intake integration files tickets in a loop with the key.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let revoked_at = std::sync::Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Waits (bounded) until the intake has had `n` answers.
    let wait_for = |n: usize| {
        let seen = seen.clone();
        async move {
            let until = std::time::Instant::now() + Duration::from_secs(30);
            while seen.load(std::sync::atomic::Ordering::Relaxed) < n {
                assert!(std::time::Instant::now() < until, "the intake stalled");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let intake = {
        let (client, url, stop, revoked_at) = (
            h.client.clone(),
            h.url("/tickets"),
            stop.clone(),
            revoked_at.clone(),
        );
        let seen = seen.clone();
        let requester = a.customer.id;
        tokio::spawn(async move {
            let mut log = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sent = std::time::Instant::now();
                let status = client
                    .post(&url)
                    .header("x-api-key", &secret)
                    .json(&json!({"queue": "billing", "department": "support", "priority": 1,
                                  "title": "from intake", "body": "mail body", "requester_id": requester}))
                    .send()
                    .await
                    .unwrap()
                    .status();
                let after_revoke = revoked_at.lock().unwrap().is_some_and(|t| sent > t);
                log.push((status, after_revoke));
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            log
        })
    };
    wait_for(3).await;
    // Another tenant's admin cannot revoke it (and learns nothing).
    let other = h
        .onboard(
            TenantId::new_v4(),
            UserSpec {
                email: "x@globex.example",
                name: "X",
                department: "it",
                queues: &[],
                role: "admin",
            },
        )
        .await;
    assert_eq!(
        send(
            &h,
            other,
            reqwest::Method::DELETE,
            &format!("/admin/api-keys/{key_id}"),
            json!({})
        )
        .await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(
            &h,
            a.admin,
            reqwest::Method::DELETE,
            &format!("/admin/api-keys/{key_id}"),
            json!({})
        )
        .await,
        StatusCode::NO_CONTENT
    );
    *revoked_at.lock().unwrap() = Some(std::time::Instant::now());
    // One request may have been in flight: four more answers hold at least three sent
    // after the revocation.
    wait_for(seen.load(std::sync::atomic::Ordering::Relaxed) + 4).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let log = intake.await.unwrap();
    let before: Vec<_> = log.iter().filter(|(_, after)| !after).collect();
    let after: Vec<_> = log.iter().filter(|(_, after)| *after).collect();
    assert!(
        before
            .iter()
            .filter(|(s, _)| *s == StatusCode::CREATED)
            .count()
            >= 3,
        "{log:?}"
    );
    assert!(after.len() >= 3, "{log:?}");
    assert!(
        after.iter().all(|(s, _)| *s == StatusCode::UNAUTHORIZED),
        "{log:?}"
    );

    let counts = h.audit_counts().await;
    let tenant = a.admin.tenant.to_string();
    let created = before
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count() as u64;
    assert_eq!(
        counts.get(&(tenant.clone(), "data.write".into())),
        Some(&created)
    );
    assert_eq!(
        counts.get(&(tenant, "admin.api_key_revoked".into())),
        Some(&1)
    );
    h.stop().await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let _serial = SERIAL.lock().await;
    let config = config_text(&[(
        "end_user = { rate = 20, per_seconds = 1, burst = 40 }",
        "end_user = { rate = 1, per_seconds = 60, burst = 8 }",
    )]);
    let Some(h) = start("tkrate", &config).await else {
        return;
    };
    let a = acme(&h, TenantId::new_v4()).await;
    // A customer's token is at the end-user tier (the agents' tier is untouched).
    let token = h.token(a.customer);
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..20 {
        let r = h
            .client
            .get(h.url("/tickets"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
        }
        statuses.push(r.status());
    }
    let first_429 = statuses
        .iter()
        .position(|s| *s == StatusCode::TOO_MANY_REQUESTS)
        .expect("limited");
    assert!(first_429 <= 8, "{statuses:?}");
    assert!(
        statuses[first_429..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let retry_after = retry_after.expect("Retry-After on 429");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Agents, at their own tier, still get through.
    assert_eq!(get(&h, a.agent, "/tickets").await.0, StatusCode::OK);
    h.stop().await;
}

#[tokio::test]
async fn a_subject_is_exported_then_erased_everywhere_including_backups() {
    let _serial = SERIAL.lock().await;
    let Some(h) = start("tkerase", &config_text(&[])).await else {
        return;
    };
    let tenant = TenantId::new_v4();
    let a = acme(&h, tenant).await;
    let cy = a.customer;
    let ticket = file_ticket(
        &h,
        a.agent,
        "billing",
        "support",
        cy.id,
        "my card 4242 was charged twice",
    )
    .await;
    assert_eq!(
        send(
            &h,
            a.agent,
            reqwest::Method::POST,
            &format!("/tickets/{ticket}/comments"),
            json!({"body": "refund on its way"})
        )
        .await,
        StatusCode::CREATED
    );
    assert_eq!(
        send(
            &h,
            a.dpo,
            reqwest::Method::POST,
            &format!("/privacy/subjects/{}/consents", cy.id),
            json!({"purpose": "marketing.email", "granted": true, "source": "signup form"})
        )
        .await,
        StatusCode::CREATED
    );
    assert_eq!(
        send(
            &h,
            a.dpo,
            reqwest::Method::POST,
            &format!("/privacy/subjects/{}/consents", cy.id),
            json!({"purpose": "BAD PURPOSE!", "granted": true, "source": "x"})
        )
        .await,
        StatusCode::BAD_REQUEST
    );
    // Lookup by email, through the blind index (any case).
    let (s, found) = get(&h, a.admin, "/users/lookup?email=cy.customer%40example.com").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(found["users"][0]["id"], json!(cy.id.to_string()));

    // A backup taken before the erasure.
    let r = h
        .client
        .get(h.url("/admin/backup"))
        .bearer_auth(h.token(a.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let backup = r.bytes().await.unwrap().to_vec();
    assert!(
        !String::from_utf8_lossy(&backup).contains("card 4242"),
        "the backup is encrypted"
    );

    // Export: one JSON document, the subject's fields opened.
    let (s, export) = get(&h, a.dpo, &format!("/privacy/subjects/{}/export", cy.id)).await;
    assert_eq!(s, StatusCode::OK);
    let text = export.to_string();
    assert!(
        text.contains("Cy.Customer@Example.com") && text.contains("Cy Customer"),
        "{text}"
    );
    assert!(text.contains("my card 4242 was charged twice"), "{text}");
    assert!(
        text.contains("marketing.email"),
        "consents exported: {text}"
    );
    assert!(
        !text.contains("refund on its way"),
        "another person's comment is not the subject's data"
    );
    assert_eq!(export["subject"], json!(cy.id.to_string()));

    // Erase.
    let r = h
        .client
        .post(h.url(&format!("/privacy/subjects/{}/erase", cy.id)))
        .bearer_auth(h.token(a.dpo))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["key_destroyed"], true, "{report}");

    // Afterwards: nothing of the subject reads back, through any path.
    let (_, export) = get(&h, a.dpo, &format!("/privacy/subjects/{}/export", cy.id)).await;
    let text = export.to_string();
    assert!(
        !text.contains("Cy.Customer") && !text.contains("card 4242"),
        "{text}"
    );
    assert!(
        text.contains("marketing.email"),
        "consent records are kept as proof"
    );
    let (s, t) = get(&h, a.agent, &format!("/tickets/{ticket}")).await;
    assert_eq!(s, StatusCode::OK, "the ticket itself is kept");
    assert_eq!(t["body"], Value::Null);
    assert_eq!(
        t["title"],
        Value::Null,
        "the requester's title is cleared too"
    );
    assert_eq!(
        t["comments"][0]["body"], "refund on its way",
        "the agent's comment is not erased"
    );
    let (_, found) = get(&h, a.admin, "/users/lookup?email=cy.customer%40example.com").await;
    assert_eq!(found["users"], json!([]));
    let names = nova_examples::ticketing::db::Names::new(h.fixture.prefix()).unwrap();
    let stored: (Option<String>, Option<String>, Option<Vec<u8>>) =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT email, display_name, email_index FROM {}.users WHERE id = $1",
            names.app
        )))
        .bind(cy.id)
        .fetch_one(h.fixture.admin())
        .await
        .unwrap();
    assert_eq!(stored, (None, None, None));

    // The backup from before still restores (the tenant's key is alive)...
    let state = &h.running.nova;
    let ctx = TenantContext::system(tenant, "test: restore").unwrap();
    let restored = restore_backup(state, &ctx, &backup).unwrap();
    let user = restored["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == json!(cy.id.to_string()))
        .unwrap();
    // ...but the subject's fields in it no longer open: their key is gone.
    let env = SubjectEnvelope::from_text(user["email"].as_str().unwrap()).unwrap();
    let email = nova_crypto::Column::new("users", "email").unwrap();
    match state
        .subjects()
        .open(&ctx, cy.id, &email.row(cy.id), &env)
        .await
    {
        Err(CryptoError::KeyDestroyed) => {}
        other => panic!(
            "an erased subject's field opened from a backup: {:?}",
            other.map(|_| ())
        ),
    }
    let restored_text = restored.to_string();
    // (The whole phrase: "4242" alone also turns up in random ids and ciphertext.)
    assert!(!restored_text.contains("Cy.Customer") && !restored_text.contains("card 4242"));
    // Other people's sealed fields in the same backup still open.
    let agent_row = restored["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == json!(a.agent.id.to_string()))
        .unwrap();
    let env = SubjectEnvelope::from_text(agent_row["email"].as_str().unwrap()).unwrap();
    assert!(
        state
            .subjects()
            .open(&ctx, a.agent.id, &email.row(a.agent.id), &env)
            .await
            .is_ok()
    );
    // A backup does not open as another tenant's.
    let other = TenantContext::system(TenantId::new_v4(), "test: other").unwrap();
    assert!(restore_backup(state, &other, &backup).is_err());

    let counts = h.audit_counts().await;
    let t = tenant.to_string();
    assert_eq!(counts.get(&(t.clone(), "privacy.erase".into())), Some(&1));
    assert_eq!(counts.get(&(t.clone(), "privacy.export".into())), Some(&2));
    assert_eq!(counts.get(&(t, "privacy.consent".into())), Some(&1));
    h.stop().await;
}

#[tokio::test]
async fn retention_rules_run_as_a_job() {
    let _serial = SERIAL.lock().await;
    let Some(h) = start("tkretain", &config_text(&[])).await else {
        return;
    };
    let tenant = TenantId::new_v4();
    let a = acme(&h, tenant).await;
    let other = h
        .onboard(
            TenantId::new_v4(),
            UserSpec {
                email: "o@globex.example",
                name: "O",
                department: "support",
                queues: &["billing"],
                role: "agent",
            },
        )
        .await;
    let ticket = file_ticket(&h, a.agent, "billing", "support", a.customer.id, "old").await;
    let theirs = file_ticket(&h, other, "billing", "support", other.id, "theirs").await;
    for (user, t) in [(a.agent, ticket), (a.agent, ticket), (other, theirs)] {
        assert_eq!(
            send(
                &h,
                user,
                reqwest::Method::POST,
                &format!("/tickets/{t}/comments"),
                json!({"body": "c"})
            )
            .await,
            StatusCode::CREATED
        );
    }
    // Age one acme comment and globex's comment past the rule (three years).
    let names = nova_examples::ticketing::db::Names::new(h.fixture.prefix()).unwrap();
    h.fixture
        .exec(&format!(
            "UPDATE {app}.comments SET created_at = now() - interval '4 years'
             WHERE id IN (SELECT id FROM {app}.comments WHERE ticket_id = '{ticket}' ORDER BY id LIMIT 1)
                OR ticket_id = '{theirs}'",
            app = names.app
        ))
        .await;
    let r = h
        .client
        .post(h.url("/admin/retention"))
        .bearer_auth(h.token(a.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let report: Value = r.json().await.unwrap();
    let rows: u64 = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(rows, 1, "{report}");
    let (_, t) = get(&h, a.agent, &format!("/tickets/{ticket}")).await;
    let bodies: Vec<&Value> = t["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["body"])
        .collect();
    assert_eq!(bodies.iter().filter(|b| b.is_null()).count(), 1, "{t}");
    // Only the caller's tenant: globex's old comment is untouched until globex runs it.
    let (_, t) = get(&h, other, &format!("/tickets/{theirs}")).await;
    assert_eq!(t["comments"][0]["body"], "c");
    assert_eq!(
        send(
            &h,
            a.agent,
            reqwest::Method::POST,
            "/admin/retention",
            json!({})
        )
        .await,
        StatusCode::FORBIDDEN
    );
    h.stop().await;
}

#[test]
fn profiles_refuse_insecure_settings_naming_each() {
    let base = config_text(&[]);
    assert!(nova::Config::from_toml(&base).is_ok());
    let refused = |edits: &[(&str, &str)]| {
        nova::Config::from_toml(&config_text(edits))
            .unwrap_err()
            .to_string()
    };
    let e = refused(&[(
        "max_body_bytes = 65536",
        "max_body_bytes = 65536\nallow_plaintext = true",
    )]);
    assert!(e.contains("security.http.allow_plaintext"), "{e}");
    let e = refused(&[
        ("enabled = true", "enabled = false"),
        ("fsync = \"per_batch\"", "fsync = \"never\""),
    ]);
    assert!(
        e.contains("security.rate_limiting.enabled") && e.contains("audit.fsync"),
        "{e}"
    );
    let hipaa = [("profile = \"production\"", "profile = \"hipaa\"")];
    assert!(nova::Config::from_toml(&config_text(&hipaa)).is_ok());
    let e = refused(&[hipaa[0], ("retention_days = 2192", "retention_days = 400")]);
    assert!(
        e.contains("audit.retention_days = 400 is under six years"),
        "{e}"
    );
    let e = refused(&[
        hipaa[0],
        (r#"max_age = "15m""#, r#"max_age = "60m""#),
        (r#"idle_timeout = "15m""#, r#"idle_timeout = "30m""#),
    ]);
    assert!(
        e.contains("security.mfa.max_age") && e.contains("security.session.idle_timeout"),
        "{e}"
    );
    let gdpr = ("profile = \"production\"", "profile = \"gdpr\"");
    assert!(nova::Config::from_toml(&config_text(&[gdpr])).is_ok());
    let e = refused(&[
        gdpr,
        (
            "retention_days = 2192         # six years (hipaa needs at least this)\n",
            "",
        ),
    ]);
    assert!(e.contains("audit.retention_days must be set"), "{e}");
    // Development allows what production refuses.
    assert!(
        nova::Config::from_toml(&config_text(&[
            ("profile = \"production\"", "profile = \"development\""),
            ("enabled = true", "enabled = false")
        ]))
        .is_ok()
    );
    // A file that names no profile does not load as development.
    let e = refused(&[("profile = \"production\"", "")]);
    assert!(e.contains("security.profile is required"), "{e}");
    // Misspelt keys and sections are errors, in every profile.
    let e = refused(&[("keep_days = 1095", "keep_dayz = 1095")]);
    assert!(e.contains("keep_dayz"), "{e}");
    let e = refused(&[("[security.audit]", "[security.audti]")]);
    assert!(e.contains("audti"), "{e}");
    let e = refused(&[(
        "columns = [\"body\"]",
        "columns = [\"body; DROP TABLE users\"]",
    )]);
    assert!(
        e.contains("retention rule for table \"comments\"") && e.contains("SQL identifier"),
        "{e}"
    );
}

#[tokio::test]
async fn a_priority_5_update_needs_a_totp_step_up_no_older_than_the_configured_fifteen_minutes() {
    let _serial = SERIAL.lock().await;
    // As shipped (production), and end to end under hipaa (whose 15-minute maximum the
    // file must respect to load at all).
    for edits in [
        vec![],
        vec![(
            "profile = \"production\"        # development | production | hipaa | gdpr",
            "profile = \"hipaa\"",
        )],
    ] {
        priority_5_needs_a_fresh_step_up(&config_text(&edits)).await;
    }
}

async fn priority_5_needs_a_fresh_step_up(config: &str) {
    let Some(h) = start("tkmfa", config).await else {
        return;
    };
    let a = acme(&h, TenantId::new_v4()).await;
    let ticket = file_ticket(&h, a.agent, "billing", "support", a.customer.id, "urgent").await;
    let path = format!("/tickets/{ticket}");
    let patch = |token: String, body: Value| {
        h.client
            .patch(h.url(&path))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let now = std::time::SystemTime::now();
    let minutes = |m: u64| std::time::Duration::from_secs(60 * m);
    let raise = json!({"priority": 5});
    // Raising a ticket to priority 5 is checked as the ticket would be after it: a
    // password-only token is refused...
    assert_eq!(
        patch(h.token_without_mfa(a.admin), raise.clone())
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    // ...so is a second factor verified sixteen minutes ago (the file says 15 at most)...
    let stale = h.token_with_mfa(a.admin, now - minutes(16));
    assert_eq!(
        patch(stale, raise.clone()).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    // ...and after a TOTP step-up it is allowed: the identity provider checks a code from
    // the admin's authenticator (a wrong one, or the same one twice, gets no token).
    let secret = nova_auth::totp::TotpSecret::generate(nova_auth::totp::Algorithm::Sha1).unwrap();
    let code = nova_auth::totp::Totp::default()
        .code_at(&secret, now)
        .unwrap();
    let wrong: String = code
        .chars()
        .map(|c| if c == '9' { '0' } else { '9' })
        .collect();
    assert!(h.step_up(a.admin, &secret, &wrong).await.is_err());
    let fresh = h.step_up(a.admin, &secret, &code).await.unwrap();
    assert!(
        h.step_up(a.admin, &secret, &code).await.is_err(),
        "a replayed code"
    );
    let r = patch(fresh.clone(), raise).await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "{}",
        r.text().await.unwrap()
    );
    // From now on every update of the ticket needs it (a ticket the caller may not update
    // as it stands is answered 404, as for a ticket it cannot see).
    assert_eq!(
        patch(h.token_without_mfa(a.admin), json!({"status": "open"}))
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        patch(fresh, json!({"status": "open"}))
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );

    // The same with a session the service keeps (a browser sign-in with a password): the
    // guard takes its token, the policy sees no second factor until the service verifies a
    // TOTP code and records the step-up in the session.
    let sessions = h.running.nova.sessions();
    let method = |m: &str| nova_tenancy::AuthMethod::new(m).unwrap();
    let login =
        nova_auth::SessionLogin::new(a.admin.tenant, UserId::from_uuid(a.admin.id).unwrap())
            .roles([nova_tenancy::Role::new("admin").unwrap()])
            .methods([method("pwd")]);
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let session = sessions.start(login, loopback, "scenario").await.unwrap();
    let token = session.expose().to_owned();
    assert_eq!(
        patch(token.clone(), json!({"status": "pending"}))
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND,
        "a password-only session may not update a priority-5 ticket"
    );
    let device = nova_auth::totp::TotpSecret::generate(nova_auth::totp::Algorithm::Sha1).unwrap();
    let totp = nova_auth::totp::Totp::default();
    // The next time step's code (accepted within the verifier's skew): this step's was
    // used above, and a step is good for one sign-in only.
    let next = std::time::SystemTime::now() + Duration::from_secs(30);
    let code = totp.code_at(&device, next).unwrap();
    let user = UserId::from_uuid(a.admin.id).unwrap();
    let factor = h
        .totp
        .verify_factor(a.admin.tenant, user, &totp, &device, &code)
        .await
        .unwrap();
    // A factor verified for another user steps up nothing.
    let someone_else =
        nova_auth::VerifiedFactor::attested(a.admin.tenant, UserId::new_v4(), method("otp"))
            .unwrap();
    assert!(sessions.step_up(&token, someone_else).await.is_err());
    sessions.step_up(&token, factor).await.unwrap();
    let r = patch(token.clone(), json!({"status": "pending"}))
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "{}",
        r.text().await.unwrap()
    );
    // Revoked, the session is refused at the edge.
    assert!(sessions.revoke(&token).await.unwrap());
    assert_eq!(
        patch(token, json!({"status": "open"}))
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    h.stop().await;
}

#[tokio::test]
async fn every_refusal_is_in_the_audit_log_with_its_reason() {
    let _serial = SERIAL.lock().await;
    let Some(h) = start("tkrefusals", &config_text(&[])).await else {
        return;
    };
    let a = acme(&h, TenantId::new_v4()).await;
    let ticket = file_ticket(&h, a.agent, "billing", "support", a.customer.id, "body").await;
    let forbidden = [
        (
            reqwest::Method::POST,
            "/users".to_owned(),
            json!({"email": "e@acme.example", "name": "E", "department": "it", "queues": [], "role": "admin"}),
        ),
        (
            reqwest::Method::POST,
            "/admin/api-keys".to_owned(),
            json!({}),
        ),
        (
            reqwest::Method::POST,
            "/admin/grants".to_owned(),
            json!({"id": "g", "to_user": a.agent.id, "department": "hr", "ttl_seconds": 60}),
        ),
        (
            reqwest::Method::POST,
            format!("/privacy/subjects/{}/erase", a.customer.id),
            json!({}),
        ),
    ];
    for (method, path, body) in &forbidden {
        assert_eq!(
            send(&h, a.agent, method.clone(), path, body.clone()).await,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    // An admin action with a password-only token: allowed by the policy, refused for want
    // of a second factor.
    let r = h
        .client
        .post(h.url("/admin/api-keys"))
        .bearer_auth(h.token_without_mfa(a.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A ticket that does not exist, and one the agent may not update: both 404, both logged.
    for path in [
        format!("/tickets/{}", Uuid::new_v4()),
        format!("/tickets/{ticket}"),
    ] {
        let s = send(
            &h,
            a.agent,
            reqwest::Method::PATCH,
            &path,
            json!({"priority": 1}),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    let events = h.audit_events().await;
    let refusals: Vec<&Value> = events
        .iter()
        .filter(|e| e["outcome"] == "denied" || e["event_type"] == "request.refused")
        .collect();
    let by = |user: User| format!("user:{}", user.id);
    let agent: Vec<&&Value> = refusals
        .iter()
        .filter(|e| e["actor"] == json!(by(a.agent)))
        .collect();
    assert_eq!(agent.len(), forbidden.len() + 2, "{agent:#?}");
    for e in &agent {
        let has_reason = e["policies"].as_array().is_some_and(|p| !p.is_empty())
            || e["params"]["reason"].is_string();
        assert!(has_reason, "a refusal without its reason: {e}");
    }
    let admin: Vec<&&Value> = refusals
        .iter()
        .filter(|e| e["actor"] == json!(by(a.admin)))
        .collect();
    assert_eq!(admin.len(), 1);
    assert!(
        admin[0]["policies"].to_string().contains("second factor"),
        "{}",
        admin[0]
    );
    h.stop().await;
}

#[tokio::test]
async fn a_write_whose_commit_fails_leaves_no_audit_event() {
    let _serial = SERIAL.lock().await;
    let Some(h) = start("tkfailcommit", &config_text(&[])).await else {
        return;
    };
    let tenant = TenantId::new_v4();
    let a = acme(&h, tenant).await;
    // A check the database runs at commit: a ticket titled `poison` fails it.
    let names = nova_examples::ticketing::db::Names::new(h.fixture.prefix()).unwrap();
    h.fixture
        .exec(&format!(
            "CREATE FUNCTION {app}.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN IF NEW.title = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NULL; END $$;
             CREATE CONSTRAINT TRIGGER poison AFTER INSERT ON {app}.tickets
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {app}.refuse_poison();",
            app = names.app
        ))
        .await;
    let writes = |events: &[Value]| {
        events
            .iter()
            .filter(|e| e["tenant"] == json!(tenant.to_string()) && e["action"] == "tickets.create")
            .count()
    };
    let before = writes(&h.audit_events().await);
    let post = |title: &str| {
        h.client
            .post(h.url("/tickets"))
            .bearer_auth(h.token(a.agent))
            .json(
                &json!({"queue": "billing", "department": "support", "priority": 2,
                          "title": title, "body": "b", "requester_id": a.customer.id}),
            )
            .send()
    };
    assert_eq!(
        post("poison").await.unwrap().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(post("fine").await.unwrap().status(), StatusCode::CREATED);
    let after = h.audit_events().await;
    assert_eq!(
        writes(&after),
        before + 1,
        "only the committed ticket has an event"
    );
    let stored: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}.tickets WHERE title = 'poison'",
        names.app
    )))
    .fetch_one(h.fixture.admin())
    .await
    .unwrap();
    assert_eq!(stored, 0);
    h.stop().await;
}

#[tokio::test]
async fn production_refuses_to_start_without_a_configured_kek() {
    let _serial = SERIAL.lock().await;
    let text = config_text(&[(
        "kek_env = \"NOVA_KEK\"",
        "kek_env = \"NOVA_TEST_KEK_NOT_SET_ANYWHERE\"",
    )]);
    let Some(started) = start_with("tknokek", &text, None, Some([9; 32])).await else {
        return;
    };
    let Err(e) = started else {
        panic!("the service started without a KEK");
    };
    assert!(e.to_string().contains("security.encryption.kek_env"), "{e}");
}
