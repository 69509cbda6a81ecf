//! The public API of nova-policy, read as a specification: the grammar, validation, the
//! decision rules, explanations, delegation, tenant scoping and reload.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use nova_policy::{
    Attrs, CompiledPolicy, Expr, Grant, PolicyError, PolicySet, PolicyStore, Problem, Reason,
    Request, RuleBuilder, Schema, Type, Value,
};
use nova_tenancy::TenantId;

const SCHEMA: &str = r#"
    // Help-desk entities.
    entity User {
        department: String,
        queues: Set<String>,
        level: Long,
        nickname?: String,
    };
    entity Ticket {
        queue: String,
        department: String,
        priority: Long,
        hr: Bool,
        path: String,
        tags: Set<String>,
        assignee?: String,
    };
    entity Report { department: String };
    context { mfa: Bool, hour: Long };
    principal User;
"#;

const POLICY: &str = r#"
    role agent;
    role senior : agent;
    role manager : senior;
    role admin;
    role support.lead;
    role support.night;

    @id("agents-read-queues")
    allow agent to read, comment on Ticket when resource.queue in principal.queues;
    @id("managers-department")
    allow manager to read, update on Ticket when resource.department == principal.department;
    @id("admins-not-hr")
    allow admin to * on Ticket when !resource.hr;
    @id("leads-reports")
    allow support.* to read on Report;
    @id("hr-needs-mfa")
    deny * to * on Ticket when resource.hr && !context.mfa;
    @id("no-deletes-at-night")
    deny * to delete on * when context.hour < 6;
"#;

fn schema() -> Schema {
    Schema::parse(SCHEMA).unwrap()
}

fn policy() -> CompiledPolicy {
    PolicySet::parse(POLICY)
        .unwrap()
        .compile(&schema())
        .unwrap()
}

fn user(dept: &str, queues: &[&str]) -> Attrs {
    Attrs::new()
        .with("department", dept)
        .with("queues", Value::strings(queues.iter().copied()))
        .with("level", 1)
}

fn ticket(queue: &str, dept: &str, hr: bool) -> Attrs {
    Attrs::new()
        .with("queue", queue)
        .with("department", dept)
        .with("priority", 2)
        .with("hr", hr)
        .with("path", "/support/billing")
        .with("tags", Value::strings(["a"]))
}

fn ctx(mfa: bool, hour: i64) -> Attrs {
    Attrs::new().with("mfa", mfa).with("hour", hour)
}

fn allowed(
    p: &CompiledPolicy,
    roles: &[&str],
    u: &Attrs,
    action: &str,
    t: &Attrs,
    c: &Attrs,
) -> bool {
    let req = Request::new(action, "Ticket")
        .principal("u-1", roles, u)
        .resource(t)
        .context(c);
    let fast = p.is_allowed(&req);
    assert_eq!(
        fast,
        p.explain(&req).is_allowed(),
        "explain and is_allowed disagree"
    );
    assert_eq!(fast, p.decide(&req).is_allowed());
    fast
}

#[test]
fn agent_reads_tickets_of_their_queues_only() {
    let p = policy();
    let alice = user("support", &["billing", "vip"]);
    let c = ctx(true, 12);
    assert!(allowed(
        &p,
        &["agent"],
        &alice,
        "read",
        &ticket("billing", "x", false),
        &c
    ));
    assert!(!allowed(
        &p,
        &["agent"],
        &alice,
        "read",
        &ticket("sales", "x", false),
        &c
    ));
    assert!(!allowed(
        &p,
        &["agent"],
        &alice,
        "update",
        &ticket("billing", "x", false),
        &c
    ));
}

#[test]
fn role_inheritance_is_transitive() {
    let p = policy();
    let bob = user("support", &["billing"]);
    let c = ctx(true, 12);
    // manager → senior → agent: the agent rule applies to a manager.
    assert!(allowed(
        &p,
        &["manager"],
        &bob,
        "comment",
        &ticket("billing", "sales", false),
        &c
    ));
    assert!(p.inherits("manager", "agent"));
    assert!(!p.inherits("agent", "manager"));
}

