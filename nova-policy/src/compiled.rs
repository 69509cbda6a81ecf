//! The compiled policy and its evaluator. A decision looks up the bucket for its resource type
//! and action, so it touches only the rules and grants that can apply; roles are pre-expanded
//! into bitsets, so inheritance costs nothing at decision time.
//!
//! Evaluation order is fixed and fail-closed: any applicable `deny` whose condition holds, or
//! cannot be evaluated, denies; otherwise the first applicable `allow` or live grant whose
//! condition holds allows; otherwise the default is deny.

use std::fmt;
use std::sync::Arc;

use foldhash::HashMap;
use smallvec::SmallVec;
use smol_str::SmolStr;

use crate::ast::{CmpOp, Effect, Grant, Rule, Var};
use crate::parser::format_utc;
use crate::policy_set::PolicySet;
use crate::schema::Schema;
use crate::value::{Entity, NoAttrs, Type, Value};

/// Identifies one compiled policy set; every decision carries the version that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyVersion(pub u64);

impl fmt::Display for PolicyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A lowered, type-checked condition.
#[derive(Debug, Clone)]
pub(crate) enum CExpr {
    Lit(Value),
    Attr { var: Var, name: Box<str>, ty: Type },
    Has(Var, Box<str>),
    Cmp(CmpOp, Box<CExpr>, Box<CExpr>),
    In(Box<CExpr>, Box<CExpr>),
    StartsWith(Box<CExpr>, Box<CExpr>),
    And(Box<CExpr>, Box<CExpr>),
    Or(Box<CExpr>, Box<CExpr>),
    Not(Box<CExpr>),
}

/// Why a condition could not be evaluated. Names the attribute, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The entity lacks an attribute the condition reads.
    #[error("{var} has no attribute `{name}`")]
    Missing {
        /// `principal`, `resource` or `context`.
        var: &'static str,
        /// The attribute.
        name: Box<str>,
    },
    /// The entity's attribute does not have its declared type.
    #[error("{var}.{name} does not have its declared type")]
    WrongType {
        /// `principal`, `resource` or `context`.
        var: &'static str,
        /// The attribute.
        name: Box<str>,
    },
}

#[derive(Clone, Copy)]
enum V<'a> {
    Bool(bool),
    Long(i64),
    Str(&'a str),
    Set(&'a [Value], &'a CExpr),
}

pub(crate) struct Env<'a> {
    pub(crate) principal: &'a dyn Entity,
    pub(crate) resource: &'a dyn Entity,
    pub(crate) context: &'a dyn Entity,
}

impl<'a> Env<'a> {
    pub(crate) fn get(&self, var: Var) -> &'a dyn Entity {
        match var {
            Var::Principal => self.principal,
            Var::Resource => self.resource,
            Var::Context => self.context,
        }
    }
}

fn wrong(e: &CExpr) -> EvalError {
    match e {
        CExpr::Attr { var, name, .. } => EvalError::WrongType {
            var: var.name(),
            name: name.clone(),
        },
        _ => EvalError::WrongType {
            var: "literal",
            name: "".into(),
        },
    }
}

fn scalar_eq(a: V<'_>, item: &Value) -> Option<bool> {
    match (a, item) {
        (V::Bool(x), Value::Bool(y)) => Some(x == *y),
        (V::Long(x), Value::Long(y)) => Some(x == *y),
        (V::Str(x), Value::Str(y)) => Some(x == &**y),
        _ => None,
    }
}

