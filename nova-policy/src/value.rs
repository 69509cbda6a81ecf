//! Attribute values and their types: what a condition compares. Values come from callers and
//! are untrusted; nothing here may panic on a value of the wrong shape.

use std::fmt;

use foldhash::HashMap;

/// The type of an attribute, as declared in a schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Type {
    /// `Bool`: `true` or `false`.
    Bool,
    /// `Long`: a signed 64-bit integer.
    Long,
    /// `String`: UTF-8 text.
    String,
    /// `Set<T>` of one of the scalar types.
    Set(Scalar),
}

/// The scalar types a set may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scalar {
    /// `Bool`.
    Bool,
    /// `Long`.
    Long,
    /// `String`.
    String,
}

impl Scalar {
    pub(crate) fn as_type(self) -> Type {
        match self {
            Self::Bool => Type::Bool,
            Self::Long => Type::Long,
            Self::String => Type::String,
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool => f.write_str("Bool"),
            Self::Long => f.write_str("Long"),
            Self::String => f.write_str("String"),
            Self::Set(s) => write!(f, "Set<{}>", s.as_type()),
        }
    }
}

/// An attribute value.
///
/// Sets hold scalars only; a set's elements are compared by value and its order does not
/// matter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Long(i64),
    /// Text.
    Str(Box<str>),
    /// A set of scalars.
    Set(Box<[Value]>),
}

impl Value {
    /// Builds a set of strings.
    ///
    /// ```
    /// use nova_policy::Value;
    /// let queues = Value::strings(["billing", "vip"]);
    /// assert!(matches!(queues, Value::Set(_)));
    /// ```
    pub fn strings<I, S>(items: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        Self::Set(items.into_iter().map(|s| Self::Str(s.into())).collect())
    }

    /// Builds a set of integers.
    pub fn longs(items: impl IntoIterator<Item = i64>) -> Self {
        Self::Set(items.into_iter().map(Self::Long).collect())
    }

    /// The value's type, or `None` for a set whose elements are not all of one scalar type
    /// (such a value always fails evaluation).
    #[must_use]
    pub fn type_of(&self) -> Option<Type> {
        match self {
            Self::Bool(_) => Some(Type::Bool),
            Self::Long(_) => Some(Type::Long),
            Self::Str(_) => Some(Type::String),
            Self::Set(items) => {
                let scalar = match items.first() {
                    // An empty set matches any declared set type; callers check against the
                    // declaration, so pick String and let `conforms_to` accept any.
                    None => return Some(Type::Set(Scalar::String)),
                    Some(Self::Bool(_)) => Scalar::Bool,
                    Some(Self::Long(_)) => Scalar::Long,
                    Some(Self::Str(_)) => Scalar::String,
                    Some(Self::Set(_)) => return None,
                };
                items
                    .iter()
                    .all(|v| v.type_of() == Some(scalar.as_type()))
                    .then_some(Type::Set(scalar))
            }
        }
    }

    /// Whether the value has the declared type (an empty set conforms to every set type).
    #[must_use]
    pub fn conforms_to(&self, ty: Type) -> bool {
        match (self, ty) {
            (Self::Set(items), Type::Set(s)) => {
                items.iter().all(|v| v.type_of() == Some(s.as_type()))
            }
            _ => self.type_of() == Some(ty),
        }
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Long(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Str(v.into())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Str(v.into())
    }
}

/// Something with attributes that conditions can read: a principal, a resource or a request
/// context. Implement it for your own types, or use [`Attrs`].
///
/// Returning `None` means the attribute is absent. A condition that reads an absent attribute
/// fails to evaluate; see the crate docs for how failures are decided (closed).
pub trait Entity {
    /// The value of attribute `name`, if the entity has it.
    fn attr(&self, name: &str) -> Option<&Value>;
}

/// A plain attribute map, the simplest [`Entity`].
///
/// ```
/// use nova_policy::{Attrs, Entity, Value};
/// let ticket = Attrs::new().with("queue", "billing").with("priority", 3);
/// assert_eq!(ticket.attr("priority"), Some(&Value::Long(3)));
/// assert_eq!(ticket.attr("owner"), None);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    map: HashMap<Box<str>, Value>,
}

impl Attrs {
    /// An empty map.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an attribute.
    #[must_use]
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.insert(name, value);
        self
    }

    /// Adds (or replaces) an attribute in place.
    pub fn insert(&mut self, name: &str, value: impl Into<Value>) {
        self.map.insert(name.into(), value.into());
    }

    /// Removes an attribute.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name)
    }

    /// The attributes, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.map.iter().map(|(k, v)| (&**k, v))
    }

    /// Context attributes from how the request authenticated: `mfa` is true when the
    /// context carries a multi-factor authentication no older than `mfa_max_age`
    /// ([`nova_tenancy::TenantContext::mfa_within`]), so a rule such as
    /// `deny update on Ticket when resource.priority == 5 && !context.mfa` reads the
    /// credential's facts, not a flag the application sets. Pass the maximum age the
    /// service's MFA policy uses, and add the request's other context attributes with
    /// [`Attrs::with`] (never `mfa` itself, which would replace the credential's answer).
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use nova_policy::{Attrs, Entity, Value};
    /// # use nova_tenancy::{CredentialVerifier, TenantContext, TenantId, VerifiedIdentity};
    /// # struct V;
    /// # impl CredentialVerifier for V { fn verifier_name(&self) -> &'static str { "v" } }
    /// # let ctx = TenantContext::from_verified(&V, VerifiedIdentity::new(TenantId::new_v4()));
    /// let context = Attrs::authentication(&ctx, Duration::from_secs(900), SystemTime::now())
    ///     .with("channel", "web");
    /// assert_eq!(context.attr("mfa"), Some(&Value::Bool(false))); // no second factor
    /// ```
    #[must_use]
    pub fn authentication(
        ctx: &nova_tenancy::TenantContext,
        mfa_max_age: std::time::Duration,
        now: std::time::SystemTime,
    ) -> Self {
        Self::new().with("mfa", ctx.mfa_within(mfa_max_age, now))
    }
}

impl std::fmt::Debug for Attrs {
    // Attribute values are often personal data: only the names are printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.map.keys().map(|k| &**k).collect();
        names.sort_unstable();
        f.debug_struct("Attrs")
            .field("names", &names)
            .finish_non_exhaustive()
    }
}

impl Entity for Attrs {
    fn attr(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }
}

impl<E: Entity + ?Sized> Entity for &E {
    fn attr(&self, name: &str) -> Option<&Value> {
        (**self).attr(name)
    }
}

/// An entity with no attributes (a request without context, say).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAttrs;

impl Entity for NoAttrs {
    fn attr(&self, _name: &str) -> Option<&Value> {
        None
    }
}
