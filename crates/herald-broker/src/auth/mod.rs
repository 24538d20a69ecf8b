//! Security of the Kafka listeners: which listeners exist and how each is secured
//! (`listener.rs`), TLS (`tls.rs`), who a connection is (`principal.rs`), SASL PLAIN and SCRAM
//! (`scram.rs`) against the users' stored credentials (`credentials.rs`), and ACLs with the
//! authorizer (`acl.rs`), consulted by `wire/` for every request. Nothing here knows a Kafka
//! request type: `wire/sasl.rs` and `wire/authorize.rs` translate.

pub mod acl;
pub mod credentials;
mod listener;
mod principal;
pub mod scram;
mod store;
mod tls;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub use acl::{
    AclBinding, AclError, AclFilter, AclStore, Operation, PatternFilter, PatternType, Permission,
    ResourceType,
};
pub use credentials::{UserError, UserInfo, UserStore};
pub use listener::{ListenerError, ListenerSpec, SecurityProtocol, parse_listeners};
pub use principal::{ANONYMOUS, MappingError, Principal, PrincipalMapping};
pub use scram::{Mechanism, ScramCredential};
pub use store::StoreError;
pub use tls::{ClientAuth, TlsConfig, TlsError, TlsPaths, fuzz_config, fuzz_handshake};

#[doc(hidden)]
pub use scram::fuzz_sasl;

pub(crate) use principal::certificate_subject;

/// The name of the cluster resource in ACLs, as Kafka names it.
pub const CLUSTER_RESOURCE: &str = "kafka-cluster";

/// Whether the broker checks ACLs (`authorizer` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizerMode {
    /// Check ACLs when any listener authenticates clients (SASL, or TLS with client
    /// certificates); a broker with only plaintext listeners keeps allowing everything.
    #[default]
    Auto,
    /// Always check ACLs: a principal may do only what an ACL allows (super users anything).
    Acls,
    /// Never check ACLs.
    None,
}

/// One bound listener, as a connection sees it.
#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) name: String,
    pub(crate) protocol: SecurityProtocol,
    pub(crate) local_addr: SocketAddr,
    /// Host and port told to clients of this listener in Metadata.
    pub(crate) advertised: (String, i32),
}

impl Listener {
    /// Whether anyone on the network can use it without authenticating.
    pub(crate) fn insecure(&self) -> bool {
        self.protocol == SecurityProtocol::Plaintext && !self.local_addr.ip().is_loopback()
    }
}

/// The security settings of a broker, checked before anything is opened or bound.
#[derive(Clone)]
pub(crate) struct Setup {
    pub(crate) specs: Vec<ListenerSpec>,
    tls: Option<Arc<TlsConfig>>,
    mapping: PrincipalMapping,
    mechanisms: Vec<String>,
    super_users: Vec<String>,
    enforce: bool,
    failure_delay_ms_max: u64,
}

/// SASL mechanisms the broker can offer.
const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

impl Setup {
    /// Parses and checks the listeners, TLS files, mechanisms and rules; the message says
    /// which setting is wrong.
    pub(crate) fn from_config(config: &crate::BrokerConfig) -> Result<Setup, String> {
        let specs = match &config.listeners {
            Some(text) => parse_listeners(
                text,
                config.advertised_listeners.as_deref(),
                config.listener_security_protocol_map.as_deref(),
            )
            .map_err(|error| error.to_string())?,
            None => vec![ListenerSpec {
                name: "PLAINTEXT".to_string(),
                addr: config.kafka_addr,
                protocol: SecurityProtocol::Plaintext,
                advertised: None,
            }],
        };
        if specs.is_empty() {
            return Err("listeners names no listener".to_string());
        }
        let tls = if specs.iter().any(|spec| spec.protocol.tls()) {
            let (Some(certificate), Some(key)) =
                (&config.ssl_certificate_path, &config.ssl_key_path)
            else {
                return Err(TlsError::Missing.to_string());
            };
            let paths = TlsPaths {
                certificate: certificate.clone(),
                key: key.clone(),
                client_ca: config.ssl_client_ca_path.clone(),
                client_auth: config.ssl_client_auth,
            };
            Some(Arc::new(
                TlsConfig::load(paths).map_err(|error| error.to_string())?,
            ))
        } else {
            None
        };
        let mechanisms: Vec<String> = config
            .sasl_enabled_mechanisms
            .split(',')
            .map(|name| name.trim().to_ascii_uppercase())
            .filter(|name| !name.is_empty())
            .collect();
        if let Some(unknown) = mechanisms
            .iter()
            .find(|name| !MECHANISMS.contains(&name.as_str()))
        {
            return Err(format!(
                "sasl_enabled_mechanisms: {unknown} is not one of {}",
                MECHANISMS.join(", ")
            ));
        }
        if mechanisms.is_empty() && specs.iter().any(|spec| spec.protocol.sasl()) {
            return Err(
                "a SASL listener needs at least one of sasl_enabled_mechanisms".to_string(),
            );
        }
        let mapping = PrincipalMapping::parse(&config.ssl_principal_mapping_rules)
            .map_err(|error| error.to_string())?;
        let super_users = config
            .super_users
            .split([';', ','])
            .map(str::trim)
            .filter(|user| !user.is_empty())
            .map(str::to_string)
            .collect();
        let client_certificates = tls.is_some() && config.ssl_client_auth != ClientAuth::None;
        let enforce = match config.authorizer {
            AuthorizerMode::Acls => true,
            AuthorizerMode::None => false,
            AuthorizerMode::Auto => {
                client_certificates || specs.iter().any(|spec| spec.protocol.sasl())
            }
        };
        Ok(Setup {
            specs,
            tls,
            mapping,
            mechanisms,
            super_users,
            enforce,
            failure_delay_ms_max: config.sasl_failure_delay_ms_max,
        })
    }

