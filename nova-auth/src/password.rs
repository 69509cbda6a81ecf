//! Passwords: Argon2id hashing in PHC strings, transparent re-hashing, and a policy whose
//! violations a UI can show. This module must never log, print or return a password, and
//! never runs Argon2 with a cost that a stored hash asks for beyond the configured ceiling.
//!
//! # Hashing and verifying
//!
//! [`Passwords`] hashes with Argon2id, version 1.3 (`0x13`), a fresh 16-byte salt from the
//! operating system's RNG and a 32-byte tag (RFC 9106 §3.1, §4), and returns a
//! [PHC string](https://github.com/P-H-C/phc-string-format/blob/master/phc-sf-spec.md) such
//! as `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`, which is all a store needs to keep.
//! Its parameters ([`Argon2Params`]) start at the OWASP Password Storage Cheat Sheet
//! minimum (m = 19 MiB, t = 2, p = 1) and can only be raised.
//!
//! [`Passwords::verify`] reads the algorithm, version, parameters and salt from the stored
//! string and answers with a [`Verified`] that says whether the hash is weaker than the
//! current configuration; [`Passwords::verify_and_rehash`] returns the replacement PHC
//! string in that case, so hashes upgrade themselves on the next successful login.
//!
//! ```
//! use nova_auth::password::{Argon2Params, Passwords, SecretString};
//!
//! let passwords = Passwords::new(Argon2Params::OWASP_MINIMUM);
//! let password = SecretString::from("correct horse battery staple");
//! let phc = passwords.hash(&password)?;
//! assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
//!
//! let verified = passwords.verify(&password, &phc)?;
//! assert!(!verified.needs_rehash());
//! assert!(passwords.verify(&SecretString::from("wrong"), &phc).is_err());
//! # Ok::<(), nova_auth::password::PasswordError>(())
//! ```
//!
//! # Policy
//!
//! [`PasswordPolicy`] checks a new password and returns *every* [`PolicyViolation`] at
//! once, each with a message and the numbers a UI needs: length (at least 12 Unicode
//! scalar values; no normalisation is applied, so a decomposed "é" counts as two),
//! optional character classes, the user's own identifiers, reuse of one of the last N
//! passwords, and a bundled list of common passwords. [`PasswordPolicy::expiry`] says
//! whether a password is due for a change.
//!
//! The defaults follow NIST SP 800-63B §3.1.1.2: a length floor, a block list, and neither
//! composition rules nor periodic expiry. The class rules, history and expiry exist because
//! some compliance regimes (PCI DSS 4.0 §8.3) still demand them; turn them on only then.
//!
//! The common-password list (`common_passwords.txt`, about 870 entries) holds passwords
//! that top the public breach corpora (RockYou and later dumps) and their obvious
//! variants, including those long enough to pass the length rule. It is a floor, not a
//! complete defence: it is not exhaustive, and a service that can afford it should also
//! consult a larger corpus (e.g. Have I Been Pwned's k-anonymity range API).
//!
//! # Security notes
//!
//! - **Untrusted PHC strings.** Stored hashes come from a database and are parsed as
//!   untrusted input: anything malformed is a typed [`PasswordError`], never a panic.
//!   Only `argon2id`, `argon2i` and `argon2d` with versions `0x10` and `0x13` and the
//!   parameters `m`, `t`, `p` are accepted; other algorithms (bcrypt, scrypt, PBKDF2) and
//!   the `keyid`/`data` parameters are refused rather than guessed at. A string without
//!   `v=` is read as version `0x10`, as the reference implementation reads it.
//! - **Cost ceiling.** A tampered row could ask for gigabytes of memory or thousands of
//!   passes and turn each login into a denial of service. Every stored hash is checked
//!   against a ceiling ([`Argon2Params::MAXIMUM`] unless [`Passwords::with_ceiling`]
//!   lowers it) *before* any memory is allocated or any hashing starts.
//! - **Input length.** Passwords longer than [`MAX_PASSWORD_LEN`] bytes are refused before
//!   hashing, and PHC strings longer than [`MAX_PHC_LEN`] before parsing.
//! - **Constant time.** Argon2 itself is the `argon2` crate's implementation: Argon2id's
//!   first half-pass uses data-independent addressing, the rest data-dependent (RFC 9106
//!   §3.4.1.3). The computed tag is compared with the stored one through `subtle`, so the
//!   comparison's time does not depend on where they differ. The early refusals above
//!   (length, format, ceiling) depend only on the inputs' shape, never on a secret.
//! - **Unknown accounts.** [`Passwords::verify_unknown_account`] spends the same time as a
//!   real verification, so a login form does not reveal which accounts exist.
//! - **Secrets.** Passwords enter as [`SecretString`] (its `Debug` prints `[REDACTED]`);
//!   lowercased copies made by the policy are zeroized on drop; no error or violation
//!   carries password text.
//!
//! # Known limits
//!
//! - Argon2's working memory (`m` KiB derived from the password) is freed by the `argon2`
//!   crate without being zeroized; its `zeroize` feature, off here, would clear only the
//!   initial and final hashes. The tag Nova computes to compare is zeroized.
//! - Hashing is synchronous and takes tens of milliseconds at the minimum parameters (and
//!   far longer in a debug build): call it from `tokio::task::spawn_blocking` in an async
//!   service.
//! - Parameters are compared one by one: OWASP's equivalent trade-offs with fewer passes
//!   and more memory (e.g. m = 46 MiB, t = 1) are refused, since `t` must not drop below 2.

