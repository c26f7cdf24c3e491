//! The fleet: every pump and its home gateway, interrogated on simulated time, with
//! gateway outages applied, and readings released in the order the cloud would
//! receive them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use chrono::{DateTime, Utc};
use fleet_core::Reading;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::pump::VirtualPump;
use crate::random::mix;
use crate::spec::{FleetSpec, SpecError};
use crate::truth::GroundTruth;

/// A virtual fleet of implanted pumps, driven by [`advance_until`](Fleet::advance_until).
#[derive(Debug, Clone)]
pub struct Fleet {
    spec: FleetSpec,
    pumps: Vec<VirtualPump>,
    /// `(next interrogation, pump index)`, earliest first.
    due: BinaryHeap<Reverse<(DateTime<Utc>, usize)>>,
    /// Readings a gateway buffered while offline, waiting for it to reconnect.
    backlog: Vec<Arrival>,
    truth: GroundTruth,
}

/// A reading and when it reaches the cloud.
#[derive(Debug, Clone)]
struct Arrival {
    released_at: DateTime<Utc>,
    pump_index: usize,
    reading: Reading,
}

impl Arrival {
    fn order_key(&self) -> (DateTime<Utc>, DateTime<Utc>, usize) {
        (self.released_at, self.reading.measured_at, self.pump_index)
    }
}

impl Fleet {
    /// Builds the fleet and labels its ground truth.
    ///
    /// # Panics
    ///
    /// When the spec is invalid (see [`FleetSpec::validate`]); use
    /// [`try_new`](Fleet::try_new) for a spec that comes from a user.
    pub fn new(spec: FleetSpec) -> Fleet {
        match Fleet::try_new(spec) {
            Ok(fleet) => fleet,
            Err(e) => panic!("invalid fleet spec: {e}"),
        }
    }

    pub fn try_new(spec: FleetSpec) -> Result<Fleet, SpecError> {
        spec.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(mix(spec.seed, 0));
        let faults = spec.faults.assign(spec.pump_count, &mut rng);
        let pumps: Vec<VirtualPump> = faults
            .into_iter()
            .enumerate()
            .map(|(index, fault)| VirtualPump::draw(&spec, index, fault))
            .collect();
        let truth = GroundTruth::label(&spec, &pumps);
        let due = pumps
            .iter()
            .enumerate()
            .map(|(i, p)| Reverse((p.next_due(), i)))
            .collect();
        Ok(Fleet {
            spec,
            pumps,
            due,
            backlog: Vec::new(),
            truth,
        })
    }

    pub fn spec(&self) -> &FleetSpec {
        &self.spec
    }

    pub fn pumps(&self) -> &[VirtualPump] {
        &self.pumps
    }

    /// The pumps, to drive one by one (a gateway's simulated pump link).
    pub fn into_pumps(self) -> Vec<VirtualPump> {
        self.pumps
    }

    /// Every reading not returned yet that has reached the cloud by `until`, in
    /// arrival order.
    ///
    /// Arrival is `measured_at`, except for a gateway's backlog: readings buffered
    /// during an outage arrive when the gateway reconnects, in `measured_at` order,
    /// before that pump's live readings (so a fleet with backlog outages is not in
    /// `measured_at` order overall, as in the shared standard scenario). No reading
    /// is measured after `until` or after the spec's `end`, and none is returned twice.
    pub fn advance_until(&mut self, until: DateTime<Utc>) -> Vec<Reading> {
        let horizon = until.min(self.spec.end);
        let mut arrivals = Vec::new();
        while let Some(&Reverse((at, index))) = self.due.peek() {
            if at > horizon {
                break;
            }
            self.due.pop();
            let pump = &mut self.pumps[index];
            match pump.outage.filter(|o| o.covers(at)) {
                // Powered off: the pump is not interrogated at all.
                Some(outage) if !outage.buffered => pump.skip_slot(),
                Some(outage) => self.backlog.push(Arrival {
                    released_at: outage.end,
                    pump_index: index,
                    reading: pump.next_reading(),
                }),
                None => arrivals.push(Arrival {
                    released_at: at,
                    pump_index: index,
                    reading: pump.next_reading(),
                }),
            }
            self.due.push(Reverse((pump.next_due(), index)));
        }
        let (released, held): (Vec<Arrival>, Vec<Arrival>) = std::mem::take(&mut self.backlog)
            .into_iter()
            .partition(|a| a.released_at <= until);
        self.backlog = held;
        arrivals.extend(released);
        arrivals.sort_by_key(Arrival::order_key);
        arrivals.into_iter().map(|a| a.reading).collect()
    }

    /// The labelled episodes and the fault of every pump.
    pub fn truth(&self) -> GroundTruth {
        self.truth.clone()
    }
}
