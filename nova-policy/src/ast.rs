//! The policy model shared by the text parser and the Rust builder: roles, rules, grants,
//! conditions and schema declarations, before validation. Nothing here is trusted yet.

use crate::value::{Type, Value};

/// Where something starts in policy text (1-based); `0:0` for items built in Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column in characters, from 1.
    pub column: u32,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Whose attribute a condition reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Var {
    /// The caller the decision is about.
    Principal,
    /// The thing being acted on.
    Resource,
    /// The request's context (time, network, MFA state…).
    Context,
}

impl Var {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Principal => "principal",
            Self::Resource => "resource",
            Self::Context => "context",
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Self::Eq => "==",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        }
    }
}

/// A condition expression.
///
/// Build one in Rust with the helper functions:
///
/// ```
/// use nova_policy::Expr;
/// let same_queue = Expr::resource("queue").is_in(Expr::principal("queues"));
/// let urgent = Expr::resource("priority").ge(Expr::long(3));
/// let cond = same_queue.and(urgent.not());
/// assert_eq!(
///     cond.to_string(),
///     "(resource.queue in principal.queues && !(resource.priority >= 3))"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Expr {
    /// A literal value.
    Lit(Value),
    /// `var.name`.
    Attr(Var, Box<str>),
    /// `var has name`.
    Has(Var, Box<str>),
    /// `a op b`.
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// `a in b`: membership of a scalar in a set.
    In(Box<Expr>, Box<Expr>),
    /// `a starts_with b`: string prefix.
    StartsWith(Box<Expr>, Box<Expr>),
    /// `a && b`.
    And(Box<Expr>, Box<Expr>),
    /// `a || b`.
    Or(Box<Expr>, Box<Expr>),
    /// `!a`.
    Not(Box<Expr>),
}

impl Expr {
    /// `principal.name`.
    #[must_use]
    pub fn principal(name: &str) -> Self {
        Self::Attr(Var::Principal, name.into())
    }
    /// `resource.name`.
    #[must_use]
    pub fn resource(name: &str) -> Self {
        Self::Attr(Var::Resource, name.into())
    }
    /// `context.name`.
    #[must_use]
    pub fn context(name: &str) -> Self {
        Self::Attr(Var::Context, name.into())
    }
    /// `var has name`.
    #[must_use]
    pub fn has(var: Var, name: &str) -> Self {
        Self::Has(var, name.into())
    }
    /// A string literal.
    #[must_use]
    pub fn string(s: &str) -> Self {
        Self::Lit(Value::Str(s.into()))
    }
    /// An integer literal.
    #[must_use]
    pub fn long(v: i64) -> Self {
        Self::Lit(Value::Long(v))
    }
    /// A boolean literal.
    #[must_use]
    pub fn bool(v: bool) -> Self {
        Self::Lit(Value::Bool(v))
    }
    /// A set literal of strings.
    #[must_use]
    pub fn strings<'a>(items: impl IntoIterator<Item = &'a str>) -> Self {
        Self::Lit(Value::strings(items))
    }
    fn cmp(self, op: CmpOp, other: Self) -> Self {
        Self::Cmp(op, Box::new(self), Box::new(other))
    }
    /// `self == other`.
    #[must_use]
    pub fn eq(self, other: Self) -> Self {
        self.cmp(CmpOp::Eq, other)
    }
    /// `self != other`.
    #[must_use]
    pub fn ne(self, other: Self) -> Self {
        self.cmp(CmpOp::Ne, other)
    }
    /// `self < other`.
    #[must_use]
    pub fn lt(self, other: Self) -> Self {
        self.cmp(CmpOp::Lt, other)
    }
    /// `self <= other`.
    #[must_use]
    pub fn le(self, other: Self) -> Self {
        self.cmp(CmpOp::Le, other)
    }
    /// `self > other`.
    #[must_use]
    pub fn gt(self, other: Self) -> Self {
        self.cmp(CmpOp::Gt, other)
    }
    /// `self >= other`.
    #[must_use]
    pub fn ge(self, other: Self) -> Self {
        self.cmp(CmpOp::Ge, other)
    }
    /// `self in set`.
    #[must_use]
    pub fn is_in(self, set: Self) -> Self {
        Self::In(Box::new(self), Box::new(set))
    }
    /// `self starts_with prefix`.
    #[must_use]
    pub fn starts_with(self, prefix: Self) -> Self {
        Self::StartsWith(Box::new(self), Box::new(prefix))
    }
    /// `self && other`.
    #[must_use]
    pub fn and(self, other: Self) -> Self {
        Self::And(Box::new(self), Box::new(other))
    }
    /// `self || other`.
    #[must_use]
    pub fn or(self, other: Self) -> Self {
        Self::Or(Box::new(self), Box::new(other))
    }
    /// `!self`.
    #[must_use]
    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Self {
        Self::Not(Box::new(self))
    }

    /// Nesting depth (a literal is 1).
    pub(crate) fn depth(&self) -> usize {
        match self {
            Self::Lit(_) | Self::Attr(..) | Self::Has(..) => 1,
            Self::Not(a) => 1 + a.depth(),
            Self::Cmp(_, a, b)
            | Self::In(a, b)
            | Self::StartsWith(a, b)
            | Self::And(a, b)
            | Self::Or(a, b) => 1 + a.depth().max(b.depth()),
        }
    }
}

impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Lit(v) => write_value(f, v),
            Self::Attr(var, name) => write!(f, "{}.{name}", var.name()),
            Self::Has(var, name) => write!(f, "{} has {name}", var.name()),
            Self::Cmp(op, a, b) => write!(f, "{} {} {}", Operand(a), op.symbol(), Operand(b)),
            Self::In(a, b) => write!(f, "{} in {}", Operand(a), Operand(b)),
            Self::StartsWith(a, b) => write!(f, "{} starts_with {}", Operand(a), Operand(b)),
            Self::And(a, b) => write!(f, "({a} && {b})"),
            Self::Or(a, b) => write!(f, "({a} || {b})"),
            Self::Not(a) => write!(f, "!({a})"),
        }
    }
}

/// An operand of a comparison, parenthesised unless it is a literal or an attribute, so
/// that printed conditions parse back to the same tree.
struct Operand<'a>(&'a Expr);

impl std::fmt::Display for Operand<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Expr::Lit(_) | Expr::Attr(..) => write!(f, "{}", self.0),
            e => write!(f, "({e})"),
        }
    }
}

pub(crate) fn write_value(f: &mut std::fmt::Formatter<'_>, v: &Value) -> std::fmt::Result {
    match v {
        Value::Bool(b) => write!(f, "{b}"),
        Value::Long(n) => write!(f, "{n}"),
        Value::Str(s) => {
            f.write_str("\"")?;
            for c in s.chars() {
                match c {
                    '"' => f.write_str("\\\"")?,
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\t' => f.write_str("\\t")?,
                    '\r' => f.write_str("\\r")?,
                    c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("\"")
        }
        Value::Set(items) => {
            f.write_str("[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write_value(f, item)?;
            }
            f.write_str("]")
        }
    }
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Grants access when it applies, unless a deny applies too.
    Allow,
    /// Refuses access when it applies, whatever else allows it.
    Deny,
}

/// Which principals a rule is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principals {
    /// `*`: every principal, with or without roles.
    Any,
    /// Principals holding (directly or by inheritance) one of these roles. A name ending in
    /// `.*` matches every declared role with that prefix.
    Roles(Vec<Box<str>>),
}

/// Which actions a rule or grant covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actions {
    /// `*`: every action.
    Any,
    /// These actions.
    Named(Vec<Box<str>>),
}

/// A role declaration: `role manager : agent, auditor;`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleDecl {
    /// The role's name.
    pub name: Box<str>,
    /// Roles whose permissions this one inherits.
    pub inherits: Vec<Box<str>>,
    /// Where it was declared.
    pub pos: Pos,
}

/// An `allow` or `deny` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule's id from `@id("…")`; empty when it has none, and the compiled set then names
    /// it by where it was written (`line:column`) or, for a rule built in Rust, by its index.
    pub id: Box<str>,
    /// Allow or deny.
    pub effect: Effect,
    /// Who it applies to.
    pub principals: Principals,
    /// What actions it covers.
    pub actions: Actions,
    /// The resource type, or `None` for `*`.
    pub resource_type: Option<Box<str>>,
    /// The `when` condition, if any.
    pub condition: Option<Expr>,
    /// Where it was written.
    pub pos: Pos,
}

/// Who a delegation grant is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Grantee {
    /// Every principal holding this role (directly or by inheritance).
    Role(Box<str>),
    /// One principal, by id.
    Principal(Box<str>),
}

/// An explicit, scoped, expiring delegation:
/// `grant "hr-1" to role admin: read on Ticket when resource.department == "hr"
/// until "2026-12-01T00:00:00Z" by "alice";`.
///
/// A grant gives access its grantee's roles do not; a `deny` rule still overrides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The grant's id, unique in its policy set.
    pub id: Box<str>,
    /// Who receives it.
    pub grantee: Grantee,
    /// The actions it covers.
    pub actions: Actions,
    /// The resource type it covers (never a wildcard).
    pub resource_type: Box<str>,
    /// What it is limited to, if anything beyond the resource type.
    pub condition: Option<Expr>,
    /// When it stops applying, in seconds since the Unix epoch (exclusive).
    pub expires_at: u64,
    /// Who granted it (kept for the decision's explanation).
    pub granted_by: Box<str>,
    /// Where it was written.
    pub pos: Pos,
}

/// An attribute declaration in a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrDecl {
    /// Attribute name.
    pub name: Box<str>,
    /// Its type.
    pub ty: Type,
    /// Whether it may be absent (`name?: Type`); conditions should guard it with `has`.
    pub optional: bool,
}
