//! Key-encryption keys (KEKs): ids, versions, secret material, and the [`KeyProvider`] trait
//! that resolves them — with a local provider for development and the shape of a KMS one.
//!
//! Key bytes live only in [`SecretKey`], which zeroizes on drop and prints `[REDACTED]`.
//! This module must never expose key bytes through `Debug`, `Display` or an error.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use base64::Engine as _;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{CryptoError, DecodeError};

/// Length of every key in this crate: 256 bits.
pub const KEY_LEN: usize = 32;
/// Longest key id, in bytes.
pub const KEY_ID_MAX_LEN: usize = 64;

/// A 256-bit secret key. Zeroized on drop; `Debug` prints `[REDACTED]`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// Wraps key bytes (the caller's copy should be zeroized by the caller).
    #[must_use]
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// A fresh key from the operating system's random number generator.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the generator fails.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = [0u8; KEY_LEN];
        getrandom::fill(&mut bytes).map_err(|_| CryptoError::Rng)?;
        Ok(Self(bytes))
    }

    /// Decodes standard base64 (padded or not, surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`CryptoError::KeyMaterialInvalid`] when the text is not base64 of exactly 32 bytes.
    pub fn from_base64(text: &str, source_name: &str) -> Result<Self, CryptoError> {
        let invalid = || CryptoError::KeyMaterialInvalid {
            source_name: source_name.to_owned(),
            expected: KEY_LEN,
        };
        let trimmed = text.trim();
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(trimmed)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
                .map_err(|_| invalid())?,
        );
        let bytes: [u8; KEY_LEN] = decoded.as_slice().try_into().map_err(|_| invalid())?;
        Ok(Self(bytes))
    }

    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([REDACTED])")
    }
}

/// A key id: 1–64 bytes of `[a-z0-9._:-]`, starting with a letter (e.g. `root`, `kms:eu-1`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(Arc<str>);

impl KeyId {
    /// Validates a key id.
    ///
    /// # Errors
    /// [`DecodeError::BadKeyId`] for an empty, long or oddly spelled id.
    pub fn new(s: &str) -> Result<Self, DecodeError> {
        Self::from_bytes(s.as_bytes())
    }

    /// Validates a key id given as bytes (as read from an envelope header).
    ///
    /// # Errors
    /// [`DecodeError::BadKeyId`] for an empty, long or oddly spelled id.
    pub fn from_bytes(b: &[u8]) -> Result<Self, DecodeError> {
        let ok = !b.is_empty()
            && b.len() <= KEY_ID_MAX_LEN
            && b[0].is_ascii_lowercase()
            && b.iter().all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, b'.' | b'_' | b':' | b'-')
            });
        if !ok {
            return Err(DecodeError::BadKeyId);
        }
        // All bytes are ASCII, so this cannot fail.
        let s = std::str::from_utf8(b).map_err(|_| DecodeError::BadKeyId)?;
        Ok(Self(Arc::from(s)))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({:?})", &*self.0)
    }
}

/// A key version. Versions start at 1 and only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyVersion(u32);

impl KeyVersion {
    /// The first version.
    pub const FIRST: Self = Self(1);

    /// Validates a version number.
    ///
    /// # Errors
    /// [`DecodeError::BadKeyVersion`] for zero.
    pub fn new(v: u32) -> Result<Self, DecodeError> {
        if v == 0 {
            Err(DecodeError::BadKeyVersion)
        } else {
            Ok(Self(v))
        }
    }

    /// The number.
    #[must_use]
    pub fn get(self) -> u32 {
        self.0
    }

    /// The next version.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeyOperation`] when versions are exhausted.
    pub fn next(self) -> Result<Self, CryptoError> {
        self.0
            .checked_add(1)
            .map(Self)
            .ok_or(CryptoError::InvalidKeyOperation("key versions exhausted"))
    }
}