use std::collections::HashSet;
use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub use secrecy::SecretString;

/// Longest password accepted, in bytes of UTF-8. Bounds the work spent on one attempt and
/// refuses megabyte "passwords" sent to burn CPU.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Longest PHC string that verification will parse. The longest string Argon2 can produce
/// within [`Argon2Params::MAXIMUM`] (64-byte salt and tag) is about 220 bytes.
pub const MAX_PHC_LEN: usize = 512;
/// Salt length of new hashes, in bytes (RFC 9106 §3.1 recommends 16).
pub const SALT_LEN: usize = 16;
/// Tag length of new hashes, in bytes (RFC 9106 §4 recommends 32).
pub const TAG_LEN: usize = 32;
/// The shortest minimum length a [`PasswordPolicy`] accepts, in Unicode scalar values.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest maximum length a [`PasswordPolicy`] accepts, in Unicode scalar values: at
/// four bytes each, a password within it always fits [`MAX_PASSWORD_LEN`].
pub const MAX_POLICY_CHARS: usize = MAX_PASSWORD_LEN / 4;
const _: () = assert!(MAX_POLICY_CHARS * 4 <= MAX_PASSWORD_LEN);
/// The longest password history a [`PasswordPolicy`] accepts. Each entry costs one Argon2
/// computation per check.
pub const MAX_HISTORY: usize = 24;
/// Identifiers (or e-mail local parts) shorter than this, in Unicode scalar values, are not
/// searched for in passwords: a two-letter user name would forbid too many passwords.
pub const MIN_IDENTIFIER_CHARS: usize = 3;

/// Argon2 works on 1 KiB blocks and needs at least 8 per lane (RFC 9106 §3.1: m ≥ 8p).
const BLOCKS_PER_LANE_MIN: u32 = 8;
/// The salt a fake verification uses ([`Passwords::verify_unknown_account`]); its value does
/// not matter, only that the work done is the same as for a real hash.
const DUMMY_SALT: [u8; SALT_LEN] = [0x4e; SALT_LEN];

/// What can go wrong hashing or verifying a password, or building a policy. No variant
/// carries password text.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PasswordError {
    /// The password does not match the stored hash.
    #[error("password does not match")]
    Mismatch,
    /// The password is empty.
    #[error("password is empty")]
    Empty,
    /// The password is longer than [`MAX_PASSWORD_LEN`] bytes.
    #[error("password longer than {max} bytes")]
    TooLong {
        /// The limit in bytes.
        max: usize,
    },
    /// The stored hash is not a well-formed Argon2 PHC string (or is longer than
    /// [`MAX_PHC_LEN`]). The reason names the part that is wrong.
    #[error("malformed password hash: {0}")]
    MalformedHash(&'static str),
    /// The stored hash names an algorithm other than Argon2 (e.g. `scrypt`). The name is a
    /// PHC identifier: at most 32 characters of `a-z`, `0-9` and `-`.
    #[error("unsupported password hash algorithm `{0}`")]
    UnsupportedAlgorithm(String),
    /// The stored hash names an Argon2 version other than `0x10` (16) or `0x13` (19).
    #[error("unsupported Argon2 version {0}")]
    UnsupportedVersion(u32),
    /// Requested hashing parameters are below the OWASP minimum.
    #[error("Argon2 parameter {param} = {value} is below the minimum {min}")]
    ParamsTooWeak {
        /// `"m"`, `"t"` or `"p"`.
        param: &'static str,
        /// The requested value.
        value: u32,
        /// The minimum ([`Argon2Params::OWASP_MINIMUM`]).
        min: u32,
    },
    /// A parameter exceeds the ceiling: a stored hash asks for more work than verification
    /// allows (a tampered or foreign row), or configured parameters exceed the ceiling.
    #[error("Argon2 parameter {param} = {value} exceeds the ceiling {max}")]
    CostTooHigh {
        /// `"m"`, `"t"` or `"p"`.
        param: &'static str,
        /// The requested value.
        value: u32,
        /// The ceiling.
        max: u32,
    },
    /// A [`PasswordPolicy`] setting is out of range; the message names it.
    #[error("invalid password policy: {0}")]
    InvalidPolicy(&'static str),
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Rng,
    /// Argon2 refused inputs that Nova had already validated (a bug, not bad input).
    #[error("password hashing failed")]
    Hashing,
}

// ----- parameters -----

/// Argon2 cost parameters: memory `m` in KiB, passes `t`, lanes `p`.
///
/// [`Argon2Params::new`] only builds parameters at or above
/// [`Argon2Params::OWASP_MINIMUM`] and at or below [`Argon2Params::MAXIMUM`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Argon2Params {
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
}