impl CExpr {
    fn eval<'a>(&'a self, env: &Env<'a>) -> Result<V<'a>, EvalError> {
        match self {
            Self::Lit(v) => Ok(match v {
                Value::Bool(b) => V::Bool(*b),
                Value::Long(n) => V::Long(*n),
                Value::Str(s) => V::Str(s),
                Value::Set(items) => V::Set(items, self),
            }),
            Self::Attr { var, name, ty } => {
                let Some(v) = env.get(*var).attr(name) else {
                    return Err(EvalError::Missing {
                        var: var.name(),
                        name: name.clone(),
                    });
                };
                match (v, ty) {
                    (Value::Bool(b), Type::Bool) => Ok(V::Bool(*b)),
                    (Value::Long(n), Type::Long) => Ok(V::Long(*n)),
                    (Value::Str(s), Type::String) => Ok(V::Str(s)),
                    (Value::Set(items), Type::Set(_)) => Ok(V::Set(items, self)),
                    _ => Err(wrong(self)),
                }
            }
            Self::Has(var, name) => Ok(V::Bool(env.get(*var).attr(name).is_some())),
            Self::Cmp(op, a, b) => {
                let (x, y) = (a.eval(env)?, b.eval(env)?);
                let r = match (x, y) {
                    (V::Long(x), V::Long(y)) => match op {
                        CmpOp::Eq => x == y,
                        CmpOp::Ne => x != y,
                        CmpOp::Lt => x < y,
                        CmpOp::Le => x <= y,
                        CmpOp::Gt => x > y,
                        CmpOp::Ge => x >= y,
                    },
                    (V::Str(x), V::Str(y)) if matches!(op, CmpOp::Eq | CmpOp::Ne) => {
                        (x == y) == (*op == CmpOp::Eq)
                    }
                    (V::Bool(x), V::Bool(y)) if matches!(op, CmpOp::Eq | CmpOp::Ne) => {
                        (x == y) == (*op == CmpOp::Eq)
                    }
                    _ => return Err(wrong(a)),
                };
                Ok(V::Bool(r))
            }
            Self::In(a, b) => {
                let x = a.eval(env)?;
                let V::Set(items, origin) = b.eval(env)? else {
                    return Err(wrong(b));
                };
                if matches!(x, V::Set(..)) {
                    return Err(wrong(a));
                }
                let mut found = false;
                for item in items {
                    match scalar_eq(x, item) {
                        Some(true) => found = true,
                        Some(false) => {}
                        // An element of another type: the set is malformed, whatever else
                        // it holds.
                        None => return Err(wrong(origin)),
                    }
                }
                Ok(V::Bool(found))
            }
            Self::StartsWith(a, b) => match (a.eval(env)?, b.eval(env)?) {
                (V::Str(x), V::Str(p)) => Ok(V::Bool(x.starts_with(p))),
                (V::Str(_), _) => Err(wrong(b)),
                _ => Err(wrong(a)),
            },
            Self::And(a, b) => {
                if a.truth(env)? {
                    Ok(V::Bool(b.truth(env)?))
                } else {
                    Ok(V::Bool(false))
                }
            }
            Self::Or(a, b) => {
                if a.truth(env)? {
                    Ok(V::Bool(true))
                } else {
                    Ok(V::Bool(b.truth(env)?))
                }
            }
            Self::Not(a) => Ok(V::Bool(!a.truth(env)?)),
        }
    }

