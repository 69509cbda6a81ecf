//! Streaming encryption for large payloads (backups, exports, message bodies): the STREAM
//! construction (Hoang, Reyhanitabar, Rogaway, Vizár, "Online Authenticated-Encryption and
//! its Nonce-Reuse Misuse-Resistance", CRYPTO 2015) over AES-256-GCM.
//!
//! Each stream gets its own key, derived from the tenant's stream key and a random 32-byte
//! salt in the header, so chunks cannot be moved between streams. Chunk `i` is sealed with
//! nonce `prefix (7 bytes) || i (u32, big-endian) || last (1 byte)` and the whole header as
//! associated data. Reordered chunks fail (wrong counter), a dropped final chunk fails
//! (no chunk with `last = 1`), and a changed header fails every chunk.
//!
//! # Layout
//!
//! | size | field |
//! | --- | --- |
//! | 2 | magic `NS` |
//! | 1 | format version `0x01` |
//! | 1 | algorithm `0x01` (AES-256-GCM STREAM, HKDF-SHA256) |
//! | 1 + L | key-encryption key id (length, then ASCII) |
//! | 4 | key-encryption key version |
//! | 4 | tenant key version |
//! | 1 + M | label (length, then `[a-z0-9_]`), e.g. `backup` |
//! | 4 | chunk size `C` in plaintext bytes (64 B to 1 MiB) |
//! | 32 | stream salt |
//! | 7 | nonce prefix |
//! | 32 | key commitment |
//! | … | chunks: each non-final one `C + 16` bytes, the final one `0..=C` + 16 |
//!
//! The decryptor writes a chunk's plaintext only after that chunk authenticates. If it
//! returns an error, what was written so far is authentic but incomplete: discard it.
//! This module must never write unauthenticated plaintext.

use std::io::{Read, Write};
use std::sync::Arc;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use nova_tenancy::{Ident, TenantContext, TenantId};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::envelope::{COMMITMENT_LEN, TAG_LEN};
use crate::error::{CryptoError, DecodeError};
use crate::keyring::{CachedKey, Derived, Keyring};
use crate::keys::{KEY_ID_MAX_LEN, KeyId, KeyVersion};

/// Magic bytes at the start of a stream.
pub const STREAM_MAGIC: [u8; 2] = *b"NS";
/// Default plaintext bytes per chunk.
pub const DEFAULT_CHUNK_SIZE: usize = 64 * 1024;
/// Smallest chunk size accepted.
pub const MIN_CHUNK_SIZE: usize = 64;
/// Largest chunk size accepted (bounds the decryptor's memory).
pub const MAX_CHUNK_SIZE: usize = 1 << 20;
const SALT_LEN: usize = 32;
const PREFIX_LEN: usize = 7;
const STREAM_INFO: &[u8] = b"nova-crypto/v1/stream";

/// What a stream operation processed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// Plaintext bytes.
    pub plaintext_bytes: u64,
    /// Chunks, including the final one.
    pub chunks: u64,
}

/// A parsed stream header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    bytes: Vec<u8>,
    kek_id: KeyId,
    kek_version: KeyVersion,
    key_version: KeyVersion,
    label: String,
    chunk_size: usize,
    salt: [u8; SALT_LEN],
    prefix: [u8; PREFIX_LEN],
    commitment: [u8; COMMITMENT_LEN],
}

