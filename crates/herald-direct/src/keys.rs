//! Pre-shared keys: the group key of direct connections and the per-topic keys of datagrams, read
//! from files (never from command lines) and never printed.
//!
//! A key file holds 64 hexadecimal digits (32 bytes, `openssl rand -hex 32`); surrounding white
//! space is ignored. See `docs/direct-protocol.md` for how the keys are used.

use std::path::Path;

/// Bytes of every pre-shared key.
pub const KEY_BYTES: usize = 32;
/// Largest key file read, so a wrong path (a log, a device) is refused without reading it whole.
const KEY_FILE_BYTES_MAX: u64 = 4096;

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path} is larger than {KEY_FILE_BYTES_MAX} bytes")]
    TooLarge { path: String },
    #[error("key must be {} hexadecimal digits ({KEY_BYTES} bytes): {problem}", KEY_BYTES * 2)]
    Format { problem: String },
}

/// 32 secret bytes. `Debug` does not show them.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; KEY_BYTES]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> SecretKey {
        SecretKey(bytes)
    }

    /// A key from 64 hexadecimal digits (white space around them ignored).
    ///
    /// ```
    /// use herald_direct::keys::SecretKey;
    /// let key = SecretKey::from_hex(&"ab".repeat(32)).unwrap();
    /// assert!(SecretKey::from_hex("abc").is_err());
    /// # let _ = key;
    /// ```
    pub fn from_hex(text: &str) -> Result<SecretKey, KeyError> {
        let text = text.trim();
        if text.len() != KEY_BYTES * 2 {
            return Err(KeyError::Format {
                problem: format!("found {} characters", text.len()),
            });
        }
        let mut out = [0u8; KEY_BYTES];
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let hi = hex_digit(pair[0]);
            let lo = hex_digit(pair[1]);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out[i] = hi << 4 | lo,
                _ => {
                    return Err(KeyError::Format {
                        problem: format!("not a hexadecimal digit at position {}", i * 2),
                    });
                }
            }
        }
        Ok(SecretKey(out))
    }

    /// Reads a key file (64 hexadecimal digits).
    pub fn from_file(path: &Path) -> Result<SecretKey, KeyError> {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
        if meta.len() > KEY_FILE_BYTES_MAX {
            return Err(KeyError::TooLarge { path: shown });
        }
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
        SecretKey::from_hex(&text)
    }

    /// The key's bytes.
    pub fn bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hex_keys_parse_and_bad_ones_are_refused() {
        let key = SecretKey::from_hex(&format!("  {}\n", "0f".repeat(32))).unwrap();
        assert_eq!(key.bytes(), &[0x0f; 32]);
        assert!(SecretKey::from_hex(&"0g".repeat(32)).is_err());
        assert!(SecretKey::from_hex(&"00".repeat(31)).is_err());
        assert_eq!(format!("{key:?}"), "SecretKey(..)");
    }

    #[test]
    fn key_files_are_read_and_missing_ones_named() {
        let dir = std::env::temp_dir().join(format!("herald-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k");
        std::fs::write(&path, "ab".repeat(32)).unwrap();
        assert_eq!(SecretKey::from_file(&path).unwrap().bytes(), &[0xab; 32]);
        let missing = SecretKey::from_file(&dir.join("none")).unwrap_err();
        assert!(missing.to_string().contains("none"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
