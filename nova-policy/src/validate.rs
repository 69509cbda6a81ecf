//! Validation and compilation: checks a policy set against its schema (names, types, role
//! graph) and builds the indexed form. A set with any problem is refused whole, with every
//! problem listed, so that nothing half-checked is ever loaded.

use std::fmt;
use std::sync::Arc;

use foldhash::{HashMap, HashSet};
use smol_str::SmolStr;

use crate::ast::{Actions, CmpOp, Effect, Expr, Grantee, Pos, Principals, Var};
use crate::compiled::{
    Bucket, CExpr, CGrant, CRule, CompiledPolicy, Entry, GranteeMatch, PairMap, PolicyVersion,
    RoleMatch, TypeIndex,
};
use crate::parser::{MAX_DEPTH, MAX_NAME_LEN};
use crate::policy_set::PolicySet;
use crate::schema::{EntityType, Schema};
use crate::value::{Scalar, Type, Value};

/// Most roles, rules or grants in one compiled set.
pub const MAX_ITEMS: usize = 100_000;
/// Most roles in one compiled set (role masks are `MAX_ROLES / 64` words per rule).
pub const MAX_ROLES: usize = 1024;

/// Most rule entries across a compiled set's index buckets (a wildcard rule counts once per
/// bucket it is copied into).
pub const MAX_INDEX_ENTRIES: usize = 2_000_000;

/// Why a policy set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The text does not follow the grammar.
    #[error("policy syntax: {0}")]
    Parse(#[from] crate::parser::ParseError),
    /// The set does not fit its schema or is inconsistent; every problem is listed.
    #[error("policy refused: {}", list(.0))]
    Invalid(Vec<ValidationError>),
    /// A new shared set was refused because layering it under this tenant's own items
    /// fails (a role or id both declare, a rule of the tenant's naming a role the new set
    /// drops…); nothing changed for any tenant.
    #[error("tenant {tenant}: {error}")]
    Tenant {
        /// The tenant whose own items clash.
        tenant: nova_tenancy::TenantId,
        /// Why its layered set was refused.
        error: Box<PolicyError>,
    },
}

fn list(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl PolicyError {
    /// The validation problems (empty for a syntax error).
    #[must_use]
    pub fn problems(&self) -> &[ValidationError] {
        match self {
            Self::Invalid(v) => v,
            Self::Tenant { error, .. } => error.problems(),
            Self::Parse(_) => &[],
        }
    }
}

/// One validation problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Where the role, rule or grant starts (`0:0` when built in Rust).
    pub pos: Pos,
    /// The rule or grant id, or the role name.
    pub item: Box<str>,
    /// What is wrong.
    pub kind: Problem,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} `{}`: {}", self.pos, self.item, self.kind)
    }
}

