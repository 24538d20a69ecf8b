//! InitProducerId: hands idempotent producers their id, and transactional producers the id and
//! next epoch of their transactional id (which fences every older producer with that id).

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use tracing::warn;

use super::errors::code;
use super::txn::txn_code;
use crate::Core;
use crate::problem::Problem;

pub(crate) fn init_producer_id(
    core: &Core,
    request: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(id) = &request.transactional_id {
        let expected =
            (request.producer_id.0 >= 0).then_some((request.producer_id.0, request.producer_epoch));
        return match core.transactions.init_producer_id(
            &core.topics,
            &core.producer_ids,
            id.as_str(),
            request.transaction_timeout_ms,
            expected,
        ) {
            Ok((producer_id, epoch)) => response
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch),
            Err(error) => {
                tracing::debug!(transactional_id = %id.as_str(), %error, "InitProducerId refused");
                response.with_error_code(txn_code(&error, version >= 4))
            }
        };
    }
    // KIP-360: a producer that knows its id asks for the next epoch (after a sequence error),
    // which the log accepts with sequences starting again at 0.
    if request.producer_id.0 >= 0 && (0..i16::MAX - 1).contains(&request.producer_epoch) {
        return response
            .with_producer_id(request.producer_id)
            .with_producer_epoch(request.producer_epoch + 1);
    }
    match core.producer_ids.allocate() {
        Ok(id) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(error) => {
            warn!(%error, "cannot allocate a producer id");
            response.with_error_code(code(Problem::StorageError))
        }
    }
}