    pub(crate) fn truth(&self, env: &Env<'_>) -> Result<bool, EvalError> {
        match self.eval(env)? {
            V::Bool(b) => Ok(b),
            _ => Err(wrong(self)),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum RoleMatch {
    Any,
    Bits(Box<[u64]>),
}

#[derive(Debug, Clone)]
pub(crate) struct CRule {
    pub(crate) id: SmolStr,
    pub(crate) effect: Effect,
    pub(crate) roles: RoleMatch,
    pub(crate) cond: Option<CExpr>,
    pub(crate) source: Rule,
}

#[derive(Debug, Clone)]
pub(crate) enum GranteeMatch {
    Roles(Box<[u64]>),
    Principal(Box<str>),
}

#[derive(Debug, Clone)]
pub(crate) struct CGrant {
    pub(crate) id: SmolStr,
    pub(crate) grantee: GranteeMatch,
    pub(crate) cond: Option<CExpr>,
    pub(crate) expires_at: u64,
    pub(crate) granted_by: SmolStr,
    pub(crate) source: Grant,
}

/// A rule as a bucket holds it: compact and contiguous, so a decision walks a small array
/// and touches the full rule only to evaluate a condition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    /// The first 64 bits of the rule's role mask (inheritance folded in).
    pub(crate) mask0: u64,
    /// Where the rest of the mask starts in `CompiledPolicy::masks` (more than 64 roles).
    pub(crate) rest: u32,
    /// Index of the rule in `CompiledPolicy::rules`.
    pub(crate) rule: u32,
    /// `*`: applies to every principal, with or without roles.
    pub(crate) any: bool,
    /// Whether the rule has a condition.
    pub(crate) cond: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Bucket {
    /// Unconditional rules first within each list.
    pub(crate) deny: Box<[Entry]>,
    pub(crate) allow: Box<[Entry]>,
    pub(crate) grants: Box<[u32]>,
}

/// Looks up a `(type, action)` key without building one: hashes exactly as the tuple of
/// strings does.
pub(crate) struct Pair<'a>(pub(crate) &'a str, pub(crate) &'a str);

impl std::hash::Hash for Pair<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
        self.1.hash(state);
    }
}

impl hashbrown::Equivalent<(Box<str>, Box<str>)> for Pair<'_> {
    fn equivalent(&self, key: &(Box<str>, Box<str>)) -> bool {
        *key.0 == *self.0 && *key.1 == *self.1
    }
}

pub(crate) type PairMap =
    hashbrown::HashMap<(Box<str>, Box<str>), Bucket, foldhash::fast::RandomState>;

#[derive(Debug, Clone, Default)]
pub(crate) struct TypeIndex {
    pub(crate) actions: HashMap<Box<str>, Bucket>,
    pub(crate) other: Bucket,
}

/// A validated, indexed policy set, ready to decide. Cheap to share behind an `Arc`; it never
/// changes (reload swaps in a new one, see [`PolicyStore`](crate::PolicyStore)).
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub(crate) version: PolicyVersion,
    pub(crate) role_index: HashMap<Box<str>, u32>,
    pub(crate) role_names: Vec<Box<str>>,
    pub(crate) rules: Vec<CRule>,
    pub(crate) grants: Vec<CGrant>,
    /// Words of a role mask (`ceil(roles / 64)`, at least 1).
    pub(crate) words: usize,
    /// The mask words past the first, `words - 1` per rule, for sets of more than 64 roles.
    pub(crate) masks: Vec<u64>,
    /// Every `(type, action)` some rule or grant names.
    pub(crate) pairs: PairMap,
    /// For each named type, the bucket of actions no rule names for it.
    pub(crate) types: HashMap<Box<str>, Bucket>,
    /// Types no rule names: only rules on `*` apply.
    pub(crate) fallback: TypeIndex,
    pub(crate) schema: Arc<Schema>,
    pub(crate) source: PolicySet,
}

/// A principal's roles.
#[derive(Debug, Clone, Copy)]
enum Roles<'a> {
    Strs(&'a [&'a str]),
    Named(&'a [nova_tenancy::Role]),
}

/// One authorization question: may this principal do this action on this resource?
///
/// ```
/// use nova_policy::{Attrs, Request};
/// let user = Attrs::new().with("department", "support");
/// let ticket = Attrs::new().with("department", "support");
/// let req = Request::new("read", "Ticket")
///     .principal("u-42", &["agent"], &user)
///     .resource(&ticket);
/// assert_eq!(req.action(), "read");
/// ```
#[derive(Clone, Copy)]
pub struct Request<'a> {
    principal_id: &'a str,
    roles: Roles<'a>,
    principal: &'a dyn Entity,
    action: &'a str,
    resource_type: &'a str,
    resource: &'a dyn Entity,
    context: &'a dyn Entity,
    now: Option<u64>,
}