impl Argon2Params {
    /// The OWASP Password Storage Cheat Sheet minimum for Argon2id: 19 MiB, 2 passes,
    /// 1 lane. The default.
    pub const OWASP_MINIMUM: Self = Self {
        m_cost: 19 * 1024,
        t_cost: 2,
        p_cost: 1,
    };

    /// The most any hash may ask for: 256 MiB, 10 passes, 16 lanes. The default verification
    /// ceiling, and the upper bound of [`Argon2Params::new`].
    pub const MAXIMUM: Self = Self {
        m_cost: 256 * 1024,
        t_cost: 10,
        p_cost: 16,
    };

    /// Parameters with `m_cost_kib` KiB of memory, `t_cost` passes and `p_cost` lanes.
    ///
    /// # Errors
    ///
    /// [`PasswordError::ParamsTooWeak`] if any is below [`Argon2Params::OWASP_MINIMUM`],
    /// [`PasswordError::CostTooHigh`] if any is above [`Argon2Params::MAXIMUM`].
    ///
    /// ```
    /// use nova_auth::password::{Argon2Params, PasswordError};
    ///
    /// let stronger = Argon2Params::new(64 * 1024, 3, 1)?;
    /// assert_eq!(stronger.m_cost_kib(), 65_536);
    /// assert!(matches!(
    ///     Argon2Params::new(4096, 2, 1),
    ///     Err(PasswordError::ParamsTooWeak { param: "m", .. })
    /// ));
    /// # Ok::<(), PasswordError>(())
    /// ```
    pub fn new(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<Self, PasswordError> {
        let requested = Self {
            m_cost: m_cost_kib,
            t_cost,
            p_cost,
        };
        let min = Self::OWASP_MINIMUM;
        for (param, value, floor) in [
            ("m", m_cost_kib, min.m_cost),
            ("t", t_cost, min.t_cost),
            ("p", p_cost, min.p_cost),
        ] {
            if value < floor {
                return Err(PasswordError::ParamsTooWeak {
                    param,
                    value,
                    min: floor,
                });
            }
        }
        requested.within(&Self::MAXIMUM)?;
        Ok(requested)
    }

    /// Memory cost in KiB.
    #[must_use]
    pub const fn m_cost_kib(&self) -> u32 {
        self.m_cost
    }

    /// Number of passes over memory.
    #[must_use]
    pub const fn t_cost(&self) -> u32 {
        self.t_cost
    }

    /// Degree of parallelism (lanes).
    #[must_use]
    pub const fn p_cost(&self) -> u32 {
        self.p_cost
    }

    /// `Ok` if no parameter exceeds `ceiling`; otherwise the first that does.
    fn within(&self, ceiling: &Self) -> Result<(), PasswordError> {
        for (param, value, max) in [
            ("m", self.m_cost, ceiling.m_cost),
            ("t", self.t_cost, ceiling.t_cost),
            ("p", self.p_cost, ceiling.p_cost),
        ] {
            if value > max {
                return Err(PasswordError::CostTooHigh { param, value, max });
            }
        }
        Ok(())
    }

    /// Whether any parameter is below the same parameter of `current`.
    fn weaker_than(&self, current: &Self) -> bool {
        self.m_cost < current.m_cost || self.t_cost < current.t_cost || self.p_cost < current.p_cost
    }
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self::OWASP_MINIMUM
    }
}

// ----- hashing and verification -----

/// Argon2id password hashing into PHC strings, with verification that upgrades old hashes.
///
/// `Passwords` holds no secret and is cheap to clone; build one at start-up and share it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passwords {
    params: Argon2Params,
    ceiling: Argon2Params,
}

impl Default for Passwords {
    /// [`Argon2Params::OWASP_MINIMUM`], with the ceiling at [`Argon2Params::MAXIMUM`].
    fn default() -> Self {
        Self::new(Argon2Params::OWASP_MINIMUM)
    }
}

/// The outcome of a successful verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Verified {
    needs_rehash: bool,
}

impl Verified {
    /// Whether the stored hash is weaker than the current configuration (another algorithm
    /// than Argon2id, version `0x10`, any of m/t/p lower, or a salt or tag shorter than
    /// Nova writes) and should be replaced by a fresh hash of the password just verified.
    #[must_use]
    pub fn needs_rehash(&self) -> bool {
        self.needs_rehash
    }
}

/// A stored hash, parsed and checked against the ceiling; nothing has been computed yet.
struct Stored {
    algorithm: Algorithm,
    version: Version,
    params: Argon2Params,
    salt: [u8; 64],
    salt_len: usize,
    tag: argon2::password_hash::Output,
}

impl Stored {
    fn needs_rehash(&self, current: &Argon2Params) -> bool {
        self.algorithm != Algorithm::Argon2id
            || self.version != Version::V0x13
            || self.params.weaker_than(current)
            || self.salt_len < SALT_LEN
            || self.tag.len() < TAG_LEN
    }
}

impl Passwords {
    /// Hashing with `params` (already checked by [`Argon2Params::new`]), verifying any hash
    /// up to [`Argon2Params::MAXIMUM`].
    #[must_use]
    pub fn new(params: Argon2Params) -> Self {
        Self {
            params,
            ceiling: Argon2Params::MAXIMUM,
        }
    }

