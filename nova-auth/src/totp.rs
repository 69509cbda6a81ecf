//! Time-based one-time passwords (RFC 6238) for second factors: enrolment secrets and
//! `otpauth://` URIs, verification that accepts each time step once per user, recovery
//! codes stored only as salted hashes, the rule saying when a fresh second factor is
//! required, and signed "remember this device" tokens. This module must never log, print,
//! or put in an error a TOTP secret, a code, a recovery code or a device token key.
//!
//! # Usage
//!
//! ```
//! use std::time::SystemTime;
//! use nova_auth::totp::{Enrolment, InMemoryReplayGuard, Totp, TotpError, TotpVerifier};
//! use nova_tenancy::{TenantId, UserId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), TotpError> {
//! // Enrolment: show the URI as a QR code once; keep the secret (encrypted) with the user.
//! let enrolment = Enrolment::generate("ACME Tickets", "alice@example.com", Totp::default())?;
//! assert!(enrolment
//!     .to_uri()
//!     .starts_with("otpauth://totp/ACME%20Tickets:alice%40example.com?secret="));
//!
//! // Sign-in: the code comes from the user's authenticator app (here computed locally).
//! let (tenant, user) = (TenantId::new_v4(), UserId::new_v4());
//! let verifier = TotpVerifier::new(InMemoryReplayGuard::new());
//! let (totp, secret) = (enrolment.totp(), enrolment.secret());
//! let now = SystemTime::now();
//! let code = totp.code_at(secret, now)?;
//! let step = verifier.verify_at(tenant, user, totp, secret, &code, now).await?;
//! assert_eq!(step, Totp::step_at(now)?);
//!
//! // The same code again, even within its 30 seconds, is refused.
//! assert_eq!(
//!     verifier.verify_at(tenant, user, totp, secret, &code, now).await,
//!     Err(TotpError::Replayed)
//! );
//! # Ok(())
//! # }
//! ```
//!
//! # Security notes
//!
//! - Secrets are 20 random bytes for SHA-1 and 32 for SHA-256 (RFC 4226 §4 requires at
//!   least 128 bits and recommends 160; RFC 6238 §5.1 asks for keys as long as the hash
//!   output). They live in [`TotpSecret`], which is zeroized on drop and prints as
//!   `[REDACTED]`; Base32 encoding and decoding run without secret-dependent branches or
//!   table lookups.
//! - A code is compared with the codes of the current step and one step either side in
//!   constant time (all three are computed every time). Anything but exactly `digits` ASCII
//!   digits is refused before any HMAC is computed.
//! - RFC 6238 §5.2: a verifier must not accept the second attempt of a code after a
//!   successful validation. [`TotpVerifier`] records the matched step per tenant and user
//!   through a [`TotpReplayGuard`] and refuses any step at or before it.
//! - A 6-digit code with ±1 step of skew is guessed with probability 3 in 10⁶ per try:
//!   put TOTP verification behind the account lockout and rate limits (RFC 4226 §7.3).
//!   Failures and replays are reported on [`AUDIT_TARGET`] and through
//!   [`nova_tenancy::report`] as `totp_failure` and `totp_replay`.
//! - Recovery codes carry 50 bits; they are stored as HMAC-SHA-256 under a per-set random
//!   salt and compared in constant time. That resists online guessing, not an offline
//!   search of a stolen table by a well-equipped attacker: protect the table like a
//!   password table.
//! - A remembered device skips the second factor at sign-in only; [`MfaPolicy`] still asks
//!   for a fresh code before admin actions and row-level-security bypass.
//!
//! # Known limits
//!
//! - The period is fixed at 30 seconds and the skew at one step, as most authenticator
//!   apps assume; some apps ignore `algorithm` and `digits`, so [`Totp::default`] (SHA-1,
//!   6 digits) is the interoperable choice.
//! - [`InMemoryReplayGuard`] serves one process; replicas behind a load balancer need a
//!   shared [`TotpReplayGuard`] (one atomic compare-and-set per verification).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use nova_tenancy::{
    AUDIT_TARGET, Actor, AuthMethod, SecurityEvent, TenantContext, TenantId, UserId, report,
};
use sha1::Sha1;
use sha2::Sha256;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

use crate::opaque::{IssuedSecret, hashes_equal};

/// The time step: every code is valid for one 30-second period (RFC 6238 §5.2).
pub const PERIOD: Duration = Duration::from_secs(PERIOD_SECS);
const PERIOD_SECS: u64 = 30;
/// Steps accepted either side of the current one, for clock drift and typing time.
pub const SKEW_STEPS: u64 = 1;
/// Fewest digits in a code (RFC 4226 §5.3 requires at least 6).
pub const MIN_DIGITS: u8 = 6;
/// Most digits in a code.
pub const MAX_DIGITS: u8 = 8;
/// Shortest secret accepted, in bytes (RFC 4226 §4, requirement R6: 128 bits).
pub const MIN_SECRET_LEN: usize = 16;
/// Longest secret accepted, in bytes (the HMAC block size of SHA-1 and SHA-256).
pub const MAX_SECRET_LEN: usize = 64;
/// Longest `otpauth://` URI the parser reads. Every URI that [`Enrolment::to_uri`] writes
/// is shorter, so whatever parses also parses again after being written out.
pub const MAX_URI_LEN: usize = 4096;
/// Longest issuer or account name, in bytes (an e-mail address has at most 254).
pub const MAX_NAME_LEN: usize = 256;
/// Recovery codes in a set unless asked otherwise.
pub const DEFAULT_RECOVERY_CODES: usize = 10;
/// Most recovery codes in one set.
pub const MAX_RECOVERY_CODES: usize = 32;
/// Symbols in a recovery code: 10 Crockford Base32 symbols, 50 bits.
pub const RECOVERY_CODE_SYMBOLS: usize = 10;
/// Prefix of every "remember this device" token.
pub const DEVICE_TOKEN_PREFIX: &str = "nova_rd_";
/// Longest lifetime of a "remember this device" token.
pub const MAX_DEVICE_TTL: Duration = Duration::from_secs(90 * 24 * 60 * 60);
/// Longest device id, in bytes.
pub const MAX_DEVICE_ID_LEN: usize = 256;
/// Shortest key for signing device tokens, in bytes.
pub const MIN_DEVICE_KEY_LEN: usize = 32;
/// How long a second factor counts as fresh for [`MfaPolicy`] unless configured otherwise.
pub const DEFAULT_MFA_MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// Length of the fixed text of a URI written by [`Enrolment::to_uri`] (the longest
/// algorithm name included).
const URI_FIXED_LEN: usize =
    "otpauth://totp/:?secret=&issuer=&algorithm=SHA256&digits=8&period=30".len();
// The longest URI written: the issuer twice and the account once, each at most tripled by
// percent-encoding, and the longest secret.
const _: () =
    assert!(URI_FIXED_LEN + 3 * 3 * MAX_NAME_LEN + base32_len(MAX_SECRET_LEN) <= MAX_URI_LEN);

/// How far in the future a "second factor verified at" time may lie (clocks of replicas
/// differ a little) before [`MfaPolicy::check`] distrusts it.
const MFA_CLOCK_LEEWAY: Duration = Duration::from_secs(60);
/// Longest recovery code input read (grouping and spaces included).
const MAX_RECOVERY_INPUT_LEN: usize = 64;
/// Longest stored recovery code set read.
const MAX_STORED_CODES_LEN: usize = 4096;
const STORED_CODES_PREFIX: &str = "nova-rc1";
/// Version, tenant (16), user (16), issued at (8), expires at (8).
const DEVICE_PAYLOAD_LEN: usize = 1 + 16 + 16 + 8 + 8;
const DEVICE_TAG_LEN: usize = 32;
/// Base64url length of payload and tag: 81 bytes.
const DEVICE_TOKEN_BODY_LEN: usize = 108;
const DEVICE_TOKEN_VERSION: u8 = 1;
/// Domain separation, in case a key is (wrongly) shared with another HMAC use.
const DEVICE_TOKEN_DOMAIN: &[u8] = b"nova-auth remember-device v1\0";

