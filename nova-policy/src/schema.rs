//! Schemas: the entity types, their typed attributes, the request context and the principal's
//! type. A policy is checked against a schema before it can be loaded, so a typo in an
//! attribute name is an error at load time, not a silent deny in production.

use foldhash::HashMap;

use crate::ast::{AttrDecl, Pos};
use crate::parser::{MAX_NAME_LEN, ParseError, Parser};
use crate::value::Type;

/// Why a schema was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The text does not follow the grammar.
    #[error("schema syntax: {0}")]
    Parse(#[from] ParseError),
    /// An entity type is declared twice.
    #[error("{pos}: entity type `{name}` is declared twice")]
    DuplicateEntity {
        /// The type.
        name: Box<str>,
        /// The second declaration.
        pos: Pos,
    },
    /// An attribute is declared twice in one entity type or in the context.
    #[error("{pos}: attribute `{attr}` of `{owner}` is declared twice")]
    DuplicateAttribute {
        /// The entity type (or `context`).
        owner: Box<str>,
        /// The attribute.
        attr: Box<str>,
        /// The declaration of its owner.
        pos: Pos,
    },
    /// `principal T;` names a type that is not declared.
    #[error("{pos}: the principal type `{name}` is not a declared entity type")]
    UnknownPrincipalType {
        /// The type.
        name: Box<str>,
        /// Where it was named.
        pos: Pos,
    },
    /// A name is empty or too long.
    #[error("a name must be 1 to {MAX_NAME_LEN} bytes")]
    BadName,
}

/// One entity type's attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntityType {
    attrs: HashMap<Box<str>, AttrDecl>,
}

impl EntityType {
    /// The declaration of `name`, if it exists.
    #[must_use]
    pub fn attr(&self, name: &str) -> Option<&AttrDecl> {
        self.attrs.get(name)
    }

    /// Every declared attribute, in no particular order.
    pub fn attrs(&self) -> impl Iterator<Item = &AttrDecl> {
        self.attrs.values()
    }

    fn from_decls(owner: &str, decls: Vec<AttrDecl>, pos: Pos) -> Result<Self, SchemaError> {
        let mut attrs = HashMap::default();
        for d in decls {
            check_name(&d.name)?;
            let name = d.name.clone();
            if attrs.insert(name.clone(), d).is_some() {
                return Err(SchemaError::DuplicateAttribute {
                    owner: owner.into(),
                    attr: name,
                    pos,
                });
            }
        }
        Ok(Self { attrs })
    }
}

fn check_name(name: &str) -> Result<(), SchemaError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        Err(SchemaError::BadName)
    } else {
        Ok(())
    }
}

/// A validated schema.
///
/// The text form declares entity types with typed attributes (`?` marks an optional one), the
/// attributes of the request context, and which entity type principals are:
///
/// ```
/// use nova_policy::{Schema, Type};
/// let schema = Schema::parse(r#"
///     entity User { department: String, queues: Set<String>, level: Long };
///     entity Ticket { queue: String, department: String, priority: Long, assignee?: String };
///     context { mfa: Bool };
///     principal User;
/// "#)?;
/// assert_eq!(schema.entity("Ticket").and_then(|t| t.attr("priority")).map(|a| a.ty), Some(Type::Long));
/// # Ok::<(), nova_policy::SchemaError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    entities: HashMap<Box<str>, EntityType>,
    context: EntityType,
    principal: Option<Box<str>>,
}

impl Schema {
    /// Parses and checks a schema.
    ///
    /// # Errors
    /// [`SchemaError`] for a syntax error (with line and column) or an inconsistent schema.
    pub fn parse(text: &str) -> Result<Self, SchemaError> {
        let doc = Parser::new(text)?.schema()?;
        let mut b = SchemaBuilder::default();
        for (name, attrs, pos) in doc.entities {
            b = b.entity_at(&name, attrs, pos)?;
        }
        if let Some((attrs, pos)) = doc.context {
            b.schema.context = EntityType::from_decls("context", attrs, pos)?;
        }
        if let Some((name, pos)) = doc.principal {
            b = b.principal_at(&name, pos)?;
        }
        Ok(b.build())
    }