#[test]
fn default_deny_and_unknown_roles_grant_nothing() {
    let p = policy();
    let u = user("support", &["billing"]);
    let c = ctx(true, 12);
    assert!(!allowed(
        &p,
        &[],
        &u,
        "read",
        &ticket("billing", "x", false),
        &c
    ));
    assert!(!allowed(
        &p,
        &["superuser"],
        &u,
        "read",
        &ticket("billing", "x", false),
        &c
    ));
    let e = p.explain(
        &Request::new("read", "Ticket")
            .principal("u", &["superuser"], &u)
            .resource(&ticket("billing", "x", false))
            .context(&c),
    );
    assert!(e.reasons().contains(&Reason::UnknownRoles { count: 1 }));
}

#[test]
fn deny_overrides_allow() {
    let p = policy();
    let admin = user("it", &[]);
    // Admins may do anything on non-HR tickets, but not delete at night.
    assert!(allowed(
        &p,
        &["admin"],
        &admin,
        "delete",
        &ticket("q", "x", false),
        &ctx(true, 12)
    ));
    assert!(!allowed(
        &p,
        &["admin"],
        &admin,
        "delete",
        &ticket("q", "x", false),
        &ctx(true, 3)
    ));
    let e = p.explain(
        &Request::new("delete", "Ticket")
            .principal("u", &["admin"], &admin)
            .resource(&ticket("q", "x", false))
            .context(&ctx(true, 3)),
    );
    assert_eq!(
        e.reasons(),
        [Reason::Denied {
            rule: "no-deletes-at-night".into()
        }]
    );
}

#[test]
fn admins_see_nothing_of_hr() {
    let p = policy();
    let admin = user("it", &[]);
    assert!(!allowed(
        &p,
        &["admin"],
        &admin,
        "read",
        &ticket("q", "hr", true),
        &ctx(true, 12)
    ));
}

#[test]
fn role_prefix_wildcard_matches_declared_roles() {
    let p = policy();
    let u = user("support", &[]);
    for role in ["support.lead", "support.night"] {
        let roles = [role];
        let req = Request::new("read", "Report")
            .principal("u", &roles, &u)
            .resource(&u);
        assert!(p.is_allowed(&req), "{role}");
    }
    let req = Request::new("read", "Report")
        .principal("u", &["agent"], &u)
        .resource(&u);
    assert!(!p.is_allowed(&req));
}

#[test]
fn a_failing_deny_denies_and_a_failing_allow_does_not_allow() {
    let p = policy();
    let u = user("support", &["billing"]);
    // No context: `hr-needs-mfa` cannot read context.mfa, but it only reads it for HR tickets.
    let t = ticket("billing", "x", false);
    let req = Request::new("read", "Ticket")
        .principal("u", &["agent"], &u)
        .resource(&t);
    assert!(
        p.is_allowed(&req),
        "&& short-circuits before the missing attribute"
    );
    let hr = ticket("billing", "hr", true);
    let req = Request::new("read", "Ticket")
        .principal("u", &["agent"], &u)
        .resource(&hr);
    assert!(!p.is_allowed(&req));
    let e = p.explain(&req);
    assert!(
        matches!(&e.reasons()[0], Reason::DeniedOnError { rule, .. } if &**rule == "hr-needs-mfa")
    );
    // A resource missing `queue`: the agent rule cannot be evaluated, so it does not allow.
    let mut broken = ticket("billing", "x", false);
    broken.remove("queue");
    let c = ctx(true, 12);
    let req = Request::new("read", "Ticket")
        .principal("u", &["agent"], &u)
        .resource(&broken)
        .context(&c);
    assert!(!p.is_allowed(&req));
    assert!(matches!(
        &p.explain(&req).reasons()[0],
        Reason::ConditionError { .. }
    ));
    // An attribute of the wrong type is a failure too, never a coercion.
    let mut wrong = ticket("billing", "x", false);
    wrong.insert("queue", 7);
    let req = Request::new("read", "Ticket")
        .principal("u", &["agent"], &u)
        .resource(&wrong)
        .context(&c);
    assert!(!p.is_allowed(&req));
}