/// What is wrong with a policy item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// A rule, grant or role names a role that is not declared.
    #[error("role `{0}` is not declared")]
    UnknownRole(Box<str>),
    /// A wildcard role pattern matches no declared role.
    #[error("role pattern `{0}` matches no declared role")]
    EmptyPattern(Box<str>),
    /// A role is declared twice.
    #[error("role is declared twice")]
    DuplicateRole,
    /// Role inheritance loops back on itself.
    #[error("role inheritance has a cycle: {0}")]
    RoleCycle(String),
    /// Two rules or grants share an id.
    #[error("id is used twice")]
    DuplicateId,
    /// A resource type is not declared in the schema.
    #[error("entity type `{0}` is not declared in the schema")]
    UnknownType(Box<str>),
    /// A condition reads an attribute the schema does not declare.
    #[error("{var} has no attribute `{name}` in the schema")]
    UnknownAttribute {
        /// `principal`, `resource` or `context`.
        var: &'static str,
        /// The attribute.
        name: Box<str>,
    },
    /// A rule on `*` reads resource attributes, which differ between types.
    #[error("a rule on `*` cannot read resource attributes")]
    ResourceAttributeOnWildcard,
    /// The schema declares no principal type but a condition reads principal attributes.
    #[error("the schema declares no principal type")]
    NoPrincipalType,
    /// Operand types do not fit the operator.
    #[error("`{expr}`: {message}")]
    Type {
        /// The offending sub-expression.
        expr: String,
        /// What was expected.
        message: String,
    },
    /// A role, action or id is empty, too long or uses characters outside `[A-Za-z0-9_.:-]`.
    #[error("`{0}` is not a valid name")]
    BadName(Box<str>),
    /// A condition (built in Rust) nests deeper than the limit.
    #[error("condition nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// More roles than [`MAX_ROLES`].
    #[error("{0} roles, more than {MAX_ROLES}")]
    TooManyRoles(usize),
    /// A rule names no role, or a rule or grant names no action (use `*` for all).
    #[error("an empty list of {0}")]
    Empty(&'static str),
    /// A grant names a role pattern; grants go to one role.
    #[error("grants name one role, not a pattern")]
    GranteePattern,
    /// More roles, rules or grants than [`MAX_ITEMS`].
    #[error("more than {MAX_ITEMS} items")]
    TooMany,
    /// Wildcard rules would be copied into so many index buckets that the set is refused
    /// (more than [`MAX_INDEX_ENTRIES`]); name actions and types more narrowly.
    #[error("the index would hold {0} entries, more than {MAX_INDEX_ENTRIES}")]
    TooLarge(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Bool,
    Long,
    String,
    /// A set; `None` for the empty literal `[]`, which fits any set type.
    Set(Option<Scalar>),
}

impl From<Type> for Ty {
    fn from(t: Type) -> Self {
        match t {
            Type::Bool => Self::Bool,
            Type::Long => Self::Long,
            Type::String => Self::String,
            Type::Set(s) => Self::Set(Some(s)),
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool => f.write_str("Bool"),
            Self::Long => f.write_str("Long"),
            Self::String => f.write_str("String"),
            Self::Set(None) => f.write_str("Set"),
            Self::Set(Some(s)) => write!(f, "{}", Type::Set(*s)),
        }
    }
}

fn scalar_of(t: Ty) -> Option<Scalar> {
    match t {
        Ty::Bool => Some(Scalar::Bool),
        Ty::Long => Some(Scalar::Long),
        Ty::String => Some(Scalar::String),
        Ty::Set(_) => None,
    }
}

pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

struct Checker<'s> {
    schema: &'s Schema,
    errors: Vec<ValidationError>,
    pos: Pos,
    item: Box<str>,
}

impl<'s> Checker<'s> {
    fn err(&mut self, kind: Problem) {
        self.errors.push(ValidationError {
            pos: self.pos,
            item: self.item.clone(),
            kind,
        });
    }

