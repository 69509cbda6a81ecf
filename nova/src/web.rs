//! The request scope as an axum extractor, and errors as responses.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use nova_tenancy::TenantContext;

use crate::app::Nova;
use crate::error::Error;
use crate::scope::Scope;

/// A handler that takes a [`Scope`] gets one for the caller the guard layer verified
/// ([`Nova::guard`]); without one (a route outside the guard) the request is refused
/// with 401. The state must give a [`Nova`] (`impl FromRef<S> for Nova`, or `Nova` itself
/// as the state).
impl<S: Send + Sync> FromRequestParts<S> for Scope
where
    Nova: FromRef<S>,
{
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ctx = parts
            .extensions
            .get::<TenantContext>()
            .cloned()
            .ok_or(StatusCode::UNAUTHORIZED)?;
        Ok(Nova::from_ref(state).scope(ctx))
    }
}

/// The status of [`Error::status`]: a 400 carries the application's constant message, a
/// 403 or 404 nothing (the audit log has the reason), a 500 nothing (its detail is logged,
/// never sent).
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(target: "nova", error = %self, "request failed");
        }
        match self {
            Error::Invalid(why) => (status, why).into_response(),
            _ => status.into_response(),
        }
    }
}
