//! A policy set as written: roles, rules and grants, from text or from the Rust builder. It is
//! not trusted until [`PolicySet::compile`] has validated it against a schema.

use std::sync::Arc;

use crate::ast::{Actions, Effect, Expr, Grant, Grantee, Pos, Principals, RoleDecl, Rule};
use crate::compiled::CompiledPolicy;
use crate::parser::{ParseError, Parser, parse_utc};
use crate::schema::Schema;
use crate::validate::{PolicyError, compile};

/// Roles, rules and delegation grants, parsed or built but not yet validated.
///
/// ```
/// use nova_policy::{PolicySet, Schema};
/// let schema = Schema::parse("entity User {}; entity Ticket { queue: String }; principal User;")?;
/// let set = PolicySet::parse(r#"
///     role agent;
///     role manager : agent;
///     @id("agents-read") allow agent to read on Ticket;
/// "#)?;
/// let policy = set.compile(&schema)?;
/// assert_eq!(policy.rule_count(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySet {
    pub(crate) roles: Vec<RoleDecl>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) grants: Vec<Grant>,
}

impl PolicySet {
    /// An empty set (which denies everything).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses policy text (see the crate docs for the grammar).
    ///
    /// # Errors
    /// [`ParseError`] with the line, column and what was expected.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let doc = Parser::new(text)?.policy()?;
        Ok(Self {
            roles: doc.roles,
            rules: doc.rules,
            grants: doc.grants,
        })
    }

    /// Validates the set against `schema` and compiles it into an indexed evaluator.
    ///
    /// # Errors
    /// [`PolicyError`] listing every problem found (unknown role, attribute or type,
    /// mismatched types, a role cycle, a duplicate id…).
    pub fn compile(&self, schema: &Schema) -> Result<CompiledPolicy, PolicyError> {
        compile(self, &Arc::new(schema.clone()))
    }

    /// Declares a role inheriting the permissions of `inherits`.
    #[must_use]
    pub fn role<'a>(mut self, name: &str, inherits: impl IntoIterator<Item = &'a str>) -> Self {
        self.roles.push(RoleDecl {
            name: name.into(),
            inherits: inherits.into_iter().map(Into::into).collect(),
            pos: Pos::default(),
        });
        self
    }

    /// Adds a rule built with [`RuleBuilder`].
    #[must_use]
    pub fn rule(mut self, rule: RuleBuilder) -> Self {
        self.rules.push(rule.0);
        self
    }

    /// Adds a delegation grant.
    #[must_use]
    pub fn grant(mut self, grant: Grant) -> Self {
        self.grants.push(grant);
        self
    }

    /// The role declarations.
    #[must_use]
    pub fn roles(&self) -> &[RoleDecl] {
        &self.roles
    }

    /// The rules.
    #[must_use]
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The grants.
    #[must_use]
    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    /// This set followed by everything in `other` (used to layer tenant rules over a shared
    /// set; ids must stay unique, which validation checks).
    #[must_use]
    pub fn merged(&self, other: &Self) -> Self {
        let mut out = self.clone();
        out.roles.extend(other.roles.iter().cloned());
        out.rules.extend(other.rules.iter().cloned());
        out.grants.extend(other.grants.iter().cloned());
        out
    }

    /// Removes the grant with this id; returns whether it was there.
    pub fn remove_grant(&mut self, id: &str) -> bool {
        let before = self.grants.len();
        self.grants.retain(|g| &*g.id != id);
        before != self.grants.len()
    }
}

/// Builds one rule in Rust.
///
/// ```
/// use nova_policy::{Expr, PolicySet, RuleBuilder, Schema, Type};
/// let schema = Schema::builder()
///     .entity("User", [("department", Type::String, false)])?
///     .entity("Ticket", [("department", Type::String, false)])?
///     .principal("User")?
///     .build();
/// let set = PolicySet::new()
///     .role("manager", [])
///     .rule(
///         RuleBuilder::allow(["manager"], ["read", "update"], "Ticket")
///             .id("managers-own-department")
///             .when(Expr::resource("department").eq(Expr::principal("department"))),
///     );
/// assert!(set.compile(&schema).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct RuleBuilder(Rule);

impl RuleBuilder {
    fn new<'a, 'b>(
        effect: Effect,
        roles: impl IntoIterator<Item = &'a str>,
        actions: impl IntoIterator<Item = &'b str>,
        resource_type: &str,
    ) -> Self {
        let roles: Vec<Box<str>> = roles.into_iter().map(Into::into).collect();
        let actions: Vec<Box<str>> = actions.into_iter().map(Into::into).collect();
        Self(Rule {
            id: "".into(),
            effect,
            principals: if roles.iter().any(|r| &**r == "*") {
                Principals::Any
            } else {
                Principals::Roles(roles)
            },
            actions: if actions.iter().any(|a| &**a == "*") {
                Actions::Any
            } else {
                Actions::Named(actions)
            },
            resource_type: (resource_type != "*").then(|| resource_type.into()),
            condition: None,
            pos: Pos::default(),
        })
    }