impl fmt::Debug for Request<'_> {
    // Attribute values may be personal data: only the shape of the request is printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("action", &self.action)
            .field("resource_type", &self.resource_type)
            .finish_non_exhaustive()
    }
}

impl<'a> Request<'a> {
    /// A request for `action` on a resource of `resource_type`, by an anonymous principal
    /// with no roles and no attributes, with no context, at the current time.
    #[must_use]
    pub fn new(action: &'a str, resource_type: &'a str) -> Self {
        Self {
            principal_id: "",
            roles: Roles::Strs(&[]),
            principal: &NoAttrs,
            action,
            resource_type,
            resource: &NoAttrs,
            context: &NoAttrs,
            now: None,
        }
    }

    /// Sets the principal: its id, roles and attributes.
    #[must_use]
    pub fn principal(mut self, id: &'a str, roles: &'a [&'a str], attrs: &'a dyn Entity) -> Self {
        self.principal_id = id;
        self.roles = Roles::Strs(roles);
        self.principal = attrs;
        self
    }

    /// Sets the principal from a verified [`TenantContext`](nova_tenancy::TenantContext):
    /// its user id (empty for a service) and roles, with `attrs` as its attributes.
    #[must_use]
    pub fn principal_from(
        mut self,
        ctx: &'a nova_tenancy::TenantContext,
        user_id: &'a str,
        attrs: &'a dyn Entity,
    ) -> Self {
        self.principal_id = user_id;
        self.roles = Roles::Named(ctx.roles());
        self.principal = attrs;
        self
    }

    /// Sets the resource's attributes.
    #[must_use]
    pub fn resource(mut self, attrs: &'a dyn Entity) -> Self {
        self.resource = attrs;
        self
    }

    /// Sets the context's attributes.
    #[must_use]
    pub fn context(mut self, attrs: &'a dyn Entity) -> Self {
        self.context = attrs;
        self
    }

    /// Decides as of `unix_seconds` (grants expire by this clock) instead of the system clock.
    #[must_use]
    pub fn at(mut self, unix_seconds: u64) -> Self {
        self.now = Some(unix_seconds);
        self
    }

    /// The action asked for.
    #[must_use]
    pub fn action(&self) -> &'a str {
        self.action
    }

    /// The resource type asked about.
    #[must_use]
    pub fn resource_type(&self) -> &'a str {
        self.resource_type
    }

    pub(crate) fn env(&self) -> Env<'a> {
        Env {
            principal: self.principal,
            resource: self.resource,
            context: self.context,
        }
    }

    pub(crate) fn principal_id(&self) -> &'a str {
        self.principal_id
    }

    fn role_names(&self) -> impl Iterator<Item = &'a str> + 'a {
        let (a, b): (&[&str], &[nova_tenancy::Role]) = match self.roles {
            Roles::Strs(s) => (s, &[]),
            Roles::Named(n) => (&[], n),
        };
        a.iter()
            .copied()
            .chain(b.iter().map(nova_tenancy::Role::as_str))
    }

    pub(crate) fn now_secs(&self) -> u64 {
        self.now.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        })
    }
}

/// The principal's roles as a bitmask over the declared roles.
pub(crate) struct HeldRoles {
    first: u64,
    rest: SmallVec<[u64; 3]>,
    pub(crate) unknown: usize,
}

impl HeldRoles {
    fn matches(&self, first: u64, rest: &[u64]) -> bool {
        first & self.first != 0 || rest.iter().zip(&self.rest).any(|(a, b)| a & b != 0)
    }
}

/// A decision: allowed or not, and which policy version made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Decision {
    allowed: bool,
    version: PolicyVersion,
}

impl Decision {
    /// Whether access is granted.
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// The policy version that decided.
    #[must_use]
    pub fn version(&self) -> PolicyVersion {
        self.version
    }
}

