//! The synthetic authorization workload shared by the three engines in `decide.rs`.
//!
//! Everything is drawn from one seeded xorshift generator, so a seed always gives the same
//! roles, rules, principals and request tuples. The workload is engine-neutral data; the
//! `*_text` / `*_lines` functions render it for Nova, Cedar and casbin, with one meaning:
//!
//! * roles form a DAG of at most four levels (a role inherits from 0–2 roles of shallower
//!   levels; a principal holding a role holds every role it inherits from);
//! * a rule applies to principals holding one of its roles (or everyone, for `*`), to some
//!   actions, on one resource type, when its condition holds;
//! * deny overrides allow, and nothing is allowed by default;
//! * every attribute a condition reads is always present with its declared type, so no
//!   condition can fail to evaluate (Nova fails a broken `deny` closed, Cedar skips a broken
//!   `forbid`; the workload never exercises that difference).

use std::collections::HashSet;
use std::fmt::Write as _;

/// The resource types (20).
pub(crate) const TYPES: [&str; 20] = [
    "Ticket",
    "Invoice",
    "Report",
    "Project",
    "Document",
    "Contract",
    "Order",
    "Customer",
    "Asset",
    "Incident",
    "Article",
    "Budget",
    "Campaign",
    "Lead",
    "Payment",
    "Shipment",
    "Vendor",
    "Employee",
    "Dataset",
    "Dashboard",
];

/// The actions (6).
pub(crate) const ACTIONS: [&str; 6] = ["read", "update", "delete", "comment", "assign", "export"];

/// Departments, for `dept` attributes.
pub(crate) const DEPTS: [&str; 6] = ["sales", "support", "finance", "eng", "hr", "legal"];

pub(crate) const ROLE_COUNT: usize = 50;
pub(crate) const RULE_COUNT: usize = 500;
pub(crate) const PRINCIPAL_COUNT: usize = 300;
pub(crate) const TUPLE_COUNT: usize = 10_000;
/// Roles at level 0 (no parents).
const ROOTS: usize = 12;
/// Deepest level: roles live on levels 0..=3, so an inheritance chain is at most 4 roles long.
const MAX_LEVEL: usize = 3;

/// xorshift64* — small, fast, deterministic; good enough to shuffle a workload.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // Never zero, and decorrelate small seeds.
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() >> 33) as usize % n
    }

    /// True with probability `pct`%.
    pub(crate) fn chance(&mut self, pct: usize) -> bool {
        self.below(100) < pct
    }

    /// `k` distinct values of `0..n`, in ascending order.
    pub(crate) fn distinct(&mut self, k: usize, n: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(k);
        while out.len() < k.min(n) {
            let x = self.below(n);
            if !out.contains(&x) {
                out.push(x);
            }
        }
        out.sort_unstable();
        out
    }
}

pub(crate) struct Role {
    pub(crate) name: String,
    pub(crate) parents: Vec<usize>,
    pub(crate) level: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    Allow,
    Deny,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Who {
    Anyone,
    Roles(Vec<usize>),
}

/// A condition, kept to what all three engines express natively: string equality and
/// inequality, integer comparison, conjunction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cond {
    /// `resource.dept == principal.dept`
    SameDept,
    /// `resource.dept != principal.dept`
    OtherDept,
    /// `resource.priority >= k`
    PriorityAtLeast(i64),
    /// `resource.owner == principal.uid`
    Owner,
    /// `resource.dept == principal.dept && resource.priority < k`
    SameDeptBelow(i64),
}

pub(crate) struct Rule {
    pub(crate) id: String,
    pub(crate) effect: Effect,
    pub(crate) who: Who,
    pub(crate) actions: Vec<usize>,
    pub(crate) rtype: usize,
    pub(crate) cond: Option<Cond>,
}

pub(crate) struct Principal {
    pub(crate) uid: String,
    pub(crate) dept: usize,
    /// Roles held directly (1–3).
    pub(crate) roles: Vec<usize>,
}

