//! The text form of schemas and policy sets: a lexer and a recursive-descent parser. Input is
//! untrusted; every limit below is checked before it could be exceeded, and nothing panics.

use crate::ast::{
    Actions, AttrDecl, CmpOp, Effect, Expr, Grant, Grantee, Pos, Principals, RoleDecl, Rule, Var,
};
use crate::value::{Scalar, Type, Value};

/// Largest policy or schema text accepted, in bytes.
pub const MAX_TEXT_LEN: usize = 1 << 20;
/// Deepest nesting of a condition (parentheses, `!`, `&&`, `||`, comparisons).
pub const MAX_DEPTH: usize = 32;
/// Longest string literal, in bytes.
pub const MAX_STRING_LEN: usize = 4096;
/// Most elements in a set literal.
pub const MAX_SET_LEN: usize = 1024;
/// Longest role, action, type or attribute name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A syntax error: where, what was expected, and what was found instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: expected {expected}, found {found}")]
pub struct ParseError {
    /// Where the problem starts.
    pub pos: Pos,
    /// What the grammar allows here.
    pub expected: String,
    /// What is there instead (a token, shortened).
    pub found: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Punct(&'static str),
    Eof,
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Ident(s) => format!("`{}`", shorten(s)),
        Tok::Str(s) => format!("string \"{}\"", shorten(s)),
        Tok::Int(n) => format!("number {n}"),
        Tok::Punct(p) => format!("`{p}`"),
        Tok::Eof => "end of input".to_owned(),
    }
}

fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(24).filter(|c| !c.is_control()).collect();
    if s.chars().count() > 24 {
        out.push('…');
    }
    out
}

const PUNCTS: [&str; 25] = [
    "&&", "||", "==", "!=", "<=", ">=", "{", "}", "(", ")", "[", "]", "<", ">", "!", ",", ";", ":",
    "?", ".", "*", "@", "=", "&", "|",
];

struct Lexer<'a> {
    src: &'a str,
    at: usize,
    line: u32,
    col: u32,
}