/// Everything that can go wrong with second factors. Variants never hold a secret, a code
/// or a token.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TotpError {
    /// The code is not exactly `digits` ASCII digits (spaces, full-width digits, letters).
    #[error("a code must be exactly {digits} ASCII digits")]
    MalformedCode {
        /// The expected number of digits.
        digits: u8,
    },
    /// The code matches none of the accepted time steps.
    #[error("invalid code")]
    InvalidCode,
    /// The code is right but its time step (or a later one) was already accepted for this
    /// user: a replay.
    #[error("code already used")]
    Replayed,
    /// A number of digits other than 6, 7 or 8.
    #[error("a code has {MIN_DIGITS} to {MAX_DIGITS} digits")]
    UnsupportedDigits,
    /// A secret shorter or longer than the limits.
    #[error("a secret has {MIN_SECRET_LEN} to {MAX_SECRET_LEN} bytes")]
    SecretLength,
    /// Text that is not canonical RFC 4648 Base32.
    #[error("malformed Base32: {0}")]
    Base32(&'static str),
    /// An `otpauth://` URI that could not be parsed or asks for something unsupported.
    #[error("malformed otpauth URI: {0}")]
    Uri(&'static str),
    /// An issuer or account name that cannot appear in an `otpauth://` label.
    #[error("invalid issuer or account name: {0}")]
    Name(&'static str),
    /// The clock reads a time before 1970.
    #[error("clock before the Unix epoch")]
    ClockBeforeEpoch,
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Random,
    /// A recovery code that is not 10 Crockford Base32 symbols.
    #[error("malformed recovery code")]
    MalformedRecoveryCode,
    /// A recovery code that is not (or no longer) in the set.
    #[error("invalid recovery code")]
    InvalidRecoveryCode,
    /// A recovery code set of zero or more than [`MAX_RECOVERY_CODES`] codes.
    #[error("a recovery code set has 1 to {MAX_RECOVERY_CODES} codes")]
    RecoveryCodeCount,
    /// A stored recovery code set that could not be read.
    #[error("malformed stored recovery codes: {0}")]
    MalformedStoredCodes(&'static str),
    /// The action needs a second factor verified within the policy's maximum age.
    #[error("a fresh second factor is required for this action")]
    MfaRequired,
    /// A device token key shorter than [`MIN_DEVICE_KEY_LEN`] bytes.
    #[error("device token key shorter than {MIN_DEVICE_KEY_LEN} bytes")]
    WeakDeviceKey,
    /// An empty device id or one longer than [`MAX_DEVICE_ID_LEN`] bytes.
    #[error("a device id has 1 to {MAX_DEVICE_ID_LEN} bytes")]
    DeviceId,
    /// A device token lifetime of zero or longer than [`MAX_DEVICE_TTL`].
    #[error("device token lifetime must be positive and at most 90 days")]
    DeviceTokenTtl,
    /// Not a device token (prefix, length or encoding).
    #[error("malformed device token")]
    MalformedDeviceToken,
    /// The token's signature does not verify: it was altered, signed with another key, or
    /// issued for another device.
    #[error("device token signature does not verify")]
    DeviceTokenInvalid,
    /// A genuine token, issued to another tenant or user.
    #[error("device token belongs to another user")]
    DeviceTokenWrongUser,
    /// A genuine token past its expiry.
    #[error("device token expired")]
    DeviceTokenExpired,
    /// A replay guard's store failed.
    #[error("replay guard store error: {0}")]
    Store(String),
}

// ----- secrets and Base32 -----

/// The hash under HMAC (RFC 6238 §1.2 allows SHA-1, SHA-256 and SHA-512; Nova offers the
/// two that authenticator apps support widely).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Algorithm {
    /// HMAC-SHA-1, the RFC 4226 default and what every authenticator app supports. (SHA-1's
    /// collision attacks do not affect HMAC.)
    #[default]
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
}

impl Algorithm {
    /// The name used in `otpauth://` URIs: `SHA1` or `SHA256`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
        }
    }

    /// The length of a generated secret: the hash output length (RFC 6238 §5.1).
    #[must_use]
    pub const fn secret_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }
}

/// A TOTP shared secret. Zeroized on drop; `Debug` prints `[REDACTED]`; equality is
/// constant-time.
///
/// ```
/// use nova_auth::totp::{Algorithm, TotpSecret};
///
/// let secret = TotpSecret::generate(Algorithm::Sha1)?;
/// assert_eq!(secret.expose().len(), 20);
/// assert_eq!(format!("{secret:?}"), "TotpSecret([REDACTED])");
/// assert_eq!(TotpSecret::from_base32(&secret.to_base32())?, secret);
/// # Ok::<(), nova_auth::totp::TotpError>(())
/// ```
#[derive(Clone)]
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl TotpSecret {
    /// A fresh secret from the OS random number generator, as long as `algorithm`'s hash
    /// output (20 bytes for SHA-1, 32 for SHA-256).
    ///
    /// # Errors
    /// [`TotpError::Random`] when the OS generator fails.
    pub fn generate(algorithm: Algorithm) -> Result<Self, TotpError> {
        let mut bytes = Zeroizing::new(vec![0u8; algorithm.secret_len()]);
        getrandom::fill(&mut bytes).map_err(|_| TotpError::Random)?;
        Ok(Self(bytes))
    }

    /// A secret from raw bytes (e.g. decrypted from storage).
    ///
    /// # Errors
    /// [`TotpError::SecretLength`] outside [`MIN_SECRET_LEN`]..=[`MAX_SECRET_LEN`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TotpError> {
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&bytes.len()) {
            return Err(TotpError::SecretLength);
        }
        Ok(Self(Zeroizing::new(bytes.to_vec())))
    }

    /// A secret from its Base32 text (upper or lower case, padding optional).
    ///
    /// # Errors
    /// [`TotpError::Base32`] for text that is not canonical Base32;
    /// [`TotpError::SecretLength`] for a secret outside the length limits.
    pub fn from_base32(text: &str) -> Result<Self, TotpError> {
        // Refuse long input before decoding it: padded Base32 of the longest secret.
        if text.len() > MAX_SECRET_LEN.div_ceil(5) * 8 {
            return Err(TotpError::SecretLength);
        }
        let bytes = base32_decode(text)?;
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&bytes.len()) {
            return Err(TotpError::SecretLength);
        }
        Ok(Self(bytes))
    }

    /// The secret as unpadded upper-case Base32, the form authenticator apps take.
    #[must_use]
    pub fn to_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(base32_encode(&self.0))
    }

    /// The raw secret bytes, to encrypt for storage.
    #[must_use]
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret([REDACTED])")
    }
}

impl PartialEq for TotpSecret {
    fn eq(&self, other: &Self) -> bool {
        // `subtle` compares slices of different lengths as unequal without looking further.
        bool::from(self.0.as_slice().ct_eq(other.0.as_slice()))
    }
}

impl Eq for TotpSecret {}

/// The Base32 symbol (RFC 4648 §6 alphabet) for a 5-bit value, without branches or table
/// lookups: `A`..`Z` for 0..=25, `2`..`7` for 26..=31.
fn base32_symbol(v: u8) -> u8 {
    let v = i16::from(v & 31);
    // (25 - v) >> 8 is all ones exactly when v > 25 (arithmetic shift of a small negative).
    let c = v + i16::from(b'A') + (((25 - v) >> 8) & (i16::from(b'2') - i16::from(b'A') - 26));
    c.to_le_bytes()[0]
}

/// The value of a Base32 symbol (either case), or -1, without branches or table lookups.
/// `((lo - c) & (c - hi)) >> 8` is all ones exactly when lo < c < hi: both operands are
/// then negative and above -256.
fn base32_value(c: u8) -> i16 {
    let c = i16::from(c);
    let mut v: i16 = -1;
    v += (((0x40 - c) & (c - 0x5b)) >> 8) & (c - 0x41 + 1); // A..=Z
    v += (((0x60 - c) & (c - 0x7b)) >> 8) & (c - 0x61 + 1); // a..=z
    v += (((0x31 - c) & (c - 0x38)) >> 8) & (c - 0x32 + 26 + 1); // 2..=7
    v
}

