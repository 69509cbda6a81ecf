//! Sealed columns, declared once per table: which columns are encrypted, under the
//! tenant's key or a data subject's, and which have a blind index for equality lookups.

use std::collections::HashMap;

use nova_crypto::{Column, Normalizer};

use crate::error::Error;

/// Whose key seals a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyOf {
    /// The tenant's: erased only with the whole tenant.
    Tenant,
    /// The row's data subject's: one person can be crypto-shredded.
    Subject,
}

#[derive(Debug, Clone)]
pub(crate) struct Sealed {
    pub(crate) column: Column,
    pub(crate) key: KeyOf,
    pub(crate) indexed: bool,
}

/// The sealed columns of one table.
///
/// ```
/// use nova::{KeyOf, SealedTable};
/// use nova_crypto::normalize;
///
/// let users = SealedTable::new("users")
///     .column("display_name", KeyOf::Subject)?
///     .indexed("email", KeyOf::Subject, normalize::email)?;
/// # Ok::<(), nova::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SealedTable {
    pub(crate) table: String,
    pub(crate) columns: Vec<Sealed>,
}

impl SealedTable {
    /// A table with no sealed column yet.
    #[must_use]
    pub fn new(table: &str) -> Self {
        Self {
            table: table.to_owned(),
            columns: Vec::new(),
        }
    }

    /// Seals `column` under `key`.
    ///
    /// # Errors
    /// [`Error::Crypto`] when the names are not valid.
    pub fn column(mut self, column: &str, key: KeyOf) -> Result<Self, Error> {
        self.columns.push(Sealed {
            column: Column::new(&self.table, column)?,
            key,
            indexed: false,
        });
        Ok(self)
    }

    /// Seals `column` under `key`, with a blind index of its value as `normalizer` makes it.
    ///
    /// # Errors
    /// [`Error::Crypto`] when the names are not valid.
    pub fn indexed(
        mut self,
        column: &str,
        key: KeyOf,
        normalizer: Normalizer,
    ) -> Result<Self, Error> {
        self.columns.push(Sealed {
            column: Column::new(&self.table, column)?.with_normalizer(normalizer),
            key,
            indexed: true,
        });
        Ok(self)
    }
}

/// Every declared column, by `(table, column)`.
#[derive(Debug, Clone, Default)]
pub(crate) struct SealedColumns(HashMap<(String, String), Sealed>);

impl SealedColumns {
    pub(crate) fn add(&mut self, table: SealedTable) -> Result<(), Error> {
        for c in table.columns {
            let key = (table.table.clone(), c.column.column().to_owned());
            if self.0.contains_key(&key) {
                return Err(Error::config(format!(
                    "sealed column `{}.{}` is declared twice",
                    key.0, key.1
                )));
            }
            self.0.insert(key, c);
        }
        Ok(())
    }

    pub(crate) fn list(&self) -> Vec<(String, String, KeyOf)> {
        let mut out: Vec<_> = self
            .0
            .iter()
            .map(|((t, c), s)| (t.clone(), c.clone(), s.key))
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    pub(crate) fn get(&self, table: &str, column: &str) -> Result<&Sealed, Error> {
        self.0
            .get(&(table.to_owned(), column.to_owned()))
            .ok_or_else(|| Error::UnknownColumn {
                table: table.to_owned(),
                column: column.to_owned(),
            })
    }
}
