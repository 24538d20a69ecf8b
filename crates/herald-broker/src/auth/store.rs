//! The security files in the data directory (`users.json`, `acls.json`): read, replaced
//! atomically with owner-only permissions, and noticed when another process (the `herald user`
//! and `herald acl` commands) replaced them, so changes take effect without a restart.
//!
//! Writers in any process hold an exclusive `flock` on `security.lock` from reading the file
//! to renaming the new one over it, so two writers never lose each other's change.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Name of the lock file beside the security files.
const LOCK_FILE: &str = "security.lock";
/// Largest security file read, in bytes; bounds what a damaged file can make the broker load.
pub const SECURITY_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Why a security file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The operating system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not what Herald writes.
    #[error("{path} is damaged: {message}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Identifies one version of a file: replaced files get a new inode, so this changes on every
/// atomic replace even within one mtime tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Stamp {
    inode: u64,
    modified_ns: i128,
    bytes: u64,
}

/// One JSON security file.
#[derive(Debug, Clone)]
pub(crate) struct JsonFile {
    dir: PathBuf,
    name: &'static str,
}

/// An exclusive lock on the security files, released on drop.
pub(crate) struct WriteLock {
    _file: File,
}

impl JsonFile {
    pub(crate) fn new(dir: &Path, name: &'static str) -> JsonFile {
        JsonFile {
            dir: dir.to_path_buf(),
            name,
        }
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(self.name)
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path(),
            source,
        }
    }

    /// The current version's stamp; the default stamp when the file does not exist.
    pub(crate) fn stamp(&self) -> Result<Stamp, StoreError> {
        match std::fs::metadata(self.path()) {
            Ok(metadata) => Ok(Stamp {
                inode: metadata.ino(),
                modified_ns: i128::from(metadata.mtime()) * 1_000_000_000
                    + i128::from(metadata.mtime_nsec()),
                bytes: metadata.len(),
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Stamp::default()),
            Err(error) => Err(self.io(error)),
        }
    }

    /// Reads the file (the default value when it does not exist) and its stamp.
    pub(crate) fn read<T: DeserializeOwned + Default>(&self) -> Result<(T, Stamp), StoreError> {
        let path = self.path();
        let stamp = self.stamp()?;
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok((T::default(), stamp));
            }
            Err(error) => return Err(self.io(error)),
        };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(file, SECURITY_FILE_BYTES_MAX + 1),
            &mut bytes,
        )
        .map_err(|error| self.io(error))?;
        if bytes.len() as u64 > SECURITY_FILE_BYTES_MAX {
            return Err(StoreError::Damaged {
                path,
                message: format!("larger than {SECURITY_FILE_BYTES_MAX} bytes"),
            });
        }
        let value = serde_json::from_slice(&bytes).map_err(|error| StoreError::Damaged {
            path: path.clone(),
            message: error.to_string(),
        })?;
        Ok((value, stamp))
    }

    /// Takes the writers' lock (blocking until other writers are done).
    pub(crate) fn lock(&self) -> Result<WriteLock, StoreError> {
        let path = self.dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        use std::os::fd::AsRawFd as _;
        // SAFETY: the descriptor is open and owned by `file` for the duration of the call;
        // flock only takes an advisory lock on it.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if locked != 0 {
            return Err(StoreError::Io {
                path,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(WriteLock { _file: file })
    }

    /// Replaces the file: temporary file (mode 0600), fsync, rename, fsync the directory.
    /// The caller holds the [`WriteLock`].
    pub(crate) fn write<T: Serialize>(
        &self,
        _lock: &WriteLock,
        value: &T,
    ) -> Result<Stamp, StoreError> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|error| StoreError::Damaged {
            path: self.path(),
            message: error.to_string(),
        })?;
        let temp = self.dir.join(format!("{}.tmp", self.name));
        {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&temp)
                .map_err(|error| self.io(error))?;
            file.write_all(&bytes).map_err(|error| self.io(error))?;
            file.sync_all().map_err(|error| self.io(error))?;
        }
        std::fs::rename(&temp, self.path()).map_err(|error| self.io(error))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|error| self.io(error))?;
        self.stamp()
    }
}