/// The length of the unpadded Base32 text of `n` bytes.
const fn base32_len(n: usize) -> usize {
    (n * 8).div_ceil(5)
}

/// Base32 (RFC 4648 §6) without padding, upper case. Runs in time that depends only on the
/// length of `data`, so it may encode secrets.
///
/// ```
/// assert_eq!(nova_auth::totp::base32_encode(b"foobar"), "MZXW6YTBOI");
/// ```
#[must_use]
pub fn base32_encode(data: &[u8]) -> String {
    // Exact capacity: the string never reallocates and so leaves no copy of a secret behind.
    let mut out = String::with_capacity(base32_len(data.len()));
    let mut buffer: u32 = 0;
    let mut bits: u32 = 0;
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(base32_symbol(((buffer >> bits) & 31) as u8)));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(base32_symbol(
            ((buffer << (5 - bits)) & 31) as u8,
        )));
    }
    out
}

/// Decodes Base32 (RFC 4648 §6), upper or lower case, with or without the exact `=`
/// padding. Non-canonical text is refused: impossible lengths, wrong padding, and unused
/// trailing bits that are not zero (RFC 4648 §3.5), so one secret has one encoding. The
/// time depends on the length of `text` and on whether it is valid, not on its content.
///
/// ```
/// use nova_auth::totp::base32_decode;
///
/// assert_eq!(*base32_decode("MZXW6YQ=")?, b"foob");
/// assert_eq!(*base32_decode("mzxw6yq")?, b"foob");
/// assert!(base32_decode("MZXW6YR").is_err()); // trailing bits set
/// # Ok::<(), nova_auth::totp::TotpError>(())
/// ```
///
/// # Errors
/// [`TotpError::Base32`] naming what is wrong.
pub fn base32_decode(text: &str) -> Result<Zeroizing<Vec<u8>>, TotpError> {
    let bytes = text.as_bytes();
    let body_len = bytes.len() - bytes.iter().rev().take_while(|&&b| b == b'=').count();
    let (body, padding) = bytes.split_at(body_len);
    // Symbols left over in the last 8-symbol group, and the padding that must follow them.
    let expected_padding = match body.len() % 8 {
        0 => 0,
        2 => 6,
        4 => 4,
        5 => 3,
        7 => 1,
        _ => return Err(TotpError::Base32("impossible length")),
    };
    if !padding.is_empty() && padding.len() != expected_padding {
        return Err(TotpError::Base32("wrong padding"));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(body.len() * 5 / 8));
    let mut buffer: u32 = 0;
    let mut bits: u32 = 0;
    let mut invalid: i16 = 0;
    for &c in body {
        let v = base32_value(c);
        invalid |= v;
        buffer = (buffer << 5) | u32::from((v & 31).unsigned_abs());
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    if invalid < 0 {
        return Err(TotpError::Base32("invalid character"));
    }
    if buffer != 0 {
        return Err(TotpError::Base32("non-zero trailing bits"));
    }
    Ok(out)
}

// ----- codes -----

/// TOTP parameters: hash algorithm and number of digits; the period is [`PERIOD`] and the
/// accepted skew [`SKEW_STEPS`].
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use nova_auth::totp::{Algorithm, Totp, TotpSecret};
///
/// // RFC 6238 Appendix B, SHA-1, T = 59 s.
/// let totp = Totp::new(Algorithm::Sha1, 8)?;
/// let secret = TotpSecret::from_bytes(b"12345678901234567890")?;
/// let at = UNIX_EPOCH + Duration::from_secs(59);
/// assert_eq!(*totp.code_at(&secret, at)?, "94287082");
/// assert_eq!(totp.check_at(&secret, "94287082", at)?, 1);
/// # Ok::<(), nova_auth::totp::TotpError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Totp {
    algorithm: Algorithm,
    digits: u8,
}

impl Default for Totp {
    /// SHA-1 and 6 digits: what every authenticator app supports.
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Sha1,
            digits: MIN_DIGITS,
        }
    }
}

impl Totp {
    /// Parameters with `digits` digits per code.
    ///
    /// # Errors
    /// [`TotpError::UnsupportedDigits`] outside [`MIN_DIGITS`]..=[`MAX_DIGITS`].
    pub const fn new(algorithm: Algorithm, digits: u8) -> Result<Self, TotpError> {
        if digits < MIN_DIGITS || digits > MAX_DIGITS {
            return Err(TotpError::UnsupportedDigits);
        }
        Ok(Self { algorithm, digits })
    }

    /// The hash algorithm.
    #[must_use]
    pub const fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The number of digits in a code.
    #[must_use]
    pub const fn digits(&self) -> u8 {
        self.digits
    }

    /// The time step containing `time`: whole periods since the Unix epoch (RFC 6238 §4.2).
    ///
    /// # Errors
    /// [`TotpError::ClockBeforeEpoch`] for times before 1970.
    pub fn step_at(time: SystemTime) -> Result<u64, TotpError> {
        time.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() / PERIOD_SECS)
            .map_err(|_| TotpError::ClockBeforeEpoch)
    }

    /// The code for `time`, as the authenticator app shows it (leading zeros kept).
    ///
    /// # Errors
    /// [`TotpError::ClockBeforeEpoch`] for times before 1970.
    pub fn code_at(
        &self,
        secret: &TotpSecret,
        time: SystemTime,
    ) -> Result<Zeroizing<String>, TotpError> {
        let mut value = self.hotp(secret, Self::step_at(time)?);
        let mut digits = Zeroizing::new([b'0'; MAX_DIGITS as usize]);
        let n = usize::from(self.digits);
        for d in digits[..n].iter_mut().rev() {
            *d = b'0' + (value % 10) as u8;
            value /= 10;
        }
        let mut code = Zeroizing::new(String::with_capacity(n));
        code.extend(digits[..n].iter().map(|&d| char::from(d)));
        Ok(code)
    }

    /// Checks `code` against the steps around `now` and returns the step it matched.
    ///
    /// This check alone does not refuse a replayed code: sign-in goes through
    /// [`TotpVerifier`], which does.
    ///
    /// # Errors
    /// [`TotpError::MalformedCode`] unless `code` is exactly [`Totp::digits`] ASCII digits;
    /// [`TotpError::InvalidCode`] when no step in the window matches;
    /// [`TotpError::ClockBeforeEpoch`] for times before 1970.
    pub fn check_at(
        &self,
        secret: &TotpSecret,
        code: &str,
        now: SystemTime,
    ) -> Result<u64, TotpError> {
        let presented = self.parse_code(code)?;
        let current = Self::step_at(now)?;
        let mut matched = Choice::from(0);
        let mut step = 0u64;
        // Every step in the window is computed and compared, so the time does not say which
        // one matched. Should two match, the later wins, which refuses more on replay.
        for candidate in current.saturating_sub(SKEW_STEPS)..=current.saturating_add(SKEW_STEPS) {
            let hit = self.hotp(secret, candidate).ct_eq(&presented);
            step.conditional_assign(&candidate, hit);
            matched |= hit;
        }
        if bool::from(matched) {
            Ok(step)
        } else {
            Err(TotpError::InvalidCode)
        }
    }

    /// The code as a number, after refusing anything but exactly `digits` ASCII digits
    /// (which also refuses signs, spaces and non-ASCII digits that `str::parse` or
    /// `char::is_numeric` would let through).
    fn parse_code(&self, code: &str) -> Result<u32, TotpError> {
        let bytes = code.as_bytes();
        if bytes.len() != usize::from(self.digits) || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(TotpError::MalformedCode {
                digits: self.digits,
            });
        }
        Ok(bytes
            .iter()
            .fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0')))
    }

    /// HOTP (RFC 4226 §5.3) of `counter`, reduced to `digits` digits.
    fn hotp(&self, secret: &TotpSecret, counter: u64) -> u32 {
        let msg = counter.to_be_bytes();
        let truncated = match self.algorithm {
            Algorithm::Sha1 => {
                let Ok(mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(secret.expose()) else {
                    unreachable!("HMAC takes keys of any length")
                };
                dynamic_truncation(&mac.chain_update(msg).finalize().into_bytes())
            }
            Algorithm::Sha256 => {
                let Ok(mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose()) else {
                    unreachable!("HMAC takes keys of any length")
                };
                dynamic_truncation(&mac.chain_update(msg).finalize().into_bytes())
            }
        };
        truncated % 10u32.pow(u32::from(self.digits))
    }
}