    /// Lowers the ceiling that stored hashes must stay within. When every hash in a store
    /// was written by this configuration, the ceiling can equal the parameters, so that a
    /// tampered row can cost no more than a real one.
    ///
    /// # Errors
    ///
    /// [`PasswordError::CostTooHigh`] if the hashing parameters exceed `ceiling` (Nova
    /// could not verify its own hashes).
    pub fn with_ceiling(mut self, ceiling: Argon2Params) -> Result<Self, PasswordError> {
        self.params.within(&ceiling)?;
        self.ceiling = ceiling;
        Ok(self)
    }

    /// The parameters new hashes get.
    #[must_use]
    pub fn params(&self) -> Argon2Params {
        self.params
    }

    /// The most a stored hash may ask for.
    #[must_use]
    pub fn ceiling(&self) -> Argon2Params {
        self.ceiling
    }

    /// Hashes `password` with Argon2id and a fresh random salt; returns the PHC string to
    /// store.
    ///
    /// # Errors
    ///
    /// [`PasswordError::Empty`], [`PasswordError::TooLong`], [`PasswordError::Rng`].
    pub fn hash(&self, password: &SecretString) -> Result<String, PasswordError> {
        let password = password_bytes(password)?;
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|_| PasswordError::Rng)?;
        self.hash_with_salt(password, &salt)
    }

    fn hash_with_salt(&self, password: &[u8], salt: &[u8]) -> Result<String, PasswordError> {
        let salt = SaltString::encode_b64(salt).map_err(|_| PasswordError::Hashing)?;
        let params = Params::new(
            self.params.m_cost,
            self.params.t_cost,
            self.params.p_cost,
            Some(TAG_LEN),
        )
        .map_err(|_| PasswordError::Hashing)?;
        let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(password, &salt)
            .map_err(|_| PasswordError::Hashing)?;
        Ok(hash.to_string())
    }

    /// Verifies `password` against a stored PHC string.
    ///
    /// The string is untrusted: it is parsed and checked against the ceiling before any
    /// hashing. On a match, the [`Verified`] says whether to re-hash.
    ///
    /// # Errors
    ///
    /// [`PasswordError::Mismatch`] for a wrong password; [`PasswordError::Empty`] or
    /// [`PasswordError::TooLong`] for a password no hash can hold;
    /// [`PasswordError::MalformedHash`], [`PasswordError::UnsupportedAlgorithm`],
    /// [`PasswordError::UnsupportedVersion`] or [`PasswordError::CostTooHigh`] for a
    /// stored string that cannot be used.
    pub fn verify(&self, password: &SecretString, phc: &str) -> Result<Verified, PasswordError> {
        let password = password_bytes(password)?;
        let stored = parse_stored(phc, &self.ceiling)?;
        if compute_matches(&stored, password)? {
            Ok(Verified {
                needs_rehash: stored.needs_rehash(&self.params),
            })
        } else {
            Err(PasswordError::Mismatch)
        }
    }

    /// Verifies like [`Passwords::verify`] and, when the stored hash is due for an upgrade,
    /// returns the replacement PHC string to store (`Ok(None)`: the stored hash is current).
    ///
    /// ```
    /// use nova_auth::password::{Passwords, SecretString};
    ///
    /// // An old, weak hash of "password" (a published Argon2 reference vector).
    /// let stored = "$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4";
    /// let passwords = Passwords::default();
    /// let password = SecretString::from("password");
    ///
    /// let upgraded = passwords.verify_and_rehash(&password, stored)?.expect("weaker than current");
    /// assert!(upgraded.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    /// assert_eq!(passwords.verify_and_rehash(&password, &upgraded)?, None);
    /// # Ok::<(), nova_auth::password::PasswordError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Passwords::verify`], and [`PasswordError::Rng`] if the new salt cannot be drawn.
    pub fn verify_and_rehash(
        &self,
        password: &SecretString,
        phc: &str,
    ) -> Result<Option<String>, PasswordError> {
        if self.verify(password, phc)?.needs_rehash() {
            self.hash(password).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Whether a stored PHC string is weaker than the current configuration, without a
    /// password and without hashing: for reporting how many stored hashes are still old.
    ///
    /// # Errors
    ///
    /// As [`Passwords::verify`] for a stored string that cannot be used.
    pub fn needs_rehash(&self, phc: &str) -> Result<bool, PasswordError> {
        Ok(parse_stored(phc, &self.ceiling)?.needs_rehash(&self.params))
    }

    /// Spends the time of one verification at the current parameters and always fails, for
    /// a login whose account does not exist: without it, the fast answer for unknown
    /// accounts tells an attacker which ones exist.
    ///
    /// # Errors
    ///
    /// Always: [`PasswordError::Mismatch`], or the error [`Passwords::verify`] gives for an
    /// empty or over-long password.
    pub fn verify_unknown_account(
        &self,
        password: &SecretString,
    ) -> Result<Verified, PasswordError> {
        let password = password_bytes(password)?;
        // Hash and parse like a real verification so the two take the same time.
        let phc = self.hash_with_salt(password, &DUMMY_SALT)?;
        let stored = parse_stored(&phc, &self.ceiling)?;
        std::hint::black_box(&stored.tag);
        Err(PasswordError::Mismatch)
    }
}

fn password_bytes(password: &SecretString) -> Result<&[u8], PasswordError> {
    let bytes = password.expose_secret().as_bytes();
    if bytes.is_empty() {
        Err(PasswordError::Empty)
    } else if bytes.len() > MAX_PASSWORD_LEN {
        Err(PasswordError::TooLong {
            max: MAX_PASSWORD_LEN,
        })
    } else {
        Ok(bytes)
    }
}

/// Parses an untrusted PHC string and checks its cost against `ceiling`. Nothing here
/// allocates more than the string's size or runs Argon2.
fn parse_stored(phc: &str, ceiling: &Argon2Params) -> Result<Stored, PasswordError> {
    use PasswordError::MalformedHash;

    if phc.len() > MAX_PHC_LEN {
        return Err(MalformedHash("longer than the maximum PHC string length"));
    }
    let hash = PasswordHash::new(phc).map_err(|_| MalformedHash("not a PHC string"))?;
    let algorithm = match hash.algorithm.as_str() {
        "argon2id" => Algorithm::Argon2id,
        "argon2i" => Algorithm::Argon2i,
        "argon2d" => Algorithm::Argon2d,
        other => return Err(PasswordError::UnsupportedAlgorithm(other.to_owned())),
    };
    // The reference implementation writes no `v=` for version 1.0 and reads its absence as
    // 1.0 (phc-winner-argon2 `decode_string`); the `argon2` crate would assume 1.3.
    let version = match hash.version {
        Some(0x13) => Version::V0x13,
        Some(0x10) | None => Version::V0x10,
        Some(other) => return Err(PasswordError::UnsupportedVersion(other)),
    };

    let (mut m, mut t, mut p) = (None, None, None);
    for (name, value) in hash.params.iter() {
        let slot = match name.as_str() {
            "m" => &mut m,
            "t" => &mut t,
            "p" => &mut p,
            // `keyid` implies a secret key Nova does not have; `data` is never written by
            // Nova; anything else is not Argon2.
            _ => return Err(MalformedHash("parameter other than m, t and p")),
        };
        if slot.is_some() {
            return Err(MalformedHash("repeated parameter"));
        }
        *slot = Some(
            value
                .decimal()
                .map_err(|_| MalformedHash("parameter is not a decimal number"))?,
        );
    }
    let (Some(m_cost), Some(t_cost), Some(p_cost)) = (m, t, p) else {
        return Err(MalformedHash("missing m, t or p"));
    };
    let params = Argon2Params {
        m_cost,
        t_cost,
        p_cost,
    };
    // The denial-of-service check comes before anything that costs memory or time.
    params.within(ceiling)?;
    if t_cost == 0 || p_cost == 0 {
        return Err(MalformedHash("t and p must be at least 1"));
    }
    if m_cost < BLOCKS_PER_LANE_MIN * p_cost {
        return Err(MalformedHash("m must be at least 8 KiB per lane"));
    }

    let salt_b64 = hash.salt.ok_or(MalformedHash("missing salt"))?;
    let mut salt = [0u8; 64];
    let salt_len = salt_b64
        .decode_b64(&mut salt)
        .map_err(|_| MalformedHash("salt is not valid base64"))?
        .len();
    if salt_len < argon2::MIN_SALT_LEN {
        return Err(MalformedHash("salt shorter than 8 bytes"));
    }
    let tag = hash.hash.ok_or(MalformedHash("missing hash"))?;
    Ok(Stored {
        algorithm,
        version,
        params,
        salt,
        salt_len,
        tag,
    })
}

/// Runs Argon2 with the stored hash's settings and compares tags in constant time.
fn compute_matches(stored: &Stored, password: &[u8]) -> Result<bool, PasswordError> {
    let expected = stored.tag.as_bytes();
    let params = Params::new(
        stored.params.m_cost,
        stored.params.t_cost,
        stored.params.p_cost,
        Some(expected.len()),
    )
    .map_err(|_| PasswordError::MalformedHash("parameters refused by Argon2"))?;
    let mut computed = Zeroizing::new([0u8; 64]);
    let computed = computed
        .get_mut(..expected.len())
        .ok_or(PasswordError::Hashing)?;
    Argon2::new(stored.algorithm, stored.version, params)
        .hash_password_into(password, &stored.salt[..stored.salt_len], computed)
        .map_err(|_| PasswordError::Hashing)?;
    Ok(bool::from(computed.ct_eq(expected)))
}

// ----- policy -----

/// A class of characters a [`PasswordPolicy`] can require.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CharClass {
    /// A lowercase letter in any script (`char::is_lowercase`).
    Lowercase,
    /// An uppercase letter in any script (`char::is_uppercase`).
    Uppercase,
    /// A digit or other numeric character (`char::is_numeric`).
    Digit,
    /// Anything else that is not a letter, digit or control character: punctuation,
    /// symbols, spaces, emoji. Letters of scripts without case (e.g. Han) count in no class.
    Symbol,
}

