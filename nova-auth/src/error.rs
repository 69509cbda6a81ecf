//! The crate's one error type. Variants name what was wrong with a credential; none echoes
//! the token, key or secret that was presented.

/// Everything that can go wrong in `nova-auth`.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    // ----- JWT structure -----
    /// The token is longer than the configured limit.
    #[error("token longer than {limit} bytes")]
    TokenTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The token is not three base64url segments with a JSON header and payload.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header says `alg: none` (an unsigned token).
    #[error("unsigned tokens (alg none) are never accepted")]
    AlgNone,
    /// The header's algorithm is not on the allow-list.
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// The header's algorithm differs from the algorithm of the key its `kid` names
    /// (algorithm confusion, e.g. an RSA public key used as an HMAC secret).
    #[error("token algorithm does not match the key's algorithm")]
    AlgorithmKeyMismatch,
    /// The header uses a feature Nova does not accept (`crit`, `jku`, `jwk`, `x5u`, `x5c`,
    /// `b64`), or an unexpected `typ`.
    #[error("unsupported header parameter: {0}")]
    UnsupportedHeader(&'static str),
    /// The token has no `kid` and the key set needs one to choose a key.
    #[error("token has no key id")]
    MissingKid,
    /// No key in the key set has the token's `kid` (after any allowed refresh).
    #[error("unknown key id")]
    UnknownKid,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,

    // ----- JWT claims -----
    /// `exp` is in the past (beyond leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future (beyond leeway).
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `iat` is older than the configured maximum age.
    #[error("token too old")]
    TooOld,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not contain the configured audience.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim is absent.
    #[error("missing claim `{0}`")]
    MissingClaim(&'static str),
    /// A claim has the wrong type or an invalid value (e.g. a `tenant_id` that is not a UUID).
    #[error("invalid claim `{0}`")]
    InvalidClaim(&'static str),

    // ----- keys -----
    /// A JWKS document or key was refused.
    #[error("key set error: {0}")]
    KeySet(&'static str),
    /// An HMAC secret shorter than the configured minimum.
    #[error("HMAC secret shorter than {min} bytes")]
    WeakHmacSecret {
        /// The minimum length in bytes.
        min: usize,
    },
    /// Fetching a JWKS failed.
    #[error("key set refresh failed: {0}")]
    KeyFetch(String),
    /// Signing a token failed.
    #[error("signing failed: {0}")]
    Signing(&'static str),

    // ----- opaque credentials -----
    /// An API key, refresh token or session token is not in the expected format, or its
    /// checksum does not match (a typo or a truncated copy).
    #[error("malformed credential: {0}")]
    MalformedCredential(&'static str),
    /// The credential is not known, or its secret does not match.
    #[error("invalid credential")]
    InvalidCredential,
    /// The credential was revoked.
    #[error("credential revoked")]
    Revoked,
    /// The credential expired (including a rotated API key past its grace period).
    #[error("credential expired")]
    CredentialExpired,
    /// A refresh token was presented twice; its whole family has been revoked.
    #[error("refresh token reuse detected; the token family was revoked")]
    RefreshReuse,
    /// The session was idle longer than the idle timeout.
    #[error("session idle timeout")]
    SessionIdle,
    /// A step-up was asked with a method that is not a second factor (something held or
    /// something the user is), or for a credential that cannot be stepped up.
    #[error("a step-up needs a second factor")]
    NotASecondFactor,
    /// The client address is outside the credential's CIDR allow-list.
    #[error("client address not allowed for this credential")]
    AddressNotAllowed,
    /// The current time is outside the credential's allowed window.
    #[error("credential not usable at this time of day")]
    OutsideTimeWindow,
    /// Too many recent failures: the key id is locked.
    #[error("locked after repeated failures")]
    Locked,
    /// A store failed.
    #[error("credential store error: {0}")]
    Store(String),
}