pub(crate) struct Tuple {
    pub(crate) principal: usize,
    pub(crate) action: usize,
    pub(crate) rtype: usize,
    pub(crate) rid: String,
    pub(crate) dept: usize,
    pub(crate) priority: i64,
    pub(crate) owner: String,
}

pub(crate) struct Workload {
    pub(crate) seed: u64,
    pub(crate) roles: Vec<Role>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) principals: Vec<Principal>,
    pub(crate) tuples: Vec<Tuple>,
}

impl Workload {
    pub(crate) fn generate(seed: u64) -> Self {
        let mut rng = Rng::new(seed);

        // Roles: 12 roots, then 38 roles each inheriting from 0–2 earlier roles of a level
        // below MAX_LEVEL; a role's level is one more than its deepest parent's.
        let mut roles: Vec<Role> = Vec::with_capacity(ROLE_COUNT);
        for i in 0..ROLE_COUNT {
            let mut parents = Vec::new();
            if i >= ROOTS {
                let want = match rng.below(10) {
                    0 => 0,
                    1..=5 => 1,
                    _ => 2,
                };
                let candidates: Vec<usize> =
                    (0..i).filter(|&p| roles[p].level < MAX_LEVEL).collect();
                while parents.len() < want {
                    // Favour the most recent (hence deeper) candidates half the time, so
                    // that the deepest level is actually populated.
                    let p = if rng.chance(50) {
                        candidates[candidates.len() - 1 - rng.below(candidates.len().min(8))]
                    } else {
                        candidates[rng.below(candidates.len())]
                    };
                    if !parents.contains(&p) {
                        parents.push(p);
                    }
                }
                parents.sort_unstable();
            }
            let level = parents
                .iter()
                .map(|&p| roles[p].level + 1)
                .max()
                .unwrap_or(0);
            roles.push(Role {
                name: format!("r{i:02}"),
                parents,
                level,
            });
        }

        // Rules: every 20th is a deny (5%), every 10th allow (offset 3) has a condition
        // (10% of all rules), half the denies have one too.
        let mut rules = Vec::with_capacity(RULE_COUNT);
        for i in 0..RULE_COUNT {
            let rtype = rng.below(TYPES.len());
            let rule = if i % 20 == 0 {
                let who = if rng.chance(20) {
                    Who::Anyone
                } else {
                    Who::Roles(vec![rng.below(ROLE_COUNT)])
                };
                let cond = if rng.chance(50) {
                    Some(if rng.chance(50) {
                        Cond::PriorityAtLeast(5)
                    } else {
                        Cond::OtherDept
                    })
                } else {
                    None
                };
                Rule {
                    id: format!("rule-{i:03}"),
                    effect: Effect::Deny,
                    who,
                    actions: vec![rng.below(ACTIONS.len())],
                    rtype,
                    cond,
                }
            } else {
                let n_roles = if rng.chance(15) { 2 } else { 1 };
                let n_actions = 1 + rng.below(3);
                let cond = (i % 10 == 3).then(|| match rng.below(4) {
                    0 => Cond::SameDept,
                    1 => Cond::PriorityAtLeast(2 + rng.below(3) as i64),
                    2 => Cond::Owner,
                    _ => Cond::SameDeptBelow(3 + rng.below(2) as i64),
                });
                Rule {
                    id: format!("rule-{i:03}"),
                    effect: Effect::Allow,
                    who: Who::Roles(rng.distinct(n_roles, ROLE_COUNT)),
                    actions: rng.distinct(n_actions, ACTIONS.len()),
                    rtype,
                    cond,
                }
            };
            rules.push(rule);
        }

        let principals: Vec<Principal> = (0..PRINCIPAL_COUNT)
            .map(|i| {
                let n = 1 + rng.below(3);
                Principal {
                    uid: format!("u{i:03}"),
                    dept: rng.below(DEPTS.len()),
                    roles: rng.distinct(n, ROLE_COUNT),
                }
            })
            .collect();

        let tuples = (0..TUPLE_COUNT)
            .map(|i| {
                let principal = rng.below(PRINCIPAL_COUNT);
                // Make the conditions bite both ways: half the resources are in the
                // principal's department, 30% are owned by the principal.
                let dept = if rng.chance(50) {
                    principals[principal].dept
                } else {
                    rng.below(DEPTS.len())
                };
                let owner = if rng.chance(30) {
                    principal
                } else {
                    rng.below(PRINCIPAL_COUNT)
                };
                Tuple {
                    principal,
                    action: rng.below(ACTIONS.len()),
                    rtype: rng.below(TYPES.len()),
                    rid: format!("res{i:05}"),
                    dept,
                    priority: 1 + rng.below(5) as i64,
                    owner: principals[owner].uid.clone(),
                }
            })
            .collect();

        Self {
            seed,
            roles,
            rules,
            principals,
            tuples,
        }
    }

