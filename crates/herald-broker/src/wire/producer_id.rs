//! InitProducerId: hands idempotent producers their id. Transactions are not served, so a
//! transactional id is refused.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use tracing::warn;

use super::errors::{self, code};
use crate::Core;
use crate::problem::Problem;

pub(crate) fn init_producer_id(
    core: &Core,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        // The same refusal as FindCoordinator's, for clients that skip it.
        return response.with_error_code(errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
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
