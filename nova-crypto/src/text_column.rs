//! Envelopes in `TEXT` columns: [`TextColumn`] binds an envelope in its text form and reads
//! it back, for schemas that keep ciphertext in `text` (JSON exports, columns shared with
//! other languages). Without it an envelope binds as `BYTEA`, its native form. This module
//! must never bind anything but an envelope's canonical text form.

use std::fmt;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef, Postgres};
use sqlx::{Decode, Encode, Type};

use crate::envelope::Envelope;
use crate::error::DecodeError;
use crate::subject::SubjectEnvelope;

/// An envelope kind with a text form (`nv1:` for [`Envelope`], `ns1:` for
/// [`SubjectEnvelope`]).
pub trait TextForm: Sized + sealed::Sealed {
    /// The canonical text form.
    fn to_text(&self) -> String;
    /// Parses the text form.
    ///
    /// # Errors
    /// [`DecodeError`] when the text is not an envelope of this kind.
    fn from_text(text: &str) -> Result<Self, DecodeError>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Envelope {}
    impl Sealed for super::SubjectEnvelope {}
}

impl TextForm for Envelope {
    fn to_text(&self) -> String {
        Envelope::to_text(self)
    }
    fn from_text(text: &str) -> Result<Self, DecodeError> {
        Envelope::from_text(text)
    }
}

impl TextForm for SubjectEnvelope {
    fn to_text(&self) -> String {
        SubjectEnvelope::to_text(self)
    }
    fn from_text(text: &str) -> Result<Self, DecodeError> {
        SubjectEnvelope::from_text(text)
    }
}

/// An envelope bound to, and read from, a `TEXT` column.
///
/// ```no_run
/// # async fn demo(conn: &mut sqlx::PgConnection, sealed: nova_crypto::Envelope)
/// #     -> Result<(), sqlx::Error> {
/// use nova_crypto::{Envelope, TextColumn};
/// sqlx::query("UPDATE customers SET email_text = $1 WHERE id = 7")
///     .bind(TextColumn(&sealed))
///     .execute(&mut *conn)
///     .await?;
/// let TextColumn(back): TextColumn<Envelope> =
///     sqlx::query_scalar("SELECT email_text FROM customers WHERE id = 7")
///         .fetch_one(&mut *conn)
///         .await?;
/// # let _ = back; Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TextColumn<E>(pub E);

impl<E: fmt::Debug> fmt::Debug for TextColumn<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TextColumn").field(&self.0).finish()
    }
}

impl<E> Type<Postgres> for TextColumn<E> {
    fn type_info() -> PgTypeInfo {
        <String as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <String as Type<Postgres>>::compatible(ty)
    }
}

/// Binds by reference (`TextColumn(&envelope)`); reading gives an owned envelope.
impl<E: TextForm> Encode<'_, Postgres> for TextColumn<&E> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <String as Encode<Postgres>>::encode(self.0.to_text(), buf)
    }
}

impl<'r, E: TextForm> Decode<'r, Postgres> for TextColumn<E> {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(E::from_text(<&str as Decode<Postgres>>::decode(
            value,
        )?)?))
    }
}
