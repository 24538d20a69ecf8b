//! The broker transport (being built).

use std::sync::Arc;

use crate::bus::BusConfig;
use crate::error::ConnectError;
use crate::transport::Transport;

pub(crate) async fn connect(_config: &BusConfig) -> Result<Arc<dyn Transport>, ConnectError> {
    Err(ConnectError::Transport {
        transport: "broker",
        message: "not built yet".to_string(),
    })
}