    fn entity_for<'r>(
        &mut self,
        var: Var,
        resource: Option<&'r EntityType>,
    ) -> Option<&'r EntityType>
    where
        's: 'r,
    {
        match var {
            Var::Context => Some(self.schema.context()),
            Var::Principal => {
                let t = self.schema.principal_type();
                if t.is_none() {
                    self.err(Problem::NoPrincipalType);
                }
                t
            }
            Var::Resource => {
                if resource.is_none() {
                    self.err(Problem::ResourceAttributeOnWildcard);
                }
                resource
            }
        }
    }

    fn type_err(&mut self, expr: &Expr, message: String) {
        let mut expr = expr.to_string();
        if expr.len() > 80 {
            let cut = (0..=77)
                .rev()
                .find(|&i| expr.is_char_boundary(i))
                .unwrap_or(0);
            expr.truncate(cut);
            expr.push('…');
        }
        self.err(Problem::Type { expr, message });
    }

    /// Type-checks `e` and lowers it; `None` after recording an error.
    fn check(&mut self, e: &Expr, resource: Option<&EntityType>) -> Option<(CExpr, Ty)> {
        match e {
            Expr::Lit(v) => {
                let ty = match v {
                    Value::Set(items) if items.is_empty() => Ty::Set(None),
                    v => match v.type_of() {
                        Some(t) => Ty::from(t),
                        None => {
                            self.type_err(e, "set literals hold scalars of one type".into());
                            return None;
                        }
                    },
                };
                Some((CExpr::Lit(v.clone()), ty))
            }
            Expr::Attr(var, name) | Expr::Has(var, name) => {
                let decl = self.entity_for(*var, resource)?.attr(name).cloned();
                let Some(decl) = decl else {
                    self.err(Problem::UnknownAttribute {
                        var: var.name(),
                        name: name.clone(),
                    });
                    return None;
                };
                if matches!(e, Expr::Has(..)) {
                    return Some((CExpr::Has(*var, name.clone()), Ty::Bool));
                }
                Some((
                    CExpr::Attr {
                        var: *var,
                        name: name.clone(),
                        ty: decl.ty,
                    },
                    Ty::from(decl.ty),
                ))
            }
            Expr::Cmp(op, a, b) => {
                let (ca, ta) = self.check(a, resource)?;
                let (cb, tb) = self.check(b, resource)?;
                let ok = match op {
                    CmpOp::Eq | CmpOp::Ne => ta == tb && scalar_of(ta).is_some(),
                    _ => ta == Ty::Long && tb == Ty::Long,
                };
                if !ok {
                    let want = match op {
                        CmpOp::Eq | CmpOp::Ne => "two scalars of the same type",
                        _ => "two Longs",
                    };
                    self.type_err(
                        e,
                        format!("`{}` needs {want}, got {ta} and {tb}", op.symbol()),
                    );
                    return None;
                }
                Some((CExpr::Cmp(*op, Box::new(ca), Box::new(cb)), Ty::Bool))
            }
            Expr::In(a, b) => {
                let (ca, ta) = self.check(a, resource)?;
                let (cb, tb) = self.check(b, resource)?;
                let ok = match (scalar_of(ta), tb) {
                    (Some(s), Ty::Set(Some(t))) => s == t,
                    (Some(_), Ty::Set(None)) => true,
                    _ => false,
                };
                if !ok {
                    self.type_err(
                        e,
                        format!("`in` needs a scalar and a set of its type, got {ta} and {tb}"),
                    );
                    return None;
                }
                Some((CExpr::In(Box::new(ca), Box::new(cb)), Ty::Bool))
            }
            Expr::StartsWith(a, b) => {
                let (ca, ta) = self.check(a, resource)?;
                let (cb, tb) = self.check(b, resource)?;
                if ta != Ty::String || tb != Ty::String {
                    self.type_err(
                        e,
                        format!("`starts_with` needs two Strings, got {ta} and {tb}"),
                    );
                    return None;
                }
                Some((CExpr::StartsWith(Box::new(ca), Box::new(cb)), Ty::Bool))
            }
            Expr::And(a, b) | Expr::Or(a, b) => {
                let la = self.check_bool(a, resource);
                let lb = self.check_bool(b, resource);
                let (ca, cb) = (la?, lb?);
                Some(if matches!(e, Expr::And(..)) {
                    (CExpr::And(Box::new(ca), Box::new(cb)), Ty::Bool)
                } else {
                    (CExpr::Or(Box::new(ca), Box::new(cb)), Ty::Bool)
                })
            }
            Expr::Not(a) => {
                let ca = self.check_bool(a, resource)?;
                Some((CExpr::Not(Box::new(ca)), Ty::Bool))
            }
        }
    }

    fn check_bool(&mut self, e: &Expr, resource: Option<&EntityType>) -> Option<CExpr> {
        let (c, t) = self.check(e, resource)?;
        if t != Ty::Bool {
            self.type_err(e, format!("a condition must be Bool, got {t}"));
            return None;
        }
        Some(c)
    }

    fn condition(
        &mut self,
        e: Option<&Expr>,
        resource: Option<&EntityType>,
    ) -> Option<Option<CExpr>> {
        let Some(e) = e else {
            return Some(None);
        };
        if e.depth() > MAX_DEPTH {
            self.err(Problem::TooDeep);
            return None;
        }
        self.check_bool(e, resource).map(Some)
    }
}