impl CharClass {
    /// The four classes, in the order violations list them.
    pub const ALL: [CharClass; 4] = [
        CharClass::Lowercase,
        CharClass::Uppercase,
        CharClass::Digit,
        CharClass::Symbol,
    ];

    fn of(c: char) -> Option<Self> {
        if c.is_lowercase() {
            Some(Self::Lowercase)
        } else if c.is_uppercase() {
            Some(Self::Uppercase)
        } else if c.is_numeric() {
            Some(Self::Digit)
        } else if c.is_alphabetic() || c.is_control() {
            None
        } else {
            Some(Self::Symbol)
        }
    }

    const fn index(self) -> usize {
        match self {
            Self::Lowercase => 0,
            Self::Uppercase => 1,
            Self::Digit => 2,
            Self::Symbol => 3,
        }
    }
}

impl fmt::Display for CharClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Lowercase => "lowercase letter",
            Self::Uppercase => "uppercase letter",
            Self::Digit => "digit",
            Self::Symbol => "symbol",
        })
    }
}

/// One way a new password fails a [`PasswordPolicy`]. The `Display` text is written for
/// the person choosing the password; the fields carry what a UI needs to phrase its own.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyViolation {
    /// Fewer Unicode scalar values than the minimum.
    #[error("use at least {min} characters (this has {actual})")]
    TooShort {
        /// The minimum.
        min: usize,
        /// The password's length.
        actual: usize,
    },
    /// More Unicode scalar values than the maximum.
    #[error("use at most {max} characters (this has {actual})")]
    TooLong {
        /// The maximum.
        max: usize,
        /// The password's length.
        actual: usize,
    },
    /// A required class of characters is missing.
    #[error("include at least one {class}")]
    MissingClass {
        /// The missing class.
        class: CharClass,
    },
    /// Fewer distinct classes than the policy asks for.
    #[error(
        "use at least {required} of: lowercase letters, uppercase letters, digits, symbols \
         (this has {actual})"
    )]
    TooFewClasses {
        /// The number of classes required.
        required: usize,
        /// The number present.
        actual: usize,
    },
    /// The password contains the user's name or e-mail address (local part).
    #[error("do not include your user name or e-mail address")]
    ContainsIdentifier,
    /// The password is on the bundled list of common passwords.
    #[error("this password is too common; choose one that is harder to guess")]
    Common,
    /// The password equals one of the recent ones.
    #[error("choose a password you have not used for your last {history} passwords")]
    Reused {
        /// How many previous passwords the policy remembers.
        history: usize,
    },
}

