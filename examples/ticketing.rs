//! The reference service: a multi-tenant help desk built only from Nova.
//!
//! ```text
//! cargo run --example ticketing                 # serve on 127.0.0.1:8080 until Ctrl-C
//! cargo run --example ticketing -- --self-test  # serve, drive it once, exit
//! ```
//!
//! Needs the PostgreSQL and Redis of `README.md` (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1/postgres`, a role that may create roles and schemas;
//! Redis from `examples/ticketing/nova.toml`). Everything it creates is named
//! `nova_ticketing_*` and dropped when it stops. It prints a token for each demo user.

use std::collections::HashMap;

use nova_auth::{AccessClaims, SigningKey, TokenIssuer};
use nova_examples::ticketing::{self, ServiceSection, Setup, UserSpec, db};
use nova_tenancy::{Role, TenantId, UserId};
use sqlx::postgres::PgConnectOptions;

const PREFIX: &str = "nova_ticketing_";

#[tokio::main]
async fn main() -> Result<(), ticketing::Error> {
    let self_test = std::env::args().any(|a| a == "--self-test");
    let path = std::env::var("NOVA_TICKETING_CONFIG").ok();
    let text = match &path {
        Some(p) => std::fs::read_to_string(p)?,
        None => ticketing::DEFAULT_CONFIG.to_owned(),
    };
    // Every section is validated here; a refused setting stops the service, named.
    let config = nova::Config::from_toml(&text)?;
    let service: ServiceSection = config.app_section("ticketing")?;
    println!(
        "configuration: profile {}, all sections valid",
        config.profile
    );

    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1/postgres".into());
    let connect: PgConnectOptions = url.parse()?;
    let admin = sqlx::PgPool::connect_with(connect.clone()).await?;
    let names = db::Names::new(PREFIX)?;
    db::drop_all(&admin, &names).await?; // a fresh demo every start

    // A stand-in identity provider: it signs the demo users' tokens. The service only
    // sees its public keys.
    let jwt = config.auth.jwt.clone().ok_or("security.jwt is required")?;
    let idp = TokenIssuer::new(
        jwt.issuer.clone(),
        jwt.audience.clone(),
        SigningKey::generate_ed25519("idp-2026-11")?,
    );
    let audit_path =
        std::env::temp_dir().join(format!("nova-ticketing-audit-{}.jsonl", std::process::id()));
    let listen = if self_test {
        "127.0.0.1:0".parse()?
    } else {
        service.listen
    };
    let setup = Setup {
        config,
        admin: admin.clone(),
        connect,
        prefix: PREFIX.into(),
        jwt_keys: idp.key_set()?,
        audit_path: audit_path.clone(),
        // From `security.audit.signing_key_env` and `security.encryption.kek_env`: the
        // service refuses to start without them.
        audit_seed: None,
        kek: None,
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let running = ticketing::start(setup, listener).await?;
    let result = demo(&running, &idp, self_test).await;
    let audit_key = running.nova.audit_key().to_owned();
    running.stop().await?;
    db::drop_all(&admin, &names).await?;
    let verdict = nova_audit::verify_file(
        &audit_path,
        &nova_audit::VerifierKey::parse(&audit_key)?,
        None,
    )?;
    println!(
        "audit log {}: {} events, verified: {}",
        audit_path.display(),
        verdict.entries,
        if verdict.ok() { "OK" } else { "FAILED" }
    );
    std::fs::remove_file(&audit_path)?;
    if !verdict.ok() {
        return Err("the audit log did not verify".into());
    }
    result
}

async fn demo(
    running: &ticketing::Running,
    idp: &TokenIssuer,
    self_test: bool,
) -> Result<(), ticketing::Error> {
    let state = &running.nova;
    let acme = TenantId::new_v4();
    let globex = TenantId::new_v4();
    let mut users: HashMap<&str, (TenantId, uuid::Uuid, &str)> = HashMap::new();
    for (label, tenant, spec) in [
        (
            "acme-admin",
            acme,
            UserSpec {
                email: "ada@acme.example",
                name: "Ada Admin",
                department: "it",
                queues: &[],
                role: "admin",
            },
        ),
        (
            "acme-agent",
            acme,
            UserSpec {
                email: "bo@acme.example",
                name: "Bo Agent",
                department: "support",
                queues: &["billing", "vip"],
                role: "agent",
            },
        ),
        (
            "acme-hr-manager",
            acme,
            UserSpec {
                email: "hal@acme.example",
                name: "Hal HR",
                department: "hr",
                queues: &["people"],
                role: "manager",
            },
        ),
        (
            "acme-dpo",
            acme,
            UserSpec {
                email: "dee@acme.example",
                name: "Dee DPO",
                department: "legal",
                queues: &[],
                role: "dpo",
            },
        ),
        (
            "acme-customer",
            acme,
            UserSpec {
                email: "cy@customer.example",
                name: "Cy Customer",
                department: "customers",
                queues: &[],
                role: "customer",
            },
        ),
        (
            "globex-agent",
            globex,
            UserSpec {
                email: "gil@globex.example",
                name: "Gil Agent",
                department: "support",
                queues: &["billing"],
                role: "agent",
            },
        ),
    ] {
        let id = ticketing::onboard_user(state, tenant, &spec).await?;
        users.insert(label, (tenant, id, spec.role));
    }
    let token = |label: &str| -> Result<String, ticketing::Error> {
        let (tenant, id, role) = users[label];
        Ok(idp
            .issue(&AccessClaims::new(tenant, UserId::from_uuid(id)?).roles([Role::new(role)?]))?)
    };
    let base = &running.base;
    println!("\nserving on {base}; demo tenants acme={acme} globex={globex}");

    let client = reqwest::Client::new();
    let customer = users["acme-customer"].1;
    let created: serde_json::Value = client
        .post(format!("{base}/tickets"))
        .bearer_auth(token("acme-agent")?)
        .json(&serde_json::json!({
            "queue": "billing", "department": "support", "priority": 2,
            "title": "Invoice twice", "body": "I was charged twice, card ending 4242",
            "requester_id": customer,
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let ticket = created["id"].as_str().unwrap_or_default().to_owned();
    println!("acme's agent filed ticket {ticket}");
    let own = client
        .get(format!("{base}/tickets/{ticket}"))
        .bearer_auth(token("acme-agent")?)
        .send()
        .await?;
    println!("acme's agent reads it: {}", own.status());
    let cross = client
        .get(format!("{base}/tickets/{ticket}"))
        .bearer_auth(token("globex-agent")?)
        .send()
        .await?;
    println!("globex's agent asks for it by id: {}", cross.status());
    if own.status() != 200 || cross.status() != 404 {
        return Err("tenant isolation demo gave unexpected answers".into());
    }
    if self_test {
        return Ok(());
    }
    println!("\ntokens (15 minutes):");
    for label in [
        "acme-admin",
        "acme-agent",
        "acme-hr-manager",
        "acme-dpo",
        "globex-agent",
    ] {
        println!("  {label}: {}", token(label)?);
    }
    println!(
        "\ntry:\n  curl -H \"Authorization: Bearer $TOKEN\" {base}/tickets\n\
         press Ctrl-C to stop (everything the demo created is dropped)"
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
