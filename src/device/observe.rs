//! Observations of /5 as a device's LwM2M layer keeps them: which paths are
//! observed with which format, the notification attributes (`pmin`, `pmax`),
//! and when each observation must notify (RFC 7641, LwM2M TS Information
//! Reporting).

use alloc::vec::Vec;
use core::time::Duration;

use crate::model::{Attributes, ContentFormat, Instant, Path};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry<K> {
    key: K,
    path: Path,
    format: ContentFormat,
    sequence: u32,
    last_sent: Instant,
    dirty: bool,
}

/// A notification to send now: encode `path` in `format` and send it with
/// Observe `sequence`, for the observation `key` (a CoAP token, a request id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueNotification<K> {
    /// The observation.
    pub key: K,
    /// The observed path.
    pub path: Path,
    /// The format the observer asked for (or the device chose).
    pub format: ContentFormat,
    /// The Observe option value.
    pub sequence: u32,
}

/// The observations of one server, keyed by `K`.
///
/// ```
/// use lwm2m_fota::device::Observations;
/// use lwm2m_fota::model::{Attributes, ContentFormat, Instant, Path};
/// let mut observations = Observations::new();
/// let t0 = Instant::from_millis(0);
/// observations.observe(7u64, Path::resource(5, 0, 3), ContentFormat::Text, t0);
/// observations.set_attributes(Path::resource(5, 0, 3), Attributes { pmin: Some(0), pmax: Some(60) });
/// // State changed: notify at once (pmin 0).
/// let due = observations.due(t0, 1 << 3);
/// assert_eq!(due[0].sequence, 2);
/// // Nothing changes: pmax brings the next one a minute later.
/// assert_eq!(observations.poll_timeout(), Some(Instant::from_millis(60_000)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observations<K> {
    entries: Vec<Entry<K>>,
    attributes: Vec<(Path, Attributes)>,
}

impl<K: Clone + PartialEq> Observations<K> {
    /// No observation.
    pub fn new() -> Observations<K> {
        Observations { entries: Vec::new(), attributes: Vec::new() }
    }

    /// Starts (or restarts) observing `path`; the Observe response itself has
    /// sequence 1.
    pub fn observe(&mut self, key: K, path: Path, format: ContentFormat, now: Instant) {
        self.entries.retain(|e| e.path != path && e.key != key);
        self.entries.push(Entry { key, path, format, sequence: 1, last_sent: now, dirty: false });
    }

    /// Stops observing `path`.
    pub fn cancel(&mut self, path: &Path) {
        self.entries.retain(|e| e.path != *path);
    }

    /// Stops the observation `key` (e.g. the server answered a notification with RST).
    pub fn cancel_key(&mut self, key: &K) {
        self.entries.retain(|e| e.key != *key);
    }

    /// Forgets every observation and attribute (a new registration voids them).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.attributes.clear();
    }

    /// True when nothing is observed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Write-Attributes on `path`.
    pub fn set_attributes(&mut self, path: Path, attributes: Attributes) {
        self.attributes.retain(|(p, _)| *p != path);
        self.attributes.push((path, attributes));
    }

    /// The attributes in force on `path` (none set: all absent).
    pub fn attributes(&self, path: &Path) -> Attributes {
        self.attributes.iter().find(|(p, _)| p == path).map(|(_, a)| *a).unwrap_or_default()
    }

    fn pmin(&self, path: &Path) -> Duration {
        Duration::from_secs(u64::from(self.attributes(path).pmin.unwrap_or(0)))
    }

    fn pmax(&self, path: &Path) -> Option<Duration> {
        self.attributes(path).pmax.filter(|p| *p > 0).map(|p| Duration::from_secs(u64::from(p)))
    }

    /// The notifications due at `now`, given that the /5/0 resources in
    /// `changed` (bit R for resource R) changed: an observation covering a
    /// change notifies once `pmin` has passed since its last notification (else
    /// it waits, marked), and any observation notifies when `pmax` passes.
    /// Each returned notification counts as sent at `now`.
    pub fn due(&mut self, now: Instant, changed: u32) -> Vec<DueNotification<K>> {
        let mut due = Vec::new();
        for index in 0..self.entries.len() {
            let path = self.entries[index].path;
            let covered = match path.resource_id() {
                Some(r) => path.starts_with(&Path::instance(5, 0)) && r < 32 && changed & (1 << r) != 0,
                None => changed != 0 && Path::instance(5, 0).starts_with(&path),
            };
            let (pmin, pmax) = (self.pmin(&path), self.pmax(&path));
            let entry = &mut self.entries[index];
            entry.dirty |= covered;
            let pmin_passed = now >= entry.last_sent + pmin;
            let pmax_passed = pmax.is_some_and(|pmax| now >= entry.last_sent + pmax);
            if (entry.dirty && pmin_passed) || pmax_passed {
                entry.sequence = entry.sequence.wrapping_add(1) & 0x00FF_FFFF;
                entry.last_sent = now;
                entry.dirty = false;
                due.push(DueNotification {
                    key: entry.key.clone(),
                    path: entry.path,
                    format: entry.format,
                    sequence: entry.sequence,
                });
            }
        }
        due
    }

    /// When [`due`](Self::due) may next return something without a change: the
    /// earliest `pmax`, or the end of a `pmin` a marked change waits for.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries
            .iter()
            .filter_map(|e| {
                let pmax = self.pmax(&e.path).map(|p| e.last_sent + p);
                let pmin = e.dirty.then(|| e.last_sent + self.pmin(&e.path));
                match (pmax, pmin) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pmin_delays_and_coalesces_pmax_repeats() {
        let mut o = Observations::new();
        let t = |s: u64| Instant::from_millis(s * 1000);
        o.observe(1u8, Path::instance(5, 0), ContentFormat::SenmlCbor, t(0));
        o.set_attributes(Path::instance(5, 0), Attributes { pmin: Some(10), pmax: Some(30) });
        assert!(o.due(t(1), 1 << 3).is_empty(), "within pmin: wait");
        assert!(o.due(t(2), 1 << 5).is_empty());
        assert_eq!(o.poll_timeout(), Some(t(10)));
        let due = o.due(t(10), 0);
        assert_eq!(due.len(), 1, "both changes in one notification");
        assert_eq!(due[0].sequence, 2);
        assert_eq!(o.poll_timeout(), Some(t(40)));
        assert_eq!(o.due(t(40), 0).len(), 1, "pmax without a change");
        // A change elsewhere than /5/0 is not covered; cancelling stops it.
        o.observe(2u8, Path::resource(5, 0, 5), ContentFormat::Text, t(40));
        assert_eq!(o.due(t(41), 1 << 3).len(), 0);
        assert_eq!(o.due(t(41), 1 << 5).iter().map(|d| d.key).collect::<Vec<_>>(), [2]);
        o.cancel_key(&2);
        o.cancel(&Path::instance(5, 0));
        assert!(o.is_empty());
        assert_eq!(o.poll_timeout(), None);
    }
}