/// Where a password stands against the policy's maximum age.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expiry {
    /// Not close to expiry (or the policy sets no maximum age).
    Fresh,
    /// Expires within the warning period.
    ExpiresSoon {
        /// Days left, rounded up (at least 1).
        in_days: u64,
    },
    /// Past the maximum age: require a change.
    Expired,
}

/// The rules a new password must meet. Build with [`PasswordPolicy::builder`]; the default
/// is at least 12 and at most 128 characters, not common, not containing the user's
/// identifiers, with no class rules, no history and no expiry.
///
/// ```
/// use nova_auth::password::{
///     Candidate, CharClass, PasswordPolicy, Passwords, PolicyViolation, SecretString,
/// };
///
/// let policy = PasswordPolicy::builder().require(CharClass::Digit).build()?;
/// let passwords = Passwords::default();
/// let password = SecretString::from("alice2024");
/// let candidate = Candidate::new(&password).identifiers(&["alice@example.com"]);
///
/// let violations = policy.check(&passwords, &candidate).unwrap_err();
/// assert_eq!(
///     violations,
///     [
///         PolicyViolation::TooShort { min: 12, actual: 9 },
///         PolicyViolation::ContainsIdentifier,
///     ]
/// );
/// assert_eq!(violations[0].to_string(), "use at least 12 characters (this has 9)");
/// # Ok::<(), nova_auth::password::PasswordError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordPolicy {
    min_chars: usize,
    max_chars: usize,
    required: [bool; 4],
    min_classes: usize,
    history: usize,
    max_age: Option<Duration>,
    warn_before: Duration,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_chars: MIN_PASSWORD_CHARS,
            max_chars: 128,
            required: [false; 4],
            min_classes: 0,
            history: 0,
            max_age: None,
            warn_before: Duration::from_secs(14 * SECONDS_PER_DAY),
        }
    }
}

const SECONDS_PER_DAY: u64 = 86_400;

/// A new password and what to compare it with, for [`PasswordPolicy::check`]. Its `Debug`
/// shows neither the password nor the previous hashes.
pub struct Candidate<'a> {
    password: &'a SecretString,
    identifiers: Vec<&'a str>,
    previous_hashes: Vec<&'a str>,
}

impl<'a> Candidate<'a> {
    /// A candidate for `password`, with no identifiers and no history yet.
    #[must_use]
    pub fn new(password: &'a SecretString) -> Self {
        Self {
            password,
            identifiers: Vec::new(),
            previous_hashes: Vec::new(),
        }
    }

