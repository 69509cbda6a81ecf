//! Data filtering: what a principal may do to a resource type, compiled into a SQL predicate
//! over the resource's columns, so that a listing query returns exactly the rows
//! [`CompiledPolicy::is_allowed`] would allow, one row at a time.
//!
//! Principal and context attributes are known when the predicate is built and become bind
//! parameters; resource attributes become columns, whose names are validated identifiers.
//! Values are never spliced into the SQL text, except in RLS DDL (which cannot take
//! parameters), where they are written as dollar-quoted literals that no value can escape.
//!
//! The evaluator's failure rules carry over exactly: a `NULL` column is an absent attribute;
//! `&&`, `||` and `!` are written as `CASE` expressions that propagate `NULL` the way the
//! evaluator propagates a failed read (left to right, short-circuit), an `allow` whose
//! condition is `NULL` does not allow, and a `deny` whose condition is `NULL` denies.

use std::fmt::Write as _;

use foldhash::HashMap;
use nova_tenancy::{Ident, IdentError};

use crate::ast::Var;
use crate::compiled::{CExpr, CompiledPolicy, Env, Request};
use crate::value::{Scalar, Type, Value};

/// Why a predicate could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// A resource attribute has no valid column name (map it with [`ResourceTable::column`]).
    #[error("resource attribute `{0}` has no valid column; map it to one")]
    Column(Box<str>),
    /// A column, table, role or policy name is not a valid identifier.
    #[error("invalid SQL identifier: {0}")]
    Ident(#[from] IdentError),
    /// A text value contains a NUL byte, which PostgreSQL text cannot hold.
    #[error("a text value contains a NUL byte")]
    Nul,
    /// The predicate could not be assembled (a bug in Nova: please report it).
    #[error("internal error assembling the predicate")]
    Internal,
}

/// How a resource type's attributes map onto a table's columns. An attribute with no mapping
/// uses its own name, which must then be a valid identifier.
///
/// ```
/// use nova_policy::ResourceTable;
/// let t = ResourceTable::new().alias("t")?.column("queue", "queue_name")?;
/// # Ok::<(), nova_policy::SqlError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ResourceTable {
    alias: Option<Ident>,
    columns: HashMap<Box<str>, Ident>,
}

impl ResourceTable {
    /// Columns named after attributes, unqualified.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Qualifies every column with a table alias (for queries with joins).
    ///
    /// # Errors
    /// [`SqlError::Ident`] when `alias` is not a valid identifier.
    pub fn alias(mut self, alias: &str) -> Result<Self, SqlError> {
        self.alias = Some(Ident::new(alias)?);
        Ok(self)
    }

    /// Maps attribute `attr` to column `column`.
    ///
    /// # Errors
    /// [`SqlError::Ident`] when `column` is not a valid identifier.
    pub fn column(mut self, attr: &str, column: &str) -> Result<Self, SqlError> {
        self.columns.insert(attr.into(), Ident::new(column)?);
        Ok(self)
    }

    fn column_sql(&self, attr: &str) -> Result<String, SqlError> {
        let col = match self.columns.get(attr) {
            Some(c) => c.clone(),
            None => Ident::new(attr).map_err(|_| SqlError::Column(attr.into()))?,
        };
        Ok(match &self.alias {
            Some(a) => format!("{a}.{col}"),
            None => col.to_string(),
        })
    }
}

/// A bind parameter of a [`SqlFilter`], in order. `Debug` prints its type and size, not
/// its value (values come from principal and context attributes).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SqlParam {
    /// `boolean`.
    Bool(bool),
    /// `bigint`.
    Long(i64),
    /// `text`.
    Text(String),
    /// `boolean[]`.
    Bools(Vec<bool>),
    /// `bigint[]`.
    Longs(Vec<i64>),
    /// `text[]`.
    Texts(Vec<String>),
}

impl std::fmt::Debug for SqlParam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bool(_) => f.write_str("boolean"),
            Self::Long(_) => f.write_str("bigint"),
            Self::Text(_) => f.write_str("text"),
            Self::Bools(v) => write!(f, "boolean[{}]", v.len()),
            Self::Longs(v) => write!(f, "bigint[{}]", v.len()),
            Self::Texts(v) => write!(f, "text[{}]", v.len()),
        }
    }
}

