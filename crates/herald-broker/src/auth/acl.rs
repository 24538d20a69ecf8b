//! ACLs in Kafka's model: a binding allows or denies one principal, from one host, one
//! operation on the resources one pattern matches; a matching deny wins over any allow, and
//! without a matching allow the answer is no. Bindings live in `<data_dir>/acls.json`, written
//! before a change is answered and re-read when another process (`herald acl`) replaced it.

use std::path::Path;
use std::str::FromStr;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use super::store::{JsonFile, Stamp, StoreError};

/// File name of the ACLs in the data directory.
pub const ACLS_FILE: &str = "acls.json";
/// Most ACL bindings a broker keeps; bounds the file and the work of each check.
pub const ACL_BINDINGS_MAX: usize = 100_000;

macro_rules! kafka_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $code:literal, $text:literal;)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $($(#[$vmeta])* $variant,)* }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// Kafka's number for it on the wire.
            pub fn code(self) -> i8 {
                match self { $($name::$variant => $code,)* }
            }

            /// From Kafka's number.
            pub fn from_code(code: i8) -> Option<$name> {
                match code { $($code => Some($name::$variant),)* _ => None }
            }

            /// Kafka's name for it (`TOPIC`, `READ`, ...).
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<$name, String> {
                let wanted = text.replace('-', "_").to_ascii_uppercase();
                $name::ALL
                    .iter()
                    .copied()
                    .find(|value| value.name() == wanted)
                    .ok_or_else(|| format!(
                        "`{text}` is not one of {}",
                        $name::ALL.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
                    ))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

kafka_enum!(
    /// What kind of resource a binding is about.
    ResourceType {
        /// A topic.
        Topic = 2, "TOPIC";
        /// A consumer group.
        Group = 3, "GROUP";
        /// The cluster (this broker).
        Cluster = 4, "CLUSTER";
        /// A transactional id.
        TransactionalId = 5, "TRANSACTIONAL_ID";
    }
);

kafka_enum!(
    /// How a binding's resource name matches.
    PatternType {
        /// The name itself (or every name, for `*`).
        Literal = 3, "LITERAL";
        /// Every name starting with it.
        Prefixed = 4, "PREFIXED";
    }
);

kafka_enum!(
    /// What a principal wants to do.
    Operation {
        /// Every operation.
        All = 2, "ALL";
        /// Consume; join a group.
        Read = 3, "READ";
        /// Produce.
        Write = 4, "WRITE";
        /// Create topics.
        Create = 5, "CREATE";
        /// Delete topics, records, groups.
        Delete = 6, "DELETE";
        /// Add partitions; change ACLs and users (cluster).
        Alter = 7, "ALTER";
        /// See that it exists.
        Describe = 8, "DESCRIBE";
        /// Broker-to-broker actions.
        ClusterAction = 9, "CLUSTER_ACTION";
        /// Read configs.
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        /// Change configs.
        AlterConfigs = 11, "ALTER_CONFIGS";
        /// Use an idempotent producer id.
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
    }
);

kafka_enum!(
    /// Whether a binding allows or denies.
    Permission {
        /// Denies; wins over any allow.
        Deny = 2, "DENY";
        /// Allows, unless a deny matches too.
        Allow = 3, "ALLOW";
    }
);

/// One ACL: `principal` from `host` may (or may not) do `operation` on the resources the
/// pattern matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    /// Kind of resource.
    pub resource_type: ResourceType,
    /// Name or prefix; `*` with a literal pattern is every resource of the type.
    pub resource_name: String,
    /// Literal or prefixed.
    pub pattern_type: PatternType,
    /// `User:alice`, or `User:*` for everyone.
    pub principal: String,
    /// Client IP address, or `*`.
    pub host: String,
    /// The operation.
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
}

/// A filter over bindings, as DescribeAcls and DeleteAcls carry it: `None` matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFilter {
    /// Kind of resource.
    pub resource_type: Option<ResourceType>,
    /// Exact resource name (or, with [`PatternFilter::Match`], a name to match against).
    pub resource_name: Option<String>,
    /// Which patterns.
    pub pattern: PatternFilter,
    /// Exact principal.
    pub principal: Option<String>,
    /// Exact host.
    pub host: Option<String>,
    /// Exact operation.
    pub operation: Option<Operation>,
    /// Exact permission.
    pub permission: Option<Permission>,
}

/// How a filter selects patterns (Kafka's `PatternType` ANY and MATCH included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PatternFilter {
    /// Any pattern type, exact name.
    #[default]
    Any,
    /// Every binding that applies to the named resource (literal, wildcard, prefixes).
    Match,
    /// This pattern type, exact name.
    Exactly(PatternType),
}

