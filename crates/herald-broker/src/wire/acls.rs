//! CreateAcls, DescribeAcls, DeleteAcls, DescribeUserScramCredentials and
//! AlterUserScramCredentials: Kafka's admin APIs for ACLs and SASL users, translated to the
//! broker's `auth` types. Changing ACLs or users needs ALTER on the cluster, listing them
//! DESCRIBE; changes are on disk before they are answered.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, CreateAclsRequest,
    CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest,
    DescribeAclsResponse, DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;

use super::sasl::Session;
use super::{Reply, blocking, str_bytes};
use crate::Core;
use crate::auth::{
    AclBinding, AclFilter, CLUSTER_RESOURCE, Mechanism, Operation, PatternFilter, PatternType,
    Permission, ResourceType, ScramCredential,
};
use crate::stats::Counters;

const CLUSTER_DENIED: i16 = ResponseError::ClusterAuthorizationFailed.code();
const INVALID_REQUEST: i16 = ResponseError::InvalidRequest.code();
const UNKNOWN_SERVER_ERROR: i16 = ResponseError::UnknownServerError.code();
const RESOURCE_NOT_FOUND: i16 = ResponseError::ResourceNotFound.code();
const UNSUPPORTED_SASL_MECHANISM: i16 = ResponseError::UnsupportedSaslMechanism.code();
const UNACCEPTABLE_CREDENTIAL: i16 = ResponseError::UnacceptableCredential.code();

/// Kafka's filter codes for "any" and "match".
const FILTER_ANY: i8 = 1;
const PATTERN_MATCH: i8 = 2;

fn cluster_allows(core: &Core, session: &Session, operation: Operation) -> bool {
    let allowed = core.security.allows(
        &session.principal,
        session.peer.ip(),
        operation,
        ResourceType::Cluster,
        CLUSTER_RESOURCE,
    );
    if !allowed {
        Counters::add(&core.counters.authorization_failures, 1);
    }
    allowed
}

pub(crate) fn create_acls(
    core: &Arc<Core>,
    session: &Session,
    request: CreateAclsRequest,
) -> Reply {
    if !cluster_allows(core, session, Operation::Alter) {
        let results = request
            .creations
            .iter()
            .map(|_| AclCreationResult::default().with_error_code(CLUSTER_DENIED))
            .collect();
        return Reply::Ready(Box::new(ResponseKind::CreateAcls(
            CreateAclsResponse::default().with_results(results),
        )));
    }
    let parsed: Vec<Result<AclBinding, String>> = request
        .creations
        .into_iter()
        .map(|creation| {
            Ok(AclBinding {
                resource_type: ResourceType::from_code(creation.resource_type)
                    .ok_or("unknown resource type")?,
                resource_name: creation.resource_name.as_str().to_string(),
                pattern_type: PatternType::from_code(creation.resource_pattern_type)
                    .ok_or("the pattern type must be LITERAL or PREFIXED")?,
                principal: creation.principal.as_str().to_string(),
                host: creation.host.as_str().to_string(),
                operation: Operation::from_code(creation.operation).ok_or("unknown operation")?,
                permission: Permission::from_code(creation.permission_type)
                    .ok_or("the permission must be ALLOW or DENY")?,
            })
        })
        .collect();
    blocking(core, move |core| {
        let valid: Vec<AclBinding> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().cloned())
            .collect();
        let stored = core.security.acls.add(&valid);
        let mut stored_results = match &stored {
            Ok(results) => results
                .iter()
                .map(|r| r.as_ref().err().map(ToString::to_string))
                .collect(),
            Err(error) => vec![Some(error.to_string()); valid.len()],
        }
        .into_iter();
        let results = parsed
            .iter()
            .map(|parsed| match parsed {
                Err(message) => AclCreationResult::default()
                    .with_error_code(INVALID_REQUEST)
                    .with_error_message(Some(str_bytes(message))),
                Ok(_) => match stored_results.next().flatten() {
                    None => AclCreationResult::default(),
                    Some(message) => AclCreationResult::default()
                        .with_error_code(if stored.is_ok() {
                            INVALID_REQUEST
                        } else {
                            UNKNOWN_SERVER_ERROR
                        })
                        .with_error_message(Some(str_bytes(&message))),
                },
            })
            .collect();
        ResponseKind::CreateAcls(CreateAclsResponse::default().with_results(results))
    })
}

/// Turns Kafka's filter fields into an [`AclFilter`]; `None` for codes that match nothing.
#[allow(clippy::too_many_arguments)]
fn filter(
    resource_type: i8,
    name: Option<&StrBytes>,
    pattern: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, &'static str> {
    let any_or = |code: i8| code == FILTER_ANY;
    Ok(AclFilter {
        resource_type: if any_or(resource_type) {
            None
        } else {
            Some(ResourceType::from_code(resource_type).ok_or("unknown resource type")?)
        },
        resource_name: name.map(|name| name.as_str().to_string()),
        pattern: match pattern {
            FILTER_ANY => PatternFilter::Any,
            PATTERN_MATCH => PatternFilter::Match,
            code => {
                PatternFilter::Exactly(PatternType::from_code(code).ok_or("unknown pattern type")?)
            }
        },
        principal: principal.map(|p| p.as_str().to_string()),
        host: host.map(|h| h.as_str().to_string()),
        operation: if any_or(operation) {
            None
        } else {
            Some(Operation::from_code(operation).ok_or("unknown operation")?)
        },
        permission: if any_or(permission) {
            None
        } else {
            Some(Permission::from_code(permission).ok_or("unknown permission")?)
        },
    })
}