#[test]
fn explanation_of_a_default_deny_says_why_nothing_matched() {
    let p = policy();
    let u = user("support", &["billing"]);
    let c = ctx(true, 12);
    let t = ticket("sales", "x", false);
    let e = p.explain(
        &Request::new("read", "Ticket")
            .principal("u", &["agent"], &u)
            .resource(&t)
            .context(&c),
    );
    assert!(!e.is_allowed());
    assert!(e.reasons().contains(&Reason::ConditionFalse {
        rule: "agents-read-queues".into()
    }));
    // `managers-department` and `admins-not-hr` need roles the agent does not hold.
    assert!(e.reasons().contains(&Reason::RolesNotHeld { rules: 2 }));
    let e = p.explain(&Request::new("archive", "Invoice"));
    assert_eq!(
        e.reasons(),
        [Reason::NoRules {
            resource_type: "Invoice".into(),
            action: "archive".into()
        }]
    );
    assert!(e.to_string().starts_with("deny (v"));
}

#[test]
fn conditions_cover_every_operator() {
    let s = schema();
    let cases = [
        ("resource.priority >= 2", true),
        ("resource.priority > 2", false),
        ("resource.priority <= 2 && resource.priority < 3", true),
        ("resource.priority != 2", false),
        ("resource.path starts_with \"/support/\"", true),
        ("resource.path starts_with \"/sales\"", false),
        ("\"a\" in resource.tags", true),
        ("resource.queue in [\"billing\", \"vip\"]", true),
        ("resource.queue in []", false),
        ("resource has assignee", false),
        (
            "!(resource has assignee) || resource.assignee == \"x\"",
            true,
        ),
        ("principal has nickname || principal.level == 1", true),
        (
            "resource.hr == false && (context.mfa || context.hour > 20)",
            true,
        ),
        ("-5 < resource.priority", true),
    ];
    let u = user("support", &[]);
    let t = ticket("billing", "support", false);
    let c = ctx(true, 12);
    for (cond, want) in cases {
        let text = format!("role r; allow r to read on Ticket when {cond};");
        let p = PolicySet::parse(&text).unwrap().compile(&s).unwrap();
        let req = Request::new("read", "Ticket")
            .principal("u", &["r"], &u)
            .resource(&t)
            .context(&c);
        assert_eq!(p.is_allowed(&req), want, "{cond}");
    }
}

#[test]
fn parse_errors_give_line_column_and_expectation() {
    let err =
        PolicySet::parse("role agent;\nallow agent to read on Ticket when resource.queue = \"x\";")
            .unwrap_err();
    assert_eq!((err.pos.line, err.pos.column), (2, 51));
    assert_eq!(err.expected, "`==`");
    let err = PolicySet::parse("role agent;\n  allow agent read on Ticket;").unwrap_err();
    assert_eq!((err.pos.line, err.pos.column), (2, 15));
    assert_eq!(err.expected, "`to`");
    assert_eq!(err.found, "`read`");
    let err = PolicySet::parse("allow * to read on Ticket when (resource.a").unwrap_err();
    assert_eq!(err.expected, "`)`");
    assert_eq!(err.found, "end of input");
    let err = PolicySet::parse("allow * to read on Ticket when resource.a == \"unterminated")
        .unwrap_err();
    assert_eq!(err.expected, "a closing `\"`");
    let err =
        PolicySet::parse("allow * to read on T when resource.a == \"broken\n\";").unwrap_err();
    assert_eq!(err.expected, "a closing `\"` on the same line");
    let err = PolicySet::parse(
        "grant \"g\" to role admin: read on Ticket until \"2026-02-30T00:00:00Z\" by \"x\";",
    )
    .unwrap_err();
    assert!(err.expected.contains("UTC time"));
    let err = Schema::parse("entity User { level: Integer };").unwrap_err();
    assert!(err.to_string().contains("1:22"), "{err}");
    let deep = format!(
        "allow * to read on T when {}true{};",
        "(".repeat(200),
        ")".repeat(200)
    );
    let err = PolicySet::parse(&deep).unwrap_err();
    assert!(err.expected.contains("nested at most"));
    assert!(PolicySet::parse(&"x".repeat(nova_policy::MAX_TEXT_LEN + 1)).is_err());
    // Long chains nest too: the tree's depth is bounded, not only parentheses.
    let chain = format!(
        "allow * to read on T when {};",
        vec!["context.a"; 10_000].join(" && ")
    );
    assert!(
        PolicySet::parse(&chain)
            .unwrap_err()
            .expected
            .contains("nested at most")
    );
    // Reasonable nesting is fine, and prints back to an equal condition.
    let nested = format!("{}context.a{}", "!(".repeat(20), ")".repeat(20));
    let e = nova_policy::Expr::parse(&nested).unwrap();
    assert_eq!(nova_policy::Expr::parse(&e.to_string()).unwrap(), e);
}

