//! Where a sealed value lives: table, column and row. All three are bound into the
//! envelope's associated data, so a ciphertext copied to another row, column or table
//! fails to open. This module must never let two different locations encode alike.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use nova_tenancy::Ident;

use crate::error::CryptoError;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh process-unique id (for cache indexes).
pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// The process-wide id of a name (a `table.column` pair or a stream label), so that every
/// `Column` value naming the same column shares one cache entry, however often it is built.
pub(crate) fn interned_id(kind: u8, a: &str, b: &str) -> u64 {
    type Names = std::collections::HashMap<(u8, String, String), u64>;
    static NAMES: std::sync::Mutex<Option<Names>> = std::sync::Mutex::new(None);
    let mut guard = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    let map = guard.get_or_insert_with(Names::new);
    if let Some(id) = map.get(&(kind, a.to_owned(), b.to_owned())) {
        return *id;
    }
    let id = next_id();
    map.insert((kind, a.to_owned(), b.to_owned()), id);
    id
}

/// Longest text row id, in bytes.
pub const ROW_ID_MAX_LEN: usize = 256;

/// How a blind index normalises a value before hashing (e.g. e-mail addresses are
/// compared case-insensitively).
pub type Normalizer = fn(&str) -> std::borrow::Cow<'_, str>;

/// Built-in normalisers for blind indexes.
pub mod normalize {
    use std::borrow::Cow;

    /// Leaves the value as it is.
    #[must_use]
    pub fn exact(s: &str) -> Cow<'_, str> {
        Cow::Borrowed(s)
    }

    /// Trims surrounding whitespace and lower-cases (Unicode-aware).
    #[must_use]
    pub fn trim_lowercase(s: &str) -> Cow<'_, str> {
        let t = s.trim();
        if t.chars().any(char::is_uppercase) {
            Cow::Owned(t.to_lowercase())
        } else {
            Cow::Borrowed(t)
        }
    }

    /// E-mail addresses: trimmed and lower-cased as a whole. (RFC 5321 lets the local part
    /// be case-sensitive; no mail system in practice treats it so, and users expect
    /// `Alice@Example.com` to find `alice@example.com`.)
    #[must_use]
    pub fn email(s: &str) -> Cow<'_, str> {
        trim_lowercase(s)
    }
}

/// An encrypted column: its table and column names, and how its blind index (if any)
/// normalises and truncates. Build once, reuse for every row.
///
/// ```
/// use nova_crypto::{Column, normalize};
/// let email = Column::new("users", "email")?.with_normalizer(normalize::email);
/// let field = email.row(42_i64);
/// # let _ = field;
/// # Ok::<(), nova_crypto::CryptoError>(())
/// ```
#[derive(Clone)]
pub struct Column {
    pub(crate) table: Ident,
    pub(crate) column: Ident,
    /// Process-wide id of (table, column): the key-cache index for its derived keys.
    pub(crate) id: u64,
    pub(crate) normalizer: Normalizer,
    pub(crate) index_len: usize,
}

/// Default blind-index length in bytes (128 bits).
pub const BLIND_INDEX_DEFAULT_LEN: usize = 16;

impl Column {
    /// A column, with exact-match blind indexes of [`BLIND_INDEX_DEFAULT_LEN`] bytes.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeyOperation`] when a name is not a valid SQL identifier.
    pub fn new(table: &str, column: &str) -> Result<Self, CryptoError> {
        let bad = |_| CryptoError::InvalidKeyOperation("table and column must be SQL identifiers");
        let table = Ident::new(table).map_err(bad)?;
        let column = Ident::new(column).map_err(bad)?;
        let id = interned_id(0, table.as_str(), column.as_str());
        Ok(Self {
            table,
            column,
            id,
            normalizer: normalize::exact,
            index_len: BLIND_INDEX_DEFAULT_LEN,
        })
    }

    /// Uses `normalizer` on values before blind-indexing them.
    #[must_use]
    pub fn with_normalizer(mut self, normalizer: Normalizer) -> Self {
        self.normalizer = normalizer;
        self
    }

    /// Truncates blind indexes to `len` bytes (8 to 32). Shorter indexes leak less about
    /// equal values across a table (more false positives to filter after decrypting);
    /// longer ones make collisions negligible. 16 bytes is the default.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeyOperation`] outside 8..=32.
    pub fn with_index_len(mut self, len: usize) -> Result<Self, CryptoError> {
        if !(8..=32).contains(&len) {
            return Err(CryptoError::InvalidKeyOperation(
                "blind index length must be 8 to 32 bytes",
            ));
        }
        self.index_len = len;
        Ok(self)
    }

    /// The value at one row of this column.
    #[must_use]
    pub fn row(&self, id: impl Into<RowId>) -> FieldRef<'_> {
        FieldRef {
            column: self,
            row: id.into(),
        }
    }

    /// The table name.
    #[must_use]
    pub fn table(&self) -> &str {
        self.table.as_str()
    }

    /// The column name.
    #[must_use]
    pub fn column(&self) -> &str {
        self.column.as_str()
    }
}

impl fmt::Debug for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Column")
            .field("table", &self.table)
            .field("column", &self.column)
            .field("index_len", &self.index_len)
            .finish_non_exhaustive()
    }
}

/// A row's primary key, in one of the forms tables use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RowId {
    /// A UUID key.
    Uuid(uuid::Uuid),
    /// An integer key.
    Int(i64),
    /// A text key (at most [`ROW_ID_MAX_LEN`] bytes).
    Text(String),
}

impl From<uuid::Uuid> for RowId {
    fn from(u: uuid::Uuid) -> Self {
        Self::Uuid(u)
    }
}
impl From<i64> for RowId {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}
impl From<i32> for RowId {
    fn from(i: i32) -> Self {
        Self::Int(i64::from(i))
    }
}
impl From<&str> for RowId {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}
impl From<String> for RowId {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl RowId {
    /// Writes a tagged, length-delimited encoding into `out` (at least
    /// `3 + ROW_ID_MAX_LEN` bytes); returns its length.
    pub(crate) fn encode_into(&self, out: &mut [u8]) -> Result<usize, CryptoError> {
        match self {
            Self::Uuid(u) => {
                out[0] = 1;
                out[1..17].copy_from_slice(u.as_bytes());
                Ok(17)
            }
            Self::Int(i) => {
                out[0] = 2;
                out[1..9].copy_from_slice(&i.to_be_bytes());
                Ok(9)
            }
            Self::Text(s) => {
                if s.len() > ROW_ID_MAX_LEN {
                    return Err(CryptoError::TooLarge("row id longer than 256 bytes"));
                }
                out[0] = 3;
                // At most 256, so it fits in two bytes.
                out[1..3].copy_from_slice(&(s.len() as u16).to_be_bytes());
                out[3..3 + s.len()].copy_from_slice(s.as_bytes());
                Ok(3 + s.len())
            }
        }
    }
}

/// One value's location: a [`Column`] and a row.
#[derive(Debug, Clone)]
pub struct FieldRef<'a> {
    pub(crate) column: &'a Column,
    pub(crate) row: RowId,
}

impl FieldRef<'_> {
    /// The column.
    #[must_use]
    pub fn column(&self) -> &Column {
        self.column
    }

    /// The row id.
    #[must_use]
    pub fn row_id(&self) -> &RowId {
        &self.row
    }
}