impl fmt::Display for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Whether a key version can still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyState {
    /// Usable; the primary version encrypts, every enabled version decrypts.
    Enabled,
    /// Destroyed: its material is gone and nothing it protected can be read.
    Destroyed,
}

/// What a provider knows about one version of a key (no material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The version.
    pub version: KeyVersion,
    /// When the version was created.
    pub created_at: SystemTime,
    /// Enabled or destroyed.
    pub state: KeyState,
    /// Whether new data is encrypted under this version.
    pub primary: bool,
}

/// Resolves key-encryption keys by id and version.
///
/// A KMS or Vault provider implements this by unwrapping the KEK once (at start-up or on
/// first use) and holding it in a [`SecretKey`]; the per-field path never calls the
/// provider, because derived keys are cached by the [`crate::Keyring`]. See
/// [`WrappedKeyProvider`] for the shape of such a provider.
pub trait KeyProvider: Send + Sync {
    /// The material of one version. Destroyed versions return
    /// [`CryptoError::KekDestroyed`].
    ///
    /// # Errors
    /// [`CryptoError::UnknownKek`] or [`CryptoError::KekDestroyed`].
    fn key(&self, id: &KeyId, version: KeyVersion) -> Result<SecretKey, CryptoError>;

    /// Every version of a key, oldest first.
    ///
    /// # Errors
    /// [`CryptoError::UnknownKek`] for an unknown id.
    fn versions(&self, id: &KeyId) -> Result<Vec<KeyInfo>, CryptoError>;

    /// The version new data is encrypted under.
    ///
    /// # Errors
    /// [`CryptoError::UnknownKek`] for an unknown id.
    fn primary(&self, id: &KeyId) -> Result<KeyVersion, CryptoError>;

    /// Makes an enabled version the primary.
    ///
    /// # Errors
    /// [`CryptoError::UnknownKek`] or [`CryptoError::KekDestroyed`].
    fn set_primary(&self, id: &KeyId, version: KeyVersion) -> Result<(), CryptoError>;

    /// Creates a new version and makes it the primary.
    ///
    /// # Errors
    /// [`CryptoError::UnknownKek`], or a provider-specific failure.
    fn rotate(&self, id: &KeyId) -> Result<KeyVersion, CryptoError>;

    /// Destroys a version's material. The primary cannot be destroyed.
    ///
    /// # Errors
    /// [`CryptoError::UnknownKek`] or [`CryptoError::InvalidKeyOperation`].
    fn destroy(&self, id: &KeyId, version: KeyVersion) -> Result<(), CryptoError>;

    /// Whether the material was made up in this process and exists nowhere else (so that
    /// everything wrapped under it is lost at exit). Strict configurations refuse such a
    /// provider. Default `false`.
    fn is_ephemeral(&self) -> bool {
        false
    }
}

struct Version {
    material: Option<SecretKey>,
    created_at: SystemTime,
}

#[derive(Default)]
struct KeySlot {
    versions: BTreeMap<KeyVersion, Version>,
    primary: Option<KeyVersion>,
}

/// Keys held in this process: for development and tests, or as the in-memory half of a
/// provider that unwraps its keys from a KMS.
///
/// ```
/// use nova_crypto::{KeyId, KeyProvider, LocalKeyProvider};
/// # unsafe_free_env();
/// # fn unsafe_free_env() {}
/// let provider = LocalKeyProvider::from_base64("root", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")?;
/// let root = KeyId::new("root")?;
/// assert_eq!(provider.primary(&root)?.get(), 1);
/// let v2 = provider.rotate(&root)?;
/// assert_eq!(provider.primary(&root)?, v2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Default)]
pub struct LocalKeyProvider {
    keys: RwLock<BTreeMap<KeyId, KeySlot>>,
    /// Made up by [`LocalKeyProvider::generated`]: gone at exit.
    ephemeral: bool,
}