/// RFC 4226 §5.3 dynamic truncation: 31 bits at the offset named by the low nibble of the
/// last byte. The offset depends on the MAC, but the whole MAC (20 or 32 bytes) sits in
/// one or two cache lines, so the lookup reveals nothing through the cache.
fn dynamic_truncation(mac: &[u8]) -> u32 {
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    u32::from_be_bytes([
        mac[offset] & 0x7f,
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ])
}

// ----- replay refusal -----

/// Remembers, per tenant and user, the last time step accepted, so that a code (more
/// precisely its step) is accepted once (RFC 6238 §5.2).
pub trait TotpReplayGuard: Send + Sync {
    /// Atomically: if `step` is later than the last step accepted for `(tenant, user)`,
    /// records it and answers `true`; otherwise changes nothing and answers `false`.
    fn accept_step(
        &self,
        tenant: TenantId,
        user: UserId,
        step: u64,
    ) -> impl Future<Output = Result<bool, TotpError>> + Send;
}

/// A [`TotpReplayGuard`] in memory, for one process. It keeps one entry (about 40 bytes)
/// per user who ever signed in with a code.
#[derive(Debug, Default)]
pub struct InMemoryReplayGuard {
    // foldhash: keys are ids the service itself assigned, not attacker-chosen strings.
    last: Mutex<HashMap<(TenantId, UserId), u64, foldhash::fast::RandomState>>,
}

impl InMemoryReplayGuard {
    /// An empty guard.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl TotpReplayGuard for InMemoryReplayGuard {
    async fn accept_step(
        &self,
        tenant: TenantId,
        user: UserId,
        step: u64,
    ) -> Result<bool, TotpError> {
        // The map is consistent after any panic (one insert), so a poisoned lock is usable.
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(match last.entry((tenant, user)) {
            Entry::Occupied(mut e) if *e.get() < step => {
                e.insert(step);
                true
            }
            Entry::Occupied(_) => false,
            Entry::Vacant(e) => {
                e.insert(step);
                true
            }
        })
    }
}

#[cfg(feature = "redis")]
pub use self::redis_replay::RedisReplayGuard;

#[cfg(feature = "redis")]
mod redis_replay {
    use super::{TotpError, TotpReplayGuard};
    use nova_tenancy::{TenantId, UserId};

    /// Compare-and-set in one script: accept `step` only if it is later than the stored one.
    /// The key lives a day past the step (codes of older steps are refused by the window
    /// anyway), so inactive users cost nothing.
    const ACCEPT: &str = r"
local last = tonumber(redis.call('GET', KEYS[1]) or '-1') or -1
local step = tonumber(ARGV[1])
if step <= last then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', 86400)
return 1
";

    /// A [`TotpReplayGuard`] in Redis, shared by every replica using the same prefix, so a
    /// code accepted by one replica is refused by all (one script call per sign-in).
    #[derive(Clone)]
    pub struct RedisReplayGuard {
        conn: redis::aio::MultiplexedConnection,
        prefix: String,
        script: redis::Script,
    }

    impl std::fmt::Debug for RedisReplayGuard {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RedisReplayGuard")
                .field("prefix", &self.prefix)
                .finish_non_exhaustive()
        }
    }

    fn err(e: &redis::RedisError) -> TotpError {
        TotpError::Store(crate::redis_conn::describe(e))
    }

    impl RedisReplayGuard {
        /// Connects to Redis at `url`, keeping accepted steps under `prefix`.
        ///
        /// # Errors
        /// [`TotpError::Store`] when Redis cannot be reached.
        pub async fn connect(url: &str, prefix: &str) -> Result<Self, TotpError> {
            let conn = crate::redis_conn::connect(url)
                .await
                .map_err(TotpError::Store)?;
            Ok(Self {
                conn,
                prefix: prefix.to_owned(),
                script: redis::Script::new(ACCEPT),
            })
        }
    }

    impl TotpReplayGuard for RedisReplayGuard {
        async fn accept_step(
            &self,
            tenant: TenantId,
            user: UserId,
            step: u64,
        ) -> Result<bool, TotpError> {
            let key = format!("{}:totp:{{{tenant}:{user}}}", self.prefix);
            let mut conn = self.conn.clone();
            let accepted: i64 = self
                .script
                .key(key)
                .arg(step)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| err(&e))?;
            Ok(accepted == 1)
        }
    }
}

/// Verifies codes at sign-in: format, value within ±[`SKEW_STEPS`] in constant time, then
/// replay through a [`TotpReplayGuard`]. Failures and replays are reported as security
/// events.
#[derive(Debug)]
pub struct TotpVerifier<G> {
    guard: G,
}

impl<G: TotpReplayGuard> TotpVerifier<G> {
    /// A verifier recording accepted steps in `guard`.
    #[must_use]
    pub const fn new(guard: G) -> Self {
        Self { guard }
    }

    /// Verifies `code` for `(tenant, user)` now; returns the matched step.
    ///
    /// # Errors
    /// As [`TotpVerifier::verify_at`].
    pub async fn verify(
        &self,
        tenant: TenantId,
        user: UserId,
        totp: &Totp,
        secret: &TotpSecret,
        code: &str,
    ) -> Result<u64, TotpError> {
        self.verify_at(tenant, user, totp, secret, code, SystemTime::now())
            .await
    }

    /// [`TotpVerifier::verify`], returning the proof [`crate::Sessions::step_up`] takes.
    ///
    /// # Errors
    /// As [`TotpVerifier::verify_at`].
    pub async fn verify_factor(
        &self,
        tenant: TenantId,
        user: UserId,
        totp: &Totp,
        secret: &TotpSecret,
        code: &str,
    ) -> Result<crate::VerifiedFactor, TotpError> {
        self.verify(tenant, user, totp, secret, code).await?;
        let otp = AuthMethod::new("otp").map_err(|_| TotpError::InvalidCode)?;
        Ok(crate::VerifiedFactor::new(tenant, user, otp))
    }

    /// Verifies `code` for `(tenant, user)` at `now`; returns the matched step, which is
    /// then spent for this user.
    ///
    /// # Errors
    /// [`TotpError::MalformedCode`], [`TotpError::InvalidCode`], [`TotpError::Replayed`]
    /// when the matched step is not later than the last one accepted for this user,
    /// [`TotpError::ClockBeforeEpoch`], and [`TotpError::Store`] from the guard.
    pub async fn verify_at(
        &self,
        tenant: TenantId,
        user: UserId,
        totp: &Totp,
        secret: &TotpSecret,
        code: &str,
        now: SystemTime,
    ) -> Result<u64, TotpError> {
        let step = match totp.check_at(secret, code, now) {
            Ok(step) => step,
            Err(e @ (TotpError::MalformedCode { .. } | TotpError::InvalidCode)) => {
                let reason = if e == TotpError::InvalidCode {
                    "invalid"
                } else {
                    "malformed"
                };
                tracing::warn!(target: AUDIT_TARGET, event = "totp_failure", tenant = %tenant, user = %user, reason, "TOTP code refused");
                report(
                    &SecurityEvent::new("totp_failure")
                        .tenant(tenant)
                        .actor(Actor::User(user))
                        .details(&[("reason", &reason)]),
                );
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if !self.guard.accept_step(tenant, user, step).await? {
            tracing::warn!(target: AUDIT_TARGET, event = "totp_replay", tenant = %tenant, user = %user, step, "TOTP code replayed");
            report(
                &SecurityEvent::new("totp_replay")
                    .tenant(tenant)
                    .actor(Actor::User(user))
                    .details(&[("step", &step)]),
            );
            return Err(TotpError::Replayed);
        }
        Ok(step)
    }
}

// ----- enrolment URIs -----

/// What an authenticator app needs to enrol: issuer, account name, secret and parameters,
/// written as an `otpauth://totp/` URI (the Key Uri Format of Google Authenticator, with
/// RFC 3986 percent-encoding) and parsed back from one.
///
/// The URI holds the secret: show it once (as a QR code) and never log it.
///
/// ```
/// use nova_auth::totp::{Algorithm, Enrolment, Totp, TotpSecret};
///
/// let secret = TotpSecret::from_base32("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")?;
/// let enrolment = Enrolment::new("ACME Co", "jo@example.com", secret, Totp::new(Algorithm::Sha256, 8)?)?;
/// let uri = enrolment.to_uri();
/// assert_eq!(
///     *uri,
///     "otpauth://totp/ACME%20Co:jo%40example.com?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\
///      &issuer=ACME%20Co&algorithm=SHA256&digits=8&period=30"
/// );
/// assert_eq!(Enrolment::parse_uri(&uri)?, enrolment);
/// # Ok::<(), nova_auth::totp::TotpError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolment {
    issuer: String,
    account: String,
    secret: TotpSecret,
    totp: Totp,
}

impl Enrolment {
    /// An enrolment with a fresh secret for `totp`'s algorithm.
    ///
    /// # Errors
    /// [`TotpError::Name`] for an issuer or account name that cannot be used (see
    /// [`Enrolment::new`]); [`TotpError::Random`].
    pub fn generate(issuer: &str, account: &str, totp: Totp) -> Result<Self, TotpError> {
        Self::new(issuer, account, TotpSecret::generate(totp.algorithm)?, totp)
    }