impl AclFilter {
    /// Whether `binding` passes the filter.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        let name_ok = match (&self.pattern, &self.resource_name) {
            (_, None) => true,
            (PatternFilter::Match, Some(name)) => binding_covers(binding, name),
            (_, Some(name)) => binding.resource_name == *name,
        };
        let pattern_ok = match self.pattern {
            PatternFilter::Any | PatternFilter::Match => true,
            PatternFilter::Exactly(pattern) => binding.pattern_type == pattern,
        };
        self.resource_type
            .is_none_or(|value| binding.resource_type == value)
            && name_ok
            && pattern_ok
            && self
                .principal
                .as_ref()
                .is_none_or(|value| binding.principal == *value)
            && self
                .host
                .as_ref()
                .is_none_or(|value| binding.host == *value)
            && self
                .operation
                .is_none_or(|value| binding.operation == value)
            && self
                .permission
                .is_none_or(|value| binding.permission == value)
    }
}

/// Whether a binding's pattern covers the resource `name`.
fn binding_covers(binding: &AclBinding, name: &str) -> bool {
    match binding.pattern_type {
        PatternType::Literal => binding.resource_name == name || binding.resource_name == "*",
        PatternType::Prefixed => name.starts_with(binding.resource_name.as_str()),
    }
}

/// Whether a binding's operation grants `wanted` (Kafka's implications: READ, WRITE, DELETE
/// and ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS).
fn grants(granted: Operation, wanted: Operation) -> bool {
    granted == wanted
        || granted == Operation::All
        || (wanted == Operation::Describe
            && matches!(
                granted,
                Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
            ))
        || (wanted == Operation::DescribeConfigs && granted == Operation::AlterConfigs)
}

