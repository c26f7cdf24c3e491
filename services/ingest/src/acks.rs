//! End-to-end acks, batched: for each gateway, the durable seqs per pump since the last
//! flush, sent as one message on `fleet/v1/{gateway_id}/acks` (highest seq per pump, and
//! the exact runs; see [`EndToEndAck`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fleet_core::gateway_protocol::EndToEndAck;

/// Acks waiting to be sent, by gateway. Bounded by what one replica handles between
/// two flushes.
#[derive(Debug, Default)]
pub struct AckBatch {
    by_gateway: HashMap<String, BTreeMap<String, BTreeSet<u64>>>,
}

impl AckBatch {
    /// Records that `seq` of `pump_id`, relayed by `gateway_id`, is durably in the log.
    pub fn record(&mut self, gateway_id: &str, pump_id: &str, seq: u64) {
        let pumps = match self.by_gateway.get_mut(gateway_id) {
            Some(pumps) => pumps,
            None => self.by_gateway.entry(gateway_id.to_owned()).or_default(),
        };
        match pumps.get_mut(pump_id) {
            Some(seqs) => {
                seqs.insert(seq);
            }
            None => {
                pumps.insert(pump_id.to_owned(), [seq].into());
            }
        }
    }

    /// One ack per gateway for everything recorded so far, leaving the batch empty.
    pub fn take(&mut self) -> Vec<(String, EndToEndAck)> {
        self.by_gateway
            .drain()
            .map(|(gateway_id, durable)| (gateway_id, EndToEndAck::from_durable(&durable)))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_gateway.is_empty()
    }
}