    /// An enrolment for an existing secret.
    ///
    /// # Errors
    /// [`TotpError::Name`] when the issuer or account name is empty, longer than
    /// [`MAX_NAME_LEN`] bytes, has control characters or surrounding white space, or when
    /// the issuer contains `:` (the label's separator).
    pub fn new(
        issuer: &str,
        account: &str,
        secret: TotpSecret,
        totp: Totp,
    ) -> Result<Self, TotpError> {
        check_name(issuer)?;
        check_name(account)?;
        if issuer.contains(':') {
            return Err(TotpError::Name("issuer contains ':'"));
        }
        Ok(Self {
            issuer: issuer.to_owned(),
            account: account.to_owned(),
            secret,
            totp,
        })
    }

    /// The issuer (service name) the app shows.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The account name the app shows.
    #[must_use]
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The shared secret.
    #[must_use]
    pub const fn secret(&self) -> &TotpSecret {
        &self.secret
    }

    /// The parameters.
    #[must_use]
    pub const fn totp(&self) -> &Totp {
        &self.totp
    }

    /// `otpauth://totp/Issuer:account?secret=…&issuer=…&algorithm=…&digits=…&period=30`,
    /// every parameter written out (apps differ in their defaults).
    #[must_use]
    pub fn to_uri(&self) -> Zeroizing<String> {
        // An upper bound on the length, so the string never reallocates and leaves no copy
        // of the secret behind: percent-encoding at most triples a name.
        let capacity = URI_FIXED_LEN
            + 3 * (2 * self.issuer.len() + self.account.len())
            + base32_len(self.secret.0.len());
        let mut uri = Zeroizing::new(String::with_capacity(capacity));
        uri.push_str("otpauth://totp/");
        percent_encode_into(&mut uri, &self.issuer);
        uri.push(':');
        percent_encode_into(&mut uri, &self.account);
        uri.push_str("?secret=");
        uri.push_str(&self.secret.to_base32());
        uri.push_str("&issuer=");
        percent_encode_into(&mut uri, &self.issuer);
        uri.push_str("&algorithm=");
        uri.push_str(self.totp.algorithm.name());
        uri.push_str("&digits=");
        uri.push(char::from(b'0' + self.totp.digits));
        uri.push_str("&period=30");
        uri
    }

    /// Parses an `otpauth://totp/` URI (untrusted input).
    ///
    /// Accepted: scheme and type in any case; a label `Issuer:account` (the colon literal
    /// or `%3A`, optional spaces after it) or `account` alone with an `issuer` parameter;
    /// `secret` (required, Base32, any case, padding optional); `issuer` (equal to the
    /// label's issuer when both are given); `algorithm` `SHA1` (default) or `SHA256`;
    /// `digits` 6 (default), 7 or 8; `period` 30 (default). Other parameters (such as
    /// `image`) are ignored; a repeated parameter or a fragment is refused.
    ///
    /// # Errors
    /// [`TotpError::Uri`] naming the problem; [`TotpError::Base32`] and
    /// [`TotpError::SecretLength`] for the secret; [`TotpError::UnsupportedDigits`];
    /// [`TotpError::Name`] for the issuer or account name.
    pub fn parse_uri(uri: &str) -> Result<Self, TotpError> {
        if uri.len() > MAX_URI_LEN {
            return Err(TotpError::Uri("longer than MAX_URI_LEN"));
        }
        let rest = strip_prefix_ignore_case(uri, "otpauth://")
            .ok_or(TotpError::Uri("scheme is not otpauth"))?;
        let (kind, rest) = rest
            .split_once('/')
            .ok_or(TotpError::Uri("missing label"))?;
        if kind.eq_ignore_ascii_case("hotp") {
            return Err(TotpError::Uri(
                "counter-based (hotp) URIs are not supported",
            ));
        }
        if !kind.eq_ignore_ascii_case("totp") {
            return Err(TotpError::Uri("type is not totp"));
        }
        if rest.contains('#') {
            return Err(TotpError::Uri("fragment not allowed"));
        }
        let (label, query) = rest.split_once('?').unwrap_or((rest, ""));
        let label = percent_decode(label, false)?;
        let (label_issuer, account) = match label.split_once(':') {
            Some((issuer, account)) => (Some(issuer), account.trim_start_matches(' ')),
            None => (None, label.as_str()),
        };

        let mut params = UriParams::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or(TotpError::Uri("parameter without '='"))?;
            let slot = match key {
                "secret" => &mut params.secret,
                "issuer" => &mut params.issuer,
                "algorithm" => &mut params.algorithm,
                "digits" => &mut params.digits,
                "period" => &mut params.period,
                _ => continue,
            };
            if slot.is_some() {
                // Two values for one parameter: different readers could pick different ones.
                return Err(TotpError::Uri("repeated parameter"));
            }
            *slot = Some(percent_decode(value, true)?);
        }

        let issuer = match (label_issuer, params.issuer.as_deref()) {
            (Some(l), Some(p)) if l != p.as_str() => {
                return Err(TotpError::Uri("label issuer and issuer parameter differ"));
            }
            (Some(l), _) => l,
            (None, Some(p)) => p.as_str(),
            (None, None) => return Err(TotpError::Uri("missing issuer")),
        };
        let algorithm = match params.algorithm.as_deref().map(String::as_str) {
            None => Algorithm::Sha1,
            Some(a) if a.eq_ignore_ascii_case("SHA1") => Algorithm::Sha1,
            Some(a) if a.eq_ignore_ascii_case("SHA256") => Algorithm::Sha256,
            Some(_) => return Err(TotpError::Uri("unsupported algorithm")),
        };
        let digits = match params.digits.as_deref().map(String::as_str) {
            None => MIN_DIGITS,
            Some("6") => 6,
            Some("7") => 7,
            Some("8") => 8,
            Some(_) => return Err(TotpError::UnsupportedDigits),
        };
        if params.period.as_deref().is_some_and(|p| p.as_str() != "30") {
            return Err(TotpError::Uri("period is not 30 seconds"));
        }
        let secret = params
            .secret
            .as_deref()
            .ok_or(TotpError::Uri("missing secret"))?;
        let secret = TotpSecret::from_base32(secret)?;
        Self::new(issuer, account, secret, Totp::new(algorithm, digits)?)
    }
}

/// The parameters of an `otpauth://` URI that Nova reads, decoded.
#[derive(Default)]
struct UriParams {
    secret: Option<Zeroizing<String>>,
    issuer: Option<Zeroizing<String>>,
    algorithm: Option<Zeroizing<String>>,
    digits: Option<Zeroizing<String>>,
    period: Option<Zeroizing<String>>,
}