fn problems(text: &str) -> Vec<Problem> {
    match PolicySet::parse(text).unwrap().compile(&schema()) {
        Err(PolicyError::Invalid(v)) => v.into_iter().map(|e| e.kind).collect(),
        other => panic!("expected validation errors, got {other:?}"),
    }
}

#[test]
fn validation_rejects_unknown_names_mismatched_types_and_cycles() {
    assert_eq!(
        problems("allow ghost to read on Ticket;"),
        vec![Problem::UnknownRole("ghost".into())]
    );
    assert_eq!(
        problems("role a; allow a to read on Invoice;"),
        vec![Problem::UnknownType("Invoice".into())]
    );
    assert_eq!(
        problems("role a; allow a to read on Ticket when resource.owner == \"x\";"),
        vec![Problem::UnknownAttribute {
            var: "resource",
            name: "owner".into()
        }]
    );
    assert!(matches!(
        &problems("role a; allow a to read on Ticket when resource.priority == \"2\";")[..],
        [Problem::Type { .. }]
    ));
    assert!(matches!(
        &problems("role a; allow a to read on Ticket when resource.queue < 3;")[..],
        [Problem::Type { .. }]
    ));
    assert!(matches!(
        &problems("role a; allow a to read on Ticket when resource.priority;")[..],
        [Problem::Type { .. }]
    ));
    assert!(matches!(
        &problems("role a; allow a to read on Ticket when resource.priority in resource.tags;")[..],
        [Problem::Type { .. }]
    ));
    assert!(matches!(
        &problems("role a; allow a to read on Ticket when resource.tags == resource.tags;")[..],
        [Problem::Type { .. }]
    ));
    assert_eq!(
        problems("role a; allow a to read on * when resource.hr;"),
        vec![Problem::ResourceAttributeOnWildcard]
    );
    assert!(matches!(
        &problems("role a : c; role b : a; role c : b; allow a to read on Ticket;")[..],
        [Problem::RoleCycle(path)] if path.contains("a") && path.contains("→")
    ));
    assert_eq!(problems("role a; role a;"), vec![Problem::DuplicateRole]);
    assert_eq!(
        problems(
            "role a; @id(\"x\") allow a to read on Ticket; @id(\"x\") deny a to read on Ticket;"
        ),
        vec![Problem::DuplicateId]
    );
    assert_eq!(
        problems("role a; allow ops.* to read on Ticket;"),
        vec![Problem::EmptyPattern("ops.*".into())]
    );
    // Every problem is listed, not just the first.
    assert_eq!(
        problems("allow x to read on Ticket; allow y to read on Nope;").len(),
        3
    );
    // Without a principal type, principal attributes cannot be read.
    let bare = Schema::parse("entity Ticket { hr: Bool };").unwrap();
    let err = PolicySet::parse("allow * to read on Ticket when principal.level > 1;")
        .unwrap()
        .compile(&bare)
        .unwrap_err();
    assert!(err.problems().iter().any(|p| matches!(
        p.kind,
        Problem::NoPrincipalType | Problem::UnknownAttribute { .. }
    )));
}

