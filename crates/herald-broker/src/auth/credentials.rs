//! SASL users: SCRAM credentials (salt, iterations, stored key, server key; never a password)
//! per user and mechanism in `<data_dir>/users.json`, shared by the broker (authentication,
//! DescribeUserScramCredentials, AlterUserScramCredentials) and `herald user`.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::scram::{ITERATIONS_MAX, ITERATIONS_MIN, Mechanism, ScramCredential};
use super::store::{JsonFile, Stamp, StoreError};

/// File name of the users' credentials in the data directory.
pub const USERS_FILE: &str = "users.json";
/// Longest user name accepted, in bytes.
pub const USER_NAME_BYTES_MAX: usize = 256;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UsersFile {
    version: u32,
    users: BTreeMap<String, BTreeMap<String, StoredCredential>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredCredential {
    salt: String,
    iterations: u32,
    stored_key: String,
    server_key: String,
}

impl StoredCredential {
    fn decode(&self) -> Option<ScramCredential> {
        Some(ScramCredential {
            salt: BASE64.decode(&self.salt).ok()?,
            iterations: self.iterations,
            stored_key: BASE64.decode(&self.stored_key).ok()?,
            server_key: BASE64.decode(&self.server_key).ok()?,
        })
    }

    fn encode(credential: &ScramCredential) -> StoredCredential {
        StoredCredential {
            salt: BASE64.encode(&credential.salt),
            iterations: credential.iterations,
            stored_key: BASE64.encode(&credential.stored_key),
            server_key: BASE64.encode(&credential.server_key),
        }
    }
}

/// Why a credential change was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    /// The name is empty, too long or has a control character.
    #[error("invalid user name")]
    InvalidName,
    /// Iterations out of Kafka's range.
    #[error("iterations must be between {ITERATIONS_MIN} and {ITERATIONS_MAX}")]
    Iterations,
    /// The user (or this mechanism of it) does not exist.
    #[error("no such user or credential: {0}")]
    NotFound(String),
    /// The file could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A user and the mechanisms it has credentials for, with their iterations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The name.
    pub name: String,
    /// Each mechanism with its iteration count.
    pub mechanisms: Vec<(Mechanism, u32)>,
}

/// The users' credentials, re-read when the file changes.
///
/// ```no_run
/// use herald_broker::auth::{Mechanism, UserStore};
/// let users = UserStore::open("./herald-data".as_ref())?;
/// users.set_password("alice", "correct horse", &[Mechanism::Sha512], 4096)?;
/// # Ok::<(), herald_broker::auth::UserError>(())
/// ```
pub struct UserStore {
    file: JsonFile,
    cache: Mutex<(Stamp, UsersFile)>,
}

impl UserStore {
    /// Opens (without creating) the users' file in a data directory.
    pub fn open(data_dir: &Path) -> Result<UserStore, StoreError> {
        let file = JsonFile::new(data_dir, USERS_FILE);
        let (users, stamp) = file.read::<UsersFile>()?;
        Ok(UserStore {
            file,
            cache: Mutex::new((stamp, users)),
        })
    }

    /// The users as they are on disk now (re-read if another process changed the file).
    fn current(&self) -> Result<UsersFile, StoreError> {
        let stamp = self.file.stamp()?;
        let mut cache = self.cache.lock();
        if cache.0 != stamp {
            *cache = {
                let (users, stamp) = self.file.read::<UsersFile>()?;
                (stamp, users)
            };
        }
        Ok(cache.1.clone())
    }

    /// A user's credential for one mechanism.
    pub fn credential(
        &self,
        user: &str,
        mechanism: Mechanism,
    ) -> Result<Option<ScramCredential>, StoreError> {
        let users = self.current()?;
        Ok(users
            .users
            .get(user)
            .and_then(|mechanisms| mechanisms.get(mechanism.name()))
            .and_then(StoredCredential::decode))
    }

    /// Every user with its mechanisms, by name.
    pub fn list(&self) -> Result<Vec<UserInfo>, StoreError> {
        let users = self.current()?;
        Ok(users
            .users
            .iter()
            .map(|(name, mechanisms)| UserInfo {
                name: name.clone(),
                mechanisms: mechanisms
                    .iter()
                    .filter_map(|(mechanism, stored)| {
                        Some((Mechanism::from_name(mechanism)?, stored.iterations))
                    })
                    .collect(),
            })
            .collect())
    }