/// A parameterised predicate: put `sql` in a `WHERE` clause and bind `params` in order,
/// starting at the first placeholder number given to
/// [`CompiledPolicy::sql_filter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlFilter {
    /// The predicate, always a boolean that is never `NULL`.
    pub sql: String,
    /// Values for `$n`, `$n+1`, ….
    pub params: Vec<SqlParam>,
}

/// Which rows an RLS policy governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RlsCommand {
    /// `FOR SELECT … USING`.
    Select,
    /// `FOR INSERT … WITH CHECK`.
    Insert,
    /// `FOR UPDATE … USING … WITH CHECK`.
    Update,
    /// `FOR DELETE … USING`.
    Delete,
}

/// Stands for a parameter until the predicate is final; never part of any SQL Nova writes
/// (identifiers are validated and values are parameters).
const MARK: char = '\u{1}';

enum Sink {
    Params { params: Vec<SqlParam> },
    Literals,
}

impl Sink {
    fn value(&mut self, v: &Value, ty: Type) -> Result<String, SqlError> {
        match self {
            Self::Params { params, .. } => {
                // A marker, numbered once the predicate is final: fragments of rules that
                // turn out not to matter are dropped with their parameters.
                let (param, cast) = to_param(v, ty)?;
                params.push(param);
                Ok(format!("{MARK}{}{MARK}::{cast}", params.len() - 1))
            }
            Self::Literals => literal(v, ty),
        }
    }
}

fn cast_of(ty: Type) -> &'static str {
    match ty {
        Type::Bool => "boolean",
        Type::Long => "bigint",
        Type::String => "text",
        Type::Set(Scalar::Bool) => "boolean[]",
        Type::Set(Scalar::Long) => "bigint[]",
        Type::Set(Scalar::String) => "text[]",
    }
}

fn text(s: &str) -> Result<String, SqlError> {
    if s.contains('\0') {
        Err(SqlError::Nul)
    } else {
        Ok(s.to_owned())
    }
}