    /// The user's identifiers (user name, e-mail address, display name). For an e-mail
    /// address only the local part is searched for; matching ignores case.
    #[must_use]
    pub fn identifiers<S: AsRef<str>>(mut self, identifiers: &'a [S]) -> Self {
        self.identifiers
            .extend(identifiers.iter().map(AsRef::as_ref));
        self
    }

    /// The user's previous PHC strings, newest first; the policy compares the password with
    /// the first [`PasswordPolicy::history_len`] of them. An entry that cannot be checked
    /// (malformed, another algorithm, over the ceiling) is skipped with a warning in the
    /// log, so a damaged row cannot block password changes.
    #[must_use]
    pub fn previous_hashes<S: AsRef<str>>(mut self, hashes: &'a [S]) -> Self {
        self.previous_hashes
            .extend(hashes.iter().map(AsRef::as_ref));
        self
    }
}

impl fmt::Debug for Candidate<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Candidate")
            .field("password", &"[REDACTED]")
            .field("identifiers", &self.identifiers.len())
            .field("previous_hashes", &self.previous_hashes.len())
            .finish()
    }
}

impl PasswordPolicy {
    /// A builder starting from the defaults.
    pub fn builder() -> PasswordPolicyBuilder {
        PasswordPolicyBuilder {
            policy: Self::default(),
        }
    }

    /// The minimum length in Unicode scalar values.
    #[must_use]
    pub fn min_length(&self) -> usize {
        self.min_chars
    }

    /// The maximum length in Unicode scalar values.
    #[must_use]
    pub fn max_length(&self) -> usize {
        self.max_chars
    }

    /// How many previous passwords a new one must differ from.
    #[must_use]
    pub fn history_len(&self) -> usize {
        self.history
    }

    /// Checks a new password; `Err` holds every violation, in a stable order (length,
    /// classes, identifiers, common list, history).
    ///
    /// Comparing with the history runs Argon2 once per remembered hash with `passwords`
    /// (up to [`MAX_HISTORY`] times); the other rules cost microseconds.
    pub fn check(
        &self,
        passwords: &Passwords,
        candidate: &Candidate<'_>,
    ) -> Result<(), Vec<PolicyViolation>> {
        let password = candidate.password.expose_secret();
        let mut violations = Vec::new();

        let (length, classes) = scan(password);
        if length < self.min_chars {
            violations.push(PolicyViolation::TooShort {
                min: self.min_chars,
                actual: length,
            });
        }
        if length > self.max_chars {
            violations.push(PolicyViolation::TooLong {
                max: self.max_chars,
                actual: length,
            });
        }
        for class in CharClass::ALL {
            if self.required[class.index()] && !classes[class.index()] {
                violations.push(PolicyViolation::MissingClass { class });
            }
        }
        let present = classes.iter().filter(|&&c| c).count();
        if present < self.min_classes {
            violations.push(PolicyViolation::TooFewClasses {
                required: self.min_classes,
                actual: present,
            });
        }

        let lowered = Zeroizing::new(password.to_lowercase());
        if candidate
            .identifiers
            .iter()
            .filter_map(|id| identifier_needle(id))
            .any(|needle| lowered.contains(needle.as_str()))
        {
            violations.push(PolicyViolation::ContainsIdentifier);
        }
        if common_passwords().contains(lowered.as_str()) {
            violations.push(PolicyViolation::Common);
        }
        if self.history > 0 && self.reuses_previous(passwords, candidate) {
            violations.push(PolicyViolation::Reused {
                history: self.history,
            });
        }

        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations)
        }
    }

    fn reuses_previous(&self, passwords: &Passwords, candidate: &Candidate<'_>) -> bool {
        for phc in candidate.previous_hashes.iter().take(self.history) {
            match passwords.verify(candidate.password, phc) {
                Ok(_) => return true,
                Err(PasswordError::Mismatch) => {}
                // An empty or over-long password matches no stored hash.
                Err(PasswordError::Empty | PasswordError::TooLong { .. }) => return false,
                Err(error) => {
                    tracing::warn!(%error, "a previous password hash could not be compared");
                }
            }
        }
        false
    }

    /// Where a password last changed at `changed_at` stands at `now`. Always
    /// [`Expiry::Fresh`] without a maximum age; a `changed_at` in the future (clock skew)
    /// counts as changed just now.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use nova_auth::password::{Expiry, PasswordPolicy};
    ///
    /// const DAY: Duration = Duration::from_secs(86_400);
    /// let policy = PasswordPolicy::builder().max_age(90 * DAY).warn_before(14 * DAY).build()?;
    /// let changed = SystemTime::UNIX_EPOCH;
    /// assert_eq!(policy.expiry(changed, changed + 10 * DAY), Expiry::Fresh);
    /// assert_eq!(policy.expiry(changed, changed + 85 * DAY), Expiry::ExpiresSoon { in_days: 5 });
    /// assert_eq!(policy.expiry(changed, changed + 90 * DAY), Expiry::Expired);
    /// # Ok::<(), nova_auth::password::PasswordError>(())
    /// ```
    #[must_use]
    pub fn expiry(&self, changed_at: SystemTime, now: SystemTime) -> Expiry {
        let Some(max_age) = self.max_age else {
            return Expiry::Fresh;
        };
        let age = now.duration_since(changed_at).unwrap_or(Duration::ZERO);
        match max_age.checked_sub(age) {
            None | Some(Duration::ZERO) => Expiry::Expired,
            Some(left) if left <= self.warn_before => Expiry::ExpiresSoon {
                in_days: left.as_secs().div_ceil(SECONDS_PER_DAY).max(1),
            },
            Some(_) => Expiry::Fresh,
        }
    }
}