impl<'a> Lexer<'a> {
    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.col,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.src[self.at..].chars().next()?;
        self.at += c.len_utf8();
        if c == '\n' {
            self.line = self.line.saturating_add(1);
            self.col = 1;
        } else {
            self.col = self.col.saturating_add(1);
        }
        Some(c)
    }

    fn peek(&self) -> Option<char> {
        self.src[self.at..].chars().next()
    }

    fn skip_trivia(&mut self) {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('/') if self.src[self.at..].starts_with("//") => {
                    while let Some(c) = self.bump() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                _ => return,
            }
        }
    }

    /// The `{hex}` after `\u`: one to six hex digits naming a Unicode scalar value.
    fn unicode_escape(&mut self) -> Option<char> {
        if self.bump()? != '{' {
            return None;
        }
        let mut code: u32 = 0;
        for i in 0..7 {
            let c = self.bump()?;
            if c == '}' {
                return if i == 0 { None } else { char::from_u32(code) };
            }
            if i == 6 {
                return None;
            }
            code = code * 16 + c.to_digit(16)?;
        }
        None
    }

    fn err(&self, pos: Pos, expected: &str, found: String) -> ParseError {
        ParseError {
            pos,
            expected: expected.to_owned(),
            found,
        }
    }

    fn next(&mut self) -> Result<(Tok, Pos), ParseError> {
        self.skip_trivia();
        let pos = self.pos();
        let Some(c) = self.peek() else {
            return Ok((Tok::Eof, pos));
        };
        if c.is_ascii_alphabetic() || c == '_' {
            let start = self.at;
            while let Some(c) = self.peek() {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    self.bump();
                } else {
                    break;
                }
            }
            let word = &self.src[start..self.at];
            if word.len() > MAX_NAME_LEN {
                return Err(self.err(
                    pos,
                    &format!("a name of at most {MAX_NAME_LEN} bytes"),
                    format!("a name of {} bytes", word.len()),
                ));
            }
            return Ok((Tok::Ident(word.to_owned()), pos));
        }
        if c.is_ascii_digit()
            || (c == '-' && self.src[self.at + 1..].starts_with(|d: char| d.is_ascii_digit()))
        {
            let start = self.at;
            self.bump();
            while self.peek().is_some_and(|d| d.is_ascii_digit()) {
                self.bump();
            }
            let text = &self.src[start..self.at];
            return text
                .parse::<i64>()
                .map(|n| (Tok::Int(n), pos))
                .map_err(|_| self.err(pos, "a 64-bit integer", format!("`{}`", shorten(text))));
        }
        if c == '"' {
            self.bump();
            let mut s = String::new();
            loop {
                let Some(c) = self.bump() else {
                    return Err(self.err(pos, "a closing `\"`", "end of input".into()));
                };
                match c {
                    '"' => break,
                    '\\' => {
                        let esc_pos = self.pos();
                        match self.bump() {
                            Some('"') => s.push('"'),
                            Some('\\') => s.push('\\'),
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some('r') => s.push('\r'),
                            Some('u') => match self.unicode_escape() {
                                Some(c) => s.push(c),
                                None => {
                                    return Err(self.err(
                                        esc_pos,
                                        "a unicode escape such as \\u{1F600}",
                                        "a malformed one".into(),
                                    ));
                                }
                            },
                            other => {
                                return Err(self.err(
                                    esc_pos,
                                    "an escape: \\\" \\\\ \\n \\t \\r \\u{…}",
                                    other.map_or("end of input".into(), |c| format!("`\\{c}`")),
                                ));
                            }
                        }
                    }
                    '\n' => {
                        return Err(self.err(
                            pos,
                            "a closing `\"` on the same line",
                            "a line break".into(),
                        ));
                    }
                    c => s.push(c),
                }
                if s.len() > MAX_STRING_LEN {
                    return Err(self.err(
                        pos,
                        &format!("a string of at most {MAX_STRING_LEN} bytes"),
                        "a longer string".into(),
                    ));
                }
            }
            return Ok((Tok::Str(s), pos));
        }
        let rest = &self.src[self.at..];
        for p in PUNCTS {
            if rest.starts_with(p) {
                for _ in 0..p.len() {
                    self.bump();
                }
                if matches!(p, "=" | "&" | "|") {
                    let want = match p {
                        "=" => "`==`",
                        "&" => "`&&`",
                        _ => "`||`",
                    };
                    return Err(self.err(pos, want, format!("`{p}`")));
                }
                return Ok((Tok::Punct(p), pos));
            }
        }
        Err(self.err(
            pos,
            "a name, literal or symbol",
            format!("`{}`", c.escape_default()),
        ))
    }
}

/// A parsed schema document (before validation).
#[derive(Debug, Default, Clone)]
pub(crate) struct SchemaDoc {
    pub(crate) entities: Vec<(Box<str>, Vec<AttrDecl>, Pos)>,
    pub(crate) context: Option<(Vec<AttrDecl>, Pos)>,
    pub(crate) principal: Option<(Box<str>, Pos)>,
}

/// A parsed policy document (before validation).
#[derive(Debug, Default, Clone)]
pub(crate) struct PolicyDoc {
    pub(crate) roles: Vec<RoleDecl>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) grants: Vec<Grant>,
}

pub(crate) struct Parser<'a> {
    lex: Lexer<'a>,
    tok: Tok,
    pos: Pos,
}

impl<'a> Parser<'a> {
    pub(crate) fn new(src: &'a str) -> Result<Self, ParseError> {
        if src.len() > MAX_TEXT_LEN {
            return Err(ParseError {
                pos: Pos { line: 1, column: 1 },
                expected: format!("at most {MAX_TEXT_LEN} bytes of text"),
                found: format!("{} bytes", src.len()),
            });
        }
        let mut lex = Lexer {
            src,
            at: 0,
            line: 1,
            col: 1,
        };
        let (tok, pos) = lex.next()?;
        Ok(Self { lex, tok, pos })
    }

    fn advance(&mut self) -> Result<Tok, ParseError> {
        let (tok, pos) = self.lex.next()?;
        self.pos = pos;
        Ok(std::mem::replace(&mut self.tok, tok))
    }