    /// Sets (creates or replaces) a user's credentials for `mechanisms` from a password;
    /// PBKDF2 runs here, so call it off the async threads.
    pub fn set_password(
        &self,
        user: &str,
        password: &str,
        mechanisms: &[Mechanism],
        iterations: u32,
    ) -> Result<(), UserError> {
        check_iterations(iterations)?;
        let credentials: Vec<(Mechanism, ScramCredential)> = mechanisms
            .iter()
            .map(|&mechanism| {
                (
                    mechanism,
                    ScramCredential::new(mechanism, password, iterations),
                )
            })
            .collect();
        self.modify(|users| {
            check_name(user)?;
            let entry = users.users.entry(user.to_string()).or_default();
            for (mechanism, credential) in &credentials {
                entry.insert(
                    mechanism.name().to_string(),
                    StoredCredential::encode(credential),
                );
            }
            Ok(())
        })
    }

    /// Applies AlterUserScramCredentials-style changes in one write: each result says whether
    /// that change was applied.
    pub fn alter(
        &self,
        deletions: &[(String, Mechanism)],
        upsertions: &[(String, Mechanism, ScramCredential)],
    ) -> Result<Vec<Result<(), UserError>>, StoreError> {
        let mut results = Vec::new();
        let outcome = self.modify(|users| {
            for (user, mechanism) in deletions {
                let removed = users
                    .users
                    .get_mut(user)
                    .and_then(|mechanisms| mechanisms.remove(mechanism.name()));
                if users.users.get(user).is_some_and(BTreeMap::is_empty) {
                    users.users.remove(user);
                }
                results.push(match removed {
                    Some(_) => Ok(()),
                    None => Err(UserError::NotFound(format!("{user} {}", mechanism.name()))),
                });
            }
            for (user, mechanism, credential) in upsertions {
                let result =
                    check_name(user).and_then(|()| check_iterations(credential.iterations));
                if result.is_ok() {
                    users.users.entry(user.clone()).or_default().insert(
                        mechanism.name().to_string(),
                        StoredCredential::encode(credential),
                    );
                }
                results.push(result);
            }
            Ok(())
        });
        match outcome {
            Ok(()) => Ok(results),
            Err(UserError::Store(error)) => Err(error),
            Err(_) => Ok(results),
        }
    }

    /// Deletes a user and all its credentials.
    pub fn delete(&self, user: &str) -> Result<(), UserError> {
        self.modify(|users| match users.users.remove(user) {
            Some(_) => Ok(()),
            None => Err(UserError::NotFound(user.to_string())),
        })
    }

    /// Read-modify-write under the writers' lock; nothing is written if `change` fails.
    fn modify(
        &self,
        change: impl FnOnce(&mut UsersFile) -> Result<(), UserError>,
    ) -> Result<(), UserError> {
        let lock = self.file.lock()?;
        let (mut users, _) = self.file.read::<UsersFile>()?;
        change(&mut users)?;
        users.version = 1;
        let stamp = self.file.write(&lock, &users)?;
        *self.cache.lock() = (stamp, users);
        Ok(())
    }
}

fn check_name(user: &str) -> Result<(), UserError> {
    if user.is_empty() || user.len() > USER_NAME_BYTES_MAX || user.chars().any(char::is_control) {
        return Err(UserError::InvalidName);
    }
    Ok(())
}

fn check_iterations(iterations: u32) -> Result<(), UserError> {
    if (ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
        Ok(())
    } else {
        Err(UserError::Iterations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_survive_reopening_and_hold_no_password() {
        let dir = tempfile::tempdir().unwrap();
        let users = UserStore::open(dir.path()).unwrap();
        users
            .set_password("alice", "s3cret-pw", &Mechanism::ALL, 4096)
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join(USERS_FILE)).unwrap();
        assert!(!text.contains("s3cret-pw"));
        let again = UserStore::open(dir.path()).unwrap();
        let credential = again
            .credential("alice", Mechanism::Sha512)
            .unwrap()
            .unwrap();
        assert!(credential.matches_password(Mechanism::Sha512, "s3cret-pw"));
        // Another handle's change is seen without reopening.
        users.delete("alice").unwrap();
        assert!(
            again
                .credential("alice", Mechanism::Sha512)
                .unwrap()
                .is_none()
        );
        assert!(matches!(users.delete("alice"), Err(UserError::NotFound(_))));
        assert!(matches!(
            users.set_password("bob", "x", &Mechanism::ALL, 10),
            Err(UserError::Iterations)
        ));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(USERS_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o077, 0, "only the owner may read the credentials");
    }
}
