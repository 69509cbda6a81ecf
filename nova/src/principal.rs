//! [`Principals`]: where a caller's policy attributes are read, so that every request does
//! not load them by hand.

use nova_policy::{Attrs, Value};
use nova_tenancy::{Ident, TenantContext};

use crate::error::Error;

/// The table a caller's attributes come from: one row per user of the tenant, found by
/// the context's user id, read in the request's own tenant transaction (so row-level
/// security confines the lookup to the caller's tenant).
///
/// [`crate::Scope::authorize`] and [`crate::Scope::sql_filter`] load the attributes once
/// per scope, before the first decision. A caller with no row (or whose row is marked
/// gone) is refused, and the refusal audited, unless a role of theirs is declared
/// rowless; a context without a user id is refused the same way.
///
/// ```
/// use nova::Principals;
/// let users = Principals::table("users", "id")?
///     .attributes(["department", "queues"])?
///     .gone_when_set("erased_at")?
///     .rowless_role("service");
/// # Ok::<(), nova::Error>(())
/// ```
///
/// Column values become policy values: text → `String`, integers → `Long`, booleans →
/// `Bool`, arrays of those → sets; `NULL` leaves the attribute out (rules that read it do
/// not match). Any other type is [`Error::PrincipalAttribute`].
#[derive(Debug, Clone)]
pub struct Principals {
    schema: Option<Ident>,
    table: Ident,
    id: Ident,
    attributes: Vec<Ident>,
    gone: Option<Ident>,
    rowless: Vec<String>,
}

impl Principals {
    /// Principals are the rows of `table`, their user id in `id_column` (`uuid`).
    ///
    /// # Errors
    /// An invalid identifier.
    pub fn table(table: &str, id_column: &str) -> Result<Self, Error> {
        Ok(Self {
            schema: None,
            table: Ident::new(table)?,
            id: Ident::new(id_column)?,
            attributes: Vec::new(),
            gone: None,
            rowless: Vec::new(),
        })
    }

    /// Qualifies the table with a schema (otherwise the login's search path finds it).
    ///
    /// # Errors
    /// An invalid identifier.
    pub fn schema(mut self, schema: &str) -> Result<Self, Error> {
        self.schema = Some(Ident::new(schema)?);
        Ok(self)
    }

    /// The columns read as attributes, each under its own name.
    ///
    /// # Errors
    /// An invalid identifier.
    pub fn attributes<'a>(
        mut self,
        columns: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, Error> {
        for c in columns {
            self.attributes.push(Ident::new(c)?);
        }
        Ok(self)
    }

    /// A row whose `column` is not `NULL` (an erased or deactivated user) is no principal.
    ///
    /// # Errors
    /// An invalid identifier.
    pub fn gone_when_set(mut self, column: &str) -> Result<Self, Error> {
        self.gone = Some(Ident::new(column)?);
        Ok(self)
    }

    /// Callers with `role` (service accounts, say) have no row and no attributes: rules
    /// that read a principal attribute never match them.
    #[must_use]
    pub fn rowless_role(mut self, role: &str) -> Self {
        self.rowless.push(role.to_owned());
        self
    }

    pub(crate) fn is_rowless(&self, ctx: &TenantContext) -> bool {
        self.rowless.iter().any(|r| ctx.has_role(r))
    }

    pub(crate) fn table_name(&self) -> &str {
        self.table.as_str()
    }

    /// One row as a JSON object of its attributes, by user id (`$1`).
    pub(crate) fn sql(&self) -> String {
        let table = match &self.schema {
            Some(s) => format!("{s}.{}", self.table),
            None => self.table.to_string(),
        };
        let fields: Vec<String> = self
            .attributes
            .iter()
            .map(|a| format!("{}, {a}", a.literal()))
            .collect();
        let gone = self
            .gone
            .as_ref()
            .map(|g| format!(" AND {g} IS NULL"))
            .unwrap_or_default();
        format!(
            "SELECT jsonb_build_object({})::text FROM {table} WHERE {} = $1{gone}",
            fields.join(", "),
            self.id
        )
    }
}

/// The attributes of one row, as [`Principals::sql`] returns it.
pub(crate) fn attrs_from_json(text: &str) -> Result<Attrs, Error> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|_| Error::PrincipalAttribute {
            attribute: "(row)".to_owned(),
        })?;
    let mut attrs = Attrs::new();
    for (name, value) in object {
        if value.is_null() {
            continue;
        }
        let converted = match &value {
            serde_json::Value::Array(items) => items
                .iter()
                .map(scalar)
                .collect::<Option<Box<[Value]>>>()
                .map(Value::Set),
            v => scalar(v),
        };
        match converted {
            Some(v) => attrs.insert(&name, v),
            None => return Err(Error::PrincipalAttribute { attribute: name }),
        }
    }
    Ok(attrs)
}

fn scalar(v: &serde_json::Value) -> Option<Value> {
    match v {
        serde_json::Value::Bool(b) => Some(Value::Bool(*b)),
        serde_json::Value::Number(n) => n.as_i64().map(Value::Long),
        serde_json::Value::String(s) => Some(Value::Str(s.as_str().into())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nova_policy::Entity as _;

    #[test]
    fn sql_reads_each_attribute_by_id_and_skips_gone_rows() {
        let p = Principals::table("users", "id")
            .and_then(|p| p.attributes(["department", "queues"]))
            .and_then(|p| p.gone_when_set("erased_at"))
            .and_then(|p| p.schema("helpdesk"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.sql(),
            r#"SELECT jsonb_build_object('department', "department", 'queues', "queues")::text FROM "helpdesk"."users" WHERE "id" = $1 AND "erased_at" IS NULL"#
        );
        assert!(Principals::table("users; drop", "id").is_err());
        assert!(
            Principals::table("users", "id")
                .and_then(|p| p.attributes(["a'b"]))
                .is_err()
        );
    }

    #[test]
    fn json_values_become_policy_values_or_are_refused() {
        let attrs = attrs_from_json(
            r#"{"department":"hr","queues":["a","b"],"level":3,"active":true,"left":null}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(attrs.attr("department"), Some(&Value::Str("hr".into())));
        assert_eq!(attrs.attr("queues"), Some(&Value::strings(["a", "b"])));
        assert_eq!(attrs.attr("level"), Some(&Value::Long(3)));
        assert_eq!(attrs.attr("active"), Some(&Value::Bool(true)));
        assert_eq!(attrs.attr("left"), None);
        for bad in [
            r#"{"x":1.5}"#,
            r#"{"x":{"a":1}}"#,
            r#"{"x":[[1]]}"#,
            "[1]",
            "not json",
        ] {
            assert!(
                matches!(attrs_from_json(bad), Err(Error::PrincipalAttribute { .. })),
                "{bad}"
            );
        }
    }
}