    fn fail<T>(&self, expected: &str) -> Result<T, ParseError> {
        Err(ParseError {
            pos: self.pos,
            expected: expected.to_owned(),
            found: describe(&self.tok),
        })
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self.tok, Tok::Punct(q) if q == p)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(&self.tok, Tok::Ident(s) if s == w)
    }

    fn eat_punct(&mut self, p: &str) -> Result<bool, ParseError> {
        if self.is_punct(p) {
            self.advance()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn expect_punct(&mut self, p: &str) -> Result<(), ParseError> {
        if self.eat_punct(p)? {
            Ok(())
        } else {
            self.fail(&format!("`{p}`"))
        }
    }

    fn expect_word(&mut self, w: &str) -> Result<(), ParseError> {
        if self.is_word(w) {
            self.advance()?;
            Ok(())
        } else {
            self.fail(&format!("`{w}`"))
        }
    }

    fn ident(&mut self, what: &str) -> Result<Box<str>, ParseError> {
        match &self.tok {
            Tok::Ident(s) if !is_keyword(s) => {
                let s = s.clone().into_boxed_str();
                self.advance()?;
                Ok(s)
            }
            _ => self.fail(what),
        }
    }

    fn string(&mut self, what: &str) -> Result<Box<str>, ParseError> {
        match &self.tok {
            Tok::Str(s) => {
                let s = s.clone().into_boxed_str();
                self.advance()?;
                Ok(s)
            }
            _ => self.fail(what),
        }
    }

    /// A role or action name: a string, or identifiers joined by `.`; with `allow_star`, a
    /// trailing `.*` (or a string ending in `*`) makes it a prefix pattern.
    fn name(&mut self, what: &str, allow_star: bool) -> Result<Box<str>, ParseError> {
        let pos = self.pos;
        let mut out = match &self.tok {
            Tok::Str(s) => {
                let s = s.clone();
                self.advance()?;
                s
            }
            Tok::Ident(s) if !is_keyword(s) => {
                let mut s = s.clone();
                self.advance()?;
                while self.is_punct(".") {
                    self.advance()?;
                    if allow_star && self.is_punct("*") {
                        self.advance()?;
                        s.push_str(".*");
                        break;
                    }
                    match &self.tok {
                        Tok::Ident(part) => {
                            s.push('.');
                            s.push_str(part);
                            self.advance()?;
                        }
                        _ => return self.fail("a name after `.`"),
                    }
                }
                s
            }
            _ => return self.fail(what),
        };
        if out.is_empty() || out.len() > MAX_NAME_LEN {
            return Err(ParseError {
                pos,
                expected: format!("a name of 1 to {MAX_NAME_LEN} bytes"),
                found: format!("{} bytes", out.len()),
            });
        }
        if !allow_star && out.contains('*') {
            return Err(ParseError {
                pos,
                expected: what.to_owned(),
                found: "a wildcard".into(),
            });
        }
        out.shrink_to_fit();
        Ok(out.into_boxed_str())
    }

    pub(crate) fn schema(mut self) -> Result<SchemaDoc, ParseError> {
        let mut doc = SchemaDoc::default();
        loop {
            let pos = self.pos;
            if matches!(self.tok, Tok::Eof) {
                return Ok(doc);
            }
            if self.is_word("entity") {
                self.advance()?;
                let name = self.ident("an entity type name")?;
                let attrs = if self.is_punct("{") {
                    self.attr_block()?
                } else {
                    Vec::new()
                };
                self.eat_punct(";")?;
                doc.entities.push((name, attrs, pos));
            } else if self.is_word("context") {
                self.advance()?;
                let attrs = self.attr_block()?;
                self.eat_punct(";")?;
                if doc.context.is_some() {
                    return Err(ParseError {
                        pos,
                        expected: "one `context` declaration".into(),
                        found: "a second one".into(),
                    });
                }
                doc.context = Some((attrs, pos));
            } else if self.is_word("principal") {
                self.advance()?;
                let name = self.ident("the principal's entity type")?;
                self.expect_punct(";")?;
                if doc.principal.is_some() {
                    return Err(ParseError {
                        pos,
                        expected: "one `principal` declaration".into(),
                        found: "a second one".into(),
                    });
                }
                doc.principal = Some((name, pos));
            } else {
                return self.fail("`entity`, `context`, `principal` or end of input");
            }
        }
    }

    fn attr_block(&mut self) -> Result<Vec<AttrDecl>, ParseError> {
        self.expect_punct("{")?;
        let mut attrs = Vec::new();
        while !self.is_punct("}") {
            let name = self.ident("an attribute name or `}`")?;
            let optional = self.eat_punct("?")?;
            self.expect_punct(":")?;
            let ty = self.ty()?;
            attrs.push(AttrDecl { name, ty, optional });
            if !self.eat_punct(",")? {
                break;
            }
        }
        self.expect_punct("}")?;
        Ok(attrs)
    }

    fn ty(&mut self) -> Result<Type, ParseError> {
        let scalar = |s: &str| match s {
            "Bool" => Some(Scalar::Bool),
            "Long" => Some(Scalar::Long),
            "String" => Some(Scalar::String),
            _ => None,
        };
        let Tok::Ident(word) = &self.tok else {
            return self.fail("a type: Bool, Long, String or Set<…>");
        };
        if word == "Set" {
            self.advance()?;
            self.expect_punct("<")?;
            let inner = match &self.tok {
                Tok::Ident(w) => scalar(w),
                _ => None,
            };
            let Some(inner) = inner else {
                return self.fail("a set element type: Bool, Long or String");
            };
            self.advance()?;
            self.expect_punct(">")?;
            return Ok(Type::Set(inner));
        }
        match scalar(word) {
            Some(s) => {
                self.advance()?;
                Ok(s.as_type())
            }
            None => self.fail("a type: Bool, Long, String or Set<…>"),
        }
    }

    pub(crate) fn policy(mut self) -> Result<PolicyDoc, ParseError> {
        let mut doc = PolicyDoc::default();
        loop {
            let pos = self.pos;
            if matches!(self.tok, Tok::Eof) {
                return Ok(doc);
            }
            if self.is_word("role") {
                self.advance()?;
                let name = self.name("a role name", false)?;
                let mut inherits = Vec::new();
                if self.eat_punct(":")? {
                    loop {
                        inherits.push(self.name("a role name", false)?);
                        if !self.eat_punct(",")? {
                            break;
                        }
                    }
                }
                self.expect_punct(";")?;
                doc.roles.push(RoleDecl {
                    name,
                    inherits,
                    pos,
                });
            } else if self.is_word("grant") {
                doc.grants.push(self.grant(pos)?);
            } else if self.is_punct("@") || self.is_word("allow") || self.is_word("deny") {
                doc.rules.push(self.rule(pos)?);
            } else {
                return self.fail("`role`, `allow`, `deny`, `@id`, `grant` or end of input");
            }
        }
    }

    fn rule(&mut self, pos: Pos) -> Result<Rule, ParseError> {
        let mut id = None;
        if self.eat_punct("@")? {
            self.expect_word("id")?;
            self.expect_punct("(")?;
            id = Some(self.string("the rule id as a string")?);
            self.expect_punct(")")?;
        }
        let effect = if self.is_word("allow") {
            Effect::Allow
        } else if self.is_word("deny") {
            Effect::Deny
        } else {
            return self.fail("`allow` or `deny`");
        };
        self.advance()?;
        let principals = if self.eat_punct("*")? {
            Principals::Any
        } else {
            let mut roles = Vec::new();
            loop {
                roles.push(self.name("a role name or `*`", true)?);
                if !self.eat_punct(",")? {
                    break;
                }
            }
            Principals::Roles(roles)
        };
        self.expect_word("to")?;
        let actions = self.actions()?;
        self.expect_word("on")?;
        let resource_type = if self.eat_punct("*")? {
            None
        } else {
            Some(self.ident("a resource type or `*`")?)
        };
        let condition = self.when()?;
        self.expect_punct(";")?;
        Ok(Rule {
            id: id.unwrap_or_default(),
            effect,
            principals,
            actions,
            resource_type,
            condition,
            pos,
        })
    }

    fn actions(&mut self) -> Result<Actions, ParseError> {
        if self.eat_punct("*")? {
            return Ok(Actions::Any);
        }
        let mut names = Vec::new();
        loop {
            names.push(self.name("an action name or `*`", false)?);
            if !self.eat_punct(",")? {
                break;
            }
        }
        Ok(Actions::Named(names))
    }

    fn when(&mut self) -> Result<Option<Expr>, ParseError> {
        if self.is_word("when") {
            self.advance()?;
            Ok(Some(self.expr(0)?.0))
        } else {
            Ok(None)
        }
    }

    fn grant(&mut self, pos: Pos) -> Result<Grant, ParseError> {
        self.expect_word("grant")?;
        let id = self.string("the grant id as a string")?;
        self.expect_word("to")?;
        let grantee = if self.is_word("role") {
            self.advance()?;
            Grantee::Role(self.name("a role name", false)?)
        } else if self.is_word("principal") {
            self.advance()?;
            Grantee::Principal(self.string("the principal id as a string")?)
        } else {
            return self.fail("`role` or `principal`");
        };
        self.expect_punct(":")?;
        let actions = self.actions()?;
        self.expect_word("on")?;
        let resource_type = self.ident("a resource type (grants cannot use `*`)")?;
        let condition = self.when()?;
        self.expect_word("until")?;
        let until_pos = self.pos;
        let until = self.string("an expiry time such as \"2026-12-01T00:00:00Z\"")?;
        let Some(expires_at) = parse_utc(&until) else {
            return Err(ParseError {
                pos: until_pos,
                expected: "a UTC time as YYYY-MM-DDTHH:MM:SSZ".into(),
                found: format!("\"{}\"", shorten(&until)),
            });
        };
        self.expect_word("by")?;
        let granted_by = self.string("who granted it, as a string")?;
        self.expect_punct(";")?;
        Ok(Grant {
            id,
            grantee,
            actions,
            resource_type,
            condition,
            expires_at,
            granted_by,
            pos,
        })
    }

    pub(crate) fn expr_only(mut self) -> Result<Expr, ParseError> {
        let (e, _) = self.expr(0)?;
        if !matches!(self.tok, Tok::Eof) {
            return self.fail("an operator or end of input");
        }
        Ok(e)
    }

    /// One more level of `(` or `!`: bounds the parser's recursion. Printing writes `!(…)`,
    /// two levels per node, so twice the tree's limit keeps every printed condition parseable.
    fn nested(&self, nest: usize) -> Result<usize, ParseError> {
        if nest >= 2 * MAX_DEPTH {
            return self.too_deep();
        }
        Ok(nest + 1)
    }

    /// Bounds the depth of the tree built (long `&&`/`||` chains nest too), so evaluation,
    /// printing and dropping a parsed condition never recurse deeper than [`MAX_DEPTH`].
    fn node(&self, depth: usize) -> Result<usize, ParseError> {
        if depth > MAX_DEPTH {
            return self.too_deep();
        }
        Ok(depth)
    }

    fn too_deep<T>(&self) -> Result<T, ParseError> {
        Err(ParseError {
            pos: self.pos,
            expected: format!("a condition nested at most {MAX_DEPTH} deep"),
            found: "deeper nesting".into(),
        })
    }

    fn expr(&mut self, nest: usize) -> Result<(Expr, usize), ParseError> {
        let (mut left, mut depth) = self.and_expr(nest)?;
        while self.eat_punct("||")? {
            let (right, d) = self.and_expr(nest)?;
            depth = self.node(1 + depth.max(d))?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok((left, depth))
    }

    fn and_expr(&mut self, nest: usize) -> Result<(Expr, usize), ParseError> {
        let (mut left, mut depth) = self.unary(nest)?;
        while self.eat_punct("&&")? {
            let (right, d) = self.unary(nest)?;
            depth = self.node(1 + depth.max(d))?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok((left, depth))
    }

    fn unary(&mut self, nest: usize) -> Result<(Expr, usize), ParseError> {
        if self.eat_punct("!")? {
            let (e, d) = self.unary(self.nested(nest)?)?;
            return Ok((Expr::Not(Box::new(e)), self.node(d + 1)?));
        }
        self.comparison(nest)
    }

    fn comparison(&mut self, nest: usize) -> Result<(Expr, usize), ParseError> {
        // `var has name` starts with a bare variable.
        if let Tok::Ident(w) = &self.tok
            && let Some(var) = var_of(w)
        {
            let (save_lex_at, save_line, save_col) = (self.lex.at, self.lex.line, self.lex.col);
            let (save_tok, save_pos) = (self.tok.clone(), self.pos);
            self.advance()?;
            if self.is_word("has") {
                self.advance()?;
                let name = self.ident("an attribute name")?;
                return Ok((Expr::Has(var, name), 1));
            }
            // Not `has`: rewind and parse an attribute reference.
            self.lex.at = save_lex_at;
            self.lex.line = save_line;
            self.lex.col = save_col;
            self.tok = save_tok;
            self.pos = save_pos;
        }
        let (left, dl) = self.primary(nest)?;
        let op = match &self.tok {
            Tok::Punct("==") => Some(CmpOp::Eq),
            Tok::Punct("!=") => Some(CmpOp::Ne),
            Tok::Punct("<") => Some(CmpOp::Lt),
            Tok::Punct("<=") => Some(CmpOp::Le),
            Tok::Punct(">") => Some(CmpOp::Gt),
            Tok::Punct(">=") => Some(CmpOp::Ge),
            _ => None,
        };
        let build: fn(Box<Expr>, Box<Expr>) -> Expr;
        if let Some(op) = op {
            self.advance()?;
            let (right, dr) = self.primary(nest)?;
            let depth = self.node(1 + dl.max(dr))?;
            return Ok((Expr::Cmp(op, Box::new(left), Box::new(right)), depth));
        } else if self.is_word("in") {
            build = Expr::In;
        } else if self.is_word("starts_with") {
            build = Expr::StartsWith;
        } else {
            return Ok((left, dl));
        }
        self.advance()?;
        let (right, dr) = self.primary(nest)?;
        let depth = self.node(1 + dl.max(dr))?;
        Ok((build(Box::new(left), Box::new(right)), depth))
    }

    fn primary(&mut self, nest: usize) -> Result<(Expr, usize), ParseError> {
        match self.tok.clone() {
            Tok::Punct("(") => {
                self.advance()?;
                let e = self.expr(self.nested(nest)?)?;
                self.expect_punct(")")?;
                Ok(e)
            }
            Tok::Punct("[") => {
                self.advance()?;
                let mut items = Vec::new();
                while !self.is_punct("]") {
                    if items.len() >= MAX_SET_LEN {
                        return self.fail(&format!("at most {MAX_SET_LEN} set elements"));
                    }
                    items.push(self.scalar_literal()?);
                    if !self.eat_punct(",")? {
                        break;
                    }
                }
                self.expect_punct("]")?;
                Ok((Expr::Lit(Value::Set(items.into_boxed_slice())), 1))
            }
            Tok::Ident(w) if var_of(&w).is_some() => {
                let var = var_of(&w).unwrap_or(Var::Context);
                self.advance()?;
                self.expect_punct(".")?;
                let name = self.ident("an attribute name")?;
                Ok((Expr::Attr(var, name), 1))
            }
            _ => Ok((Expr::Lit(self.scalar_literal()?), 1)),
        }
    }

    fn scalar_literal(&mut self) -> Result<Value, ParseError> {
        let v = match &self.tok {
            Tok::Int(n) => Value::Long(*n),
            Tok::Str(s) => Value::Str(s.clone().into_boxed_str()),
            Tok::Ident(w) if w == "true" => Value::Bool(true),
            Tok::Ident(w) if w == "false" => Value::Bool(false),
            _ => return self.fail("a value: an attribute, a literal, `(` or `[`"),
        };
        self.advance()?;
        Ok(v)
    }
}

fn var_of(w: &str) -> Option<Var> {
    match w {
        "principal" => Some(Var::Principal),
        "resource" => Some(Var::Resource),
        "context" => Some(Var::Context),
        _ => None,
    }
}

fn is_keyword(w: &str) -> bool {
    matches!(
        w,
        "allow"
            | "deny"
            | "role"
            | "grant"
            | "to"
            | "on"
            | "when"
            | "until"
            | "by"
            | "in"
            | "has"
            | "starts_with"
            | "true"
            | "false"
            | "principal"
            | "resource"
            | "context"
            | "entity"
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` into seconds since the Unix epoch.
pub(crate) fn parse_utc(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || hour > 23
        || min > 59
        || sec > 59
    {
        return None;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if day == 0 || day > days_in[usize::try_from(month - 1).ok()?] {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), for years ≥ 1970.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + min * 60 + sec)
}

/// Formats seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn format_utc(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_round_trip_and_match_known_instants() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_utc("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(parse_utc("2026-12-01T00:00:00Z"), Some(1_796_083_200));
        assert_eq!(format_utc(1_796_083_200), "2026-12-01T00:00:00Z");
        for bad in [
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-01 00:00:00Z",
            "",
            "2026-12-01T24:00:00Z",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
        assert_eq!(
            parse_utc("2024-02-29T12:34:56Z").map(format_utc).as_deref(),
            Some("2024-02-29T12:34:56Z")
        );
    }
}