    /// Every role `role` inherits from, itself included.
    pub(crate) fn closure(&self, role: usize, out: &mut HashSet<usize>) {
        if out.insert(role) {
            for &p in &self.roles[role].parents {
                self.closure(p, out);
            }
        }
    }

    /// How many roles sit on each level.
    pub(crate) fn level_counts(&self) -> [usize; MAX_LEVEL + 1] {
        let mut c = [0; MAX_LEVEL + 1];
        for r in &self.roles {
            c[r.level] += 1;
        }
        c
    }

    // ---- Nova ----

    pub(crate) fn nova_schema_text(&self) -> String {
        let mut s = String::from("entity User { dept: String, uid: String };\n");
        for t in TYPES {
            let _ = writeln!(
                s,
                "entity {t} {{ dept: String, priority: Long, owner: String }};"
            );
        }
        s.push_str("principal User;\n");
        s
    }

    pub(crate) fn nova_policy_text(&self) -> String {
        let mut s = String::new();
        for r in &self.roles {
            if r.parents.is_empty() {
                let _ = writeln!(s, "role {};", r.name);
            } else {
                let parents: Vec<&str> = r
                    .parents
                    .iter()
                    .map(|&p| self.roles[p].name.as_str())
                    .collect();
                let _ = writeln!(s, "role {} : {};", r.name, parents.join(", "));
            }
        }
        for rule in &self.rules {
            let effect = match rule.effect {
                Effect::Allow => "allow",
                Effect::Deny => "deny",
            };
            let who = match &rule.who {
                Who::Anyone => "*".to_owned(),
                Who::Roles(rs) => rs
                    .iter()
                    .map(|&r| self.roles[r].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            let actions = rule
                .actions
                .iter()
                .map(|&a| ACTIONS[a])
                .collect::<Vec<_>>()
                .join(", ");
            let _ = write!(
                s,
                "@id(\"{}\") {effect} {who} to {actions} on {}",
                rule.id, TYPES[rule.rtype]
            );
            if let Some(c) = rule.cond {
                let _ = write!(s, " when {}", c.nova_cedar());
            }
            s.push_str(";\n");
        }
        s
    }

    // ---- Cedar ----

    pub(crate) fn cedar_policy_text(&self) -> String {
        self.cedar_policy_text_for(|_| true)
    }

    /// The Cedar policies of the rules `keep` selects (to slice the set by resource type).
    pub(crate) fn cedar_policy_text_for(&self, keep: impl Fn(&Rule) -> bool) -> String {
        let mut s = String::new();
        for rule in self.rules.iter().filter(|r| keep(r)) {
            let effect = match rule.effect {
                Effect::Allow => "permit",
                Effect::Deny => "forbid",
            };
            // Cedar's scope takes one entity for `principal in`; two roles go in a `when`.
            let (principal, role_when) = match &rule.who {
                Who::Anyone => ("principal".to_owned(), None),
                Who::Roles(rs) if rs.len() == 1 => (
                    format!("principal in Role::\"{}\"", self.roles[rs[0]].name),
                    None,
                ),
                Who::Roles(rs) => {
                    let list = rs
                        .iter()
                        .map(|&r| format!("Role::\"{}\"", self.roles[r].name))
                        .collect::<Vec<_>>()
                        .join(", ");
                    (
                        "principal".to_owned(),
                        Some(format!("principal in [{list}]")),
                    )
                }
            };
            let action = if let [a] = rule.actions[..] {
                format!("action == Action::\"{}\"", ACTIONS[a])
            } else {
                let list = rule
                    .actions
                    .iter()
                    .map(|&a| format!("Action::\"{}\"", ACTIONS[a]))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("action in [{list}]")
            };
            let _ = write!(
                s,
                "@id(\"{}\")\n{effect} ({principal}, {action}, resource is {})",
                rule.id, TYPES[rule.rtype]
            );
            if let Some(w) = role_when {
                let _ = write!(s, " when {{ {w} }}");
            }
            if let Some(c) = rule.cond {
                let _ = write!(s, " when {{ {} }}", c.nova_cedar());
            }
            s.push_str(";\n");
        }
        s
    }

    // ---- casbin ----

    /// The casbin model: RBAC with role inheritance through `g`, deny-override, and ABAC
    /// conditions held as matcher expressions in the policy's `cond` column, run by `eval()`
    /// only for the lines whose type, action and role already match (`&&` short-circuits).
    pub(crate) const CASBIN_MODEL: &'static str = r#"
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act, cond, eft

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = r.obj.rtype == p.obj && r.act == p.act && (p.sub == "*" || g(r.sub.uid, p.sub)) && (p.cond == "true" || eval(p.cond))
"#;

    /// `p` lines: one per (rule, role, action), deduplicated (casbin refuses duplicates).
    pub(crate) fn casbin_policies(&self) -> Vec<Vec<String>> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for rule in &self.rules {
            let subs: Vec<&str> = match &rule.who {
                Who::Anyone => vec!["*"],
                Who::Roles(rs) => rs.iter().map(|&r| self.roles[r].name.as_str()).collect(),
            };
            let cond = rule.cond.map_or_else(|| "true".to_owned(), Cond::casbin);
            let eft = match rule.effect {
                Effect::Allow => "allow",
                Effect::Deny => "deny",
            };
            for sub in &subs {
                for &a in &rule.actions {
                    let line = vec![
                        (*sub).to_owned(),
                        TYPES[rule.rtype].to_owned(),
                        ACTIONS[a].to_owned(),
                        cond.clone(),
                        eft.to_owned(),
                    ];
                    if seen.insert(line.clone()) {
                        out.push(line);
                    }
                }
            }
        }
        out
    }

    /// `g` lines: role inheritance (child, parent) and each principal's direct roles.
    pub(crate) fn casbin_groupings(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for r in &self.roles {
            for &p in &r.parents {
                out.push(vec![r.name.clone(), self.roles[p].name.clone()]);
            }
        }
        for p in &self.principals {
            for &r in &p.roles {
                out.push(vec![p.uid.clone(), self.roles[r].name.clone()]);
            }
        }
        out
    }
}

impl Cond {
    /// The condition in Nova's language, which for these forms is also Cedar syntax.
    pub(crate) fn nova_cedar(self) -> String {
        match self {
            Self::SameDept => "resource.dept == principal.dept".to_owned(),
            Self::OtherDept => "resource.dept != principal.dept".to_owned(),
            Self::PriorityAtLeast(k) => format!("resource.priority >= {k}"),
            Self::Owner => "resource.owner == principal.uid".to_owned(),
            Self::SameDeptBelow(k) => {
                format!("resource.dept == principal.dept && resource.priority < {k}")
            }
        }
    }

    /// The condition as a casbin (rhai) expression over the request's `sub` and `obj` maps.
    pub(crate) fn casbin(self) -> String {
        match self {
            Self::SameDept => "r.obj.dept == r.sub.dept".to_owned(),
            Self::OtherDept => "r.obj.dept != r.sub.dept".to_owned(),
            Self::PriorityAtLeast(k) => format!("r.obj.priority >= {k}"),
            Self::Owner => "r.obj.owner == r.sub.uid".to_owned(),
            Self::SameDeptBelow(k) => {
                format!("r.obj.dept == r.sub.dept && r.obj.priority < {k}")
            }
        }
    }
}
