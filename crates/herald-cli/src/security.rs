//! `herald user` and `herald acl`: SASL users and ACLs of a broker, edited in its data directory
//! (the same files `herald serve` reads, locked against concurrent writers; a running broker
//! picks changes up without a restart). Remote administration goes through Kafka's own admin
//! APIs, which the broker serves (`kafka-acls.sh`, `kafka-configs.sh`, any admin client).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use herald_broker::auth::{
    AclBinding, AclFilter, AclStore, Mechanism, Operation, PatternFilter, PatternType, Permission,
    ResourceType, UserStore,
};

use crate::{CliError, Global, Output};

/// Where the broker keeps its data: the security files are there.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDir {
    /// The broker's data directory [env: HERALD_DATA_DIR] [default: ./herald-data]
    #[arg(
        long,
        value_name = "DIR",
        env = "HERALD_DATA_DIR",
        default_value = "./herald-data"
    )]
    pub data_dir: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user with SCRAM-SHA-256 and SCRAM-SHA-512 credentials (also valid for PLAIN);
    /// the password is read from a prompt, or from the first line of standard input.
    Create(UserArgs),
    /// Change a user's password (read like `create`'s).
    SetPassword(UserArgs),
    /// List users and their mechanisms.
    List(DataDir),
    /// Delete a user.
    Delete {
        name: String,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, clap::Args)]
pub struct UserArgs {
    /// The user name (the principal is User:<name>).
    name: String,
    /// PBKDF2 iterations (4096 to 16384).
    #[arg(long, default_value_t = 8192)]
    iterations: u32,
    #[command(flatten)]
    dir: DataDir,
}

pub fn run_user(global: &Global, command: UserCommand) -> Result<(), CliError> {
    let open = |dir: &DataDir| {
        std::fs::create_dir_all(&dir.data_dir)
            .map_err(|error| anyhow::anyhow!("{}: {error}", dir.data_dir.display()))?;
        UserStore::open(&dir.data_dir).map_err(|error| CliError::Other(error.into()))
    };
    match command {
        UserCommand::Create(args) | UserCommand::SetPassword(args) => {
            let users = open(&args.dir)?;
            let password = read_password(&args.name)?;
            users
                .set_password(&args.name, &password, &Mechanism::ALL, args.iterations)
                .map_err(|error| CliError::Usage(error.to_string()))?;
            eprintln!("user {} saved (SCRAM-SHA-256, SCRAM-SHA-512)", args.name);
            Ok(())
        }
        UserCommand::List(dir) => {
            let users = open(&dir)?
                .list()
                .map_err(|error| CliError::Other(error.into()))?;
            match global.output {
                Output::Json => {
                    let list: Vec<_> = users
                        .iter()
                        .map(|user| {
                            serde_json::json!({
                                "name": user.name,
                                "mechanisms": user.mechanisms.iter().map(|(m, i)| serde_json::json!({"mechanism": m.name(), "iterations": i})).collect::<Vec<_>>(),
                            })
                        })
                        .collect();
                    println!("{}", serde_json::Value::Array(list));
                }
                _ => {
                    println!("{:<24} MECHANISMS", "USER");
                    for user in users {
                        let mechanisms: Vec<String> = user
                            .mechanisms
                            .iter()
                            .map(|(mechanism, iterations)| {
                                format!("{}({iterations})", mechanism.name())
                            })
                            .collect();
                        println!("{:<24} {}", user.name, mechanisms.join(" "));
                    }
                }
            }
            Ok(())
        }
        UserCommand::Delete { name, dir } => {
            open(&dir)?.delete(&name).map_err(|error| match error {
                herald_broker::auth::UserError::NotFound(_) => {
                    CliError::NotFound(format!("no user {name}"))
                }
                error => CliError::Other(error.into()),
            })?;
            eprintln!("user {name} deleted");
            Ok(())
        }
    }
}

/// Longest password read, in bytes.
const PASSWORD_BYTES_MAX: usize = 1024;

/// A password from a prompt (twice) on a terminal, else the first line of standard input;
/// never from the command line, where other users could read it.
fn read_password(user: &str) -> Result<String, CliError> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {user}: "))
            .map_err(|error| anyhow::anyhow!("reading the password: {error}"))?;
        let again = rpassword::prompt_password("again: ")
            .map_err(|error| anyhow::anyhow!("reading the password: {error}"))?;
        if first != again {
            return Err(CliError::Usage("the passwords differ".to_string()));
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|error| anyhow::anyhow!("reading the password from stdin: {error}"))?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    if password.is_empty() || password.len() > PASSWORD_BYTES_MAX {
        return Err(CliError::Usage(format!(
            "the password must have 1 to {PASSWORD_BYTES_MAX} bytes"
        )));
    }
    Ok(password)
}

#[derive(Debug, clap::Subcommand)]
pub enum AclCommand {
    /// Add an ACL: `herald acl add --allow User:alice --operation read --topic orders`.
    Add(AclArgs),
    /// List ACLs, optionally only those of a principal or resource.
    List(AclSelect),
    /// Remove the ACLs matching every option given.
    Remove(AclSelect),
}

/// The resource an ACL is about: one of --topic, --group, --cluster, --transactional-id.
#[derive(Debug, Clone, clap::Args)]
#[group(multiple = false)]
pub struct Resource {
    /// A topic, or with --prefixed every topic starting with it; `*` is every topic.
    #[arg(long)]
    topic: Option<String>,
    /// A consumer group (same rules as --topic).
    #[arg(long)]
    group: Option<String>,
    /// The cluster (ACL administration, idempotent producers, cluster configs).
    #[arg(long)]
    cluster: bool,
    /// A transactional id.
    #[arg(long)]
    transactional_id: Option<String>,
}

