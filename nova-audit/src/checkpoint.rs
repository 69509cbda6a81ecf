//! Signed checkpoints in the C2SP signed-note format (<https://c2sp.org/tlog-checkpoint>,
//! <https://c2sp.org/signed-note>), signed with Ed25519:
//!
//! ```text
//! <origin>\n
//! <tree size, decimal>\n
//! <root hash, standard base64>\n
//! \n
//! — <key name> <base64(key id (4 bytes) || Ed25519 signature (64 bytes))>\n
//! ```
//!
//! The key id is the first four bytes of `SHA-256(name || "\n" || 0x01 || public key)`;
//! the signature covers the three body lines including the final newline. Parsing is
//! bounded (8 KiB, 100 signature lines) and never panics. This module must never accept a
//! checkpoint without a valid signature from the expected key.

use base64::Engine as _;
use ed25519_dalek::{Signer as _, Verifier as _};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// Longest checkpoint accepted.
pub const MAX_CHECKPOINT_LEN: usize = 8 * 1024;
/// Most signature lines read.
pub const MAX_SIGNATURES: usize = 100;
const ALG_ED25519: u8 = 0x01;
const EM_DASH: &str = "\u{2014}";

/// Why a checkpoint was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Too long, or too many signature lines.
    #[error("checkpoint too large")]
    TooLarge,
    /// Not in the checkpoint format.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// No signature line from the expected key verifies.
    #[error("no valid signature from the expected key")]
    BadSignature,
    /// A key name or verifier key is invalid.
    #[error("invalid key: {0}")]
    BadKey(&'static str),
}

/// A verified (or to-be-signed) checkpoint body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line (e.g. `nova.example/audit/<tenant>`).
    pub origin: String,
    /// Number of entries the root covers.
    pub size: u64,
    /// The Merkle root.
    pub root: Hash,
}

impl Checkpoint {
    /// The note body: three lines, each ending in `\n`.
    #[must_use]
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            base64::engine::general_purpose::STANDARD.encode(self.root)
        )
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name.contains(['+', ' ', '\n'])
        && !name.chars().any(char::is_control)
}

fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// Signs checkpoints. `Debug` never shows the key.
pub struct CheckpointSigner {
    name: String,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// A signer named `name` with an Ed25519 key from its 32-byte seed.
    ///
    /// # Errors
    /// [`CheckpointError::BadKey`] for an invalid name.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, CheckpointError> {
        if !valid_name(name) {
            return Err(CheckpointError::BadKey(
                "key name must be 1-256 characters without '+', spaces or newlines",
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            key: ed25519_dalek::SigningKey::from_bytes(seed),
        })
    }

    /// The verifier key in signed-note form: `<name>+<key id hex>+<base64(0x01 || public key)>`.
    #[must_use]
    pub fn verifier_key(&self) -> String {
        let public = self.key.verifying_key().to_bytes();
        let mut encoded = vec![ALG_ED25519];
        encoded.extend_from_slice(&public);
        let id = key_id(&self.name, &public);
        format!(
            "{}+{}+{}",
            self.name,
            id.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            base64::engine::general_purpose::STANDARD.encode(encoded)
        )
    }

    /// Signs a checkpoint; returns the full signed note.
    #[must_use]
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let body = checkpoint.body();
        let sig = self.key.sign(body.as_bytes());
        let public = self.key.verifying_key().to_bytes();
        let mut blob = key_id(&self.name, &public).to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        format!(
            "{body}\n{EM_DASH} {} {}\n",
            self.name,
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    }
}

/// A parsed verifier key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: [u8; 4],
    key: ed25519_dalek::VerifyingKey,
}

impl VerifierKey {
    /// Parses `<name>+<key id hex>+<base64(0x01 || public key)>`.
    ///
    /// # Errors
    /// [`CheckpointError::BadKey`].
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id_hex), Some(b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(CheckpointError::BadKey("expected name+id+key"));
        };
        if !valid_name(name) || id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(CheckpointError::BadKey("bad name or key id"));
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| CheckpointError::BadKey("key is not base64"))?;
        let [alg, rest @ ..] = raw.as_slice() else {
            return Err(CheckpointError::BadKey("empty key"));
        };
        if *alg != ALG_ED25519 {
            return Err(CheckpointError::BadKey("only Ed25519 keys are supported"));
        }
        let public: [u8; 32] = rest
            .try_into()
            .map_err(|_| CheckpointError::BadKey("Ed25519 key must be 32 bytes"))?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&public)
            .map_err(|_| CheckpointError::BadKey("invalid Ed25519 key"))?;
        let id = key_id(name, &public);
        let given: Vec<u8> = (0..4)
            .map(|i| u8::from_str_radix(&id_hex[2 * i..2 * i + 2], 16).unwrap_or(0))
            .collect();
        if given != id {
            return Err(CheckpointError::BadKey("key id does not match the key"));
        }
        Ok(Self {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// Parses a signed checkpoint and verifies it carries a valid signature by this key.
    /// Signature lines from other keys are ignored.
    ///
    /// # Errors
    /// [`CheckpointError`] describing the problem.
    pub fn verify(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        if note.len() > MAX_CHECKPOINT_LEN {
            return Err(CheckpointError::TooLarge);
        }
        let (body, sigs) = note.split_once("\n\n").ok_or(CheckpointError::Malformed(
            "no blank line before signatures",
        ))?;
        let body = format!("{body}\n");
        let mut lines = body.lines();
        let (Some(origin), Some(size), Some(root), None) =
            (lines.next(), lines.next(), lines.next(), lines.next())
        else {
            return Err(CheckpointError::Malformed(
                "body must be origin, size and root lines",
            ));
        };
        if origin.is_empty() || origin.chars().any(char::is_control) {
            return Err(CheckpointError::Malformed("bad origin"));
        }
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(CheckpointError::Malformed("bad tree size"));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| CheckpointError::Malformed("tree size too large"))?;
        let root_bytes = base64::engine::general_purpose::STANDARD
            .decode(root)
            .map_err(|_| CheckpointError::Malformed("root is not base64"))?;
        let root: Hash = root_bytes
            .as_slice()
            .try_into()
            .map_err(|_| CheckpointError::Malformed("root must be 32 bytes"))?;
        if !sigs.ends_with('\n') {
            return Err(CheckpointError::Malformed(
                "signature lines must end with a newline",
            ));
        }
        let mut count = 0;
        for line in sigs.lines() {
            count += 1;
            if count > MAX_SIGNATURES {
                return Err(CheckpointError::TooLarge);
            }
            let Some(rest) = line.strip_prefix(EM_DASH).and_then(|r| r.strip_prefix(' ')) else {
                return Err(CheckpointError::Malformed(
                    "signature line must start with an em dash",
                ));
            };
            let Some((name, b64)) = rest.split_once(' ') else {
                return Err(CheckpointError::Malformed(
                    "signature line needs a name and a signature",
                ));
            };
            if name != self.name {
                continue;
            }
            let Ok(blob) = base64::engine::general_purpose::STANDARD.decode(b64) else {
                continue;
            };
            if blob.len() != 68 || blob[..4] != self.id {
                continue;
            }
            let Ok(sig) = ed25519_dalek::Signature::from_slice(&blob[4..]) else {
                continue;
            };
            if self.key.verify(body.as_bytes(), &sig).is_ok() {
                return Ok(Checkpoint {
                    origin: origin.to_owned(),
                    size,
                    root,
                });
            }
        }
        Err(CheckpointError::BadSignature)
    }
}