#[test]
fn builder_expresses_the_same_model_as_text() {
    let s = schema();
    let built = PolicySet::new()
        .role("agent", [])
        .role("manager", ["agent"])
        .rule(
            RuleBuilder::allow(["agent"], ["read"], "Ticket")
                .id("q")
                .when(Expr::resource("queue").is_in(Expr::principal("queues"))),
        )
        .rule(
            RuleBuilder::deny(["*"], ["*"], "Ticket")
                .id("hr")
                .when(Expr::resource("hr")),
        )
        .compile(&s)
        .unwrap();
    let text = PolicySet::parse(
        r#"role agent; role manager : agent;
           @id("q") allow agent to read on Ticket when resource.queue in principal.queues;
           @id("hr") deny * to * on Ticket when resource.hr;"#,
    )
    .unwrap()
    .compile(&s)
    .unwrap();
    let u = user("d", &["billing"]);
    let c = ctx(true, 12);
    for t in [
        ticket("billing", "d", false),
        ticket("billing", "d", true),
        ticket("x", "d", false),
    ] {
        for roles in [&["manager"][..], &["agent"], &[]] {
            let req = Request::new("read", "Ticket")
                .principal("u", roles, &u)
                .resource(&t)
                .context(&c);
            assert_eq!(built.is_allowed(&req), text.is_allowed(&req));
        }
    }
    let _ = Type::Bool;
}

const T0: u64 = 1_796_083_200; // 2026-12-01T00:00:00Z

#[test]
fn delegation_gives_scoped_expiring_access_and_every_use_is_visible() {
    let text = format!(
        "{POLICY}\n grant \"hr-review\" to role admin: read on Ticket when resource.department == \"hr\" until \"2026-12-01T00:00:00Z\" by \"carol\";"
    );
    let p = PolicySet::parse(&text).unwrap().compile(&schema()).unwrap();
    let admin = user("it", &[]);
    let hr = ticket("q", "hr", true);
    let c = ctx(true, 12);
    let req = |at| {
        Request::new("read", "Ticket")
            .principal("a", &["admin"], &admin)
            .resource(&hr)
            .context(&c)
            .at(at)
    };
    // Before expiry: allowed, and the explanation names the grant and its grantor.
    assert!(p.is_allowed(&req(T0 - 1)));
    let e = p.explain(&req(T0 - 1));
    assert!(e.used_delegation());
    assert_eq!(
        e.reasons(),
        [Reason::Delegated {
            grant: "hr-review".into(),
            granted_by: "carol".into(),
            expires_at: T0
        }]
    );
    // At expiry: denied, and the explanation says the grant expired.
    assert!(!p.is_allowed(&req(T0)));
    assert!(
        p.explain(&req(T0))
            .reasons()
            .contains(&Reason::GrantExpired {
                grant: "hr-review".into(),
                expired_at: T0
            })
    );
    // Out of scope: another department's HR ticket, or another action.
    let other = ticket("q", "legal", true);
    let r = Request::new("read", "Ticket")
        .principal("a", &["admin"], &admin)
        .resource(&other)
        .context(&c)
        .at(T0 - 1);
    assert!(!p.is_allowed(&r));
    let r = Request::new("update", "Ticket")
        .principal("a", &["admin"], &admin)
        .resource(&hr)
        .context(&c)
        .at(T0 - 1);
    assert!(!p.is_allowed(&r));
    // A deny still wins over a grant: without MFA, HR tickets stay closed.
    let no_mfa = ctx(false, 12);
    let r = Request::new("read", "Ticket")
        .principal("a", &["admin"], &admin)
        .resource(&hr)
        .context(&no_mfa)
        .at(T0 - 1);
    assert!(!p.is_allowed(&r));
}