fn check_name(name: &str) -> Result<(), TotpError> {
    if name.is_empty() {
        return Err(TotpError::Name("empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(TotpError::Name("longer than MAX_NAME_LEN"));
    }
    if name.chars().any(char::is_control) {
        return Err(TotpError::Name("control character"));
    }
    // Apps trim names, and the parser drops spaces after the label's colon.
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err(TotpError::Name("leading or trailing white space"));
    }
    Ok(())
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.get(..prefix.len())?.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (§2.3), so the result is
/// safe in a path segment and a query value alike (`+`, `&`, `:` and `=` included).
fn percent_encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// Decodes `%XX` escapes (and `+` as a space in query values, as form encoding does); the
/// result must be UTF-8.
fn percent_decode(s: &str, plus_is_space: bool) -> Result<Zeroizing<String>, TotpError> {
    let bytes = s.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|&b| hex_value(b));
                let lo = bytes.get(i + 2).and_then(|&b| hex_value(b));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(TotpError::Uri("bad percent-encoding"));
                };
                out.push((hi << 4) | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    if std::str::from_utf8(&out).is_err() {
        return Err(TotpError::Uri("not UTF-8 after percent-decoding"));
    }
    let bytes = std::mem::take(&mut *out);
    // Checked just above; the fallback never runs.
    Ok(Zeroizing::new(String::from_utf8(bytes).unwrap_or_default()))
}

const fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

// ----- recovery codes -----

/// Crockford's Base32 alphabet: no I, L, O or U, so codes read aloud and typed by hand
/// survive; on input, O reads as 0 and I, L as 1.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A set of single-use recovery codes, kept only as HMAC-SHA-256 hashes under a random
/// per-set salt. `Debug` shows how many remain, nothing else.
///
/// Store the set with [`RecoveryCodes::to_stored`] and replace it after every
/// [`RecoveryCodes::consume`] with a compare-and-swap on the previous stored text (for
/// example `UPDATE … SET codes = $new WHERE user_id = $1 AND codes = $old`), so that two
/// concurrent requests cannot both spend the same code.
///
/// ```
/// use nova_auth::totp::{RecoveryCodes, TotpError};
///
/// let (mut set, codes) = RecoveryCodes::generate(10)?;
/// let first = codes[0].expose(); // e.g. "7K2QM-X9D4T", shown to the user once
/// assert_eq!(first.len(), 11);
///
/// // Case, hyphens and spaces do not matter; a code works once.
/// let typed = first.to_lowercase().replace('-', " ");
/// assert_eq!(set.consume(&typed)?, 9);
/// assert_eq!(set.consume(first), Err(TotpError::InvalidRecoveryCode));
///
/// let stored = set.to_stored();
/// assert_eq!(RecoveryCodes::from_stored(&stored)?.remaining(), 9);
/// # Ok::<(), TotpError>(())
/// ```
#[derive(Clone)]
pub struct RecoveryCodes {
    salt: [u8; 32],
    hashes: Vec<[u8; 32]>,
}

impl RecoveryCodes {
    /// `count` fresh codes (use [`DEFAULT_RECOVERY_CODES`] unless there is a reason not
    /// to): the set to store, and the codes to show the user once, as `XXXXX-XXXXX`.
    ///
    /// # Errors
    /// [`TotpError::RecoveryCodeCount`] for 0 or more than [`MAX_RECOVERY_CODES`];
    /// [`TotpError::Random`].
    pub fn generate(count: usize) -> Result<(Self, Vec<IssuedSecret>), TotpError> {
        if !(1..=MAX_RECOVERY_CODES).contains(&count) {
            return Err(TotpError::RecoveryCodeCount);
        }
        let mut salt = [0u8; 32];
        getrandom::fill(&mut salt).map_err(|_| TotpError::Random)?;
        let mut set = Self {
            salt,
            hashes: Vec::with_capacity(count),
        };
        let mut issued = Vec::with_capacity(count);
        for _ in 0..count {
            let mut code = Zeroizing::new([0u8; RECOVERY_CODE_SYMBOLS]);
            getrandom::fill(&mut *code).map_err(|_| TotpError::Random)?;
            // 256 is a multiple of 32: masking a random byte gives an unbiased symbol.
            for c in code.iter_mut() {
                *c = CROCKFORD[usize::from(*c & 31)];
            }
            set.hashes.push(set.hash(&code));
            let mut shown = String::with_capacity(RECOVERY_CODE_SYMBOLS + 1);
            for (i, &c) in code.iter().enumerate() {
                if i == RECOVERY_CODE_SYMBOLS / 2 {
                    shown.push('-');
                }
                shown.push(char::from(c));
            }
            issued.push(IssuedSecret::new(shown));
        }
        Ok((set, issued))
    }

    /// Spends the code `presented` (case, hyphens and spaces ignored); returns how many
    /// codes remain.
    ///
    /// # Errors
    /// [`TotpError::MalformedRecoveryCode`] for input that is not 10 Crockford Base32
    /// symbols; [`TotpError::InvalidRecoveryCode`] for a code not in the set (never issued
    /// or already spent).
    pub fn consume(&mut self, presented: &str) -> Result<usize, TotpError> {
        let code = normalize_recovery_code(presented)?;
        let hash = self.hash(&code);
        // Compare with every stored hash, in constant time, without stopping at a match.
        let mut found = Choice::from(0);
        let mut index = 0u64;
        for (i, stored) in self.hashes.iter().enumerate() {
            let hit = Choice::from(u8::from(hashes_equal(&hash, stored)));
            index.conditional_assign(&(i as u64), hit);
            found |= hit;
        }
        if !bool::from(found) {
            return Err(TotpError::InvalidRecoveryCode);
        }
        let index = usize::try_from(index).map_err(|_| TotpError::InvalidRecoveryCode)?;
        self.hashes.swap_remove(index);
        Ok(self.hashes.len())
    }

    /// How many codes remain unspent.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.hashes.len()
    }

    /// The text to store: `nova-rc1$<salt>$<hash>,<hash>,…` in unpadded base64url. It holds
    /// no code, but its hashes can be searched offline: keep it where password hashes go.
    #[must_use]
    pub fn to_stored(&self) -> String {
        let mut out =
            String::with_capacity(STORED_CODES_PREFIX.len() + 46 + 44 * self.hashes.len());
        out.push_str(STORED_CODES_PREFIX);
        out.push('$');
        URL_SAFE_NO_PAD.encode_string(self.salt, &mut out);
        out.push('$');
        for (i, h) in self.hashes.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            URL_SAFE_NO_PAD.encode_string(h, &mut out);
        }
        out
    }

    /// Reads a set written by [`RecoveryCodes::to_stored`].
    ///
    /// # Errors
    /// [`TotpError::MalformedStoredCodes`] naming the problem.
    pub fn from_stored(stored: &str) -> Result<Self, TotpError> {
        if stored.len() > MAX_STORED_CODES_LEN {
            return Err(TotpError::MalformedStoredCodes("too long"));
        }
        let mut parts = stored.split('$');
        if parts.next() != Some(STORED_CODES_PREFIX) {
            return Err(TotpError::MalformedStoredCodes("unknown format"));
        }
        let (Some(salt), Some(hashes), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(TotpError::MalformedStoredCodes("wrong number of fields"));
        };
        let salt = decode_32(salt).ok_or(TotpError::MalformedStoredCodes("bad salt"))?;
        let hashes = if hashes.is_empty() {
            Vec::new()
        } else {
            hashes
                .split(',')
                .map(|h| decode_32(h).ok_or(TotpError::MalformedStoredCodes("bad hash")))
                .collect::<Result<Vec<_>, _>>()?
        };
        if hashes.len() > MAX_RECOVERY_CODES {
            return Err(TotpError::MalformedStoredCodes("too many codes"));
        }
        Ok(Self { salt, hashes })
    }

    fn hash(&self, code: &[u8; RECOVERY_CODE_SYMBOLS]) -> [u8; 32] {
        let Ok(mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.salt) else {
            unreachable!("HMAC takes keys of any length")
        };
        mac.chain_update(code).finalize().into_bytes().into()
    }
}