/// Why a decision came out as it did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// This `allow` rule applied and its condition held.
    Allowed {
        /// The rule's id.
        rule: SmolStr,
    },
    /// This `deny` rule applied and its condition held.
    Denied {
        /// The rule's id.
        rule: SmolStr,
    },
    /// This `deny` rule applied but its condition could not be evaluated, so it denied.
    DeniedOnError {
        /// The rule's id.
        rule: SmolStr,
        /// What went wrong.
        error: EvalError,
    },
    /// This delegation grant applied.
    Delegated {
        /// The grant's id.
        grant: SmolStr,
        /// Who granted it.
        granted_by: SmolStr,
        /// When it expires (seconds since the Unix epoch).
        expires_at: u64,
    },
    /// No rule or grant covers this action on this resource type.
    NoRules {
        /// The resource type asked about.
        resource_type: Box<str>,
        /// The action asked for.
        action: Box<str>,
    },
    /// This many rules cover the request but need roles the principal does not hold.
    RolesNotHeld {
        /// How many rules.
        rules: usize,
    },
    /// This rule covers the request but its condition was false.
    ConditionFalse {
        /// The rule's id.
        rule: SmolStr,
    },
    /// This `allow` rule's condition could not be evaluated, so it did not allow.
    ConditionError {
        /// The rule's id.
        rule: SmolStr,
        /// What went wrong.
        error: EvalError,
    },
    /// This grant would apply but expired.
    GrantExpired {
        /// The grant's id.
        grant: SmolStr,
        /// When it expired.
        expired_at: u64,
    },
    /// This grant is for the principal but its scope does not cover the resource (or its
    /// condition could not be evaluated).
    GrantOutOfScope {
        /// The grant's id.
        grant: SmolStr,
    },
    /// The principal holds roles the policy does not declare (they grant nothing).
    UnknownRoles {
        /// How many.
        count: usize,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allowed { rule } => write!(f, "allowed by rule `{rule}`"),
            Self::Denied { rule } => write!(f, "denied by rule `{rule}`"),
            Self::DeniedOnError { rule, error } => {
                write!(
                    f,
                    "denied by rule `{rule}`, whose condition failed: {error}"
                )
            }
            Self::Delegated {
                grant,
                granted_by,
                expires_at,
            } => write!(
                f,
                "allowed by grant `{grant}` from `{granted_by}`, until {}",
                format_utc(*expires_at)
            ),
            Self::NoRules {
                resource_type,
                action,
            } => write!(f, "no rule covers `{action}` on `{resource_type}`"),
            Self::RolesNotHeld { rules: 1 } => {
                write!(f, "1 rule needs a role the principal does not hold")
            }
            Self::RolesNotHeld { rules } => {
                write!(f, "{rules} rules need roles the principal does not hold")
            }
            Self::ConditionFalse { rule } => write!(f, "rule `{rule}`: condition is false"),
            Self::ConditionError { rule, error } => {
                write!(f, "rule `{rule}`: condition failed: {error}")
            }
            Self::GrantExpired { grant, expired_at } => {
                write!(f, "grant `{grant}` expired at {}", format_utc(*expired_at))
            }
            Self::GrantOutOfScope { grant } => {
                write!(f, "grant `{grant}` does not cover this resource")
            }
            Self::UnknownRoles { count } => {
                write!(f, "{count} of the principal's roles are not declared")
            }
        }
    }
}

/// A decision with the reasons behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The decision.
    pub decision: Decision,
    // Inline for the usual one or two reasons: explaining must cost little more than deciding.
    reasons: SmallVec<[Reason; 1]>,
}

impl Explanation {
    /// For an allow: the rule that allowed (unconditional rules are tried first), or, when no
    /// rule did, the grant used. For a deny by rule: every deny that fired. For a default deny: the rules whose conditions
    /// were false or failed, the grants that expired or did not cover the resource, how many
    /// rules needed roles the principal lacks, and undeclared roles it holds.
    #[must_use]
    pub fn reasons(&self) -> &[Reason] {
        &self.reasons
    }

