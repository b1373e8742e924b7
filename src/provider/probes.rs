//! The board's health check asks the DHT task and the HTTP loop through
//! `board::health::Probe`; the provider, which owns both, answers for them.

use std::future::Future;
use std::pin::Pin;

use crate::board::health::Probe;
use crate::dht;
use crate::http::LoopProbe;

/// Asks the DHT task for a health reply through its command channel.
pub(super) struct DhtProbe(pub(super) dht::Client);

impl Probe for DhtProbe {
    fn check(&self) -> &'static str {
        "dht"
    }

    fn what(&self) -> &'static str {
        "the DHT task"
    }

    fn ask(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            self.0
                .health()
                .await
                .map_err(|e| format!("the DHT task: {e}"))
        })
    }
}

impl Probe for LoopProbe {
    fn check(&self) -> &'static str {
        "http"
    }

    fn what(&self) -> &'static str {
        "the HTTP loop"
    }

    fn ask(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            if self.turns().await {
                Ok(())
            } else {
                Err("the HTTP loop has stopped".into())
            }
        })
    }
}