impl LocalKeyProvider {
    /// An empty provider.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A provider whose key `id` (version 1) is the base64 text in environment variable `var`.
    ///
    /// # Errors
    /// [`CryptoError::KeyMaterialMissing`] when the variable is unset;
    /// [`CryptoError::KeyMaterialInvalid`] when it is not base64 of 32 bytes.
    pub fn from_env(id: &str, var: &str) -> Result<Self, CryptoError> {
        let source_name = format!("environment variable {var}");
        let text =
            Zeroizing::new(
                std::env::var(var).map_err(|_| CryptoError::KeyMaterialMissing {
                    source_name: source_name.clone(),
                })?,
            );
        Self::with_key(id, SecretKey::from_base64(&text, &source_name)?)
    }

    /// A provider whose key `id` (version 1) is the base64 text in the file at `path`.
    ///
    /// # Errors
    /// [`CryptoError::KeyMaterialMissing`] when the file cannot be read;
    /// [`CryptoError::KeyMaterialInvalid`] when it is not base64 of 32 bytes.
    pub fn from_file(id: &str, path: impl AsRef<std::path::Path>) -> Result<Self, CryptoError> {
        let source_name = format!("key file {}", path.as_ref().display());
        let text = Zeroizing::new(std::fs::read_to_string(path.as_ref()).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                CryptoError::KeyMaterialMissing {
                    source_name: source_name.clone(),
                }
            } else {
                // Unreadable or not UTF-8: the file is there but unusable.
                CryptoError::KeyMaterialInvalid {
                    source_name: source_name.clone(),
                    expected: KEY_LEN,
                }
            }
        })?);
        Self::with_key(id, SecretKey::from_base64(&text, &source_name)?)
    }

    /// A provider with key `id` (version 1) decoded from base64 text.
    ///
    /// # Errors
    /// [`CryptoError::KeyMaterialInvalid`] when it is not base64 of 32 bytes.
    pub fn from_base64(id: &str, text: &str) -> Result<Self, CryptoError> {
        Self::with_key(id, SecretKey::from_base64(text, "inline key")?)
    }

    /// A provider with key `id` (version 1) freshly generated.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the random number generator fails.
    pub fn generated(id: &str) -> Result<Self, CryptoError> {
        let mut p = Self::with_key(id, SecretKey::generate()?)?;
        p.ephemeral = true;
        Ok(p)
    }

    fn with_key(id: &str, key: SecretKey) -> Result<Self, CryptoError> {
        let p = Self::new();
        p.insert(&KeyId::new(id)?, KeyVersion::FIRST, key, SystemTime::now())?;
        Ok(p)
    }

    /// Adds a version (for example one loaded from a key file). The highest version
    /// inserted so far becomes the primary.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeyOperation`] when the version already exists.
    pub fn insert(
        &self,
        id: &KeyId,
        version: KeyVersion,
        key: SecretKey,
        created_at: SystemTime,
    ) -> Result<(), CryptoError> {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let slot = keys.entry(id.clone()).or_default();
        if slot.versions.contains_key(&version) {
            return Err(CryptoError::InvalidKeyOperation(
                "key version already exists",
            ));
        }
        slot.versions.insert(
            version,
            Version {
                material: Some(key),
                created_at,
            },
        );
        if slot.primary.is_none_or(|p| version > p) {
            slot.primary = Some(version);
        }
        Ok(())
    }

    fn with_slot<T>(
        &self,
        id: &KeyId,
        f: impl FnOnce(&mut KeySlot) -> Result<T, CryptoError>,
    ) -> Result<T, CryptoError> {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let slot = keys.get_mut(id).ok_or_else(|| CryptoError::UnknownKek {
            id: id.clone(),
            version: None,
        })?;
        f(slot)
    }
}