    /// Whether access is granted.
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        self.decision.allowed
    }

    /// Whether any grant was used (so the access is delegated, not from a role).
    #[must_use]
    pub fn used_delegation(&self) -> bool {
        self.decision.allowed
            && self
                .reasons
                .iter()
                .any(|r| matches!(r, Reason::Delegated { .. }))
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.decision.allowed {
            "allow"
        } else {
            "deny"
        };
        write!(f, "{verdict} ({})", self.decision.version)?;
        for r in &self.reasons {
            write!(f, "; {r}")?;
        }
        Ok(())
    }
}

impl CompiledPolicy {
    /// The version id carried by every decision of this set.
    #[must_use]
    pub fn version(&self) -> PolicyVersion {
        self.version
    }

    /// How many rules the set holds.
    #[must_use]
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// How many grants the set holds.
    #[must_use]
    pub fn grant_count(&self) -> usize {
        self.grants.len()
    }

    /// The schema the set was validated against.
    #[must_use]
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The set as written (for layering and reload).
    #[must_use]
    pub fn source(&self) -> &PolicySet {
        &self.source
    }

    pub(crate) fn bucket(&self, resource_type: &str, action: &str) -> &Bucket {
        if let Some(b) = self.pairs.get(&Pair(resource_type, action)) {
            return b;
        }
        if let Some(b) = self.types.get(resource_type) {
            return b;
        }
        self.fallback
            .actions
            .get(action)
            .unwrap_or(&self.fallback.other)
    }

    pub(crate) fn held_roles(&self, req: &Request<'_>) -> HeldRoles {
        let mut held = HeldRoles {
            first: 0,
            rest: SmallVec::from_elem(0, self.words - 1),
            unknown: 0,
        };
        for name in req.role_names() {
            match self.role_index.get(name) {
                Some(&i) if i < 64 => held.first |= 1 << i,
                Some(&i) => {
                    if let Some(w) = held.rest.get_mut(i as usize / 64 - 1) {
                        *w |= 1 << (i % 64);
                    }
                }
                None => held.unknown += 1,
            }
        }
        held
    }

    pub(crate) fn entry_applies(&self, e: &Entry, held: &HeldRoles) -> bool {
        if e.any || e.mask0 & held.first != 0 {
            return true;
        }
        self.words > 1 && {
            let at = e.rest as usize;
            let rest = self.masks.get(at..at + self.words - 1).unwrap_or(&[]);
            held.matches(0, rest)
        }
    }

    pub(crate) fn condition(&self, e: &Entry) -> Option<&CExpr> {
        if e.cond {
            self.rules[e.rule as usize].cond.as_ref()
        } else {
            None
        }
    }

    pub(crate) fn grant_for(&self, grant: &CGrant, held: &HeldRoles, principal_id: &str) -> bool {
        match &grant.grantee {
            GranteeMatch::Roles(bits) => held.matches(
                bits.first().copied().unwrap_or(0),
                bits.get(1..).unwrap_or(&[]),
            ),
            // Principal ids are identifiers, not secrets: a plain comparison is fine.
            GranteeMatch::Principal(p) => !principal_id.is_empty() && &**p == principal_id,
        }
    }

