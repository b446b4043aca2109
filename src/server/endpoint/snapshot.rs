//! The endpoint's serde form: everything but the images (an `ImageSource` is
//! the caller's: add them again after restoring) and the indexes, which are
//! rebuilt from the devices. Format 2 (`"format": 2`: format 1, before the
//! registration table became a slab, is no longer read); any other is refused.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::fmt::Debug;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{
    Deadlines, DeviceId, Endpoint, EndpointConfig, EndpointOutput, EndpointStats, Slot, index_key, index_location,
};
use crate::model::{Instant, RequestId};
use crate::server::Registrations;
use crate::server::index::{HashIndex, hash_of};

const FORMAT: u32 = 2;

#[derive(Serialize)]
struct StateRef<'a, P> {
    format: u32,
    config: &'a EndpointConfig,
    registrations: &'a Registrations,
    slots: &'a Vec<Slot<P>>,
    free: &'a Vec<u32>,
    outputs: &'a VecDeque<EndpointOutput<P>>,
    deferred: &'a VecDeque<(DeviceId, RequestId)>,
    counter: u64,
    last_now: Instant,
    stats: EndpointStats,
}

#[derive(Deserialize)]
struct State<P> {
    format: u32,
    config: EndpointConfig,
    registrations: Registrations,
    slots: Vec<Slot<P>>,
    free: Vec<u32>,
    outputs: VecDeque<EndpointOutput<P>>,
    deferred: VecDeque<(DeviceId, RequestId)>,
    counter: u64,
    last_now: Instant,
    stats: EndpointStats,
}

impl<P: Serialize> Serialize for Endpoint<P> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StateRef {
            format: FORMAT,
            config: &self.config,
            registrations: &self.registrations,
            slots: &self.slots,
            free: &self.free,
            outputs: &self.outputs,
            deferred: &self.deferred,
            counter: self.counter,
            last_now: self.last_now,
            stats: self.stats,
        }
        .serialize(serializer)
    }
}

impl<'de, P: Deserialize<'de> + Copy + Ord + core::hash::Hash + Debug> Deserialize<'de> for Endpoint<P> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let state = State::<P>::deserialize(deserializer)?;
        if state.format != FORMAT {
            return Err(serde::de::Error::custom(alloc::format!(
                "endpoint snapshot format {} (this build reads {FORMAT})",
                state.format
            )));
        }
        let key = index_key(state.config.token_key);
        let mut endpoint = Endpoint {
            config: state.config,
            registrations: state.registrations,
            slots: state.slots,
            free: state.free,
            by_name: HashIndex::default(),
            by_peer: HashIndex::default(),
            index_key: key,
            by_location: Vec::new(),
            images: BTreeMap::new(),
            deadlines: Deadlines::default(),
            outputs: state.outputs,
            deferred: state.deferred,
            counter: state.counter,
            last_now: state.last_now,
            stats: state.stats,
        };
        for (slot, entry) in endpoint.slots.iter().enumerate() {
            let Some(device) = entry.device.as_ref() else { continue };
            let slot = slot as u32;
            endpoint.by_name.insert(hash_of(endpoint.index_key, &*device.name), slot);
            if let Some(location) = device.location {
                index_location(&mut endpoint.by_location, location, slot);
            }
            if let Some(peer) = device.peer {
                endpoint.by_peer.insert(hash_of(endpoint.index_key, &peer), slot);
            }
            if let Some(upgrade) = device.upgrade.as_ref() {
                endpoint.deadlines.set(slot, upgrade.task.poll_timeout());
            }
        }
        Ok(endpoint)
    }
}