impl StreamHeader {
    /// Reads and validates a header from the start of a stream. Reads at most
    /// `5 + 64 + 8 + 1 + 64 + 4 + 32 + 7 + 32` bytes.
    ///
    /// # Errors
    /// [`CryptoError::Decode`] for a malformed header; [`CryptoError::Io`] for read errors.
    pub fn read_from(r: &mut impl Read) -> Result<Self, CryptoError> {
        let mut bytes = Vec::with_capacity(256);
        let mut take =
            |n: usize, what: &'static str, bytes: &mut Vec<u8>| -> Result<usize, CryptoError> {
                let start = bytes.len();
                bytes.resize(start + n, 0);
                read_exact_or(r, &mut bytes[start..], what)?;
                Ok(start)
            };
        let at = take(5, "stream header", &mut bytes)?;
        if bytes[at..at + 2] != STREAM_MAGIC {
            return Err(DecodeError::BadMagic.into());
        }
        if bytes[2] != 1 {
            return Err(DecodeError::UnsupportedVersion(bytes[2]).into());
        }
        if bytes[3] != 1 {
            return Err(DecodeError::UnsupportedAlgorithm(bytes[3]).into());
        }
        let kid_len = usize::from(bytes[4]);
        if kid_len == 0 || kid_len > KEY_ID_MAX_LEN {
            return Err(DecodeError::BadKeyId.into());
        }
        let at = take(kid_len + 8 + 1, "stream header", &mut bytes)?;
        let kek_id = KeyId::from_bytes(&bytes[at..at + kid_len])?;
        let v = |b: &[u8]| KeyVersion::new(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let kek_version = v(&bytes[at + kid_len..])?;
        let key_version = v(&bytes[at + kid_len + 4..])?;
        let label_len = usize::from(bytes[at + kid_len + 8]);
        if label_len == 0 || label_len > 63 {
            return Err(DecodeError::TooLong {
                what: "stream label",
            }
            .into());
        }
        let at = take(
            label_len + 4 + SALT_LEN + PREFIX_LEN + COMMITMENT_LEN,
            "stream header",
            &mut bytes,
        )?;
        let label = std::str::from_utf8(&bytes[at..at + label_len])
            .ok()
            .and_then(|l| Ident::new(l).ok())
            .ok_or(DecodeError::BadEncoding)?
            .as_str()
            .to_owned();
        let mut p = at + label_len;
        let chunk_size =
            u32::from_be_bytes([bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]]) as usize;
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(DecodeError::BadChunkSize.into());
        }
        p += 4;
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&bytes[p..p + SALT_LEN]);
        p += SALT_LEN;
        let mut prefix = [0u8; PREFIX_LEN];
        prefix.copy_from_slice(&bytes[p..p + PREFIX_LEN]);
        p += PREFIX_LEN;
        let mut commitment = [0u8; COMMITMENT_LEN];
        commitment.copy_from_slice(&bytes[p..p + COMMITMENT_LEN]);
        Ok(Self {
            bytes,
            kek_id,
            kek_version,
            key_version,
            label,
            chunk_size,
            salt,
            prefix,
            commitment,
        })
    }

    /// The stream's label.
    #[must_use]
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Plaintext bytes per chunk.
    #[must_use]
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// The tenant key version the stream was sealed under.
    #[must_use]
    pub fn key_version(&self) -> KeyVersion {
        self.key_version
    }
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], what: &'static str) -> Result<(), CryptoError> {
    match r.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(DecodeError::Truncated { what }.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads until `buf` is full or the reader is exhausted; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, CryptoError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

struct ChunkCipher {
    cipher: Aes256Gcm,
    commitment: Zeroizing<[u8; COMMITMENT_LEN]>,
}

fn chunk_cipher(root: &Derived, tenant: TenantId, salt: &[u8]) -> Result<ChunkCipher, CryptoError> {
    let CachedKey::Stream(root) = &root.key else {
        return Err(CryptoError::InvalidKeyOperation(
            "cache returned a key of another purpose",
        ));
    };
    let mut info = Vec::with_capacity(STREAM_INFO.len() + 16);
    info.extend_from_slice(STREAM_INFO);
    info.extend_from_slice(tenant.as_uuid().as_bytes());
    let okm = crate::derive::subkey(root, salt, &info)?;
    let cipher = Aes256Gcm::new_from_slice(&okm[..32])
        .map_err(|_| CryptoError::InvalidKeyOperation("bad AES key length"))?;
    let mut commitment = Zeroizing::new([0u8; COMMITMENT_LEN]);
    commitment.copy_from_slice(&okm[32..]);
    Ok(ChunkCipher { cipher, commitment })
}

fn chunk_nonce(prefix: &[u8; PREFIX_LEN], counter: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..PREFIX_LEN].copy_from_slice(prefix);
    n[PREFIX_LEN..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    n
}

fn validate_label(label: &str) -> Result<Arc<str>, CryptoError> {
    Ident::new(label)
        .map(|i| Arc::from(i.as_str()))
        .map_err(|_| CryptoError::InvalidKeyOperation("stream label must match [a-z_][a-z0-9_]*"))
}

impl Keyring {
    /// Encrypts everything `reader` yields into `writer` for the context's tenant, in chunks
    /// of [`DEFAULT_CHUNK_SIZE`]. `label` (e.g. `backup`, `export`) separates kinds of
    /// stream: a stream opens only under the label it was made with.
    ///
    /// # Errors
    /// [`CryptoError::KeyDestroyed`] for a shredded tenant; I/O errors; key errors.
    pub fn encrypt_stream(
        &self,
        ctx: &TenantContext,
        label: &str,
        reader: impl Read,
        writer: impl Write,
    ) -> Result<StreamSummary, CryptoError> {
        self.encrypt_stream_chunked(ctx, label, DEFAULT_CHUNK_SIZE, reader, writer)
    }

    /// [`Keyring::encrypt_stream`] with a chosen chunk size (64 B to 1 MiB).
    ///
    /// # Errors
    /// As [`Keyring::encrypt_stream`], and [`CryptoError::Decode`] for a bad chunk size.
    pub fn encrypt_stream_chunked(
        &self,
        ctx: &TenantContext,
        label: &str,
        chunk_size: usize,
        mut reader: impl Read,
        mut writer: impl Write,
    ) -> Result<StreamSummary, CryptoError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(DecodeError::BadChunkSize.into());
        }
        let label = validate_label(label)?;
        let tenant = ctx.tenant();
        let root = self.stream_root_current(tenant, &label)?;
        let mut salt = [0u8; SALT_LEN];
        let mut prefix = [0u8; PREFIX_LEN];
        getrandom::fill(&mut salt).map_err(|_| CryptoError::Rng)?;
        getrandom::fill(&mut prefix).map_err(|_| CryptoError::Rng)?;
        let cc = chunk_cipher(&root, tenant, &salt)?;

        let mut header = Vec::with_capacity(200);
        header.extend_from_slice(&STREAM_MAGIC);
        header.extend_from_slice(&[1, 1]);
        // Key ids are at most 64 bytes, labels at most 63, chunk sizes at most 1 MiB.
        header.push(root.kek_id.as_str().len() as u8);
        header.extend_from_slice(root.kek_id.as_str().as_bytes());
        header.extend_from_slice(&root.kek_version.get().to_be_bytes());
        header.extend_from_slice(&root.version.get().to_be_bytes());
        header.push(label.len() as u8);
        header.extend_from_slice(label.as_bytes());
        header.extend_from_slice(&(chunk_size as u32).to_be_bytes());
        header.extend_from_slice(&salt);
        header.extend_from_slice(&prefix);
        header.extend_from_slice(cc.commitment.as_ref());
        writer.write_all(&header)?;

        let mut buf = Zeroizing::new(vec![0u8; chunk_size]);
        let mut next = Zeroizing::new(vec![0u8; chunk_size]);
        let mut summary = StreamSummary::default();
        let mut counter: u32 = 0;
        let mut n = read_full(&mut reader, &mut buf)?;
        loop {
            // A full chunk is final only if nothing follows it.
            let m = if n == chunk_size {
                read_full(&mut reader, &mut next)?
            } else {
                0
            };
            let last = m == 0;
            let tag = crate::primitives::seal_in_place(
                &cc.cipher,
                &chunk_nonce(&prefix, counter, last),
                &header,
                &mut buf[..n],
            )?;
            writer.write_all(&buf[..n])?;
            writer.write_all(&tag)?;
            summary.plaintext_bytes += n as u64;
            summary.chunks += 1;
            if last {
                break;
            }
            counter = counter
                .checked_add(1)
                .ok_or(CryptoError::TooLarge("stream longer than 2^32 chunks"))?;
            std::mem::swap(&mut buf, &mut next);
            n = m;
        }
        writer.flush()?;
        Ok(summary)
    }

    /// Decrypts a stream made by [`Keyring::encrypt_stream`] for the context's tenant and
    /// the same `label`, writing each chunk's plaintext once it authenticates.
    ///
    /// # Errors
    /// [`CryptoError::Authentication`] for a changed, reordered or foreign stream;
    /// [`CryptoError::StreamTruncated`] when the final chunk is missing;
    /// [`CryptoError::KeyDestroyed`] for a shredded tenant; decode and I/O errors.
    pub fn decrypt_stream(
        &self,
        ctx: &TenantContext,
        label: &str,
        mut reader: impl Read,
        mut writer: impl Write,
    ) -> Result<StreamSummary, CryptoError> {
        let label = validate_label(label)?;
        let header = StreamHeader::read_from(&mut reader)?;
        if header.label != *label {
            return Err(CryptoError::Authentication);
        }
        let tenant = ctx.tenant();
        let root = self.stream_root_for(
            tenant,
            &header.kek_id,
            header.kek_version,
            header.key_version,
            &label,
        )?;
        let cc = chunk_cipher(&root, tenant, &header.salt)?;
        if !bool::from(header.commitment.ct_eq(cc.commitment.as_ref())) {
            return Err(CryptoError::Authentication);
        }
        let full = header.chunk_size + TAG_LEN;
        let mut buf = Zeroizing::new(vec![0u8; full]);
        let mut summary = StreamSummary::default();
        let mut counter: u32 = 0;
        let mut carried = 0usize;
        loop {
            let n = carried + read_full(&mut reader, &mut buf[carried..])?;
            let last = if n < full {
                true
            } else {
                let mut peek = [0u8; 1];
                let more = read_full(&mut reader, &mut peek)?;
                if more == 1 {
                    // Not final: open it, then start the next chunk with the peeked byte.
                    open_chunk(&cc, &header, counter, false, &mut buf[..n])?;
                    writer.write_all(&buf[..n - TAG_LEN])?;
                    summary.plaintext_bytes += (n - TAG_LEN) as u64;
                    summary.chunks += 1;
                    counter = counter
                        .checked_add(1)
                        .ok_or(CryptoError::TooLarge("stream longer than 2^32 chunks"))?;
                    buf[0] = peek[0];
                    carried = 1;
                    continue;
                }
                true
            };
            debug_assert!(last);
            if n < TAG_LEN {
                return Err(CryptoError::StreamTruncated);
            }
            if let Err(e) = open_chunk(&cc, &header, counter, true, &mut buf[..n]) {
                // A full chunk sealed as non-final means the real final chunk was cut off.
                if n == full && open_chunk(&cc, &header, counter, false, &mut buf[..n]).is_ok() {
                    return Err(CryptoError::StreamTruncated);
                }
                return Err(e);
            }
            writer.write_all(&buf[..n - TAG_LEN])?;
            summary.plaintext_bytes += (n - TAG_LEN) as u64;
            summary.chunks += 1;
            writer.flush()?;
            return Ok(summary);
        }
    }
}

/// Opens one chunk in place (`chunk` = ciphertext || tag). On failure the buffer is left
/// as ciphertext: GCM verifies the tag before decrypting.
fn open_chunk(
    cc: &ChunkCipher,
    header: &StreamHeader,
    counter: u32,
    last: bool,
    chunk: &mut [u8],
) -> Result<(), CryptoError> {
    let (body, tag) = chunk.split_at_mut(chunk.len() - TAG_LEN);
    let tag = Tag::try_from(&*tag).map_err(|_| CryptoError::Authentication)?;
    cc.cipher
        .decrypt_inout_detached(
            &Nonce::from(chunk_nonce(&header.prefix, counter, last)),
            &header.bytes,
            body.into(),
            &tag,
        )
        .map_err(|_| CryptoError::Authentication)
}