static NEXT_VERSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub(crate) fn compile(
    set: &PolicySet,
    schema: &Arc<Schema>,
) -> Result<CompiledPolicy, PolicyError> {
    let mut ck = Checker {
        schema,
        errors: Vec::new(),
        pos: Pos::default(),
        item: "".into(),
    };
    if set.roles.len() > MAX_ROLES {
        ck.err(Problem::TooManyRoles(set.roles.len()));
        return Err(PolicyError::Invalid(ck.errors));
    }
    if set.roles.len() > MAX_ITEMS || set.rules.len() > MAX_ITEMS || set.grants.len() > MAX_ITEMS {
        ck.err(Problem::TooMany);
        return Err(PolicyError::Invalid(ck.errors));
    }

    // Roles: index, check parents, reject cycles, then compute for each role the set of roles
    // that hold its permissions (itself and every role inheriting from it, transitively).
    let mut role_index: HashMap<Box<str>, u32> = HashMap::default();
    let mut role_names: Vec<Box<str>> = Vec::new();
    for r in &set.roles {
        ck.pos = r.pos;
        ck.item = r.name.clone();
        if !valid_name(&r.name) {
            ck.err(Problem::BadName(r.name.clone()));
            continue;
        }
        if role_index.contains_key(&r.name) {
            ck.err(Problem::DuplicateRole);
            continue;
        }
        role_index.insert(
            r.name.clone(),
            u32::try_from(role_names.len()).unwrap_or(u32::MAX),
        );
        role_names.push(r.name.clone());
    }
    let n = role_names.len();
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for r in &set.roles {
        let Some(&me) = role_index.get(&r.name) else {
            continue;
        };
        ck.pos = r.pos;
        ck.item = r.name.clone();
        for p in &r.inherits {
            match role_index.get(p) {
                Some(&pi) => parents[me as usize].push(pi as usize),
                None => ck.err(Problem::UnknownRole(p.clone())),
            }
        }
    }
    // Cycle check (iterative DFS, colours: 0 new, 1 on stack, 2 done).
    let mut colour = vec![0u8; n];
    for start in 0..n {
        if colour[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        colour[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&p) = parents[node].get(*next) {
                *next += 1;
                match colour[p] {
                    0 => {
                        colour[p] = 1;
                        stack.push((p, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|&(x, _)| x == p).unwrap_or(0);
                        let mut path: Vec<&str> = stack[from..]
                            .iter()
                            .map(|&(x, _)| &*role_names[x])
                            .collect();
                        path.push(&role_names[p]);
                        ck.pos = set
                            .roles
                            .iter()
                            .find(|r| r.name == role_names[p])
                            .map_or_else(Pos::default, |r| r.pos);
                        ck.item = role_names[p].clone();
                        ck.err(Problem::RoleCycle(path.join(" → ")));
                    }
                    _ => {}
                }
            } else {
                colour[node] = 2;
                stack.pop();
            }
        }
    }
    if !ck.errors.is_empty() {
        return Err(PolicyError::Invalid(ck.errors));
    }
    let words_per_mask = n.div_ceil(64).max(1);
    let words = words_per_mask;
    // holders[a]: bitset of the roles whose holders get a's permissions (a itself and every
    // role inheriting from it, transitively). n ≤ MAX_ROLES keeps this at most 128 KiB.
    let mut holders: Vec<Vec<u64>> = vec![vec![0u64; words]; n];
    let mut seen = vec![false; n];
    let mut todo = Vec::new();
    for r in 0..n {
        seen.fill(false);
        todo.push(r);
        while let Some(x) = todo.pop() {
            if std::mem::replace(&mut seen[x], true) {
                continue;
            }
            holders[x][r / 64] |= 1u64 << (r % 64);
            todo.extend(parents[x].iter().copied());
        }
    }
    let role_bits = |ck: &mut Checker<'_>, names: &[Box<str>]| -> Option<Box<[u64]>> {
        let mut bits = vec![0u64; words];
        let mut ok = true;
        for name in names {
            if let Some(prefix) = name.strip_suffix('*') {
                let mut any = false;
                for (i, rn) in role_names.iter().enumerate() {
                    if rn.starts_with(prefix) {
                        any = true;
                        for (w, h) in bits.iter_mut().zip(&holders[i]) {
                            *w |= h;
                        }
                    }
                }
                if !any {
                    ck.err(Problem::EmptyPattern(name.clone()));
                    ok = false;
                }
            } else if let Some(&i) = role_index.get(name) {
                for (w, h) in bits.iter_mut().zip(&holders[i as usize]) {
                    *w |= h;
                }
            } else {
                ck.err(Problem::UnknownRole(name.clone()));
                ok = false;
            }
        }
        ok.then(|| bits.into_boxed_slice())
    };

    let mut ids: HashSet<Box<str>> = HashSet::default();
    let mut rules: Vec<CRule> = Vec::with_capacity(set.rules.len());
    for (i, r) in set.rules.iter().enumerate() {
        ck.pos = r.pos;
        let id: Box<str> = if r.id.is_empty() {
            // Unnamed rules are named by position; layered sets (shared + tenant) can repeat a
            // position, so the index disambiguates, and only explicit ids must be unique.
            let auto = if r.pos == Pos::default() {
                format!("rule#{i}")
            } else {
                r.pos.to_string()
            };
            if ids.contains(auto.as_str()) {
                format!("{auto}#{i}").into()
            } else {
                auto.into()
            }
        } else {
            r.id.clone()
        };
        ck.item = id.clone();
        if id.len() > 128 || id.chars().any(char::is_control) {
            ck.err(Problem::BadName(
                id.chars()
                    .take(32)
                    .filter(|c| !c.is_control())
                    .collect::<String>()
                    .into(),
            ));
        }
        if !ids.insert(id.clone()) && !r.id.is_empty() {
            ck.err(Problem::DuplicateId);
        }
        let roles = match &r.principals {
            Principals::Any => Some(RoleMatch::Any),
            Principals::Roles(names) if names.is_empty() => {
                ck.err(Problem::Empty("roles"));
                None
            }
            Principals::Roles(names) => role_bits(&mut ck, names).map(RoleMatch::Bits),
        };
        check_actions(&mut ck, &r.actions);
        let resource = match &r.resource_type {
            None => Some(None),
            Some(t) => match schema.entity(t) {
                Some(et) => Some(Some(et)),
                None => {
                    ck.err(Problem::UnknownType(t.clone()));
                    None
                }
            },
        };
        let cond = match resource {
            Some(res) => ck.condition(r.condition.as_ref(), res),
            None => None,
        };
        if let (Some(roles), Some(cond)) = (roles, cond) {
            rules.push(CRule {
                id: SmolStr::from(&*id),
                effect: r.effect,
                roles,
                cond,
                source: r.clone(),
            });
        }
    }

    let mut grants: Vec<CGrant> = Vec::with_capacity(set.grants.len());
    for g in &set.grants {
        ck.pos = g.pos;
        ck.item = g.id.clone();
        if g.id.is_empty() || g.id.len() > 128 || g.id.chars().any(char::is_control) {
            ck.err(Problem::BadName(
                g.id.chars()
                    .take(32)
                    .filter(|c| !c.is_control())
                    .collect::<String>()
                    .into(),
            ));
        }
        if !ids.insert(g.id.clone()) {
            ck.err(Problem::DuplicateId);
        }
        let grantee = match &g.grantee {
            Grantee::Role(name) if name.contains('*') => {
                ck.err(Problem::GranteePattern);
                None
            }
            Grantee::Role(name) => {
                role_bits(&mut ck, std::slice::from_ref(name)).map(GranteeMatch::Roles)
            }
            Grantee::Principal(p) if !p.is_empty() && p.len() <= 128 => {
                Some(GranteeMatch::Principal(p.clone()))
            }
            Grantee::Principal(p) => {
                ck.err(Problem::BadName(
                    p.chars().take(32).collect::<String>().into(),
                ));
                None
            }
        };
        check_actions(&mut ck, &g.actions);
        let cond = match schema.entity(&g.resource_type) {
            Some(et) => ck.condition(g.condition.as_ref(), Some(et)),
            None => {
                ck.err(Problem::UnknownType(g.resource_type.clone()));
                None
            }
        };
        if let (Some(grantee), Some(cond)) = (grantee, cond) {
            grants.push(CGrant {
                id: SmolStr::from(&*g.id),
                grantee,
                cond,
                expires_at: g.expires_at,
                granted_by: SmolStr::from(&*g.granted_by),
                source: g.clone(),
            });
        }
    }
    if !ck.errors.is_empty() {
        return Err(PolicyError::Invalid(ck.errors));
    }

    // Index: every (type, action) named anywhere gets a bucket holding exactly the rules and
    // grants that can apply to it, including wildcard ones; `other` buckets serve actions and
    // types no rule names.
    let mut type_names: Vec<&str> = Vec::new();
    let mut actions_of: HashMap<&str, HashSet<&str>> = HashMap::default();
    let mut any_type_actions: HashSet<&str> = HashSet::default();
    for r in &set.rules {
        let acts: Vec<&str> = match &r.actions {
            Actions::Any => Vec::new(),
            Actions::Named(a) => a.iter().map(|s| &**s).collect(),
        };
        match &r.resource_type {
            Some(t) => {
                if !actions_of.contains_key(&**t) {
                    type_names.push(t);
                }
                actions_of.entry(t).or_default().extend(acts);
            }
            None => any_type_actions.extend(acts),
        }
    }
    for g in &set.grants {
        if !actions_of.contains_key(&*g.resource_type) {
            type_names.push(&g.resource_type);
        }
        let e = actions_of.entry(&g.resource_type).or_default();
        if let Actions::Named(a) = &g.actions {
            e.extend(a.iter().map(|s| &**s));
        }
    }
    // Each rule's mask: the first word inline in its entries, the rest (sets of more than 64
    // roles) in one shared array.
    let mut masks: Vec<u64> = Vec::new();
    let entries: Vec<Entry> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (any, bits): (bool, &[u64]) = match &r.roles {
                RoleMatch::Any => (true, &[]),
                RoleMatch::Bits(b) => (false, b),
            };
            let rest = u32::try_from(masks.len()).unwrap_or(u32::MAX);
            let mut words = bits.iter().copied().chain(std::iter::repeat(0));
            let mask0 = words.next().unwrap_or(0);
            masks.extend(words.take(words_per_mask - 1));
            Entry {
                mask0,
                rest,
                rule: u32::try_from(i).unwrap_or(u32::MAX),
                any,
                cond: r.cond.is_some(),
            }
        })
        .collect();

    // Wildcard rules are copied into every bucket they can match, so a decision walks one
    // list; refuse a set whose copies would make the index huge (a policy is untrusted input:
    // many actions times many wildcard rules must not exhaust memory or time).
    for t in &type_names {
        actions_of
            .entry(t)
            .or_default()
            .extend(any_type_actions.iter().copied());
    }
    let pair_count: usize = type_names.iter().map(|t| actions_of[t].len()).sum();
    let landing = |ty: Option<&str>, actions: &Actions| -> usize {
        match (ty, actions) {
            (Some(_), Actions::Named(a)) => distinct(a).len(),
            (Some(t), Actions::Any) => actions_of.get(t).map_or(0, HashSet::len) + 1,
            (None, Actions::Named(a)) => distinct(a).len() * (type_names.len() + 1),
            (None, Actions::Any) => pair_count + type_names.len() + any_type_actions.len() + 1,
        }
    };
    let index_size: usize = set
        .rules
        .iter()
        .map(|r| landing(r.resource_type.as_deref(), &r.actions))
        .chain(
            set.grants
                .iter()
                .map(|g| landing(Some(&g.resource_type), &g.actions)),
        )
        .fold(0usize, usize::saturating_add);
    if index_size > MAX_INDEX_ENTRIES {
        ck.pos = Pos::default();
        ck.item = "index".into();
        ck.err(Problem::TooLarge(index_size));
        return Err(PolicyError::Invalid(ck.errors));
    }

    #[derive(Default)]
    struct Builder {
        deny: Vec<Entry>,
        allow: Vec<Entry>,
        grants: Vec<u32>,
    }
    impl Builder {
        fn push(&mut self, effect: Effect, e: Entry) {
            match effect {
                Effect::Deny => self.deny.push(e),
                Effect::Allow => self.allow.push(e),
            }
        }
        fn build(mut self) -> Bucket {
            // Unconditional rules first (stable, so rule order is kept otherwise): they decide
            // without reading any attribute.
            self.deny.sort_by_key(|e| e.cond);
            self.allow.sort_by_key(|e| e.cond);
            Bucket {
                deny: self.deny.into(),
                allow: self.allow.into(),
                grants: self.grants.into(),
            }
        }
    }
    let mut pair_b: HashMap<(&str, &str), Builder> = HashMap::default();
    let mut type_b: HashMap<&str, Builder> = HashMap::default();
    let mut fb_action_b: HashMap<&str, Builder> = any_type_actions
        .iter()
        .map(|a| (*a, Builder::default()))
        .collect();
    let mut fb_other = Builder::default();
    for t in &type_names {
        type_b.insert(t, Builder::default());
        for a in &actions_of[t] {
            pair_b.insert((t, a), Builder::default());
        }
    }
    for (r, &e) in rules.iter().zip(&entries) {
        let effect = r.effect;
        match (r.source.resource_type.as_deref(), &r.source.actions) {
            (Some(t), Actions::Named(names)) => {
                for a in distinct(names) {
                    if let Some(b) = pair_b.get_mut(&(t, a)) {
                        b.push(effect, e);
                    }
                }
            }
            (Some(t), Actions::Any) => {
                // Only this type's buckets: the walk costs what the copies cost.
                for a in actions_of.get(t).into_iter().flatten() {
                    if let Some(b) = pair_b.get_mut(&(t, *a)) {
                        b.push(effect, e);
                    }
                }
                if let Some(b) = type_b.get_mut(t) {
                    b.push(effect, e);
                }
            }
            (None, Actions::Named(names)) => {
                for a in distinct(names) {
                    for t in &type_names {
                        if let Some(b) = pair_b.get_mut(&(*t, a)) {
                            b.push(effect, e);
                        }
                    }
                    if let Some(b) = fb_action_b.get_mut(a) {
                        b.push(effect, e);
                    }
                }
            }
            (None, Actions::Any) => {
                for b in pair_b
                    .values_mut()
                    .chain(type_b.values_mut())
                    .chain(fb_action_b.values_mut())
                {
                    b.push(effect, e);
                }
                fb_other.push(effect, e);
            }
        }
    }
    for (i, g) in grants.iter().enumerate() {
        let idx = u32::try_from(i).unwrap_or(u32::MAX);
        let t = &*g.source.resource_type;
        match &g.source.actions {
            Actions::Named(names) => {
                for a in distinct(names) {
                    if let Some(b) = pair_b.get_mut(&(t, a)) {
                        b.grants.push(idx);
                    }
                }
            }
            Actions::Any => {
                for a in actions_of.get(t).into_iter().flatten() {
                    if let Some(b) = pair_b.get_mut(&(t, *a)) {
                        b.grants.push(idx);
                    }
                }
                if let Some(b) = type_b.get_mut(t) {
                    b.grants.push(idx);
                }
            }
        }
    }
    let mut pairs = PairMap::default();
    for ((t, a), b) in pair_b {
        pairs.insert((Box::from(t), Box::from(a)), b.build());
    }
    let types: HashMap<Box<str>, Bucket> = type_b
        .into_iter()
        .map(|(t, b)| (Box::from(t), b.build()))
        .collect();
    let fallback = TypeIndex {
        actions: fb_action_b
            .into_iter()
            .map(|(a, b)| (Box::from(a), b.build()))
            .collect(),
        other: fb_other.build(),
    };

    Ok(CompiledPolicy {
        version: PolicyVersion(NEXT_VERSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        role_index,
        role_names,
        rules,
        grants,
        words: words_per_mask,
        masks,
        pairs,
        types,
        fallback,
        schema: Arc::clone(schema),
        source: set.clone(),
    })
}

/// The names of a list, each once (`read, read` must not put a rule twice in a bucket).
fn distinct(names: &[Box<str>]) -> Vec<&str> {
    let mut out: Vec<&str> = names.iter().map(|n| &**n).collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn check_actions(ck: &mut Checker<'_>, actions: &Actions) {
    if matches!(actions, Actions::Named(names) if names.is_empty()) {
        ck.err(Problem::Empty("actions"));
    }
    if let Actions::Named(names) = actions {
        for a in names {
            if !valid_name(a) {
                ck.err(Problem::BadName(
                    a.chars()
                        .take(32)
                        .filter(|c| !c.is_control())
                        .collect::<String>()
                        .into(),
                ));
            }
        }
    }
}