impl fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoveryCodes")
            .field("remaining", &self.hashes.len())
            .finish_non_exhaustive()
    }
}

/// Upper-case canonical symbols of a typed recovery code: case, hyphens and spaces ignored;
/// O read as 0 and I, L as 1 (Crockford).
fn normalize_recovery_code(
    input: &str,
) -> Result<Zeroizing<[u8; RECOVERY_CODE_SYMBOLS]>, TotpError> {
    if input.len() > MAX_RECOVERY_INPUT_LEN {
        return Err(TotpError::MalformedRecoveryCode);
    }
    let mut code = Zeroizing::new([0u8; RECOVERY_CODE_SYMBOLS]);
    let mut n = 0;
    for b in input.trim().bytes() {
        let symbol = match b.to_ascii_uppercase() {
            b'-' | b' ' => continue,
            b'O' => b'0',
            b'I' | b'L' => b'1',
            b'U' => return Err(TotpError::MalformedRecoveryCode),
            c if c.is_ascii_digit() || c.is_ascii_uppercase() => c,
            _ => return Err(TotpError::MalformedRecoveryCode),
        };
        let slot = code.get_mut(n).ok_or(TotpError::MalformedRecoveryCode)?;
        *slot = symbol;
        n += 1;
    }
    if n != RECOVERY_CODE_SYMBOLS {
        return Err(TotpError::MalformedRecoveryCode);
    }
    Ok(code)
}

/// Exactly 32 bytes of unpadded base64url, or nothing.
fn decode_32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 43 {
        return None;
    }
    let mut out = [0u8; 32];
    match URL_SAFE_NO_PAD.decode_slice(text, &mut out) {
        Ok(32) => Some(out),
        _ => None,
    }
}

// ----- when a second factor is required -----

/// What a request is about to do, as far as second factors are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Sensitive {
    /// An administrative action (user and role management, tenant settings, key rotation).
    AdminAction,
    /// A transaction that bypasses tenant row-level security.
    RlsBypass,
    /// Anything else.
    Other,
}

/// When a fresh second factor is required: for admin actions and RLS bypass always (and
/// for every action when configured), verified no longer than `max_age` ago
/// ([`DEFAULT_MFA_MAX_AGE`] unless set). A remembered device does not count: it only
/// skips the second factor at sign-in.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use nova_auth::totp::{MfaPolicy, Sensitive, TotpError};
///
/// let policy = MfaPolicy::new();
/// assert!(policy.requires_mfa(Sensitive::RlsBypass));
/// assert!(!policy.requires_mfa(Sensitive::Other));
///
/// let now = SystemTime::now();
/// let verified = now - Duration::from_secs(60);
/// assert_eq!(policy.check(Sensitive::AdminAction, Some(verified), now), Ok(()));
/// assert_eq!(policy.check(Sensitive::AdminAction, None, now), Err(TotpError::MfaRequired));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MfaPolicy {
    max_age: Duration,
    every_action: bool,
}

impl Default for MfaPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl MfaPolicy {
    /// Second factor required for admin actions and RLS bypass, fresh within
    /// [`DEFAULT_MFA_MAX_AGE`].
    #[must_use]
    pub const fn new() -> Self {
        Self {
            max_age: DEFAULT_MFA_MAX_AGE,
            every_action: false,
        }
    }

    /// How long after verification a second factor still counts.
    #[must_use]
    pub const fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Also require a second factor for [`Sensitive::Other`].
    #[must_use]
    pub const fn for_every_action(mut self) -> Self {
        self.every_action = true;
        self
    }

    /// Whether `action` needs a fresh second factor.
    #[must_use]
    pub const fn requires_mfa(&self, action: Sensitive) -> bool {
        self.every_action || matches!(action, Sensitive::AdminAction | Sensitive::RlsBypass)
    }

    /// Allows `action` when it needs no second factor, or when one was verified at
    /// `verified_at`, no longer than the maximum age before `now`.
    ///
    /// # Errors
    /// [`TotpError::MfaRequired`] otherwise (also for a verification time more than a
    /// minute in the future).
    pub fn check(
        &self,
        action: Sensitive,
        verified_at: Option<SystemTime>,
        now: SystemTime,
    ) -> Result<(), TotpError> {
        if !self.requires_mfa(action) {
            return Ok(());
        }
        let fresh = verified_at.is_some_and(|at| match now.duration_since(at) {
            Ok(age) => age <= self.max_age,
            Err(ahead) => ahead.duration() <= MFA_CLOCK_LEEWAY,
        });
        if fresh {
            Ok(())
        } else {
            Err(TotpError::MfaRequired)
        }
    }

    /// [`MfaPolicy::check`] for a request's context: allows `action` when it needs no
    /// second factor, or when the context's authentication used more than one factor
    /// ([`TenantContext::has_mfa`], from a token's `amr` or a step-up) and its second
    /// factor is no older than the maximum age ([`TenantContext::second_factor_time`]).
    ///
    /// # Errors
    /// [`TotpError::MfaRequired`] otherwise: a single factor, no authentication time, or an
    /// authentication too long ago.
    pub fn check_context(
        &self,
        action: Sensitive,
        ctx: &TenantContext,
        now: SystemTime,
    ) -> Result<(), TotpError> {
        if !self.requires_mfa(action) {
            return Ok(());
        }
        if !ctx.has_mfa() {
            return Err(TotpError::MfaRequired);
        }
        self.check(action, ctx.second_factor_time(), now)
    }
}

// ----- remember this device -----

/// Signs and verifies "remember this device" tokens: `nova_rd_` followed by base64url of
/// tenant, user, issue time and expiry, with an HMAC-SHA-256 tag that also covers the
/// device id. The device id (for example a random id kept in its own cookie) is not in
/// the token; the verifier supplies it, so a token copied to another device fails.
///
/// To forget a user's devices (after a password change, say), record the time and refuse
/// tokens whose [`RememberedDevice::issued_at`] is earlier; rotating the key forgets every
/// device.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use nova_auth::totp::{DeviceTokens, TotpError};
/// use nova_tenancy::{TenantId, UserId};
///
/// let tokens = DeviceTokens::new(&[7u8; 32])?; // load a real key from your secret store
/// let (tenant, user) = (TenantId::new_v4(), UserId::new_v4());
/// let now = SystemTime::now();
/// let token = tokens.issue_at(tenant, user, "device-4f1c", Duration::from_secs(30 * 86_400), now)?;
///
/// assert!(tokens.verify_at(token.expose(), tenant, user, "device-4f1c", now).is_ok());
/// assert_eq!(
///     tokens.verify_at(token.expose(), tenant, UserId::new_v4(), "device-4f1c", now),
///     Err(TotpError::DeviceTokenWrongUser)
/// );
/// assert_eq!(
///     tokens.verify_at(token.expose(), tenant, user, "another-device", now),
///     Err(TotpError::DeviceTokenInvalid)
/// );
/// # Ok::<(), TotpError>(())
/// ```
#[derive(Clone)]
pub struct DeviceTokens {
    mac: Hmac<Sha256>,
}

/// A verified "remember this device" token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RememberedDevice {
    /// When the token was issued (to the second).
    pub issued_at: SystemTime,
    /// When it expires (to the second).
    pub expires_at: SystemTime,
}

impl DeviceTokens {
    /// Tokens signed with `key`, at least [`MIN_DEVICE_KEY_LEN`] random bytes used for
    /// nothing else.
    ///
    /// # Errors
    /// [`TotpError::WeakDeviceKey`] for a shorter key.
    pub fn new(key: &[u8]) -> Result<Self, TotpError> {
        if key.len() < MIN_DEVICE_KEY_LEN {
            return Err(TotpError::WeakDeviceKey);
        }
        let Ok(mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
            unreachable!("HMAC takes keys of any length")
        };
        Ok(Self { mac })
    }

    /// A token for `(tenant, user)` on `device_id`, valid for `ttl` from now.
    ///
    /// # Errors
    /// As [`DeviceTokens::issue_at`].
    pub fn issue(
        &self,
        tenant: TenantId,
        user: UserId,
        device_id: &str,
        ttl: Duration,
    ) -> Result<IssuedSecret, TotpError> {
        self.issue_at(tenant, user, device_id, ttl, SystemTime::now())
    }

