//! The policy algebra as properties over random policies and requests: default deny, deny
//! overrides, monotonicity of allow and deny, transitive inheritance, explanations agreeing
//! with fast decisions, and atomic reload under concurrent readers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nova_policy::{Attrs, CompiledPolicy, PolicySet, PolicyStore, Request, Schema, Value};
use nova_tenancy::TenantId;
use proptest::prelude::*;

const SCHEMA: &str = r#"
    entity User { dept: String, level: Long, queues: Set<String> };
    entity Ticket { dept: String, queue: String, priority: Long, hr: Bool };
    entity Doc { dept: String, priority: Long, hr: Bool, queue: String };
    context { mfa: Bool };
    principal User;
"#;

const ROLES: usize = 6;
const ACTIONS: [&str; 4] = ["read", "update", "delete", "comment"];
const TYPES: [&str; 2] = ["Ticket", "Doc"];
const DEPTS: [&str; 3] = ["hr", "it", "ops"];
const CONDITIONS: [&str; 9] = [
    "resource.dept == principal.dept",
    "resource.priority >= 2",
    "resource.queue in principal.queues",
    "!resource.hr",
    "resource.hr && !context.mfa",
    "principal.level > 1 || context.mfa",
    "resource.dept == \"hr\"",
    "resource.priority < principal.level",
    "resource has queue && resource.queue in [\"q0\", \"q2\"]",
];

fn schema() -> Schema {
    Schema::parse(SCHEMA).unwrap()
}

#[derive(Debug, Clone)]
struct Roles(Vec<Vec<usize>>);

impl Roles {
    fn text(&self) -> String {
        let mut out = String::new();
        for (i, parents) in self.0.iter().enumerate() {
            out.push_str(&format!("role r{i}"));
            if !parents.is_empty() {
                let ps: Vec<String> = parents.iter().map(|p| format!("r{p}")).collect();
                out.push_str(&format!(" : {}", ps.join(", ")));
            }
            out.push_str(";\n");
        }
        out
    }

    /// Whether holding `role` gives the permissions of `target`, by a walk over the declared
    /// edges (independent of the compiler's bitsets).
    fn reaches(&self, role: usize, target: usize) -> bool {
        let mut todo = vec![role];
        let mut seen = [false; ROLES];
        while let Some(r) = todo.pop() {
            if r == target {
                return true;
            }
            if !std::mem::replace(&mut seen[r], true) {
                todo.extend(self.0[r].iter().copied());
            }
        }
        false
    }
}

fn roles() -> impl Strategy<Value = Roles> {
    // Role i may inherit from roles below it, so the graph is acyclic by construction.
    (0..ROLES)
        .map(|i| proptest::sample::subsequence((0..i).collect::<Vec<_>>(), 0..=i.min(2)))
        .collect::<Vec<_>>()
        .prop_map(Roles)
}