#[test]
fn delegation_to_one_principal_applies_to_that_principal_only() {
    let g = Grant::to_principal("one", "u-7", ["read"], "Ticket", T0, "carol");
    let p = PolicySet::parse(POLICY)
        .unwrap()
        .grant(g)
        .compile(&schema())
        .unwrap();
    let u = user("x", &[]);
    let t = ticket("q", "x", false);
    let c = ctx(true, 12);
    let r = |id| {
        Request::new("read", "Ticket")
            .principal(id, &[], &u)
            .resource(&t)
            .context(&c)
            .at(T0 - 10)
    };
    assert!(p.is_allowed(&r("u-7")));
    assert!(!p.is_allowed(&r("u-8")));
    assert!(!p.is_allowed(&r("")));
}

#[test]
fn tenant_rules_and_grants_never_leak_to_another_tenant() {
    let store = PolicyStore::new(
        schema(),
        PolicySet::parse("role agent; role admin;").unwrap(),
    )
    .unwrap();
    let (a, b) = (TenantId::new_v4(), TenantId::new_v4());
    store
        .set_tenant(
            a,
            PolicySet::parse("allow agent to read on Ticket;").unwrap(),
        )
        .unwrap();
    store
        .grant(
            b,
            Grant::to_role("g", "admin", ["read"], "Ticket", u64::MAX, "root"),
        )
        .unwrap();
    let u = user("x", &[]);
    let agent = Request::new("read", "Ticket").principal("u", &["agent"], &u);
    let admin = Request::new("read", "Ticket").principal("u", &["admin"], &u);
    assert!(store.decide(a, &agent).is_allowed());
    assert!(!store.decide(b, &agent).is_allowed());
    assert!(!store.decide(a, &admin).is_allowed());
    assert!(store.decide(b, &admin).is_allowed());
    // Unnamed rules at the same position in the shared and a tenant's text do not clash.
    let layered = PolicyStore::new(
        schema(),
        PolicySet::parse("role agent; allow agent to read on Report;").unwrap(),
    )
    .unwrap();
    layered
        .set_tenant(
            a,
            PolicySet::parse("role extra; allow extra to read on Ticket;").unwrap(),
        )
        .unwrap();
    // A tenant with nothing of its own gets only the shared set.
    let c = TenantId::new_v4();
    assert!(!store.decide(c, &agent).is_allowed());
    assert!(!store.decide(c, &admin).is_allowed());
    // Revoking the grant takes effect on the next decision.
    assert!(store.revoke(b, "g").unwrap());
    assert!(!store.decide(b, &admin).is_allowed());
    assert!(!store.revoke(b, "g").unwrap());
}

#[test]
fn reload_swaps_versions_and_an_invalid_set_keeps_the_old_one() {
    let store = PolicyStore::new(
        schema(),
        PolicySet::parse("role agent; allow agent to read on Ticket;").unwrap(),
    )
    .unwrap();
    let t = TenantId::new_v4();
    let u = user("x", &[]);
    let req = Request::new("read", "Ticket").principal("u", &["agent"], &u);
    let d1 = store.decide(t, &req);
    assert!(d1.is_allowed());
    store
        .set_shared(PolicySet::parse("role agent; deny agent to read on Ticket;").unwrap())
        .unwrap();
    let d2 = store.decide(t, &req);
    assert!(!d2.is_allowed());
    assert!(d2.version() > d1.version());
    let err = store.set_shared(
        PolicySet::parse("role agent; allow agent to read on Ticket when resource.nope;").unwrap(),
    );
    assert!(err.is_err());
    let d3 = store.decide(t, &req);
    assert_eq!(d3, d2, "the refused set changed nothing, version included");
    // A tenant layering that the new shared set would break blocks the whole update.
    store
        .set_tenant(t, PolicySet::parse("role extra : agent;").unwrap())
        .unwrap();
    assert!(
        store
            .set_shared(PolicySet::parse("role other;").unwrap())
            .is_err()
    );
    assert_eq!(
        store.explain(t, &req).decision.version(),
        store.policy(t).version()
    );
}