    /// Starts a schema in Rust.
    ///
    /// ```
    /// use nova_policy::{Schema, Type};
    /// let schema = Schema::builder()
    ///     .entity("User", [("department", Type::String, false)])?
    ///     .entity("Ticket", [("department", Type::String, false)])?
    ///     .principal("User")?
    ///     .build();
    /// assert!(schema.entity("Ticket").is_some());
    /// # Ok::<(), nova_policy::SchemaError>(())
    /// ```
    #[must_use]
    pub fn builder() -> SchemaBuilder {
        SchemaBuilder::default()
    }

    /// An entity type by name.
    #[must_use]
    pub fn entity(&self, name: &str) -> Option<&EntityType> {
        self.entities.get(name)
    }

    /// The context's attributes.
    #[must_use]
    pub fn context(&self) -> &EntityType {
        &self.context
    }

    /// The principal's entity type, if declared.
    #[must_use]
    pub fn principal_type(&self) -> Option<&EntityType> {
        self.principal.as_deref().and_then(|p| self.entities.get(p))
    }

    /// The principal's entity type name, if declared.
    #[must_use]
    pub fn principal_type_name(&self) -> Option<&str> {
        self.principal.as_deref()
    }
}

/// Builds a [`Schema`] in Rust; each step checks what it adds.
#[derive(Debug, Default)]
pub struct SchemaBuilder {
    schema: Schema,
}

impl SchemaBuilder {
    /// Declares an entity type with `(name, type, optional)` attributes.
    ///
    /// # Errors
    /// [`SchemaError`] when the type or an attribute is declared twice.
    pub fn entity<'a>(
        self,
        name: &str,
        attrs: impl IntoIterator<Item = (&'a str, Type, bool)>,
    ) -> Result<Self, SchemaError> {
        let decls = to_decls(attrs);
        self.entity_at(name, decls, Pos::default())
    }

    fn entity_at(
        mut self,
        name: &str,
        decls: Vec<AttrDecl>,
        pos: Pos,
    ) -> Result<Self, SchemaError> {
        check_name(name)?;
        let ty = EntityType::from_decls(name, decls, pos)?;
        if self.schema.entities.insert(name.into(), ty).is_some() {
            return Err(SchemaError::DuplicateEntity {
                name: name.into(),
                pos,
            });
        }
        Ok(self)
    }

    /// Declares the context's attributes.
    ///
    /// # Errors
    /// [`SchemaError`] when an attribute is declared twice.
    pub fn context<'a>(
        mut self,
        attrs: impl IntoIterator<Item = (&'a str, Type, bool)>,
    ) -> Result<Self, SchemaError> {
        self.schema.context = EntityType::from_decls("context", to_decls(attrs), Pos::default())?;
        Ok(self)
    }

    /// Names the principal's entity type (declare it first).
    ///
    /// # Errors
    /// [`SchemaError::UnknownPrincipalType`] when it is not declared.
    pub fn principal(self, name: &str) -> Result<Self, SchemaError> {
        self.principal_at(name, Pos::default())
    }

    fn principal_at(mut self, name: &str, pos: Pos) -> Result<Self, SchemaError> {
        if !self.schema.entities.contains_key(name) {
            return Err(SchemaError::UnknownPrincipalType {
                name: name.into(),
                pos,
            });
        }
        self.schema.principal = Some(name.into());
        Ok(self)
    }

    /// The schema.
    #[must_use]
    pub fn build(self) -> Schema {
        self.schema
    }
}

fn to_decls<'a>(attrs: impl IntoIterator<Item = (&'a str, Type, bool)>) -> Vec<AttrDecl> {
    attrs
        .into_iter()
        .map(|(name, ty, optional)| AttrDecl {
            name: name.into(),
            ty,
            optional,
        })
        .collect()
}