fn rule(effect: &'static str) -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just(None),
            proptest::sample::subsequence((0..ROLES).collect::<Vec<_>>(), 1..=2).prop_map(Some)
        ],
        prop_oneof![
            Just(None),
            proptest::sample::subsequence(ACTIONS.to_vec(), 1..=2).prop_map(Some)
        ],
        proptest::sample::select(TYPES.to_vec()),
        prop_oneof![
            Just(None),
            proptest::sample::select(CONDITIONS.to_vec()).prop_map(Some)
        ],
    )
        .prop_map(move |(who, acts, ty, cond)| {
            let who = who.map_or("*".to_owned(), |rs| {
                rs.iter()
                    .map(|r| format!("r{r}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            let acts = acts.map_or("*".to_owned(), |a| a.join(", "));
            let cond = cond.map_or(String::new(), |c| format!(" when {c}"));
            format!("{effect} {who} to {acts} on {ty}{cond};\n")
        })
}

fn any_rule() -> impl Strategy<Value = String> {
    prop_oneof![3 => rule("allow"), 1 => rule("deny")]
}

#[derive(Debug, Clone)]
struct Req {
    roles: Vec<String>,
    action: &'static str,
    ty: &'static str,
    user: Attrs,
    res: Attrs,
    ctx: Attrs,
}

impl Req {
    fn request(&self) -> (Vec<&str>, &Self) {
        (self.roles.iter().map(String::as_str).collect(), self)
    }
}

fn decide(p: &CompiledPolicy, r: &Req) -> bool {
    let (roles, r) = r.request();
    let req = Request::new(r.action, r.ty)
        .principal("u", &roles, &r.user)
        .resource(&r.res)
        .context(&r.ctx);
    let fast = p.is_allowed(&req);
    assert_eq!(
        fast,
        p.explain(&req).is_allowed(),
        "explain disagrees with is_allowed"
    );
    fast
}

fn request() -> impl Strategy<Value = Req> {
    (
        proptest::sample::subsequence((0..ROLES).collect::<Vec<_>>(), 0..=2),
        proptest::sample::select(ACTIONS.to_vec()),
        proptest::sample::select(TYPES.to_vec()),
        (
            0..3usize,
            0..4i64,
            proptest::sample::subsequence(vec!["q0", "q1", "q2"], 0..=3),
        ),
        (0..3usize, 0..3usize, 0..4i64, any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(roles, action, ty, (ud, level, queues), (rd, rq, prio, hr, mfa))| Req {
                roles: roles.iter().map(|r| format!("r{r}")).collect(),
                action,
                ty,
                user: Attrs::new()
                    .with("dept", DEPTS[ud])
                    .with("level", level)
                    .with("queues", Value::strings(queues)),
                res: Attrs::new()
                    .with("dept", DEPTS[rd])
                    .with("queue", format!("q{rq}"))
                    .with("priority", prio)
                    .with("hr", hr),
                ctx: Attrs::new().with("mfa", mfa),
            },
        )
}

fn compile(roles: &Roles, rules: &[String]) -> CompiledPolicy {
    let text = format!("{}{}", roles.text(), rules.concat());
    PolicySet::parse(&text).unwrap().compile(&schema()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn default_deny_without_allow_rules(
        roles in roles(),
        denies in proptest::collection::vec(rule("deny"), 0..6),
        reqs in proptest::collection::vec(request(), 1..40),
    ) {
        let p = compile(&roles, &denies);
        for r in &reqs {
            prop_assert!(!decide(&p, r));
        }
    }

    #[test]
    fn adding_an_allow_never_removes_access(
        roles in roles(),
        rules in proptest::collection::vec(any_rule(), 0..12),
        extra in rule("allow"),
        reqs in proptest::collection::vec(request(), 1..40),
    ) {
        let before = compile(&roles, &rules);
        let mut more = rules.clone();
        more.push(extra);
        let after = compile(&roles, &more);
        for r in &reqs {
            prop_assert!(!decide(&before, r) || decide(&after, r));
        }
    }

    #[test]
    fn adding_a_deny_never_adds_access(
        roles in roles(),
        rules in proptest::collection::vec(any_rule(), 0..12),
        extra in rule("deny"),
        reqs in proptest::collection::vec(request(), 1..40),
    ) {
        let before = compile(&roles, &rules);
        let mut more = rules.clone();
        more.push(extra);
        let after = compile(&roles, &more);
        for r in &reqs {
            prop_assert!(!decide(&after, r) || decide(&before, r));
        }
    }

    #[test]
    fn deny_overrides_any_allow(
        roles in roles(),
        rules in proptest::collection::vec(any_rule(), 0..12),
        reqs in proptest::collection::vec(request(), 1..40),
    ) {
        // An unconditional deny on the request's type and action beats every allow.
        for r in &reqs {
            let mut with_deny = rules.clone();
            with_deny.push(format!("deny * to {} on {};\n", r.action, r.ty));
            prop_assert!(!decide(&compile(&roles, &with_deny), r));
        }
    }

    #[test]
    fn role_inheritance_is_transitive(
        roles in roles(),
        target in 0..ROLES,
        held in 0..ROLES,
        action in proptest::sample::select(ACTIONS.to_vec()),
    ) {
        let p = compile(&roles, &[format!("allow r{target} to {action} on Ticket;\n")]);
        let user = Attrs::new();
        let held_name = [format!("r{held}")];
        let held_roles: Vec<&str> = held_name.iter().map(String::as_str).collect();
        let req = Request::new(action, "Ticket").principal("u", &held_roles, &user);
        prop_assert_eq!(p.is_allowed(&req), roles.reaches(held, target));
        prop_assert_eq!(p.inherits(&format!("r{held}"), &format!("r{target}")), roles.reaches(held, target));
    }
}

#[test]
fn reload_is_atomic_under_concurrent_readers() {
    // Two sets with opposite answers; every decision must match the set its version names.
    let schema = schema();
    let allow =
        PolicySet::parse("role r0; allow r0 to read on Ticket; allow r0 to update on Ticket;")
            .unwrap();
    let deny = PolicySet::parse("role r0; deny r0 to read on Ticket; deny r0 to update on Ticket;")
        .unwrap();
    let store = Arc::new(PolicyStore::new(schema, allow.clone()).unwrap());
    let tenant = TenantId::new_v4();
    let mut answers: HashMap<u64, bool> = HashMap::new();
    answers.insert(store.policy(tenant).version().0, true);
    let stop = Arc::new(AtomicBool::new(false));
    let observed = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop, observed) =
                (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&observed));
            std::thread::spawn(move || {
                let user = Attrs::new();
                let roles = ["r0"];
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    // Two decisions from one snapshot must come from one version.
                    let snap = store.policy(tenant);
                    let read =
                        snap.decide(&Request::new("read", "Ticket").principal("u", &roles, &user));
                    let update = snap
                        .decide(&Request::new("update", "Ticket").principal("u", &roles, &user));
                    assert_eq!(read.version(), update.version());
                    assert_eq!(read.is_allowed(), update.is_allowed());
                    let d = store.decide(
                        tenant,
                        &Request::new("read", "Ticket").principal("u", &roles, &user),
                    );
                    seen.push((read.version().0, read.is_allowed()));
                    seen.push((d.version().0, d.is_allowed()));
                    observed.fetch_add(2, Ordering::Relaxed);
                }
                seen
            })
        })
        .collect();
    // Keep swapping until the readers have made plenty of decisions across many versions.
    let mut i = 0usize;
    while i < 200 || observed.load(Ordering::Relaxed) < 20_000 {
        i += 1;
        let (set, ans) = if i.is_multiple_of(2) {
            (&deny, false)
        } else {
            (&allow, true)
        };
        store.set_shared(set.clone()).unwrap();
        answers.insert(store.policy(tenant).version().0, ans);
        // An invalid set in between is refused and changes nothing.
        assert!(
            store
                .set_shared(PolicySet::parse("allow ghost to read on Ticket;").unwrap())
                .is_err()
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut checked = 0usize;
    for r in readers {
        for (version, allowed) in r.join().unwrap() {
            assert_eq!(answers.get(&version), Some(&allowed), "version {version}");
            checked += 1;
        }
    }
    assert!(checked >= 20_000);
    let versions: std::collections::HashSet<u64> = answers.keys().copied().collect();
    assert!(versions.len() > 200);
}