fn to_param(v: &Value, ty: Type) -> Result<(SqlParam, &'static str), SqlError> {
    let p = match v {
        Value::Bool(b) => SqlParam::Bool(*b),
        Value::Long(n) => SqlParam::Long(*n),
        Value::Str(s) => SqlParam::Text(text(s)?),
        Value::Set(items) => match ty {
            Type::Set(Scalar::Bool) => SqlParam::Bools(
                items
                    .iter()
                    .filter_map(|i| match i {
                        Value::Bool(b) => Some(*b),
                        _ => None,
                    })
                    .collect(),
            ),
            Type::Set(Scalar::Long) => SqlParam::Longs(
                items
                    .iter()
                    .filter_map(|i| match i {
                        Value::Long(n) => Some(*n),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => SqlParam::Texts(
                items
                    .iter()
                    .filter_map(|i| match i {
                        Value::Str(s) => Some(text(s)),
                        _ => None,
                    })
                    .collect::<Result<_, _>>()?,
            ),
        },
    };
    Ok((p, cast_of(ty)))
}

/// A dollar-quoted literal: no byte of the value can end it, whatever the server's
/// `standard_conforming_strings`.
fn quote_text(s: &str) -> Result<String, SqlError> {
    let s = text(s)?;
    let mut tag = String::from("$n$");
    let mut i = 0u32;
    // The literal ends at the first `tag` after the opening one: that must be the closing
    // tag itself, not an occurrence inside the value or straddling its end.
    while format!("{s}{tag}").find(&tag) != Some(s.len()) {
        i += 1;
        tag = format!("$n{i}$");
    }
    Ok(format!("{tag}{s}{tag}"))
}

fn literal(v: &Value, ty: Type) -> Result<String, SqlError> {
    Ok(match v {
        Value::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
        // Quoted, so that `i64::MIN` is not read as the negation of an out-of-range number.
        Value::Long(n) => format!("'{n}'::bigint"),
        Value::Str(s) => format!("{}::text", quote_text(s)?),
        Value::Set(items) => {
            let parts = items
                .iter()
                .map(|i| literal(i, ty))
                .collect::<Result<Vec<_>, _>>()?;
            format!("ARRAY[{}]::{}", parts.join(", "), cast_of(ty))
        }
    })
}

/// A residual condition: decided already, failed already (`NULL`), or left to the database.
enum Residual {
    Known(bool),
    Failed,
    Sql(String),
}

fn mentions_resource(e: &CExpr) -> bool {
    match e {
        CExpr::Lit(_) => false,
        CExpr::Attr { var, .. } | CExpr::Has(var, _) => *var == Var::Resource,
        CExpr::Not(a) => mentions_resource(a),
        CExpr::Cmp(_, a, b)
        | CExpr::In(a, b)
        | CExpr::StartsWith(a, b)
        | CExpr::And(a, b)
        | CExpr::Or(a, b) => mentions_resource(a) || mentions_resource(b),
    }
}

struct Lower<'a, 'e> {
    table: &'a ResourceTable,
    env: &'a Env<'e>,
    sink: Sink,
}

impl<'e> Lower<'_, 'e> {
    /// A scalar or set operand as SQL (`NULL::type` when it cannot be read).
    fn operand(&mut self, e: &CExpr) -> Result<(String, bool), SqlError> {
        match e {
            CExpr::Attr {
                var: Var::Resource,
                name,
                ..
            } => Ok((self.table.column_sql(name)?, true)),
            CExpr::Attr { var, name, ty } => match self.env.get(*var).attr(name) {
                Some(v) if v.conforms_to(*ty) => Ok((self.sink.value(v, *ty)?, false)),
                _ => Ok((format!("NULL::{}", cast_of(*ty)), true)),
            },
            CExpr::Lit(v) => {
                let ty = v.type_of().unwrap_or(Type::Set(Scalar::String));
                let ty = match (v, ty) {
                    // `[]` takes the element type of whatever it is compared with; text[] is
                    // never compared with a scalar of another type after validation, and an
                    // empty array of any type behaves the same.
                    (Value::Set(items), _) if items.is_empty() => Type::Set(Scalar::String),
                    _ => ty,
                };
                Ok((self.sink.value(v, ty)?, false))
            }
            // Boolean sub-expressions used as operands (`a == (b && c)` is not in the
            // grammar; comparisons take primaries), so only leaves reach here.
            other => match self.cond(other)? {
                Residual::Known(b) => Ok((if b { "TRUE" } else { "FALSE" }.to_owned(), false)),
                Residual::Failed => Ok(("NULL::boolean".to_owned(), true)),
                Residual::Sql(s) => Ok((s, true)),
            },
        }
    }

    fn cond(&mut self, e: &CExpr) -> Result<Residual, SqlError> {
        if !mentions_resource(e) {
            return Ok(match e.truth(self.env) {
                Ok(b) => Residual::Known(b),
                Err(_) => Residual::Failed,
            });
        }
        Ok(match e {
            CExpr::Has(_, name) => {
                Residual::Sql(format!("({} IS NOT NULL)", self.table.column_sql(name)?))
            }
            CExpr::Attr { .. } => Residual::Sql(self.operand(e)?.0),
            CExpr::Cmp(op, a, b) => {
                let (x, _) = self.operand(a)?;
                let (y, _) = self.operand(b)?;
                let sym = match op.symbol() {
                    "==" => "=",
                    "!=" => "<>",
                    s => s,
                };
                Residual::Sql(format!("({x} {sym} {y})"))
            }
            CExpr::In(a, b) if matches!(&**b, CExpr::Lit(Value::Set(items)) if items.is_empty()) => {
                // `x in []`: false, or NULL when `x` cannot be read. No array is written, so
                // the column's element type does not matter.
                let (x, _) = self.operand(a)?;
                Residual::Sql(format!("(CASE WHEN {x} IS NULL THEN NULL ELSE FALSE END)"))
            }
            CExpr::In(a, b) => {
                let (x, x_nullable) = self.operand(a)?;
                let (y, _) = self.operand(b)?;
                // `NULL = ANY('{}')` is false in SQL, but reading an absent attribute fails
                // in the evaluator: keep it NULL.
                if x_nullable {
                    Residual::Sql(format!(
                        "(CASE WHEN {x} IS NULL THEN NULL ELSE {x} = ANY({y}) END)"
                    ))
                } else {
                    Residual::Sql(format!("({x} = ANY({y}))"))
                }
            }
            CExpr::StartsWith(a, b) => {
                let (x, _) = self.operand(a)?;
                let (y, _) = self.operand(b)?;
                Residual::Sql(format!("starts_with({x}, {y})"))
            }
            CExpr::And(a, b) => match self.cond(a)? {
                Residual::Known(false) => Residual::Known(false),
                Residual::Failed => Residual::Failed,
                Residual::Known(true) => self.cond(b)?,
                Residual::Sql(x) => {
                    let y = sql_of(self.cond(b)?);
                    Residual::Sql(format!(
                        "(CASE {x} WHEN TRUE THEN {y} WHEN FALSE THEN FALSE END)"
                    ))
                }
            },
            CExpr::Or(a, b) => match self.cond(a)? {
                Residual::Known(true) => Residual::Known(true),
                Residual::Failed => Residual::Failed,
                Residual::Known(false) => self.cond(b)?,
                Residual::Sql(x) => {
                    let y = sql_of(self.cond(b)?);
                    Residual::Sql(format!(
                        "(CASE {x} WHEN TRUE THEN TRUE WHEN FALSE THEN {y} END)"
                    ))
                }
            },
            CExpr::Not(a) => match self.cond(a)? {
                Residual::Known(b) => Residual::Known(!b),
                Residual::Failed => Residual::Failed,
                Residual::Sql(x) => Residual::Sql(format!("(NOT {x})")),
            },
            CExpr::Lit(_) => Residual::Failed,
        })
    }
}

fn sql_of(r: Residual) -> String {
    match r {
        Residual::Known(true) => "TRUE".into(),
        Residual::Known(false) => "FALSE".into(),
        Residual::Failed => "NULL::boolean".into(),
        Residual::Sql(s) => s,
    }
}

impl CompiledPolicy {
    /// Compiles what `req`'s principal may do (`req.action()` on `req.resource_type()`) into a
    /// predicate over `table`'s columns. Placeholders start at `$first_param`. The request's
    /// resource attributes are ignored; its context and time are used.
    ///
    /// ```
    /// use nova_policy::{Attrs, PolicySet, Request, ResourceTable, Schema, SqlParam, Value};
    /// let schema = Schema::parse(r#"
    ///     entity User { queues: Set<String> };
    ///     entity Ticket { queue: String, hr: Bool };
    ///     principal User;
    /// "#)?;
    /// let policy = PolicySet::parse(r#"
    ///     role agent;
    ///     allow agent to read on Ticket when resource.queue in principal.queues;
    ///     deny * to * on Ticket when resource.hr;
    /// "#)?.compile(&schema)?;
    /// let me = Attrs::new().with("queues", Value::strings(["billing"]));
    /// let req = Request::new("read", "Ticket").principal("u-1", &["agent"], &me);
    /// let filter = policy.sql_filter(&req, &ResourceTable::new(), 1)?;
    /// assert_eq!(filter.params, vec![SqlParam::Texts(vec!["billing".into()])]);
    /// assert!(filter.sql.contains("\"queue\" = ANY($1::text[])"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`SqlError`] when an attribute has no valid column or a value cannot be sent.
    pub fn sql_filter(
        &self,
        req: &Request<'_>,
        table: &ResourceTable,
        first_param: usize,
    ) -> Result<SqlFilter, SqlError> {
        let mut lower = Lower {
            table,
            env: &req.env(),
            sink: Sink::Params { params: Vec::new() },
        };
        let marked = self.predicate(req, &mut lower)?;
        let Sink::Params { mut params, .. } = lower.sink else {
            return Ok(SqlFilter {
                sql: marked,
                params: Vec::new(),
            });
        };
        // Number the parameters that survived, in order of first use; a fragment written
        // twice (a nullable operand is tested, then compared) uses the same number twice.
        let mut sql = String::with_capacity(marked.len());
        let mut used = Vec::new();
        let mut numbers: Vec<Option<usize>> = vec![None; params.len()];
        let mut parts = marked.split(MARK);
        sql.push_str(parts.next().unwrap_or(""));
        while let (Some(index), Some(rest)) = (parts.next(), parts.next()) {
            let index: usize = index.parse().map_err(|_| SqlError::Internal)?;
            let slot = numbers.get_mut(index).ok_or(SqlError::Internal)?;
            let number = match *slot {
                Some(n) => n,
                None => {
                    let param = params.get(index).ok_or(SqlError::Internal)?.clone();
                    let n = first_param + used.len();
                    used.push(param);
                    *slot = Some(n);
                    n
                }
            };
            let _ = write!(sql, "${number}");
            sql.push_str(rest);
        }
        params.clear();
        Ok(SqlFilter { sql, params: used })
    }

    fn predicate(&self, req: &Request<'_>, lower: &mut Lower<'_, '_>) -> Result<String, SqlError> {
        let bucket = self.bucket(req.resource_type(), req.action());
        let held = self.held_roles(req);
        let mut denies = Vec::new();
        for e in &*bucket.deny {
            if !self.entry_applies(e, &held) {
                continue;
            }
            match self.condition(e).map(|c| lower.cond(c)).transpose()? {
                None | Some(Residual::Known(true) | Residual::Failed) => return Ok("FALSE".into()),
                Some(Residual::Known(false)) => {}
                Some(Residual::Sql(s)) => denies.push(format!("COALESCE({s}, TRUE)")),
            }
        }
        let mut allows = Vec::new();
        let mut all = false;
        let conds = bucket
            .allow
            .iter()
            .filter(|e| self.entry_applies(e, &held))
            .map(|e| self.condition(e));
        let now = req_now(req);
        let grants = bucket
            .grants
            .iter()
            .map(|&i| &self.grants[i as usize])
            .filter(|g| now < g.expires_at && self.grant_for(g, &held, req.principal_id()))
            .map(|g| (g.cond.as_ref(), Some(g.expires_at)));
        for (cond, expires_at) in conds.map(|c| (c, None)).chain(grants) {
            let lowered = cond.map(|c| lower.cond(c)).transpose()?;
            // RLS DDL outlives the moment it is built: a grant carries its expiry into it.
            let lowered = match (expires_at, &lower.sink) {
                (Some(at), Sink::Literals) => {
                    // PostgreSQL timestamps end in year 294276; `to_timestamp` refuses later
                    // instants, and a grant expiring after year 9999 never expires in practice.
                    let live = if at >= 253_402_300_800 {
                        "TRUE".to_owned()
                    } else {
                        format!("(now() < to_timestamp({at}))")
                    };
                    match lowered {
                        None | Some(Residual::Known(true)) => Some(Residual::Sql(live)),
                        Some(Residual::Sql(s)) => Some(Residual::Sql(format!("({live} AND {s})"))),
                        other => other,
                    }
                }
                _ => lowered,
            };
            match lowered {
                None | Some(Residual::Known(true)) => {
                    all = true;
                    break;
                }
                Some(Residual::Known(false) | Residual::Failed) => {}
                Some(Residual::Sql(s)) => allows.push(format!("COALESCE({s}, FALSE)")),
            }
        }
        let allow_sql = if all {
            "TRUE".to_owned()
        } else if allows.is_empty() {
            return Ok("FALSE".into());
        } else {
            format!("({})", allows.join(" OR "))
        };
        if denies.is_empty() {
            Ok(allow_sql)
        } else {
            Ok(format!("({allow_sql} AND NOT ({}))", denies.join(" OR ")))
        }
    }

    /// RLS DDL enforcing the same predicate inside PostgreSQL for every query `db_role` runs
    /// against `table_name`: a `RESTRICTIVE` policy, so it narrows (never widens) the tenant
    /// isolation policies of `nova-tenancy`. The principal is fixed when the DDL is built
    /// (typically a service account mapped to `db_role`); values are written as literals.
    /// A grant's expiry is carried into the DDL (`now() < to_timestamp(…)`), so it stops
    /// applying in the database when it expires; a grant revoked, or a policy changed, needs
    /// the DDL built and applied again.
    ///
    /// # Errors
    /// [`SqlError`] for an invalid identifier or a value that cannot be written.
    #[allow(clippy::too_many_arguments)]
    pub fn rls_policy_sql(
        &self,
        req: &Request<'_>,
        table: &ResourceTable,
        table_name: &Ident,
        policy_name: &Ident,
        db_role: &Ident,
        command: RlsCommand,
    ) -> Result<String, SqlError> {
        let mut lower = Lower {
            table,
            env: &req.env(),
            sink: Sink::Literals,
        };
        let pred = self.predicate(req, &mut lower)?;
        let mut out = String::new();
        let _ = writeln!(out, "DROP POLICY IF EXISTS {policy_name} ON {table_name};");
        let (cmd, clauses) = match command {
            RlsCommand::Select => ("SELECT", format!("USING ({pred})")),
            RlsCommand::Insert => ("INSERT", format!("WITH CHECK ({pred})")),
            RlsCommand::Update => ("UPDATE", format!("USING ({pred}) WITH CHECK ({pred})")),
            RlsCommand::Delete => ("DELETE", format!("USING ({pred})")),
        };
        let _ = writeln!(
            out,
            "CREATE POLICY {policy_name} ON {table_name} AS RESTRICTIVE FOR {cmd} TO {db_role}\n  {clauses};"
        );
        Ok(out)
    }
}

fn req_now(req: &Request<'_>) -> u64 {
    req.now_secs()
}