/// Length in Unicode scalar values and which classes occur, in one pass.
fn scan(password: &str) -> (usize, [bool; 4]) {
    let mut classes = [false; 4];
    let mut length = 0;
    for c in password.chars() {
        length += 1;
        if let Some(class) = CharClass::of(c) {
            classes[class.index()] = true;
        }
    }
    (length, classes)
}

/// The lowercased text to search for in a password: the local part of an e-mail address,
/// or the whole identifier; `None` if too short to search for.
fn identifier_needle(identifier: &str) -> Option<String> {
    let identifier = identifier.trim();
    let local = identifier
        .rsplit_once('@')
        .map_or(identifier, |(local, _domain)| local);
    let needle = local.to_lowercase();
    (needle.chars().count() >= MIN_IDENTIFIER_CHARS).then_some(needle)
}

/// The bundled list: lowercase, one per line, sorted and unique (a unit test keeps it so).
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

fn common_passwords() -> &'static HashSet<&'static str, foldhash::fast::RandomState> {
    static SET: OnceLock<HashSet<&'static str, foldhash::fast::RandomState>> = OnceLock::new();
    SET.get_or_init(|| {
        COMMON_PASSWORDS
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect()
    })
}

/// Builds a [`PasswordPolicy`]; [`PasswordPolicyBuilder::build`] refuses settings that are
/// weaker than Nova's floor or contradict each other.
#[derive(Clone, Debug)]
#[must_use]
pub struct PasswordPolicyBuilder {
    policy: PasswordPolicy,
}

impl PasswordPolicyBuilder {
    /// Minimum length in Unicode scalar values; at least [`MIN_PASSWORD_CHARS`].
    pub fn min_length(mut self, chars: usize) -> Self {
        self.policy.min_chars = chars;
        self
    }

    /// Maximum length in Unicode scalar values; at most [`MAX_POLICY_CHARS`].
    pub fn max_length(mut self, chars: usize) -> Self {
        self.policy.max_chars = chars;
        self
    }

    /// Requires at least one character of `class`.
    pub fn require(mut self, class: CharClass) -> Self {
        self.policy.required[class.index()] = true;
        self
    }

    /// Requires characters from at least `n` of the four classes (0 to 4).
    pub fn min_classes(mut self, n: usize) -> Self {
        self.policy.min_classes = n;
        self
    }

    /// Refuses a password equal to any of the last `n` (at most [`MAX_HISTORY`]).
    pub fn history(mut self, n: usize) -> Self {
        self.policy.history = n;
        self
    }

    /// Passwords expire `age` after they were set.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.policy.max_age = Some(age);
        self
    }

    /// How long before expiry [`PasswordPolicy::expiry`] starts warning (default 14 days).
    pub fn warn_before(mut self, period: Duration) -> Self {
        self.policy.warn_before = period;
        self
    }

    /// The policy.
    ///
    /// # Errors
    ///
    /// [`PasswordError::InvalidPolicy`] naming the setting that is out of range.
    pub fn build(self) -> Result<PasswordPolicy, PasswordError> {
        let p = self.policy;
        let invalid = PasswordError::InvalidPolicy;
        if p.min_chars < MIN_PASSWORD_CHARS {
            return Err(invalid("min_length must be at least 12"));
        }
        if p.max_chars > MAX_POLICY_CHARS {
            return Err(invalid("max_length must be at most 256"));
        }
        if p.max_chars < p.min_chars {
            return Err(invalid("max_length must not be below min_length"));
        }
        if p.min_classes > CharClass::ALL.len() {
            return Err(invalid("min_classes must be at most 4"));
        }
        if p.history > MAX_HISTORY {
            return Err(invalid("history must be at most 24"));
        }
        if let Some(max_age) = p.max_age {
            if max_age.is_zero() {
                return Err(invalid("max_age must be positive"));
            }
            if p.warn_before >= max_age {
                return Err(invalid("warn_before must be shorter than max_age"));
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_list_is_lowercase_sorted_and_unique() {
        let lines: Vec<&str> = COMMON_PASSWORDS.lines().collect();
        assert!(lines.len() >= 500, "only {} entries", lines.len());
        for pair in lines.windows(2) {
            assert!(pair[0] < pair[1], "not sorted or repeated: {pair:?}");
        }
        for line in &lines {
            assert_eq!(*line, line.trim());
            assert_eq!(*line, line.to_lowercase());
            assert!(!line.is_empty());
        }
        assert_eq!(common_passwords().len(), lines.len());
    }

    #[test]
    fn default_parameters_are_within_the_default_ceiling() {
        assert!(
            Argon2Params::OWASP_MINIMUM
                .within(&Argon2Params::MAXIMUM)
                .is_ok()
        );
    }
}