/// Why an ACL change was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AclError {
    /// The binding is not valid (empty name, bad principal, wildcard misuse).
    #[error("invalid ACL: {0}")]
    Invalid(String),
    /// There are already [`ACL_BINDINGS_MAX`] bindings.
    #[error("too many ACLs (at most {ACL_BINDINGS_MAX})")]
    TooMany,
    /// The file could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AclBinding {
    /// Checks the binding is one Kafka would accept.
    pub fn validate(&self) -> Result<(), AclError> {
        let invalid = |message: &str| Err(AclError::Invalid(message.to_string()));
        if self.resource_name.is_empty() {
            return invalid("the resource name is empty");
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != "kafka-cluster" {
            return invalid("the cluster resource is named kafka-cluster");
        }
        match self.principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => return invalid("the principal must be Type:name, e.g. User:alice"),
        }
        if self.host.is_empty() {
            return invalid("the host is empty (use * for any)");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AclsFile {
    version: u32,
    acls: Vec<AclBinding>,
}

/// The broker's ACLs, re-read when the file changes.
pub struct AclStore {
    file: JsonFile,
    state: RwLock<(Stamp, Vec<AclBinding>)>,
}

impl AclStore {
    /// Opens (without creating) the ACL file in a data directory.
    pub fn open(data_dir: &Path) -> Result<AclStore, StoreError> {
        let file = JsonFile::new(data_dir, ACLS_FILE);
        let (acls, stamp) = file.read::<AclsFile>()?;
        Ok(AclStore {
            file,
            state: RwLock::new((stamp, acls.acls)),
        })
    }

    /// Re-reads the file if another process replaced it; returns whether it did. The broker
    /// calls this from its housekeeping, so `herald acl` changes apply within a tick.
    pub fn refresh(&self) -> Result<bool, StoreError> {
        let stamp = self.file.stamp()?;
        if self.state.read().0 == stamp {
            return Ok(false);
        }
        let (acls, stamp) = self.file.read::<AclsFile>()?;
        *self.state.write() = (stamp, acls.acls);
        Ok(true)
    }

    /// The bindings passing `filter`.
    pub fn describe(&self, filter: &AclFilter) -> Vec<AclBinding> {
        self.state
            .read()
            .1
            .iter()
            .filter(|binding| filter.matches(binding))
            .cloned()
            .collect()
    }

    /// Adds bindings (ones already present are kept once); each result says whether that
    /// binding was valid. Written to disk before returning.
    pub fn add(&self, bindings: &[AclBinding]) -> Result<Vec<Result<(), AclError>>, AclError> {
        let results: Vec<Result<(), AclError>> =
            bindings.iter().map(AclBinding::validate).collect();
        self.modify(|acls| {
            for (binding, result) in bindings.iter().zip(&results) {
                if result.is_ok() && !acls.contains(binding) {
                    if acls.len() >= ACL_BINDINGS_MAX {
                        return Err(AclError::TooMany);
                    }
                    acls.push(binding.clone());
                }
            }
            Ok(())
        })?;
        Ok(results)
    }

    /// Removes the bindings each filter matches; returns them per filter.
    pub fn remove(&self, filters: &[AclFilter]) -> Result<Vec<Vec<AclBinding>>, AclError> {
        let mut removed = Vec::new();
        self.modify(|acls| {
            for filter in filters {
                let (gone, kept): (Vec<_>, Vec<_>) =
                    acls.drain(..).partition(|binding| filter.matches(binding));
                *acls = kept;
                removed.push(gone);
            }
            Ok(())
        })?;
        Ok(removed)
    }

    fn modify(
        &self,
        change: impl FnOnce(&mut Vec<AclBinding>) -> Result<(), AclError>,
    ) -> Result<(), AclError> {
        let lock = self.file.lock()?;
        let (mut file, _) = self.file.read::<AclsFile>()?;
        change(&mut file.acls)?;
        file.acls.sort();
        file.version = 1;
        let stamp = self.file.write(&lock, &file)?;
        *self.state.write() = (stamp, file.acls);
        Ok(())
    }

    /// Whether some resource of the type is open to `principal` for `operation`: an allow
    /// applies to it and no deny on every resource (`*` or an empty prefix) overrides it.
    pub fn allows_by_type(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        let state = self.state.read();
        let applicable = || {
            state.1.iter().filter(move |binding| {
                binding.resource_type == resource_type
                    && (binding.principal == principal || binding.principal == "User:*")
                    && (binding.host == host || binding.host == "*")
            })
        };
        let denied_everywhere = applicable().any(|binding| {
            binding.permission == Permission::Deny
                && (binding.operation == operation || binding.operation == Operation::All)
                && binding_covers(binding, "")
                && (binding.pattern_type == PatternType::Prefixed || binding.resource_name == "*")
        });
        !denied_everywhere
            && applicable().any(|binding| {
                binding.permission == Permission::Allow && grants(binding.operation, operation)
            })
    }

    /// Whether `principal` connecting from `host` may do `operation` on the resource:
    /// a matching deny refuses, else a matching allow grants, else no.
    pub fn allows(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        let state = self.state.read();
        let applicable = state.1.iter().filter(|binding| {
            binding.resource_type == resource_type
                && binding_covers(binding, name)
                && (binding.principal == principal || binding.principal == "User:*")
                && (binding.host == host || binding.host == "*")
        });
        let mut allowed = false;
        for binding in applicable {
            match binding.permission {
                // A deny of ALL, or of the operation itself, refuses; Kafka does not extend
                // denies through the implications (DENY READ does not deny DESCRIBE).
                Permission::Deny
                    if binding.operation == operation || binding.operation == Operation::All =>
                {
                    return false;
                }
                Permission::Deny => {}
                Permission::Allow => allowed |= grants(binding.operation, operation),
            }
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(
        name: &str,
        pattern: PatternType,
        principal: &str,
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: name.to_string(),
            pattern_type: pattern,
            principal: principal.to_string(),
            host: "*".to_string(),
            operation,
            permission,
        }
    }

    #[test]
    fn deny_wins_prefixes_match_and_implications_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = AclStore::open(dir.path()).unwrap();
        let results = store
            .add(&[
                binding(
                    "orders.",
                    PatternType::Prefixed,
                    "User:alice",
                    Operation::Read,
                    Permission::Allow,
                ),
                binding(
                    "orders.secret",
                    PatternType::Literal,
                    "User:alice",
                    Operation::Read,
                    Permission::Deny,
                ),
                binding(
                    "*",
                    PatternType::Literal,
                    "User:bob",
                    Operation::Write,
                    Permission::Allow,
                ),
                binding(
                    "",
                    PatternType::Literal,
                    "User:bob",
                    Operation::Write,
                    Permission::Allow,
                ),
            ])
            .unwrap();
        assert!(results[3].is_err());
        let allows = |principal: &str, operation, name: &str| {
            store.allows(principal, "127.0.0.1", operation, ResourceType::Topic, name)
        };
        assert!(allows("User:alice", Operation::Read, "orders.eu"));
        assert!(
            allows("User:alice", Operation::Describe, "orders.eu"),
            "READ implies DESCRIBE"
        );
        assert!(!allows("User:alice", Operation::Write, "orders.eu"));
        assert!(
            !allows("User:alice", Operation::Read, "orders.secret"),
            "deny wins"
        );
        assert!(!allows("User:alice", Operation::Read, "payments"));
        assert!(allows("User:bob", Operation::Write, "anything"));
        assert!(!allows("User:carol", Operation::Describe, "orders.eu"));

        // Durable, and seen by another handle after a refresh.
        let other = AclStore::open(dir.path()).unwrap();
        assert_eq!(other.describe(&AclFilter::default()).len(), 3);
        let removed = store
            .remove(&[AclFilter {
                principal: Some("User:bob".to_string()),
                ..Default::default()
            }])
            .unwrap();
        assert_eq!(removed[0].len(), 1);
        assert!(other.refresh().unwrap());
        assert_eq!(other.describe(&AclFilter::default()).len(), 2);
        let matching = other.describe(&AclFilter {
            resource_name: Some("orders.secret".to_string()),
            pattern: PatternFilter::Match,
            ..Default::default()
        });
        assert_eq!(matching.len(), 2, "the prefix and the literal both apply");
    }
}
