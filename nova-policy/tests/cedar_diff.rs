//! Differential test against cedar-policy 4: random policies in the subset both languages
//! express, translated to Cedar, must decide every random request the same way in both
//! engines, and Nova's explanation must agree with the policies Cedar reports as the reason:
//! for a deny, exactly the denies that fired; for an allow, one of the permits that held (Nova
//! names the rule that decided, Cedar every satisfied permit).
//!
//! The subset: a fixed schema whose attributes are always present; six roles with a random
//! acyclic inheritance declared in a random order (Cedar: `Role` entities whose parents are
//! the inherited roles, and a user whose parents are the roles it holds; Cedar's
//! `Entities::from_entities` computes the transitive closure itself, no schema needed);
//! `allow`/`deny` (`permit`/`forbid`) for `*` or one or two roles or role patterns
//! (`support.*`, `"a*"`, `"*"`, expanded to their roles for Cedar), on `*` or one or two
//! actions, on `*` or one resource type (`resource is T`); conditions up to three levels deep
//! built from `==`, `!=`, `<`, `<=`, `>`, `>=` (on attributes and literals, including
//! `i64::MIN`/`MAX`), `in` (Cedar's `.contains`), `has`, `starts_with` (Cedar's `like "…*"`,
//! with `*` escaped), `==`/`!=` between conditions, `&&`, `||` and `!`, printed either with
//! every parenthesis or with only those Nova's precedence needs. Requests hold random roles
//! (repeated, more than eight, or undeclared), ask for a declared action, one no rule names
//! or one literally named `*`, on `Ticket`, `Doc` or a type the schema does not declare.
//! Nothing in the subset can raise an evaluation error in either engine (no absent
//! attribute, no type error, no arithmetic), so the two must agree exactly; the test also
//! checks that neither reports an error, that `decide`, `explain` and `is_allowed` agree,
//! that a default deny's explanation counts the undeclared roles, and that
//! `CompiledPolicy::inherits` is the transitive closure of the declared inheritance.
//!
//! Run with `cargo test -p nova-policy --features cedar --test cedar_diff`. The random test
//! is deterministic; set `NOVA_CEDAR_DIFF_SEED` (a number) and `NOVA_CEDAR_DIFF_CASES` to
//! explore further.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity as CedarEntity, EntityId,
    EntityTypeName, EntityUid, PolicySet as CedarPolicySet, Request as CedarRequest,
    RestrictedExpression,
};
use nova_policy::{Attrs, CompiledPolicy, PolicySet, Reason, Request, Schema, Value};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::strategy::ValueTree;
use proptest::test_runner::{RngAlgorithm, RngSeed, TestCaseError, TestRng, TestRunner};

// ---------------------------------------------------------------------------------------------
// The fixed vocabulary.

const SCHEMA: &str = r"
    entity User   { dept: String, level: Long, queues: Set<String>, vip: Bool };
    entity Ticket { dept: String, queue: String, priority: Long, hr: Bool, path: String };
    entity Doc    { dept: String, queue: String, priority: Long, hr: Bool, path: String };
    context { mfa: Bool, hour: Long };
    principal User;
";

/// Declared roles; role `i` may inherit from roles `j < i`.
const ROLES: &[&str] = &[
    "viewer",
    "support.agent",
    "support.lead",
    "ops-team",
    "auditor",
    "admin",
];
/// A role requests may hold that no policy declares (it grants nothing).
const GHOST_ROLE: &str = "ghost";
/// What a rule's principal list may name: a role, or a prefix pattern (`support.*`, and the
/// string forms `"a*"` and `"*"`, which matches every declared role but, unlike `*`, not a
/// principal without one).
const WHO: &[&str] = &[
    "viewer",
    "support.agent",
    "support.lead",
    "ops-team",
    "auditor",
    "admin",
    "support.*",
    "support.*",
    "a*",
    "*",
];
const ACTIONS: &[&str] = &["read", "update", "delete", "comment"];
/// Requests also ask for an action no rule names, and for one literally named `*` (which is
/// not a wildcard in a request).
const REQUEST_ACTIONS: &[&str] = &[
    "read", "update", "delete", "comment", "read", "update", "delete", "comment", "archive", "*",
];
const RULE_TYPES: &[&str] = &["Ticket", "Doc"];
/// Requests also ask about a type the schema does not declare (only `*` rules apply).
const REQUEST_TYPES: &[&str] = &["Ticket", "Doc", "Folder"];

/// Every string value, in attributes and literals alike, so that comparisons often hold.
/// Includes characters both languages must escape, a `*` (special in Cedar patterns) and
/// non-ASCII text.
const STRINGS: &[&str] = &[
    "eng", "ops", "hr", "", "/a", "/a/b", "/b", "a*b", "q\"t\\x", "é-ü", "x\ty\n",
];
/// Prefixes for `starts_with`.
const PREFIXES: &[&str] = &[
    "", "/", "/a", "/a/", "e", "en", "eng", "a", "a*", "a*b", "q\"", "q\"t\\", "é", "x", "x\t",
];

const REQUESTS_PER_CASE: usize = 300;

// ---------------------------------------------------------------------------------------------
// Generated policies.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Principal,
    Resource,
    Context,
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Principal => "principal",
            Self::Resource => "resource",
            Self::Context => "context",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Bool,
    Long,
    Str,
}

