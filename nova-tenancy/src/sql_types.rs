//! sqlx `Type`, `Encode` and `Decode` for Nova's ids (PostgreSQL `uuid`) and names
//! (`text`), so queries bind and read them as they are, with no `.as_uuid()` at every call.
//!
//! Decoding validates exactly as parsing does: a nil UUID read from a `tenant_id` column,
//! or a role name outside Nova's grammar, is a decode error, never a value. This module must
//! never produce an id or a name that [`std::str::FromStr`] would refuse.
//!
//! ```no_run
//! # async fn demo(tx: &mut nova_tenancy::TenantTx, me: nova_tenancy::UserId)
//! #     -> Result<(), sqlx::Error> {
//! use nova_tenancy::{Role, TenantId};
//! let owners: Vec<(TenantId, Role)> =
//!     sqlx::query_as("SELECT tenant_id, role FROM memberships WHERE user_id = $1")
//!         .bind(me) // a UserId binds as uuid
//!         .fetch_all(&mut **tx)
//!         .await?;
//! # let _ = owners; Ok(()) }
//! ```

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef, Postgres};
use sqlx::{Decode, Encode, Type};
use uuid::Uuid;

use crate::ids::{RequestId, TenantId, UserId};
use crate::names::{AuthMethod, Region, Role};

macro_rules! uuid_columns {
    ($($id:ty),* $(,)?) => {$(
        /// A PostgreSQL `uuid`; the nil UUID does not decode.
        impl Type<Postgres> for $id {
            fn type_info() -> PgTypeInfo {
                <Uuid as Type<Postgres>>::type_info()
            }
            fn compatible(ty: &PgTypeInfo) -> bool {
                <Uuid as Type<Postgres>>::compatible(ty)
            }
        }

        impl PgHasArrayType for $id {
            fn array_type_info() -> PgTypeInfo {
                <Uuid as PgHasArrayType>::array_type_info()
            }
        }

        impl Encode<'_, Postgres> for $id {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <Uuid as Encode<Postgres>>::encode_by_ref(self.as_uuid(), buf)
            }
        }

        impl<'r> Decode<'r, Postgres> for $id {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                Ok(Self::from_uuid(<Uuid as Decode<Postgres>>::decode(value)?)?)
            }
        }
    )*};
}

uuid_columns!(TenantId, UserId, RequestId);

macro_rules! text_columns {
    ($($name:ty),* $(,)?) => {$(
        /// A PostgreSQL `text` (or `varchar`); a value outside the name grammar does not
        /// decode.
        impl Type<Postgres> for $name {
            fn type_info() -> PgTypeInfo {
                <String as Type<Postgres>>::type_info()
            }
            fn compatible(ty: &PgTypeInfo) -> bool {
                <String as Type<Postgres>>::compatible(ty)
            }
        }

        impl PgHasArrayType for $name {
            fn array_type_info() -> PgTypeInfo {
                <String as PgHasArrayType>::array_type_info()
            }
        }

        impl Encode<'_, Postgres> for $name {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as Encode<Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> Decode<'r, Postgres> for $name {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                Ok(Self::new(<&str as Decode<Postgres>>::decode(value)?)?)
            }
        }
    )*};
}

text_columns!(Role, Region, AuthMethod);