impl Resource {
    fn get(&self) -> Option<(ResourceType, String)> {
        if let Some(topic) = &self.topic {
            return Some((ResourceType::Topic, topic.clone()));
        }
        if let Some(group) = &self.group {
            return Some((ResourceType::Group, group.clone()));
        }
        if let Some(id) = &self.transactional_id {
            return Some((ResourceType::TransactionalId, id.clone()));
        }
        self.cluster.then(|| {
            (
                ResourceType::Cluster,
                herald_broker::auth::CLUSTER_RESOURCE.to_string(),
            )
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct AclArgs {
    /// Allow this principal (`User:alice`, `User:*` for everyone).
    #[arg(
        long,
        value_name = "PRINCIPAL",
        conflicts_with = "deny",
        required_unless_present = "deny"
    )]
    allow: Option<String>,
    /// Deny this principal; a deny wins over any allow.
    #[arg(long, value_name = "PRINCIPAL")]
    deny: Option<String>,
    /// Operations: read, write, create, delete, alter, describe, describe-configs,
    /// alter-configs, idempotent-write, cluster-action, all (repeatable).
    #[arg(long = "operation", required = true)]
    operations: Vec<Operation>,
    #[command(flatten)]
    resource: Resource,
    /// The name is a prefix.
    #[arg(long)]
    prefixed: bool,
    /// The client address the ACL applies to.
    #[arg(long, default_value = "*")]
    host: String,
    #[command(flatten)]
    dir: DataDir,
}

#[derive(Debug, clap::Args)]
pub struct AclSelect {
    /// Only ACLs of this principal.
    #[arg(long)]
    principal: Option<String>,
    #[command(flatten)]
    resource: Resource,
    #[command(flatten)]
    dir: DataDir,
}

impl AclSelect {
    fn filter(&self) -> AclFilter {
        let (resource_type, resource_name) = match self.resource.get() {
            Some((resource_type, name)) => (Some(resource_type), Some(name)),
            None => (None, None),
        };
        AclFilter {
            resource_type,
            resource_name,
            principal: self.principal.clone(),
            pattern: PatternFilter::Any,
            ..Default::default()
        }
    }
}

pub fn run_acl(global: &Global, command: AclCommand) -> Result<(), CliError> {
    let open = |dir: &DataDir| {
        std::fs::create_dir_all(&dir.data_dir)
            .map_err(|error| anyhow::anyhow!("{}: {error}", dir.data_dir.display()))?;
        AclStore::open(&dir.data_dir).map_err(|error| CliError::Other(error.into()))
    };
    match command {
        AclCommand::Add(args) => {
            let (resource_type, resource_name) = args.resource.get().ok_or_else(|| {
                CliError::Usage(
                    "name a resource: --topic, --group, --cluster or --transactional-id"
                        .to_string(),
                )
            })?;
            let (principal, permission) = match (&args.allow, &args.deny) {
                (Some(principal), None) => (principal.clone(), Permission::Allow),
                (None, Some(principal)) => (principal.clone(), Permission::Deny),
                _ => return Err(CliError::Usage("give one of --allow or --deny".to_string())),
            };
            let bindings: Vec<AclBinding> = args
                .operations
                .iter()
                .map(|&operation| AclBinding {
                    resource_type,
                    resource_name: resource_name.clone(),
                    pattern_type: if args.prefixed {
                        PatternType::Prefixed
                    } else {
                        PatternType::Literal
                    },
                    principal: principal.clone(),
                    host: args.host.clone(),
                    operation,
                    permission,
                })
                .collect();
            let results = open(&args.dir)?
                .add(&bindings)
                .map_err(|error| CliError::Other(error.into()))?;
            for (binding, result) in bindings.iter().zip(results) {
                result.map_err(|error| CliError::Usage(error.to_string()))?;
                eprintln!("added: {}", describe(binding));
            }
            Ok(())
        }
        AclCommand::List(select) => {
            let acls = open(&select.dir)?.describe(&select.filter());
            print_acls(global, &acls);
            Ok(())
        }
        AclCommand::Remove(select) => {
            if select.principal.is_none() && select.resource.get().is_none() {
                return Err(CliError::Usage(
                    "say which ACLs to remove: --principal and/or a resource".to_string(),
                ));
            }
            let removed = open(&select.dir)?
                .remove(&[select.filter()])
                .map_err(|error| CliError::Other(error.into()))?;
            for binding in removed.into_iter().flatten() {
                eprintln!("removed: {}", describe(&binding));
            }
            Ok(())
        }
    }
}

fn describe(binding: &AclBinding) -> String {
    format!(
        "{} {} {} on {} {}:{} from {}",
        binding.permission,
        binding.principal,
        binding.operation,
        binding.resource_type,
        binding.pattern_type,
        binding.resource_name,
        binding.host
    )
}

fn print_acls(global: &Global, acls: &[AclBinding]) {
    match global.output {
        Output::Json => {
            println!("{}", serde_json::to_string(acls).unwrap_or_default());
        }
        _ => {
            println!(
                "{:<18} {:<10} {:<24} {:<10} {:<16} {:<12} HOST",
                "RESOURCE", "PATTERN", "NAME", "PERMISSION", "PRINCIPAL", "OPERATION"
            );
            for acl in acls {
                println!(
                    "{:<18} {:<10} {:<24} {:<10} {:<16} {:<12} {}",
                    acl.resource_type.name(),
                    acl.pattern_type.name(),
                    acl.resource_name,
                    acl.permission.name(),
                    acl.principal,
                    acl.operation.name(),
                    acl.host
                );
            }
        }
    }
}