/// Scalar attributes by type (all declared, all always present).
const STR_ATTRS: &[(Var, &str)] = &[
    (Var::Principal, "dept"),
    (Var::Resource, "dept"),
    (Var::Resource, "queue"),
    (Var::Resource, "path"),
];
const LONG_ATTRS: &[(Var, &str)] = &[
    (Var::Principal, "level"),
    (Var::Resource, "priority"),
    (Var::Context, "hour"),
];
const BOOL_ATTRS: &[(Var, &str)] = &[
    (Var::Principal, "vip"),
    (Var::Resource, "hr"),
    (Var::Context, "mfa"),
];
/// Every attribute, for `has`.
const ALL_ATTRS: &[(Var, &str)] = &[
    (Var::Principal, "dept"),
    (Var::Principal, "level"),
    (Var::Principal, "queues"),
    (Var::Principal, "vip"),
    (Var::Resource, "dept"),
    (Var::Resource, "queue"),
    (Var::Resource, "priority"),
    (Var::Resource, "hr"),
    (Var::Resource, "path"),
    (Var::Context, "mfa"),
    (Var::Context, "hour"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Lit {
    Bool(bool),
    Long(i64),
    Str(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Operand {
    Attr(Var, &'static str),
    Lit(Lit),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SetOperand {
    /// `principal.queues`, the one set attribute.
    Queues,
    Lit(Vec<Lit>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Eq => "==",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Cond {
    /// A Bool attribute or literal used as a condition.
    Atom(Operand),
    Has(Var, &'static str),
    Cmp(Op, Operand, Operand),
    In(Operand, SetOperand),
    StartsWith(Operand, &'static str),
    /// `(a) == (b)` or `(a) != (b)` on two conditions.
    BoolEq(bool, Box<Cond>, Box<Cond>),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    Any,
    /// Role names, or `support.*`.
    Roles(Vec<&'static str>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RuleSpec {
    allow: bool,
    who: Who,
    /// `None` is `*`.
    actions: Option<Vec<&'static str>>,
    /// `None` is `*`.
    resource_type: Option<&'static str>,
    cond: Option<Cond>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PolicySpec {
    /// `parents[i]`: the roles (indices into `ROLES`, all `< i`) role `i` inherits from.
    parents: Vec<Vec<usize>>,
    /// The order roles are declared in (inheritance may name a role declared later).
    order: Vec<usize>,
    rules: Vec<RuleSpec>,
    /// Print Nova conditions with as few parentheses as its precedence allows.
    minimal_parens: bool,
    /// Write role and action names as strings.
    quote_names: bool,
}

// ---------------------------------------------------------------------------------------------
// Generated requests.

#[derive(Debug, Clone, PartialEq, Eq)]
struct UserSpec {
    /// May repeat roles, include the undeclared one, and exceed eight entries.
    roles: Vec<&'static str>,
    dept: &'static str,
    level: i64,
    queues: Vec<&'static str>,
    vip: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ResourceSpec {
    dept: &'static str,
    queue: &'static str,
    priority: i64,
    hr: bool,
    path: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ReqSpec {
    user: UserSpec,
    action: &'static str,
    resource_type: &'static str,
    resource: ResourceSpec,
    mfa: bool,
    hour: i64,
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn long_value() -> impl Strategy<Value = i64> {
    prop_oneof![
        12 => -2i64..=12,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
    ]
}

fn lit(ty: Ty) -> BoxedStrategy<Lit> {
    match ty {
        Ty::Bool => any::<bool>().prop_map(Lit::Bool).boxed(),
        Ty::Long => long_value().prop_map(Lit::Long).boxed(),
        Ty::Str => select(STRINGS).prop_map(Lit::Str).boxed(),
    }
}

/// An operand of type `ty`; resource attributes only when `res` (a rule on one type).
fn operand(ty: Ty, res: bool) -> BoxedStrategy<Operand> {
    let attrs: Vec<(Var, &'static str)> = match ty {
        Ty::Bool => BOOL_ATTRS,
        Ty::Long => LONG_ATTRS,
        Ty::Str => STR_ATTRS,
    }
    .iter()
    .copied()
    .filter(|(v, _)| res || *v != Var::Resource)
    .collect();
    prop_oneof![
        3 => select(attrs).prop_map(|(v, a)| Operand::Attr(v, a)),
        1 => lit(ty).prop_map(Operand::Lit),
    ]
    .boxed()
}

fn any_ty() -> impl Strategy<Value = Ty> {
    prop_oneof![Just(Ty::Bool), Just(Ty::Long), Just(Ty::Str)]
}

fn cmp(res: bool) -> BoxedStrategy<Cond> {
    any_ty()
        .prop_flat_map(move |ty| {
            let ops: &'static [Op] = match ty {
                Ty::Long => &[Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge],
                Ty::Bool | Ty::Str => &[Op::Eq, Op::Ne],
            };
            (select(ops), operand(ty, res), operand(ty, res))
        })
        .prop_map(|(op, a, b)| Cond::Cmp(op, a, b))
        .boxed()
}

fn membership(res: bool) -> BoxedStrategy<Cond> {
    any_ty()
        .prop_flat_map(move |ty| {
            let literal = prop::collection::vec(lit(ty), 0..=3).prop_map(SetOperand::Lit);
            let set = if ty == Ty::Str {
                prop_oneof![2 => Just(SetOperand::Queues), 1 => literal].boxed()
            } else {
                literal.boxed()
            };
            (operand(ty, res), set)
        })
        .prop_map(|(x, s)| Cond::In(x, s))
        .boxed()
}

fn leaf(res: bool) -> BoxedStrategy<Cond> {
    let has_attrs: Vec<(Var, &'static str)> = ALL_ATTRS
        .iter()
        .copied()
        .filter(|(v, _)| res || *v != Var::Resource)
        .collect();
    prop_oneof![
        4 => cmp(res),
        2 => membership(res),
        2 => (operand(Ty::Str, res), select(PREFIXES))
            .prop_map(|(x, p)| Cond::StartsWith(x, p)),
        1 => select(has_attrs).prop_map(|(v, a)| Cond::Has(v, a)),
        1 => operand(Ty::Bool, res).prop_map(Cond::Atom),
    ]
    .boxed()
}

fn cond(res: bool) -> BoxedStrategy<Cond> {
    leaf(res)
        .prop_recursive(3, 12, 2, |inner| {
            prop_oneof![
                3 => (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Cond::And(Box::new(a), Box::new(b))),
                3 => (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Cond::Or(Box::new(a), Box::new(b))),
                2 => inner.clone().prop_map(|a| Cond::Not(Box::new(a))),
                1 => (any::<bool>(), inner.clone(), inner)
                    .prop_map(|(ne, a, b)| Cond::BoolEq(ne, Box::new(a), Box::new(b))),
            ]
        })
        .boxed()
}

fn rule() -> impl Strategy<Value = RuleSpec> {
    let who = prop_oneof![
        1 => Just(Who::Any),
        3 => prop::collection::vec(select(WHO), 1..=2).prop_map(Who::Roles),
    ];
    let actions = prop_oneof![
        1 => Just(None),
        3 => subsequence(ACTIONS, 1..=2).prop_map(Some),
    ];
    let resource_type = prop_oneof![
        1 => Just(None),
        2 => select(RULE_TYPES).prop_map(Some),
    ];
    (prop::bool::weighted(0.65), who, actions, resource_type).prop_flat_map(
        |(allow, who, actions, resource_type)| {
            let c = prop_oneof![1 => Just(None), 1 => cond(resource_type.is_some()).prop_map(Some)];
            c.prop_map(move |cond| RuleSpec {
                allow,
                who: who.clone(),
                actions: actions.clone(),
                resource_type,
                cond,
            })
        },
    )
}

fn policy() -> impl Strategy<Value = PolicySpec> {
    let parents: Vec<_> = (0..ROLES.len())
        .map(|i| subsequence((0..i).collect::<Vec<usize>>(), 0..=i.min(2)))
        .collect();
    let order = Just((0..ROLES.len()).collect::<Vec<usize>>()).prop_shuffle();
    (
        parents,
        order,
        prop::collection::vec(rule(), 1..=10),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(parents, order, rules, minimal_parens, quote_names)| PolicySpec {
                parents,
                order,
                rules,
                minimal_parens,
                quote_names,
            },
        )
}

fn request() -> impl Strategy<Value = ReqSpec> {
    let role = prop_oneof![
        8 => select(ROLES),
        1 => Just(GHOST_ROLE),
    ];
    let user = (
        prop_oneof![
            6 => prop::collection::vec(role.clone(), 0..=3),
            1 => prop::collection::vec(role, 4..=11),
        ],
        select(STRINGS),
        long_value(),
        prop::collection::vec(select(STRINGS), 0..=3),
        any::<bool>(),
    )
        .prop_map(|(roles, dept, level, queues, vip)| UserSpec {
            roles,
            dept,
            level,
            queues,
            vip,
        });
    let resource = (
        select(STRINGS),
        select(STRINGS),
        long_value(),
        any::<bool>(),
        select(STRINGS),
    )
        .prop_map(|(dept, queue, priority, hr, path)| ResourceSpec {
            dept,
            queue,
            priority,
            hr,
            path,
        });
    (
        user,
        select(REQUEST_ACTIONS),
        select(REQUEST_TYPES),
        resource,
        any::<bool>(),
        long_value(),
    )
        .prop_map(
            |(user, action, resource_type, resource, mfa, hour)| ReqSpec {
                user,
                action,
                resource_type,
                resource,
                mfa,
                hour,
            },
        )
}

// ---------------------------------------------------------------------------------------------
// Nova text.

fn nova_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn nova_lit(l: &Lit) -> String {
    match l {
        Lit::Bool(b) => b.to_string(),
        Lit::Long(n) => n.to_string(),
        Lit::Str(s) => nova_str(s),
    }
}

fn nova_operand(o: &Operand) -> String {
    match o {
        Operand::Attr(v, a) => format!("{v}.{a}"),
        Operand::Lit(l) => nova_lit(l),
    }
}

fn nova_set(s: &SetOperand) -> String {
    match s {
        SetOperand::Queues => "principal.queues".into(),
        SetOperand::Lit(items) => {
            let items: Vec<String> = items.iter().map(nova_lit).collect();
            format!("[{}]", items.join(", "))
        }
    }
}

/// Binding strength in Nova's grammar: `||` < `&&` < `!` < comparisons < primaries.
fn precedence(c: &Cond) -> u8 {
    match c {
        Cond::Or(..) => 1,
        Cond::And(..) => 2,
        Cond::Not(..) => 3,
        Cond::Has(..) | Cond::Cmp(..) | Cond::In(..) | Cond::StartsWith(..) | Cond::BoolEq(..) => 4,
        Cond::Atom(..) => 5,
    }
}

fn nova_cond(c: &Cond, minimal: bool) -> String {
    // Minimal: parentheses only where precedence needs them. Otherwise: around every
    // operand that is not an attribute or a literal.
    let child = |c: &Cond, at_least: u8| {
        let s = nova_cond(c, minimal);
        let bare = if minimal {
            precedence(c) >= at_least
        } else {
            precedence(c) == 5
        };
        if bare { s } else { format!("({s})") }
    };
    // Operands of `==` on conditions must be primaries.
    let primary = |c: &Cond| {
        let s = nova_cond(c, minimal);
        if precedence(c) == 5 {
            s
        } else {
            format!("({s})")
        }
    };
    match c {
        Cond::Atom(o) => nova_operand(o),
        Cond::Has(v, a) => format!("{v} has {a}"),
        Cond::Cmp(op, a, b) => format!("{} {op} {}", nova_operand(a), nova_operand(b)),
        Cond::In(x, s) => format!("{} in {}", nova_operand(x), nova_set(s)),
        Cond::StartsWith(x, p) => format!("{} starts_with {}", nova_operand(x), nova_str(p)),
        Cond::BoolEq(ne, a, b) => {
            format!(
                "{} {} {}",
                primary(a),
                if *ne { "!=" } else { "==" },
                primary(b)
            )
        }
        Cond::And(a, b) => format!("{} && {}", child(a, 2), child(b, 2)),
        Cond::Or(a, b) => format!("{} || {}", child(a, 1), child(b, 1)),
        Cond::Not(a) => format!("!{}", child(a, 3)),
    }
}

fn nova_name(name: &str, quote: bool) -> String {
    // A pattern other than `prefix.*` can only be written as a string.
    if quote || (name.contains('*') && !name.ends_with(".*")) {
        nova_str(name)
    } else {
        name.to_owned()
    }
}

fn nova_text(p: &PolicySpec) -> String {
    let q = p.quote_names;
    let mut out = String::new();
    for &i in &p.order {
        let _ = write!(out, "role {}", nova_name(ROLES[i], q));
        if !p.parents[i].is_empty() {
            let parents: Vec<String> = p.parents[i]
                .iter()
                .map(|&j| nova_name(ROLES[j], q))
                .collect();
            let _ = write!(out, " : {}", parents.join(", "));
        }
        out.push_str(";\n");
    }
    for (i, r) in p.rules.iter().enumerate() {
        let _ = writeln!(out, "// rule {i}");
        let who = match &r.who {
            Who::Any => "*".to_owned(),
            Who::Roles(names) => names
                .iter()
                .map(|n| nova_name(n, q))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let actions = match &r.actions {
            None => "*".to_owned(),
            Some(a) => a
                .iter()
                .map(|n| nova_name(n, q))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let _ = write!(
            out,
            "@id(\"r{i}\") {} {who} to {actions} on {}",
            if r.allow { "allow" } else { "deny" },
            r.resource_type.unwrap_or("*"),
        );
        if let Some(c) = &r.cond {
            let _ = write!(out, " when {}", nova_cond(c, p.minimal_parens));
        }
        out.push_str(";\n");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Cedar text (fully parenthesised, independent of Nova's precedence).

fn cedar_str(s: &str, pattern: bool) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '*' if pattern => out.push_str("\\*"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn cedar_lit(l: &Lit) -> String {
    match l {
        Lit::Bool(b) => b.to_string(),
        Lit::Long(n) => n.to_string(),
        Lit::Str(s) => format!("\"{}\"", cedar_str(s, false)),
    }
}

fn cedar_operand(o: &Operand) -> String {
    match o {
        Operand::Attr(v, a) => format!("{v}.{a}"),
        Operand::Lit(l) => cedar_lit(l),
    }
}

fn cedar_cond(c: &Cond) -> String {
    match c {
        Cond::Atom(o) => cedar_operand(o),
        Cond::Has(v, a) => format!("({v} has {a})"),
        Cond::Cmp(op, a, b) => format!("({} {op} {})", cedar_operand(a), cedar_operand(b)),
        Cond::In(x, s) => {
            let set = match s {
                SetOperand::Queues => "principal.queues".to_owned(),
                SetOperand::Lit(items) => {
                    let items: Vec<String> = items.iter().map(cedar_lit).collect();
                    format!("[{}]", items.join(", "))
                }
            };
            format!("({set}.contains({}))", cedar_operand(x))
        }
        Cond::StartsWith(x, p) => {
            format!("({} like \"{}*\")", cedar_operand(x), cedar_str(p, true))
        }
        Cond::BoolEq(ne, a, b) => format!(
            "({} {} {})",
            cedar_cond(a),
            if *ne { "!=" } else { "==" },
            cedar_cond(b)
        ),
        Cond::And(a, b) => format!("({} && {})", cedar_cond(a), cedar_cond(b)),
        Cond::Or(a, b) => format!("({} || {})", cedar_cond(a), cedar_cond(b)),
        Cond::Not(a) => format!("(!{})", cedar_cond(a)),
    }
}

/// The declared roles a principal-list entry stands for (a `.*` pattern: every role with
/// that prefix).
fn expand(name: &str) -> Vec<&'static str> {
    match name.strip_suffix('*') {
        Some(prefix) => ROLES
            .iter()
            .copied()
            .filter(|r| r.starts_with(prefix))
            .collect(),
        None => ROLES.iter().copied().filter(|r| *r == name).collect(),
    }
}

fn role_uid_text(role: &str) -> String {
    format!("Role::\"{}\"", cedar_str(role, false))
}

fn cedar_text(p: &PolicySpec) -> String {
    let mut out = String::new();
    for (i, r) in p.rules.iter().enumerate() {
        let (principal, role_cond) = match &r.who {
            Who::Any => ("principal".to_owned(), None),
            Who::Roles(names) => {
                let roles: BTreeSet<&str> = names.iter().flat_map(|n| expand(n)).collect();
                if roles.len() == 1 {
                    let only = roles.iter().next().copied().unwrap_or_default();
                    (format!("principal in {}", role_uid_text(only)), None)
                } else {
                    let any: Vec<String> = roles
                        .iter()
                        .map(|r| format!("principal in {}", role_uid_text(r)))
                        .collect();
                    ("principal".to_owned(), Some(any.join(" || ")))
                }
            }
        };
        let action = match r.actions.as_deref() {
            None => "action".to_owned(),
            Some([one]) => format!("action == Action::\"{one}\""),
            Some(many) => {
                let uids: Vec<String> = many.iter().map(|a| format!("Action::\"{a}\"")).collect();
                format!("action in [{}]", uids.join(", "))
            }
        };
        let resource = match r.resource_type {
            None => "resource".to_owned(),
            Some(t) => format!("resource is {t}"),
        };
        let _ = write!(
            out,
            "@id(\"r{i}\")\n{} ({principal}, {action}, {resource})",
            if r.allow { "permit" } else { "forbid" },
        );
        if let Some(rc) = role_cond {
            let _ = write!(out, "\nwhen {{ {rc} }}");
        }
        if let Some(c) = &r.cond {
            let _ = write!(out, "\nwhen {{ {} }}", cedar_cond(c));
        }
        out.push_str(";\n");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The two engines side by side.

struct Harness {
    nova_text: String,
    cedar_text: String,
    nova: CompiledPolicy,
    cedar: CedarPolicySet,
    /// Cedar's policy id → the rule id both sides share (`@id`).
    cedar_ids: HashMap<String, String>,
    /// `(role, roles it inherits from)`.
    roles: Vec<(&'static str, Vec<&'static str>)>,
}

fn uid(ty: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(EntityTypeName::from_str(ty).unwrap(), EntityId::new(id))
}

fn nova_schema() -> Schema {
    Schema::parse(SCHEMA).expect("the test schema parses")
}

impl Harness {
    fn new(
        nova_text: String,
        cedar_text: String,
        roles: Vec<(&'static str, Vec<&'static str>)>,
    ) -> Result<Self, String> {
        let nova = PolicySet::parse(&nova_text)
            .map_err(|e| format!("Nova refused to parse:\n{nova_text}\n{e}"))?
            .compile(&nova_schema())
            .map_err(|e| format!("Nova refused to compile:\n{nova_text}\n{e}"))?;
        let cedar = CedarPolicySet::from_str(&cedar_text)
            .map_err(|e| format!("Cedar refused to parse:\n{cedar_text}\n{e:?}"))?;
        let cedar_ids = cedar
            .policies()
            .map(|p| {
                (
                    p.id().to_string(),
                    p.annotation("id").unwrap_or_default().to_owned(),
                )
            })
            .collect();
        Ok(Self {
            nova_text,
            cedar_text,
            nova,
            cedar,
            cedar_ids,
            roles,
        })
    }

    fn from_spec(p: &PolicySpec) -> Result<Self, String> {
        let roles = ROLES
            .iter()
            .enumerate()
            .map(|(i, r)| (*r, p.parents[i].iter().map(|&j| ROLES[j]).collect()))
            .collect();
        Self::new(nova_text(p), cedar_text(p), roles)
    }

    /// Cedar's entity store for these requests: the roles, and for request `i` the user
    /// `User::"u{i}"` and the resource `<type>::"r{i}"`.
    fn entities(&self, reqs: &[ReqSpec]) -> Entities {
        let mut all = Vec::with_capacity(self.roles.len() + 2 * reqs.len() + 1);
        for (role, parents) in &self.roles {
            all.push(CedarEntity::new_no_attrs(
                uid("Role", role),
                parents.iter().map(|p| uid("Role", p)).collect(),
            ));
        }
        // The undeclared role exists in Cedar too, inheriting nothing and named by no policy.
        all.push(CedarEntity::new_no_attrs(
            uid("Role", GHOST_ROLE),
            HashSet::new(),
        ));
        let s = |v: &str| RestrictedExpression::new_string(v.to_owned());
        for (i, r) in reqs.iter().enumerate() {
            let u = &r.user;
            let attrs = HashMap::from([
                ("dept".to_owned(), s(u.dept)),
                ("level".to_owned(), RestrictedExpression::new_long(u.level)),
                (
                    "queues".to_owned(),
                    RestrictedExpression::new_set(u.queues.iter().map(|q| s(q))),
                ),
                ("vip".to_owned(), RestrictedExpression::new_bool(u.vip)),
            ]);
            let parents = u.roles.iter().map(|r| uid("Role", r)).collect();
            all.push(CedarEntity::new(uid("User", &format!("u{i}")), attrs, parents).unwrap());
            let res = &r.resource;
            let attrs = HashMap::from([
                ("dept".to_owned(), s(res.dept)),
                ("queue".to_owned(), s(res.queue)),
                (
                    "priority".to_owned(),
                    RestrictedExpression::new_long(res.priority),
                ),
                ("hr".to_owned(), RestrictedExpression::new_bool(res.hr)),
                ("path".to_owned(), s(res.path)),
            ]);
            all.push(
                CedarEntity::new(
                    uid(r.resource_type, &format!("r{i}")),
                    attrs,
                    HashSet::new(),
                )
                .unwrap(),
            );
        }
        Entities::from_entities(all, None).unwrap()
    }

    /// Decides every request in both engines; any disagreement is an error describing it.
    /// Returns the (agreed) decisions.
    fn check(&self, reqs: &[ReqSpec]) -> Result<Vec<bool>, String> {
        let entities = self.entities(reqs);
        let authorizer = Authorizer::new();
        let mut decisions = Vec::with_capacity(reqs.len());
        for (i, r) in reqs.iter().enumerate() {
            // Cedar.
            let context = Context::from_pairs([
                ("mfa".to_owned(), RestrictedExpression::new_bool(r.mfa)),
                ("hour".to_owned(), RestrictedExpression::new_long(r.hour)),
            ])
            .unwrap();
            let request = CedarRequest::new(
                uid("User", &format!("u{i}")),
                uid("Action", r.action),
                uid(r.resource_type, &format!("r{i}")),
                context,
                None,
            )
            .unwrap();
            let (cedar_allowed, cedar_fired) = self
                .authorizer_response(&authorizer, &request, &entities)
                .map_err(|e| self.report(r, &e))?;

            // Nova.
            let user = Attrs::new()
                .with("dept", r.user.dept)
                .with("level", r.user.level)
                .with("queues", Value::strings(r.user.queues.iter().copied()))
                .with("vip", r.user.vip);
            let resource = Attrs::new()
                .with("dept", r.resource.dept)
                .with("queue", r.resource.queue)
                .with("priority", r.resource.priority)
                .with("hr", r.resource.hr)
                .with("path", r.resource.path);
            let ctx = Attrs::new().with("mfa", r.mfa).with("hour", r.hour);
            let id = format!("u{i}");
            let req = Request::new(r.action, r.resource_type)
                .principal(&id, &r.user.roles, &user)
                .resource(&resource)
                .context(&ctx);
            let allowed = self.nova.is_allowed(&req);
            let decided = self.nova.decide(&req).is_allowed();
            let explanation = self.nova.explain(&req);
            let mut nova_fired = BTreeSet::new();
            let mut unknown_roles = None;
            for reason in explanation.reasons() {
                match reason {
                    Reason::Allowed { rule } | Reason::Denied { rule } => {
                        nova_fired.insert(rule.to_string());
                    }
                    Reason::ConditionError { .. } | Reason::DeniedOnError { .. } => {
                        return Err(self.report(
                            r,
                            &format!("Nova reports an evaluation error: {explanation}"),
                        ));
                    }
                    Reason::UnknownRoles { count } => unknown_roles = Some(*count),
                    _ => {}
                }
            }

            let mut problems = Vec::new();
            if allowed != cedar_allowed {
                problems.push(format!(
                    "decision: Nova {}, Cedar {}",
                    verdict(allowed),
                    verdict(cedar_allowed)
                ));
            }
            if decided != allowed {
                problems.push(format!(
                    "decide() says {} but is_allowed() says {}",
                    verdict(decided),
                    verdict(allowed)
                ));
            }
            if explanation.is_allowed() != allowed {
                problems.push(format!(
                    "explain() says {} but is_allowed() says {}",
                    verdict(explanation.is_allowed()),
                    verdict(allowed)
                ));
            }
            // A deny names every deny that fired, as Cedar does; an allow names the one rule
            // that decided it, which must be among the permits Cedar found satisfied.
            let names_ok = if allowed && cedar_allowed {
                nova_fired.len() == 1 && nova_fired.is_subset(&cedar_fired)
            } else {
                nova_fired == cedar_fired
            };
            if !names_ok {
                problems.push(format!(
                    "deciding rules: Nova {nova_fired:?}, Cedar {cedar_fired:?}"
                ));
            }
            // A default deny mentions the undeclared roles the principal holds.
            if !allowed && nova_fired.is_empty() {
                let ghosts = r.user.roles.iter().filter(|x| **x == GHOST_ROLE).count();
                let expected = (ghosts > 0).then_some(ghosts);
                if unknown_roles != expected {
                    problems.push(format!(
                        "explanation counts {unknown_roles:?} undeclared roles, expected {expected:?}"
                    ));
                }
            }
            if !problems.is_empty() {
                return Err(self.report(
                    r,
                    &format!("{}\nNova explains: {explanation}", problems.join("\n")),
                ));
            }
            decisions.push(allowed);
        }
        Ok(decisions)
    }

    /// Cedar's decision and the rule ids it gives as the reason; an error if Cedar reports an
    /// evaluation error (there must be none in this subset).
    fn authorizer_response(
        &self,
        authorizer: &Authorizer,
        request: &CedarRequest,
        entities: &Entities,
    ) -> Result<(bool, BTreeSet<String>), String> {
        let response = authorizer.is_authorized(request, &self.cedar, entities);
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect();
        if !errors.is_empty() {
            return Err(format!("Cedar reports evaluation errors: {errors:?}"));
        }
        let fired = response
            .diagnostics()
            .reason()
            .map(|id| {
                self.cedar_ids
                    .get(&id.to_string())
                    .cloned()
                    .unwrap_or_else(|| id.to_string())
            })
            .collect();
        Ok((response.decision() == CedarDecision::Allow, fired))
    }

    fn report(&self, r: &ReqSpec, what: &str) -> String {
        format!(
            "Nova and Cedar disagree.\n{what}\n--- request ---\n{r:#?}\n--- Nova policy ---\n{}--- Cedar policy ---\n{}",
            self.nova_text, self.cedar_text
        )
    }
}

fn verdict(allowed: bool) -> &'static str {
    if allowed { "allow" } else { "deny" }
}

// ---------------------------------------------------------------------------------------------
// The random test.

fn config() -> ProptestConfig {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    ProptestConfig {
        cases: env("NOVA_CEDAR_DIFF_CASES")
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(64),
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(env("NOVA_CEDAR_DIFF_SEED").unwrap_or(0x00c0_ffee_d1ff)),
        max_shrink_iters: 1_000,
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    }
}

/// `REQUESTS_PER_CASE` requests drawn from `request()` with a generator seeded by `seed`.
/// Requests come from a seed rather than straight from proptest so that a failure shrinks
/// the policy quickly against the same requests, and its report is one policy and the one
/// request that shows the disagreement.
fn requests_from_seed(seed: u64) -> Vec<ReqSpec> {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
    let mut runner = TestRunner::new_with_rng(ProptestConfig::default(), rng);
    let strategy = request();
    (0..REQUESTS_PER_CASE)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn nova_and_cedar_agree_on_random_policies(
        policy in policy(),
        seed in any::<u64>().no_shrink(),
    ) {
        let harness = Harness::from_spec(&policy).map_err(TestCaseError::fail)?;
        harness.check(&requests_from_seed(seed)).map_err(TestCaseError::fail)?;
        // `inherits` agrees with the transitive closure of the declared parents.
        for (a, &role) in ROLES.iter().enumerate() {
            let mut reach = vec![false; ROLES.len()];
            let mut todo = vec![a];
            while let Some(x) = todo.pop() {
                if !std::mem::replace(&mut reach[x], true) {
                    todo.extend(&policy.parents[x]);
                }
            }
            for (b, &ancestor) in ROLES.iter().enumerate() {
                prop_assert_eq!(
                    harness.nova.inherits(role, ancestor),
                    reach[b],
                    "inherits({}, {}) in\n{}",
                    role,
                    ancestor,
                    harness.nova_text
                );
            }
            prop_assert!(!harness.nova.inherits(GHOST_ROLE, role));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-written cases with the expected answers spelled out.

fn user(roles: &[&'static str], level: i64, queues: &[&'static str]) -> UserSpec {
    UserSpec {
        roles: roles.to_vec(),
        dept: "eng",
        level,
        queues: queues.to_vec(),
        vip: false,
    }
}

fn ticket(queue: &'static str, hr: bool) -> ResourceSpec {
    ResourceSpec {
        dept: "eng",
        queue,
        priority: 1,
        hr,
        path: "/a/b",
    }
}

fn ask(
    user: &UserSpec,
    action: &'static str,
    resource_type: &'static str,
    resource: &ResourceSpec,
    mfa: bool,
) -> ReqSpec {
    ReqSpec {
        user: user.clone(),
        action,
        resource_type,
        resource: resource.clone(),
        mfa,
        hour: 10,
    }
}

/// Role inheritance three levels deep (`manager` → `lead` → `agent` → `viewer`), and denies
/// that override allows, written by hand in both languages.
#[test]
fn inheritance_depth_three_and_deny_overrides() {
    let nova = r#"
        role viewer;
        role agent : viewer;
        role lead : agent;
        role manager : lead;
        role contractor;
        @id("viewers-read") allow viewer to read on Ticket;
        @id("agents-comment") allow agent to comment on Ticket when resource.queue in principal.queues;
        @id("managers-delete") allow manager to delete on * when principal.level >= 3;
        @id("hr-needs-mfa") deny * to * on Ticket when resource.hr && !context.mfa;
        @id("no-contractor-deletes") deny contractor to delete on *;
    "#;
    let cedar = r#"
        @id("viewers-read")
        permit (principal in Role::"viewer", action == Action::"read", resource is Ticket);
        @id("agents-comment")
        permit (principal in Role::"agent", action == Action::"comment", resource is Ticket)
        when { principal.queues.contains(resource.queue) };
        @id("managers-delete")
        permit (principal in Role::"manager", action == Action::"delete", resource)
        when { principal.level >= 3 };
        @id("hr-needs-mfa")
        forbid (principal, action, resource is Ticket)
        when { resource.hr && !context.mfa };
        @id("no-contractor-deletes")
        forbid (principal in Role::"contractor", action == Action::"delete", resource);
    "#;
    let roles = vec![
        ("viewer", vec![]),
        ("agent", vec!["viewer"]),
        ("lead", vec!["agent"]),
        ("manager", vec!["lead"]),
        ("contractor", vec![]),
    ];
    let h = Harness::new(nova.to_owned(), cedar.to_owned(), roles).unwrap();

    let manager = user(&["manager"], 3, &[]);
    let junior_manager = user(&["manager"], 2, &[]);
    let contracting_manager = user(&["contractor", "manager"], 5, &[]);
    let lead = user(&["lead"], 1, &["billing"]);
    let nobody = user(&[], 9, &["billing"]);
    let plain = ticket("billing", false);
    let hr = ticket("billing", true);
    let other_queue = ticket("sales", false);
    let cases = [
        // Three levels up from manager to viewer.
        (ask(&manager, "read", "Ticket", &plain, false), true),
        // The deny overrides the inherited allow…
        (ask(&manager, "read", "Ticket", &hr, false), false),
        // …until its condition is false.
        (ask(&manager, "read", "Ticket", &hr, true), true),
        (ask(&manager, "delete", "Doc", &plain, false), true),
        (ask(&junior_manager, "delete", "Doc", &plain, false), false),
        // Holding a denied role as well as an allowed one: the deny wins.
        (
            ask(&contracting_manager, "delete", "Doc", &plain, false),
            false,
        ),
        (
            ask(&contracting_manager, "read", "Ticket", &plain, false),
            true,
        ),
        // Two levels up from lead to agent.
        (ask(&lead, "comment", "Ticket", &plain, false), true),
        (ask(&lead, "comment", "Ticket", &other_queue, false), false),
        (ask(&lead, "read", "Ticket", &plain, false), true),
        // Roles do not inherit downwards.
        (ask(&lead, "delete", "Ticket", &plain, false), false),
        (ask(&nobody, "read", "Ticket", &plain, false), false),
        (ask(&manager, "update", "Ticket", &plain, false), false),
    ];
    let reqs: Vec<ReqSpec> = cases.iter().map(|(r, _)| r.clone()).collect();
    let expected: Vec<bool> = cases.iter().map(|(_, e)| *e).collect();
    let got = h.check(&reqs).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, expected);
}

/// Wildcards and names no rule uses: `*` principals match a principal without roles, an
/// undeclared role grants nothing, `*` actions cover an action no rule names, `*` types cover
/// a type the schema does not declare, and the role pattern expands to its roles.
#[test]
fn wildcards_patterns_and_unknown_names() {
    let nova = r#"
        role support.agent;
        role support.lead : support.agent;
        role auditor;
        @id("anyone-reads-public") allow * to read on * when context.hour >= 9 && context.hour < 17;
        @id("support-works-tickets") allow support.* to update, comment on Ticket
            when resource.path starts_with "/a/";
        @id("auditors-anything") allow auditor to * on *;
        @id("no-night-archive") deny * to archive on * when !(context.hour >= 9);
    "#;
    let cedar = r#"
        @id("anyone-reads-public")
        permit (principal, action == Action::"read", resource)
        when { context.hour >= 9 && context.hour < 17 };
        @id("support-works-tickets")
        permit (principal, action in [Action::"update", Action::"comment"], resource is Ticket)
        when { principal in Role::"support.agent" || principal in Role::"support.lead" }
        when { resource.path like "/a/*" };
        @id("auditors-anything")
        permit (principal in Role::"auditor", action, resource);
        @id("no-night-archive")
        forbid (principal, action == Action::"archive", resource)
        when { !(context.hour >= 9) };
    "#;
    let roles = vec![
        ("support.agent", vec![]),
        ("support.lead", vec!["support.agent"]),
        ("auditor", vec![]),
    ];
    let h = Harness::new(nova.to_owned(), cedar.to_owned(), roles).unwrap();

    let nobody = user(&[], 0, &[]);
    let ghost = user(&[GHOST_ROLE], 0, &[]);
    let lead = user(&["support.lead"], 0, &[]);
    let auditor = user(&["auditor", GHOST_ROLE], 0, &[]);
    let mut in_a = ticket("q", false);
    in_a.path = "/a/b";
    let mut in_b = ticket("q", false);
    in_b.path = "/b";
    let at = |mut r: ReqSpec, hour: i64| {
        r.hour = hour;
        r
    };
    let cases = [
        (at(ask(&nobody, "read", "Folder", &in_b, false), 10), true),
        (at(ask(&nobody, "read", "Folder", &in_b, false), 17), false),
        (at(ask(&ghost, "update", "Ticket", &in_a, false), 10), false),
        (at(ask(&lead, "update", "Ticket", &in_a, false), 20), true),
        (at(ask(&lead, "comment", "Ticket", &in_b, false), 20), false),
        (at(ask(&lead, "update", "Doc", &in_a, false), 20), false),
        (
            at(ask(&auditor, "archive", "Folder", &in_b, false), 10),
            true,
        ),
        (at(ask(&auditor, "archive", "Doc", &in_b, false), 3), false),
        (at(ask(&auditor, "purge", "Doc", &in_b, false), 3), true),
    ];
    let reqs: Vec<ReqSpec> = cases.iter().map(|(r, _)| r.clone()).collect();
    let expected: Vec<bool> = cases.iter().map(|(_, e)| *e).collect();
    let got = h.check(&reqs).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, expected);
}