#[test]
fn role_sets_wider_than_one_word_keep_inheritance_exact() {
    // 150 roles in one chain (r_i inherits r_{i-1}): masks span three 64-bit words.
    let mut text = String::from("role r0;\n");
    for i in 1..150 {
        text.push_str(&format!("role r{i} : r{};\n", i - 1));
    }
    text.push_str("allow r5 to read on Ticket;\nallow r140 to update on Ticket;\nallow r70, r130 to comment on Ticket;\n");
    text.push_str(
        "grant \"g\" to role r100: delete on Ticket until \"2100-01-01T00:00:00Z\" by \"x\";\n",
    );
    let p = PolicySet::parse(&text).unwrap().compile(&schema()).unwrap();
    let u = user("x", &[]);
    let t = ticket("q", "x", false);
    let c = ctx(true, 12);
    let check = |role: usize, action: &str| {
        let name = [format!("r{role}")];
        let roles: Vec<&str> = name.iter().map(String::as_str).collect();
        let req = Request::new(action, "Ticket")
            .principal("u", &roles, &u)
            .resource(&t)
            .context(&c)
            .at(T0);
        let fast = p.is_allowed(&req);
        assert_eq!(fast, p.explain(&req).is_allowed());
        fast
    };
    for role in [0, 4, 5, 63, 64, 65, 127, 128, 139, 140, 149] {
        assert_eq!(check(role, "read"), role >= 5, "read r{role}");
        assert_eq!(check(role, "update"), role >= 140, "update r{role}");
        assert_eq!(check(role, "comment"), role >= 70, "comment r{role}");
        assert_eq!(check(role, "delete"), role >= 100, "delete r{role}");
    }
}

#[test]
fn a_policy_whose_index_would_explode_is_refused_before_it_is_built() {
    // 2,000 distinct actions on one type and 1,500 wildcard rules: each wildcard rule would be
    // copied into every (type, action) bucket. Counted before anything is built.
    let mut text = String::from("role a;\n");
    for i in 0..2_000 {
        text.push_str(&format!("allow a to act{i} on Ticket;\n"));
    }
    for _ in 0..1_500 {
        text.push_str("deny * to * on *;\n");
    }
    let err = PolicySet::parse(&text)
        .unwrap()
        .compile(&schema())
        .unwrap_err();
    assert!(
        matches!(err.problems(), [p] if matches!(p.kind, Problem::TooLarge(3_003_000..))),
        "{err}"
    );
}

#[test]
fn printed_conditions_parse_back_to_the_same_tree() {
    for text in [
        "(1 == 1) == true",
        "(!true) == false",
        "!(true == false)",
        "(resource has queue) in [true]",
        "(context.a starts_with \"x\") != (context.b || context.c)",
        "context.a && (context.b || !context.c) && context.d == -9223372036854775808",
        "\"tab\\there \\u{1F600} \\\"quoted\\\"\" in [\"a\", \"b\"]",
    ] {
        let e = Expr::parse(text).unwrap();
        let printed = e.to_string();
        assert_eq!(
            Expr::parse(&printed).unwrap(),
            e,
            "{text} printed as {printed}"
        );
    }
}

#[test]
fn builder_rules_that_could_never_apply_are_refused() {
    let empty_roles = PolicySet::new().role("a", []).rule(RuleBuilder::deny(
        Vec::<&str>::new(),
        ["read"],
        "Ticket",
    ));
    let empty_actions =
        PolicySet::new()
            .role("a", [])
            .rule(RuleBuilder::deny(["a"], Vec::<&str>::new(), "Ticket"));
    let pattern_grant = PolicySet::new().role("adm", []).grant(Grant::to_role(
        "g",
        "adm*",
        ["read"],
        "Ticket",
        u64::MAX,
        "x",
    ));
    for (set, want) in [
        (empty_roles, Problem::Empty("roles")),
        (empty_actions, Problem::Empty("actions")),
        (pattern_grant, Problem::GranteePattern),
    ] {
        let err = set.compile(&schema()).unwrap_err();
        assert!(err.problems().iter().any(|p| p.kind == want), "{err}");
    }
    let mut many = String::new();
    for i in 0..=nova_policy::MAX_ROLES {
        many.push_str(&format!("role r{i};\n"));
    }
    let err = PolicySet::parse(&many)
        .unwrap()
        .compile(&schema())
        .unwrap_err();
    assert!(matches!(err.problems()[0].kind, Problem::TooManyRoles(_)));
}