    /// Opens the users' credentials and the ACLs in the data directory.
    pub(crate) fn open(self, data_dir: &std::path::Path) -> Result<Security, String> {
        let users = UserStore::open(data_dir).map_err(|error| error.to_string())?;
        let acls = AclStore::open(data_dir).map_err(|error| error.to_string())?;
        Ok(Security::new(
            self.tls,
            users,
            acls,
            self.mapping,
            self.mechanisms,
            self.super_users,
            self.enforce,
            self.failure_delay_ms_max,
        ))
    }
}

/// Everything security-related one broker shares among its connections.
pub(crate) struct Security {
    pub(crate) tls: Option<Arc<TlsConfig>>,
    pub(crate) users: UserStore,
    pub(crate) acls: AclStore,
    pub(crate) mapping: PrincipalMapping,
    /// SASL mechanisms offered, by name.
    pub(crate) mechanisms: Vec<String>,
    super_users: Vec<String>,
    /// Whether ACLs are checked.
    pub(crate) enforce: bool,
    pub(crate) failures: FailureDelay,
}

impl Security {
    #[allow(clippy::too_many_arguments)]
    fn new(
        tls: Option<Arc<TlsConfig>>,
        users: UserStore,
        acls: AclStore,
        mapping: PrincipalMapping,
        mechanisms: Vec<String>,
        super_users: Vec<String>,
        enforce: bool,
        failure_delay_ms_max: u64,
    ) -> Security {
        Security {
            tls,
            users,
            acls,
            mapping,
            mechanisms,
            super_users,
            enforce,
            failures: FailureDelay::new(Duration::from_millis(failure_delay_ms_max)),
        }
    }

    /// Whether `principal` from `host` may do `operation` on a resource.
    pub(crate) fn allows(
        &self,
        principal: &Principal,
        host: IpAddr,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if !self.enforce
            || self
                .super_users
                .iter()
                .any(|user| user == principal.as_str())
        {
            return true;
        }
        self.acls.allows(
            principal.as_str(),
            &host.to_string(),
            operation,
            resource_type,
            name,
        )
    }
}

impl Security {
    /// Whether `principal` may do `operation` on some resource of the type (Kafka's
    /// authorizeByResourceType, for KIP-679's idempotent producers): an allow applies and no
    /// deny covers every resource of the type.
    pub(crate) fn allows_by_type(
        &self,
        principal: &Principal,
        host: IpAddr,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        if !self.enforce
            || self
                .super_users
                .iter()
                .any(|user| user == principal.as_str())
        {
            return true;
        }
        self.acls.allows_by_type(
            principal.as_str(),
            &host.to_string(),
            operation,
            resource_type,
        )
    }
}

/// First delay after a failed authentication from an address; each further failure doubles it.
const FAILURE_DELAY_MS_MIN: u64 = 100;
/// An address without failures for this long starts again from the first delay.
const FAILURE_MEMORY: Duration = Duration::from_secs(600);
/// Addresses remembered at once; past it the oldest are forgotten, so a spray of addresses
/// cannot grow the table without bound.
const FAILURE_ADDRESSES_MAX: usize = 10_000;

/// The delay before a failed authentication is answered, growing per source address so that
/// guessing passwords is slow, and forgotten after a quiet period.
pub(crate) struct FailureDelay {
    max: Duration,
    by_address: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailureDelay {
    fn new(max: Duration) -> FailureDelay {
        FailureDelay {
            max,
            by_address: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure from `address` and returns how long to wait before answering.
    pub(crate) fn failed(&self, address: IpAddr) -> Duration {
        let now = Instant::now();
        let mut table = self.by_address.lock();
        if table.len() >= FAILURE_ADDRESSES_MAX && !table.contains_key(&address) {
            table.retain(|_, (_, last)| now.duration_since(*last) < FAILURE_MEMORY);
            if table.len() >= FAILURE_ADDRESSES_MAX {
                if let Some(oldest) = table
                    .iter()
                    .min_by_key(|(_, (_, last))| *last)
                    .map(|(a, _)| *a)
                {
                    table.remove(&oldest);
                }
            }
        }
        let entry = table.entry(address).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_MEMORY {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let doublings = entry.0.saturating_sub(1).min(16);
        Duration::from_millis(FAILURE_DELAY_MS_MIN.saturating_mul(1 << doublings)).min(self.max)
    }

    /// Forgets the failures of an address that authenticated.
    pub(crate) fn succeeded(&self, address: IpAddr) {
        self.by_address.lock().remove(&address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_delay_doubles_per_address_up_to_the_max_and_resets_on_success() {
        let delay = FailureDelay::new(Duration::from_millis(1000));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let delays: Vec<u64> = (0..6).map(|_| delay.failed(a).as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(
            delay.failed(b).as_millis(),
            100,
            "another address starts afresh"
        );
        delay.succeeded(a);
        assert_eq!(delay.failed(a).as_millis(), 100);
    }
}