    /// A token for `(tenant, user)` on `device_id`, issued at `now`, valid for `ttl`.
    ///
    /// # Errors
    /// [`TotpError::DeviceId`], [`TotpError::DeviceTokenTtl`] (zero, or above
    /// [`MAX_DEVICE_TTL`]), [`TotpError::ClockBeforeEpoch`].
    pub fn issue_at(
        &self,
        tenant: TenantId,
        user: UserId,
        device_id: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedSecret, TotpError> {
        check_device_id(device_id)?;
        if ttl.is_zero() || ttl > MAX_DEVICE_TTL {
            return Err(TotpError::DeviceTokenTtl);
        }
        let issued = unix_secs(now)?;
        let expires = now
            .checked_add(ttl.max(Duration::from_secs(1)))
            .ok_or(TotpError::DeviceTokenTtl)
            .and_then(unix_secs)?;
        let mut raw = [0u8; DEVICE_PAYLOAD_LEN + DEVICE_TAG_LEN];
        raw[0] = DEVICE_TOKEN_VERSION;
        raw[1..17].copy_from_slice(tenant.as_uuid().as_bytes());
        raw[17..33].copy_from_slice(user.as_uuid().as_bytes());
        raw[33..41].copy_from_slice(&issued.to_be_bytes());
        raw[41..49].copy_from_slice(&expires.to_be_bytes());
        let tag = self.tag(&raw[..DEVICE_PAYLOAD_LEN], device_id);
        raw[DEVICE_PAYLOAD_LEN..].copy_from_slice(&tag);
        let mut token = String::with_capacity(DEVICE_TOKEN_PREFIX.len() + DEVICE_TOKEN_BODY_LEN);
        token.push_str(DEVICE_TOKEN_PREFIX);
        URL_SAFE_NO_PAD.encode_string(raw, &mut token);
        Ok(IssuedSecret::new(token))
    }

    /// Verifies `token` for `(tenant, user)` on `device_id` now.
    ///
    /// # Errors
    /// As [`DeviceTokens::verify_at`].
    pub fn verify(
        &self,
        token: &str,
        tenant: TenantId,
        user: UserId,
        device_id: &str,
    ) -> Result<RememberedDevice, TotpError> {
        self.verify_at(token, tenant, user, device_id, SystemTime::now())
    }

    /// Verifies `token` for `(tenant, user)` on `device_id` at `now`: format, then the tag
    /// in constant time, then owner, then expiry.
    ///
    /// # Errors
    /// [`TotpError::MalformedDeviceToken`]; [`TotpError::DeviceTokenInvalid`] for a tag
    /// that does not verify (altered token, another key, another device);
    /// [`TotpError::DeviceTokenWrongUser`]; [`TotpError::DeviceTokenExpired`];
    /// [`TotpError::DeviceId`]; [`TotpError::ClockBeforeEpoch`].
    pub fn verify_at(
        &self,
        token: &str,
        tenant: TenantId,
        user: UserId,
        device_id: &str,
        now: SystemTime,
    ) -> Result<RememberedDevice, TotpError> {
        check_device_id(device_id)?;
        let body = token
            .strip_prefix(DEVICE_TOKEN_PREFIX)
            .filter(|b| b.len() == DEVICE_TOKEN_BODY_LEN)
            .ok_or(TotpError::MalformedDeviceToken)?;
        let mut raw = [0u8; DEVICE_PAYLOAD_LEN + DEVICE_TAG_LEN];
        // The engine refuses padding and non-zero trailing bits: one token, one encoding.
        if URL_SAFE_NO_PAD.decode_slice(body, &mut raw) != Ok(raw.len()) {
            return Err(TotpError::MalformedDeviceToken);
        }
        let (payload, tag) = raw.split_at(DEVICE_PAYLOAD_LEN);
        if payload[0] != DEVICE_TOKEN_VERSION {
            return Err(TotpError::MalformedDeviceToken);
        }
        let expected = self.tag(payload, device_id);
        if !bool::from(expected.as_slice().ct_eq(tag)) {
            self.refused(tenant, user, "invalid");
            return Err(TotpError::DeviceTokenInvalid);
        }
        // Only a genuine token gets this far, so naming the mismatch reveals nothing.
        if payload[1..17] != tenant.as_uuid().as_bytes()[..]
            || payload[17..33] != user.as_uuid().as_bytes()[..]
        {
            self.refused(tenant, user, "wrong_user");
            return Err(TotpError::DeviceTokenWrongUser);
        }
        let issued = u64::from_be_bytes(array_8(&payload[33..41]));
        let expires = u64::from_be_bytes(array_8(&payload[41..49]));
        if unix_secs(now)? >= expires {
            return Err(TotpError::DeviceTokenExpired);
        }
        let time = |secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs));
        let (Some(issued_at), Some(expires_at)) = (time(issued), time(expires)) else {
            return Err(TotpError::MalformedDeviceToken);
        };
        Ok(RememberedDevice {
            issued_at,
            expires_at,
        })
    }

    fn tag(&self, payload: &[u8], device_id: &str) -> [u8; DEVICE_TAG_LEN] {
        let device_len = device_id.len() as u64;
        self.mac
            .clone()
            .chain_update(DEVICE_TOKEN_DOMAIN)
            .chain_update(payload)
            .chain_update(device_len.to_be_bytes())
            .chain_update(device_id.as_bytes())
            .finalize()
            .into_bytes()
            .into()
    }

    fn refused(&self, tenant: TenantId, user: UserId, reason: &'static str) {
        tracing::warn!(target: AUDIT_TARGET, event = "device_token_refused", tenant = %tenant, user = %user, reason, "remember-device token refused");
        report(
            &SecurityEvent::new("device_token_refused")
                .tenant(tenant)
                .actor(Actor::User(user))
                .details(&[("reason", &reason)]),
        );
    }
}

impl fmt::Debug for DeviceTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceTokens([REDACTED])")
    }
}

fn check_device_id(device_id: &str) -> Result<(), TotpError> {
    if device_id.is_empty() || device_id.len() > MAX_DEVICE_ID_LEN {
        return Err(TotpError::DeviceId);
    }
    Ok(())
}

fn unix_secs(time: SystemTime) -> Result<u64, TotpError> {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| TotpError::ClockBeforeEpoch)
}

fn array_8(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_symbol_and_value_agree_with_the_rfc_alphabet() {
        const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        for (v, &c) in ALPHABET.iter().enumerate() {
            assert_eq!(base32_symbol(v as u8), c);
            assert_eq!(base32_value(c), v as i16);
            assert_eq!(base32_value(c.to_ascii_lowercase()), v as i16);
        }
        let valid = |c: u8| ALPHABET.contains(&c.to_ascii_uppercase());
        for c in 0..=255u8 {
            if !valid(c) {
                assert_eq!(base32_value(c), -1, "byte {c}");
            }
        }
    }

    #[test]
    fn dynamic_truncation_matches_rfc_4226_section_5_4() {
        let mac = [
            0x1f, 0x86, 0x98, 0x69, 0x0e, 0x02, 0xca, 0x16, 0x61, 0x85, 0x50, 0xef, 0x7f, 0x19,
            0xda, 0x8e, 0x94, 0x5b, 0x55, 0x5a,
        ];
        assert_eq!(dynamic_truncation(&mac), 0x50ef_7f19);
        assert_eq!(dynamic_truncation(&mac) % 1_000_000, 872_921);
    }

    #[test]
    fn recovery_code_normalization_reads_crockford_lookalikes() {
        assert_eq!(
            &*normalize_recovery_code(" oilab-cdefg\n").unwrap(),
            b"011ABCDEFG"
        );
        for bad in ["oil-23 456 7u", "0123456789A", "012345678", "01234_56789"] {
            assert_eq!(
                normalize_recovery_code(bad).err(),
                Some(TotpError::MalformedRecoveryCode),
                "{bad}"
            );
        }
    }
}