    /// Decides, without explanation: the hot path.
    ///
    /// ```
    /// use nova_policy::{Attrs, PolicySet, Request, Schema};
    /// let schema = Schema::parse("entity User {}; entity Ticket { queue: String }; principal User;")?;
    /// let policy = PolicySet::parse(r#"
    ///     role agent;
    ///     allow agent to read on Ticket when resource.queue == "billing";
    /// "#)?.compile(&schema)?;
    /// let ticket = Attrs::new().with("queue", "billing");
    /// let me = Attrs::new();
    /// let req = Request::new("read", "Ticket").principal("u-1", &["agent"], &me).resource(&ticket);
    /// assert!(policy.decide(&req).is_allowed());
    /// assert!(!policy.decide(&Request::new("delete", "Ticket")).is_allowed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decide(&self, req: &Request<'_>) -> Decision {
        Decision {
            allowed: self.is_allowed(req),
            version: self.version,
        }
    }

    /// Whether `req` is allowed, without explanation.
    #[must_use]
    pub fn is_allowed(&self, req: &Request<'_>) -> bool {
        let bucket = self.bucket(req.resource_type, req.action);
        if bucket.allow.is_empty() && bucket.grants.is_empty() {
            return false;
        }
        let held = self.held_roles(req);
        let env = req.env();
        for e in &*bucket.deny {
            if self.entry_applies(e, &held) {
                match self.condition(e) {
                    None => return false,
                    // A deny that cannot be evaluated denies.
                    Some(c) => {
                        if c.truth(&env).unwrap_or(true) {
                            return false;
                        }
                    }
                }
            }
        }
        for e in &*bucket.allow {
            if self.entry_applies(e, &held)
                && self
                    .condition(e)
                    .is_none_or(|c| c.truth(&env).unwrap_or(false))
            {
                return true;
            }
        }
        if !bucket.grants.is_empty() {
            let now = req.now_secs();
            for &i in &*bucket.grants {
                let g = &self.grants[i as usize];
                if now < g.expires_at
                    && self.grant_for(g, &held, req.principal_id)
                    && g.cond
                        .as_ref()
                        .is_none_or(|c| c.truth(&env).unwrap_or(false))
                {
                    return true;
                }
            }
        }
        false
    }

    /// Decides and says why.
    ///
    /// ```
    /// use nova_policy::{PolicySet, Reason, Request, Schema};
    /// let schema = Schema::parse("entity User {}; entity Ticket {}; principal User;")?;
    /// let policy = PolicySet::parse("role agent; @id(\"agents-read\") allow agent to read on Ticket;")?
    ///     .compile(&schema)?;
    /// let e = policy.explain(&Request::new("read", "Ticket"));
    /// assert!(!e.is_allowed());
    /// assert_eq!(e.reasons(), [Reason::RolesNotHeld { rules: 1 }]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn explain(&self, req: &Request<'_>) -> Explanation {
        let bucket = self.bucket(req.resource_type, req.action);
        let held = self.held_roles(req);
        let env = req.env();
        let decision = |allowed| Decision {
            allowed,
            version: self.version,
        };
        let mut reasons: SmallVec<[Reason; 1]> = SmallVec::new();
        for e in &*bucket.deny {
            if !self.entry_applies(e, &held) {
                continue;
            }
            let rule = &self.rules[e.rule as usize];
            match self.condition(e).map(|c| c.truth(&env)) {
                None | Some(Ok(true)) => reasons.push(Reason::Denied {
                    rule: rule.id.clone(),
                }),
                Some(Err(error)) => reasons.push(Reason::DeniedOnError {
                    rule: rule.id.clone(),
                    error,
                }),
                Some(Ok(false)) => {}
            }
        }
        if !reasons.is_empty() {
            return Explanation {
                decision: decision(false),
                reasons,
            };
        }
        for e in &*bucket.allow {
            if !self.entry_applies(e, &held) {
                continue;
            }
            // The first allow decides, as in `is_allowed`: explaining costs little more than
            // deciding, and the rule named is the one that decided.
            if self
                .condition(e)
                .is_none_or(|c| c.truth(&env).unwrap_or(false))
            {
                reasons.push(Reason::Allowed {
                    rule: self.rules[e.rule as usize].id.clone(),
                });
                return Explanation {
                    decision: decision(true),
                    reasons,
                };
            }
        }
        if !bucket.grants.is_empty() {
            let now = req.now_secs();
            for &i in &*bucket.grants {
                let g = &self.grants[i as usize];
                if now < g.expires_at
                    && self.grant_for(g, &held, req.principal_id)
                    && g.cond
                        .as_ref()
                        .is_none_or(|c| c.truth(&env).unwrap_or(false))
                {
                    // The first live grant decides, as in `is_allowed`.
                    reasons.push(Reason::Delegated {
                        grant: g.id.clone(),
                        granted_by: g.granted_by.clone(),
                        expires_at: g.expires_at,
                    });
                    return Explanation {
                        decision: decision(true),
                        reasons,
                    };
                }
            }
        }
        Explanation {
            decision: decision(false),
            reasons: self.why_nothing_matched(bucket, &held, &env, req),
        }
    }

    /// The reasons of a default deny: a second, slower walk of the bucket that is only taken
    /// when nothing allowed, so that explaining an allow costs little more than deciding it.
    #[cold]
    #[inline(never)]
    fn why_nothing_matched(
        &self,
        bucket: &Bucket,
        held: &HeldRoles,
        env: &Env<'_>,
        req: &Request<'_>,
    ) -> SmallVec<[Reason; 1]> {
        let mut reasons = SmallVec::new();
        let mut roles_not_held = 0usize;
        for e in &*bucket.allow {
            if !self.entry_applies(e, held) {
                roles_not_held += 1;
                continue;
            }
            let rule = self.rules[e.rule as usize].id.clone();
            match self.condition(e).map(|c| c.truth(env)) {
                Some(Ok(false)) => reasons.push(Reason::ConditionFalse { rule }),
                Some(Err(error)) => reasons.push(Reason::ConditionError { rule, error }),
                // Not reached: such a rule would have allowed.
                None | Some(Ok(true)) => {}
            }
        }
        if !bucket.grants.is_empty() {
            let now = req.now_secs();
            for &i in &*bucket.grants {
                let g = &self.grants[i as usize];
                if !self.grant_for(g, held, req.principal_id) {
                    continue;
                }
                if now >= g.expires_at {
                    reasons.push(Reason::GrantExpired {
                        grant: g.id.clone(),
                        expired_at: g.expires_at,
                    });
                } else {
                    reasons.push(Reason::GrantOutOfScope {
                        grant: g.id.clone(),
                    });
                }
            }
        }
        if roles_not_held > 0 {
            reasons.push(Reason::RolesNotHeld {
                rules: roles_not_held,
            });
        }
        if bucket.allow.is_empty() && bucket.grants.is_empty() {
            reasons.push(Reason::NoRules {
                resource_type: req.resource_type.into(),
                action: req.action.into(),
            });
        }
        if held.unknown > 0 {
            reasons.push(Reason::UnknownRoles {
                count: held.unknown,
            });
        }
        reasons
    }

    /// The declared roles, in declaration order.
    pub fn role_names(&self) -> impl Iterator<Item = &str> {
        self.role_names.iter().map(|r| &**r)
    }

    /// Whether a principal holding `role` gets the permissions of `ancestor` (itself included),
    /// through inheritance.
    #[must_use]
    pub fn inherits(&self, role: &str, ancestor: &str) -> bool {
        let (Some(&r), Some(&a)) = (self.role_index.get(role), self.role_index.get(ancestor))
        else {
            return false;
        };
        // `holders` are folded into rules; recompute from the source graph.
        let mut todo = vec![r as usize];
        let mut seen = vec![false; self.role_names.len()];
        while let Some(x) = todo.pop() {
            if x == a as usize {
                return true;
            }
            if std::mem::replace(&mut seen[x], true) {
                continue;
            }
            if let Some(decl) = self
                .source
                .roles
                .iter()
                .find(|d| *d.name == *self.role_names[x])
            {
                todo.extend(
                    decl.inherits
                        .iter()
                        .filter_map(|p| self.role_index.get(p))
                        .map(|&p| p as usize),
                );
            }
        }
        false
    }
}