impl KeyProvider for LocalKeyProvider {
    fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    fn key(&self, id: &KeyId, version: KeyVersion) -> Result<SecretKey, CryptoError> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let v = keys
            .get(id)
            .and_then(|slot| slot.versions.get(&version))
            .ok_or_else(|| CryptoError::UnknownKek {
                id: id.clone(),
                version: Some(version),
            })?;
        v.material.clone().ok_or_else(|| CryptoError::KekDestroyed {
            id: id.clone(),
            version,
        })
    }

    fn versions(&self, id: &KeyId) -> Result<Vec<KeyInfo>, CryptoError> {
        self.with_slot(id, |slot| {
            Ok(slot
                .versions
                .iter()
                .map(|(v, data)| KeyInfo {
                    version: *v,
                    created_at: data.created_at,
                    state: if data.material.is_some() {
                        KeyState::Enabled
                    } else {
                        KeyState::Destroyed
                    },
                    primary: slot.primary == Some(*v),
                })
                .collect())
        })
    }

    fn primary(&self, id: &KeyId) -> Result<KeyVersion, CryptoError> {
        self.with_slot(id, |slot| {
            slot.primary.ok_or_else(|| CryptoError::UnknownKek {
                id: id.clone(),
                version: None,
            })
        })
    }

    fn set_primary(&self, id: &KeyId, version: KeyVersion) -> Result<(), CryptoError> {
        self.with_slot(id, |slot| match slot.versions.get(&version) {
            None => Err(CryptoError::UnknownKek {
                id: id.clone(),
                version: Some(version),
            }),
            Some(v) if v.material.is_none() => Err(CryptoError::KekDestroyed {
                id: id.clone(),
                version,
            }),
            Some(_) => {
                slot.primary = Some(version);
                Ok(())
            }
        })
    }

    fn rotate(&self, id: &KeyId) -> Result<KeyVersion, CryptoError> {
        let key = SecretKey::generate()?;
        self.with_slot(id, |slot| {
            let next = match slot.versions.keys().next_back() {
                Some(last) => last.next()?,
                None => KeyVersion::FIRST,
            };
            slot.versions.insert(
                next,
                Version {
                    material: Some(key),
                    created_at: SystemTime::now(),
                },
            );
            slot.primary = Some(next);
            Ok(next)
        })
    }

    fn destroy(&self, id: &KeyId, version: KeyVersion) -> Result<(), CryptoError> {
        self.with_slot(id, |slot| {
            if slot.primary == Some(version) {
                return Err(CryptoError::InvalidKeyOperation(
                    "the primary version cannot be destroyed; rotate first",
                ));
            }
            let v = slot
                .versions
                .get_mut(&version)
                .ok_or_else(|| CryptoError::UnknownKek {
                    id: id.clone(),
                    version: Some(version),
                })?;
            // Dropping the SecretKey zeroizes it.
            v.material = None;
            Ok(())
        })
    }
}