pub(crate) fn describe_acls(
    core: &Core,
    session: &Session,
    request: DescribeAclsRequest,
) -> DescribeAclsResponse {
    if !cluster_allows(core, session, Operation::Describe) {
        return DescribeAclsResponse::default().with_error_code(CLUSTER_DENIED);
    }
    let filter = match filter(
        request.resource_type_filter,
        request.resource_name_filter.as_ref(),
        request.pattern_type_filter,
        request.principal_filter.as_ref(),
        request.host_filter.as_ref(),
        request.operation,
        request.permission_type,
    ) {
        Ok(filter) => filter,
        Err(message) => {
            return DescribeAclsResponse::default()
                .with_error_code(INVALID_REQUEST)
                .with_error_message(Some(str_bytes(message)));
        }
    };
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    for binding in core.security.acls.describe(&filter) {
        let description = AclDescription::default()
            .with_principal(str_bytes(&binding.principal))
            .with_host(str_bytes(&binding.host))
            .with_operation(binding.operation.code())
            .with_permission_type(binding.permission.code());
        let found = resources.iter_mut().find(|resource| {
            resource.resource_type == binding.resource_type.code()
                && resource.resource_name.as_str() == binding.resource_name
                && resource.pattern_type == binding.pattern_type.code()
        });
        match found {
            Some(resource) => resource.acls.push(description),
            None => resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(binding.resource_type.code())
                    .with_resource_name(str_bytes(&binding.resource_name))
                    .with_pattern_type(binding.pattern_type.code())
                    .with_acls(vec![description]),
            ),
        }
    }
    DescribeAclsResponse::default().with_resources(resources)
}