    /// `allow roles to actions on resource_type` (`"*"` is the wildcard in each position).
    #[must_use]
    pub fn allow<'a, 'b>(
        roles: impl IntoIterator<Item = &'a str>,
        actions: impl IntoIterator<Item = &'b str>,
        resource_type: &str,
    ) -> Self {
        Self::new(Effect::Allow, roles, actions, resource_type)
    }

    /// `deny roles to actions on resource_type`.
    #[must_use]
    pub fn deny<'a, 'b>(
        roles: impl IntoIterator<Item = &'a str>,
        actions: impl IntoIterator<Item = &'b str>,
        resource_type: &str,
    ) -> Self {
        Self::new(Effect::Deny, roles, actions, resource_type)
    }

    /// Names the rule (otherwise it is named by its position in the set).
    #[must_use]
    pub fn id(mut self, id: &str) -> Self {
        self.0.id = id.into();
        self
    }

    /// Adds a condition.
    #[must_use]
    pub fn when(mut self, condition: Expr) -> Self {
        self.0.condition = Some(condition);
        self
    }
}

impl Grant {
    /// A grant to every holder of `role`, of `actions` on `resource_type`, until `expires_at`
    /// (seconds since the Unix epoch), recorded as granted by `granted_by`.
    ///
    /// ```
    /// use nova_policy::{Expr, Grant};
    /// let g = Grant::to_role("hr-review", "admin", ["read"], "Ticket", 1_796_083_200, "alice")
    ///     .when(Expr::resource("department").eq(Expr::string("hr")));
    /// assert_eq!(&*g.id, "hr-review");
    /// ```
    #[must_use]
    pub fn to_role<'a>(
        id: &str,
        role: &str,
        actions: impl IntoIterator<Item = &'a str>,
        resource_type: &str,
        expires_at: u64,
        granted_by: &str,
    ) -> Self {
        Self::new(
            id,
            Grantee::Role(role.into()),
            actions,
            resource_type,
            expires_at,
            granted_by,
        )
    }

    /// A grant to one principal, by id.
    #[must_use]
    pub fn to_principal<'a>(
        id: &str,
        principal: &str,
        actions: impl IntoIterator<Item = &'a str>,
        resource_type: &str,
        expires_at: u64,
        granted_by: &str,
    ) -> Self {
        Self::new(
            id,
            Grantee::Principal(principal.into()),
            actions,
            resource_type,
            expires_at,
            granted_by,
        )
    }

    fn new<'a>(
        id: &str,
        grantee: Grantee,
        actions: impl IntoIterator<Item = &'a str>,
        resource_type: &str,
        expires_at: u64,
        granted_by: &str,
    ) -> Self {
        let actions: Vec<Box<str>> = actions.into_iter().map(Into::into).collect();
        Self {
            id: id.into(),
            grantee,
            actions: if actions.iter().any(|a| &**a == "*") {
                Actions::Any
            } else {
                Actions::Named(actions)
            },
            resource_type: resource_type.into(),
            condition: None,
            expires_at,
            granted_by: granted_by.into(),
            pos: Pos::default(),
        }
    }

    /// Limits the grant to resources meeting `condition`.
    #[must_use]
    pub fn when(mut self, condition: Expr) -> Self {
        self.condition = Some(condition);
        self
    }

    /// Parses a UTC time written `YYYY-MM-DDTHH:MM:SSZ` into seconds since the Unix epoch,
    /// for [`Grant::to_role`] and friends.
    ///
    /// ```
    /// assert_eq!(nova_policy::Grant::parse_time("2026-12-01T00:00:00Z"), Some(1_796_083_200));
    /// ```
    #[must_use]
    pub fn parse_time(text: &str) -> Option<u64> {
        parse_utc(text)
    }
}

impl Expr {
    /// Parses one condition in the policy language.
    ///
    /// ```
    /// use nova_policy::Expr;
    /// let e = Expr::parse("resource.queue in principal.queues && context.mfa")?;
    /// assert_eq!(e.to_string(), "(resource.queue in principal.queues && context.mfa)");
    /// # Ok::<(), nova_policy::ParseError>(())
    /// ```
    ///
    /// # Errors
    /// [`ParseError`] with the line, column and what was expected.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        Parser::new(text)?.expr_only()
    }
}