impl fmt::Debug for LocalKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("LocalKeyProvider")
            .field("keys", &keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The remote half of a KMS: wraps and unwraps key material without revealing its own key.
/// Implement it over AWS KMS `Encrypt`/`Decrypt`, GCP KMS, or Vault's transit engine.
pub trait Kms: Send + Sync {
    /// Encrypts (wraps) key material under the KMS key `kms_key`.
    ///
    /// # Errors
    /// A provider-specific failure, reported as [`CryptoError::InvalidKeyOperation`] or
    /// [`CryptoError::Authentication`].
    fn wrap(&self, kms_key: &str, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError>;
    /// Decrypts (unwraps) key material.
    ///
    /// # Errors
    /// [`CryptoError::Authentication`] when the wrapped bytes do not open.
    fn unwrap(&self, kms_key: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError>;
}

/// The shape of a KMS-backed provider: KEK versions are stored wrapped by a [`Kms`] (in a
/// file, a table or the KMS's own key store) and unwrapped into memory once, when loaded.
/// After that it behaves like a [`LocalKeyProvider`], so no request waits on the network.
///
/// ```
/// use nova_crypto::{CryptoError, KeyId, KeyProvider, Kms, WrappedKeyProvider};
/// use zeroize::Zeroizing;
///
/// /// A stand-in KMS for the example: XOR with a fixed pad. A real one calls the network.
/// struct ToyKms;
/// impl Kms for ToyKms {
///     fn wrap(&self, _key: &str, pt: &[u8]) -> Result<Vec<u8>, CryptoError> {
///         Ok(pt.iter().map(|b| b ^ 0x5a).collect())
///     }
///     fn unwrap(&self, _key: &str, ct: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
///         Ok(Zeroizing::new(ct.iter().map(|b| b ^ 0x5a).collect()))
///     }
/// }
///
/// let provider = WrappedKeyProvider::new(ToyKms, "projects/demo/keys/nova");
/// let root = KeyId::new("root")?;
/// let wrapped_v1 = provider.create(&root)?; // store these bytes durably
/// // ... after a restart:
/// let provider = WrappedKeyProvider::new(ToyKms, "projects/demo/keys/nova");
/// provider.load(&root, nova_crypto::KeyVersion::FIRST, &wrapped_v1, std::time::SystemTime::now())?;
/// assert_eq!(provider.primary(&root)?.get(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct WrappedKeyProvider<K: Kms> {
    kms: K,
    kms_key: String,
    inner: LocalKeyProvider,
}

impl<K: Kms> WrappedKeyProvider<K> {
    /// A provider whose KEKs are wrapped under `kms_key` in `kms`.
    pub fn new(kms: K, kms_key: impl Into<String>) -> Self {
        Self {
            kms,
            kms_key: kms_key.into(),
            inner: LocalKeyProvider::new(),
        }
    }

    /// Unwraps a stored version into memory.
    ///
    /// # Errors
    /// The KMS's error, or [`CryptoError::KeyMaterialInvalid`] for material of the wrong size.
    pub fn load(
        &self,
        id: &KeyId,
        version: KeyVersion,
        wrapped: &[u8],
        created_at: SystemTime,
    ) -> Result<(), CryptoError> {
        let bytes = self.kms.unwrap(&self.kms_key, wrapped)?;
        let arr: [u8; KEY_LEN] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| CryptoError::KeyMaterialInvalid {
                    source_name: "KMS-unwrapped key".into(),
                    expected: KEY_LEN,
                })?;
        self.inner
            .insert(id, version, SecretKey::from_bytes(arr), created_at)
    }

    /// Generates the next version of `id` (version 1 for a new id), makes it primary, and
    /// returns the version with its wrapped bytes, which the caller must store durably.
    ///
    /// # Errors
    /// The KMS's error, or [`CryptoError::Rng`].
    pub fn create_version(&self, id: &KeyId) -> Result<(KeyVersion, Vec<u8>), CryptoError> {
        let key = SecretKey::generate()?;
        let wrapped = self.kms.wrap(&self.kms_key, key.expose())?;
        let next = match self.inner.versions(id) {
            Ok(v) => v
                .last()
                .map_or(Ok(KeyVersion::FIRST), |i| i.version.next())?,
            Err(CryptoError::UnknownKek { .. }) => KeyVersion::FIRST,
            Err(e) => return Err(e),
        };
        self.inner.insert(id, next, key, SystemTime::now())?;
        Ok((next, wrapped))
    }

    /// Generates version 1 of a new key and returns it wrapped, for durable storage.
    ///
    /// # Errors
    /// The KMS's error, or [`CryptoError::Rng`].
    pub fn create(&self, id: &KeyId) -> Result<Vec<u8>, CryptoError> {
        let key = SecretKey::generate()?;
        let wrapped = self.kms.wrap(&self.kms_key, key.expose())?;
        self.inner
            .insert(id, KeyVersion::FIRST, key, SystemTime::now())?;
        Ok(wrapped)
    }
}

impl<K: Kms> KeyProvider for WrappedKeyProvider<K> {
    fn key(&self, id: &KeyId, version: KeyVersion) -> Result<SecretKey, CryptoError> {
        self.inner.key(id, version)
    }
    fn versions(&self, id: &KeyId) -> Result<Vec<KeyInfo>, CryptoError> {
        self.inner.versions(id)
    }
    fn primary(&self, id: &KeyId) -> Result<KeyVersion, CryptoError> {
        self.inner.primary(id)
    }
    fn set_primary(&self, id: &KeyId, version: KeyVersion) -> Result<(), CryptoError> {
        self.inner.set_primary(id, version)
    }
    fn rotate(&self, _id: &KeyId) -> Result<KeyVersion, CryptoError> {
        // A new version must be wrapped and stored durably before it is used, and this
        // trait method has nowhere to return the wrapped bytes: refuse rather than create a
        // key that would not survive a restart. Use `WrappedKeyProvider::create_version`.
        Err(CryptoError::InvalidKeyOperation(
            "WrappedKeyProvider rotates through create_version, which returns the wrapped key to store",
        ))
    }
    fn destroy(&self, id: &KeyId, version: KeyVersion) -> Result<(), CryptoError> {
        self.inner.destroy(id, version)
    }
}

impl<K: Kms> fmt::Debug for WrappedKeyProvider<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKeyProvider")
            .field("kms_key", &self.kms_key)
            .field("inner", &self.inner)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_key_debug_is_redacted() {
        let k = SecretKey::from_bytes([0xAB; KEY_LEN]);
        let s = format!("{k:?}");
        assert_eq!(s, "SecretKey([REDACTED])");
        assert!(!s.contains("ab") && !s.contains("171"));
    }

    #[test]
    fn key_material_errors_are_clear_and_leak_nothing() {
        let err = SecretKey::from_base64("c2hvcnQ=", "environment variable NOVA_KEK").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("NOVA_KEK") && msg.contains("32"));
        assert!(!msg.contains("c2hvcnQ"));
        let missing = LocalKeyProvider::from_env("root", "NOVA_TEST_SURELY_UNSET_VAR").unwrap_err();
        assert!(matches!(missing, CryptoError::KeyMaterialMissing { .. }));
        let file = LocalKeyProvider::from_file("root", "/nonexistent/nova.key").unwrap_err();
        assert!(matches!(file, CryptoError::KeyMaterialMissing { .. }));
    }

    #[test]
    fn key_file_is_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("nova-key-{}", std::process::id()));
        std::fs::write(&dir, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
        let p = LocalKeyProvider::from_file("root", &dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        let k = p
            .key(&KeyId::new("root").unwrap(), KeyVersion::FIRST)
            .unwrap();
        assert_eq!(k.expose()[31], 31);
    }

    #[test]
    fn rotation_destroy_and_primary_rules() {
        let p = LocalKeyProvider::generated("root").unwrap();
        let id = KeyId::new("root").unwrap();
        let v2 = p.rotate(&id).unwrap();
        assert_eq!(v2.get(), 2);
        assert!(matches!(
            p.destroy(&id, v2),
            Err(CryptoError::InvalidKeyOperation(_))
        ));
        p.destroy(&id, KeyVersion::FIRST).unwrap();
        assert!(matches!(
            p.key(&id, KeyVersion::FIRST),
            Err(CryptoError::KekDestroyed { .. })
        ));
        assert!(matches!(
            p.set_primary(&id, KeyVersion::FIRST),
            Err(CryptoError::KekDestroyed { .. })
        ));
        let infos = p.versions(&id).unwrap();
        assert_eq!(infos[0].state, KeyState::Destroyed);
        assert!(infos[1].primary);
    }

    #[test]
    fn key_ids_are_validated() {
        for bad in ["", "Root", "1root", "root key", "root\n", &"a".repeat(65)] {
            assert!(KeyId::new(bad).is_err(), "{bad:?}");
        }
        assert!(KeyId::new("kms:eu-west-1.nova_root").is_ok());
    }
}
