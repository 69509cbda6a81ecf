//! Data classification as types, and masking for logs.
//!
//! Wrap a value in the type of its class and its `Debug`/`Display` follow the class's
//! rule: [`Public`] and [`Internal`] print as they are, [`Sensitive`] prints masked
//! (through [`Mask`]), [`Restricted`] never prints at all. A value that reaches a log line
//! through `{:?}` is then safe by construction. This module must never print a
//! `Restricted` value.

use std::fmt;

use zeroize::Zeroize;

/// The four classes, from least to most protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Classification {
    /// May be published.
    Public,
    /// Inside the organisation only; safe in logs.
    Internal,
    /// Personal or confidential: encrypted at rest, masked in logs.
    Sensitive,
    /// Secrets and special-category data: encrypted at rest, never logged.
    Restricted,
}

/// How a [`Sensitive`] value shows itself in logs.
pub trait Mask {
    /// Writes a masked form (never the whole value).
    ///
    /// # Errors
    /// Formatter errors.
    fn mask(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
}

impl Mask for str {
    fn mask(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.contains('@') {
            f.write_str(&mask_email(self))
        } else {
            f.write_str(&mask_tail(self, 0))
        }
    }
}

impl Mask for String {
    fn mask(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_str().mask(f)
    }
}

macro_rules! plain_class {
    ($(#[$doc:meta])* $name:ident, $class:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, Default)]
        pub struct $name<T>(pub T);

        impl<T> $name<T> {
            /// This wrapper's classification.
            pub const CLASS: Classification = Classification::$class;

            /// The wrapped value.
            pub fn into_inner(self) -> T {
                self.0
            }
        }

        impl<T: fmt::Debug> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl<T: fmt::Display> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

plain_class!(
    /// A value that may be published.
    Public,
    Public
);
plain_class!(
    /// A value for inside the organisation; prints normally.
    Internal,
    Internal
);

/// A personal or confidential value: prints masked.
///
/// ```
/// use nova_crypto::Sensitive;
/// let email = Sensitive("alice@example.com".to_string());
/// assert_eq!(format!("{email:?}"), "a****@example.com");
/// assert_eq!(email.expose(), "alice@example.com");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Sensitive<T>(pub T);

impl<T> Sensitive<T> {
    /// This wrapper's classification.
    pub const CLASS: Classification = Classification::Sensitive;

    /// The value itself, for code that needs it (encrypting it, comparing it).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Mask> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.mask(f)
    }
}

impl<T: Mask> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.mask(f)
    }
}

/// A secret or special-category value: never prints, zeroized on drop.
///
/// ```
/// use nova_crypto::Restricted;
/// let diagnosis = Restricted::new("F32.1".to_string());
/// assert_eq!(format!("{diagnosis:?}"), "[REDACTED]");
/// assert_eq!(diagnosis.expose(), "F32.1");
/// ```
pub struct Restricted<T: Zeroize>(T);

impl<T: Zeroize> Restricted<T> {
    /// This wrapper's classification.
    pub const CLASS: Classification = Classification::Restricted;

    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> Drop for Restricted<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> fmt::Debug for Restricted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl<T: Zeroize> fmt::Display for Restricted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Masks an e-mail address: first character of the local part (none if it is only one
/// character long), then `*` for the rest; the domain stays (it is usually needed to debug
/// delivery). Not an address: fully masked.
///
/// ```
/// assert_eq!(nova_crypto::mask_email("alice@example.com"), "a****@example.com");
/// assert_eq!(nova_crypto::mask_email("not-an-email"), "************");
/// ```
#[must_use]
pub fn mask_email(email: &str) -> String {
    match email.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
            let n = local.chars().count();
            // A one-character local part would be shown whole: mask it entirely.
            let first = if n >= 2 {
                local.chars().next().unwrap_or('*')
            } else {
                '*'
            };
            format!("{first}{}@{domain}", "*".repeat(n - 1))
        }
        _ => mask_tail(email, 0),
    }
}

/// Replaces every character but the last `visible` with `*` (e.g. card or phone numbers).
/// Shows nothing when the value is not at least twice as long as `visible`.
///
/// ```
/// assert_eq!(nova_crypto::mask_tail("4111111111111111", 4), "************1111");
/// assert_eq!(nova_crypto::mask_tail("1234", 4), "****");
/// ```
#[must_use]
pub fn mask_tail(value: &str, visible: usize) -> String {
    let n = value.chars().count();
    let shown = if n >= visible.saturating_mul(2) {
        visible
    } else {
        0
    };
    let mut out = "*".repeat(n - shown);
    out.extend(value.chars().skip(n - shown));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_ordered_by_protection() {
        assert!(Classification::Public < Classification::Internal);
        assert!(Classification::Sensitive < Classification::Restricted);
    }

    #[test]
    fn masks_never_reveal_the_whole_value() {
        for v in ["a@b.c", "bob@example.org", "+44 20 7946 0958", "x"] {
            let masked = format!("{:?}", Sensitive(v.to_string()));
            assert_ne!(masked, v);
        }
        assert_eq!(
            format!("{}", Restricted::new(String::from("hunter2"))),
            "[REDACTED]"
        );
        assert_eq!(format!("{:?}", Public(5)), "5");
        assert_eq!(mask_tail("ab", 4), "**");
        assert_eq!(mask_tail("ünïcode", 2), "*****de");
    }
}