#[test]
fn a_repeated_action_does_not_count_a_rule_twice() {
    let p = PolicySet::parse("role a; role b; allow b to read, read on Ticket;")
        .unwrap()
        .compile(&schema())
        .unwrap();
    let u = user("x", &[]);
    let e = p.explain(&Request::new("read", "Ticket").principal("u", &["a"], &u));
    assert_eq!(e.reasons(), [Reason::RolesNotHeld { rules: 1 }]);
}

#[test]
fn a_shared_update_that_clashes_with_a_tenant_names_the_tenant() {
    let store = PolicyStore::new(schema(), PolicySet::parse("role agent;").unwrap()).unwrap();
    let t = TenantId::new_v4();
    store
        .set_tenant(t, PolicySet::parse("role future;").unwrap())
        .unwrap();
    let err = store
        .set_shared(PolicySet::parse("role agent; role future;").unwrap())
        .unwrap_err();
    assert!(
        matches!(&err, PolicyError::Tenant { tenant, .. } if *tenant == t),
        "{err}"
    );
    assert_eq!(err.problems()[0].kind, Problem::DuplicateRole);
}

#[test]
fn debug_output_names_attributes_but_never_prints_their_values() {
    let u = Attrs::new()
        .with("email", "alice@example.com")
        .with("ssn", "078-05-1120");
    let printed = format!("{u:?}");
    assert!(
        printed.contains("email") && printed.contains("ssn"),
        "{printed}"
    );
    assert!(
        !printed.contains("alice") && !printed.contains("078"),
        "{printed}"
    );
    let p = PolicySet::parse(
        "role a; allow a to read on Ticket when resource.department == principal.department;",
    )
    .unwrap()
    .compile(&schema())
    .unwrap();
    let me = Attrs::new().with("department", "secret-dept");
    let req = Request::new("read", "Ticket").principal("u", &["a"], &me);
    let f = p
        .sql_filter(&req, &nova_policy::ResourceTable::new(), 1)
        .unwrap();
    assert!(!format!("{f:?}").contains("secret-dept"));
    assert!(!format!("{req:?}").contains("secret-dept"));
}

#[test]
fn context_mfa_comes_from_how_the_credential_authenticated() {
    use nova_tenancy::{AuthMethod, CredentialVerifier, TenantContext, UserId, VerifiedIdentity};
    use std::time::{Duration, SystemTime};
    struct Login;
    impl CredentialVerifier for Login {
        fn verifier_name(&self) -> &'static str {
            "test/login"
        }
    }
    let p = policy();
    let now = SystemTime::now();
    let fifteen = Duration::from_secs(900);
    let password = TenantContext::from_verified(
        &Login,
        VerifiedIdentity::new(TenantId::new_v4())
            .user(UserId::new_v4())
            .methods([AuthMethod::new("pwd").unwrap()])
            .authenticated_at(now),
    );
    let u = user("hr", &["hr"]);
    let hr_ticket = ticket("hr", "hr", true);
    let decide = |ctx: &TenantContext, at: SystemTime| {
        let c = Attrs::authentication(ctx, fifteen, at).with("hour", 12);
        allowed(&p, &["manager"], &u, "read", &hr_ticket, &c)
    };
    // The HR rule denies without a second factor, allows after a step-up, and denies
    // again once the step-up is older than fifteen minutes.
    assert!(!decide(&password, now));
    let stepped = password
        .stepped_up(&Login, AuthMethod::new("otp").unwrap(), now)
        .unwrap();
    assert!(decide(&stepped, now));
    assert!(!decide(&stepped, now + fifteen + Duration::from_secs(1)));
}