pub(crate) fn delete_acls(
    core: &Arc<Core>,
    session: &Session,
    request: DeleteAclsRequest,
) -> Reply {
    if !cluster_allows(core, session, Operation::Alter) {
        let results = request
            .filters
            .iter()
            .map(|_| DeleteAclsFilterResult::default().with_error_code(CLUSTER_DENIED))
            .collect();
        return Reply::Ready(Box::new(ResponseKind::DeleteAcls(
            DeleteAclsResponse::default().with_filter_results(results),
        )));
    }
    let filters: Vec<Result<AclFilter, &'static str>> = request
        .filters
        .iter()
        .map(|f| {
            filter(
                f.resource_type_filter,
                f.resource_name_filter.as_ref(),
                f.pattern_type_filter,
                f.principal_filter.as_ref(),
                f.host_filter.as_ref(),
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    blocking(core, move |core| {
        let valid: Vec<AclFilter> = filters
            .iter()
            .filter_map(|f| f.as_ref().ok().cloned())
            .collect();
        let removed = core.security.acls.remove(&valid);
        let mut removed_each = match &removed {
            Ok(lists) => lists.clone().into_iter().map(Ok).collect::<Vec<_>>(),
            Err(error) => vec![Err(error.to_string()); valid.len()],
        }
        .into_iter();
        let results = filters
            .iter()
            .map(|parsed| match parsed {
                Err(message) => DeleteAclsFilterResult::default()
                    .with_error_code(INVALID_REQUEST)
                    .with_error_message(Some(str_bytes(message))),
                Ok(_) => match removed_each.next() {
                    Some(Ok(bindings)) => DeleteAclsFilterResult::default().with_matching_acls(
                        bindings
                            .iter()
                            .map(|binding| {
                                DeleteAclsMatchingAcl::default()
                                    .with_resource_type(binding.resource_type.code())
                                    .with_resource_name(str_bytes(&binding.resource_name))
                                    .with_pattern_type(binding.pattern_type.code())
                                    .with_principal(str_bytes(&binding.principal))
                                    .with_host(str_bytes(&binding.host))
                                    .with_operation(binding.operation.code())
                                    .with_permission_type(binding.permission.code())
                            })
                            .collect(),
                    ),
                    Some(Err(message)) => DeleteAclsFilterResult::default()
                        .with_error_code(UNKNOWN_SERVER_ERROR)
                        .with_error_message(Some(str_bytes(&message))),
                    None => DeleteAclsFilterResult::default(),
                },
            })
            .collect();
        ResponseKind::DeleteAcls(DeleteAclsResponse::default().with_filter_results(results))
    })
}

pub(crate) fn describe_user_scram_credentials(
    core: &Core,
    session: &Session,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if !cluster_allows(core, session, Operation::Describe) {
        return DescribeUserScramCredentialsResponse::default().with_error_code(CLUSTER_DENIED);
    }
    let users = match core.security.users.list() {
        Ok(users) => users,
        Err(error) => {
            return DescribeUserScramCredentialsResponse::default()
                .with_error_code(UNKNOWN_SERVER_ERROR)
                .with_error_message(Some(str_bytes(&error.to_string())));
        }
    };
    let result = |info: &crate::auth::UserInfo| {
        DescribeUserScramCredentialsResult::default()
            .with_user(str_bytes(&info.name))
            .with_credential_infos(
                info.mechanisms
                    .iter()
                    .map(|(mechanism, iterations)| {
                        CredentialInfo::default()
                            .with_mechanism(mechanism.kafka_type())
                            .with_iterations(i32::try_from(*iterations).unwrap_or(i32::MAX))
                    })
                    .collect(),
            )
    };
    // Kafka describes every user for a null list and for an empty one (librdkafka sends the
    // latter).
    let results = match request.users.filter(|wanted| !wanted.is_empty()) {
        None => users.iter().map(result).collect(),
        Some(wanted) => wanted
            .iter()
            .map(
                |name| match users.iter().find(|user| user.name == name.name.as_str()) {
                    Some(info) => result(info),
                    None => DescribeUserScramCredentialsResult::default()
                        .with_user(name.name.clone())
                        .with_error_code(RESOURCE_NOT_FOUND)
                        .with_error_message(Some(str_bytes("no such user"))),
                },
            )
            .collect(),
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

pub(crate) fn alter_user_scram_credentials(
    core: &Arc<Core>,
    session: &Session,
    request: AlterUserScramCredentialsRequest,
) -> Reply {
    let names = request
        .deletions
        .iter()
        .map(|d| d.name.clone())
        .chain(request.upsertions.iter().map(|u| u.name.clone()));
    if !cluster_allows(core, session, Operation::Alter) {
        let results = names
            .map(|name| {
                AlterUserScramCredentialsResult::default()
                    .with_user(name)
                    .with_error_code(CLUSTER_DENIED)
            })
            .collect();
        return Reply::Ready(Box::new(ResponseKind::AlterUserScramCredentials(
            AlterUserScramCredentialsResponse::default().with_results(results),
        )));
    }
    let names: Vec<StrBytes> = names.collect();
    blocking(core, move |core| {
        // Mechanisms we do not know are answered per entry; the rest go to the store at once.
        let mut early: Vec<Option<(i16, &'static str)>> = Vec::new();
        let mut deletions = Vec::new();
        for deletion in &request.deletions {
            match Mechanism::from_kafka_type(deletion.mechanism) {
                Some(mechanism) => {
                    deletions.push((deletion.name.as_str().to_string(), mechanism));
                    early.push(None);
                }
                None => early.push(Some((
                    UNSUPPORTED_SASL_MECHANISM,
                    "unknown SCRAM mechanism",
                ))),
            }
        }
        let mut upsertions = Vec::new();
        for upsertion in &request.upsertions {
            let iterations = u32::try_from(upsertion.iterations).unwrap_or(0);
            match Mechanism::from_kafka_type(upsertion.mechanism) {
                Some(mechanism) if !upsertion.salt.is_empty() => {
                    let credential = ScramCredential::from_salted_password(
                        mechanism,
                        &upsertion.salted_password,
                        upsertion.salt.to_vec(),
                        iterations,
                    );
                    upsertions.push((upsertion.name.as_str().to_string(), mechanism, credential));
                    early.push(None);
                }
                Some(_) => early.push(Some((UNACCEPTABLE_CREDENTIAL, "empty salt"))),
                None => early.push(Some((
                    UNSUPPORTED_SASL_MECHANISM,
                    "unknown SCRAM mechanism",
                ))),
            }
        }
        let stored = core.security.users.alter(&deletions, &upsertions);
        let mut stored_each = match &stored {
            Ok(results) => results
                .iter()
                .map(|result| match result {
                    Ok(()) => None,
                    Err(crate::auth::UserError::NotFound(_)) => {
                        Some((RESOURCE_NOT_FOUND, "no such credential".to_string()))
                    }
                    Err(error) => Some((UNACCEPTABLE_CREDENTIAL, error.to_string())),
                })
                .collect::<Vec<_>>(),
            Err(error) => vec![
                Some((UNKNOWN_SERVER_ERROR, error.to_string()));
                deletions.len() + upsertions.len()
            ],
        }
        .into_iter();
        let results = names
            .into_iter()
            .zip(early)
            .map(|(name, early)| {
                let outcome = match early {
                    Some((code, message)) => Some((code, message.to_string())),
                    None => stored_each.next().flatten(),
                };
                let result = AlterUserScramCredentialsResult::default().with_user(name);
                match outcome {
                    None => result,
                    Some((code, message)) => result
                        .with_error_code(code)
                        .with_error_message(Some(str_bytes(&message))),
                }
            })
            .collect();
        ResponseKind::AlterUserScramCredentials(
            AlterUserScramCredentialsResponse::default().with_results(results),
        )
    })
}
