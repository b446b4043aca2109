//! The firmware catalogue (features.md F1–F3, N4's metadata): the files an
//! operator can choose from, with their name, description, category,
//! version, size, digest, upload time and retention. Only files of category
//! `firmware` whose retention has not ended can be chosen for an upgrade;
//! expired files are reported for deletion.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use crate::model::Instant;

/// What kind of resource a stored file is (F3): only [`Category::Firmware`]
/// appears in the firmware list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(from = "String", into = "String"))]
pub enum Category {
    /// `firmware`: an image an upgrade can deliver.
    Firmware,
    /// Any other category of the resource store (`certificate`, `config`, …).
    Other(String),
}

impl From<&str> for Category {
    fn from(name: &str) -> Category {
        if name == "firmware" { Category::Firmware } else { Category::Other(String::from(name)) }
    }
}

impl From<String> for Category {
    fn from(name: String) -> Category {
        if name == "firmware" { Category::Firmware } else { Category::Other(name) }
    }
}

impl From<Category> for String {
    fn from(category: Category) -> String {
        match category {
            Category::Firmware => String::from("firmware"),
            Category::Other(name) => name,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Category::Firmware => f.write_str("firmware"),
            Category::Other(name) => f.write_str(name),
        }
    }
}

/// How long the catalogue keeps a file (F2's retention choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Retention {
    /// Until it is removed.
    Forever,
    /// This long after its upload.
    For(Duration),
}

/// A file in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CatalogueFile {
    /// Its id, unique in the catalogue.
    pub id: String,
    /// Its name (the uploaded file's name unless one was given).
    pub name: String,
    /// What the uploader said of it.
    pub description: Option<String>,
    /// Its category.
    pub category: Category,
    /// The firmware version it installs, when known (an upgrade's target
    /// version: a device already at it needs no download).
    pub version: Option<String>,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, as the store that received the bytes computed it.
    pub sha256: Option<[u8; 32]>,
    /// When it was uploaded.
    pub uploaded: Instant,
    /// How long it is kept.
    pub retention: Retention,
}

impl CatalogueFile {
    /// When its retention ends (`None`: kept forever).
    pub fn expires(&self) -> Option<Instant> {
        match self.retention {
            Retention::Forever => None,
            Retention::For(span) => Some(self.uploaded + span),
        }
    }

    /// True once its retention has ended.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires().is_some_and(|at| now >= at)
    }
}

/// A file being added (F2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    /// The id it gets.
    pub id: String,
    /// The uploaded file's own name.
    pub uploaded_name: String,
    /// A name to show instead of `uploaded_name`.
    pub name: Option<String>,
    /// An optional description.
    pub description: Option<String>,
    /// Its category.
    pub category: Category,
    /// The version it installs.
    pub version: Option<String>,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, computed by whoever holds the bytes (the core has no
    /// hash function of its own: the store adapters and the examples use
    /// the `sha2` crate).
    pub sha256: Option<[u8; 32]>,
    /// How long it is kept.
    pub retention: Retention,
}

impl NewFile {
    /// A firmware file `uploaded_name` of `size` bytes with id `id`, kept
    /// forever, no description, version or digest.
    pub fn firmware(id: &str, uploaded_name: &str, size: u64) -> NewFile {
        NewFile {
            id: String::from(id),
            uploaded_name: String::from(uploaded_name),
            name: None,
            description: None,
            category: Category::Firmware,
            version: None,
            size,
            sha256: None,
            retention: Retention::Forever,
        }
    }
}

/// Why a file cannot be added or chosen; each names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogueError {
    /// Another file has this id.
    #[error("file {id}: the id is taken")]
    DuplicateId {
        /// The id.
        id: String,
    },
    /// The id, or both names, are empty.
    #[error("file {id:?}: id and name must not be empty")]
    Empty {
        /// The id given.
        id: String,
    },
    /// No file has this id.
    #[error("file {id}: not in the catalogue")]
    UnknownFile {
        /// The id.
        id: String,
    },
    /// The file is not of category `firmware` (F3).
    #[error("file {id}: category {category} is not firmware")]
    NotFirmware {
        /// The id.
        id: String,
        /// Its category.
        category: Category,
    },
    /// The file's retention has ended.
    #[error("file {id}: its retention ended at {expired_ms} ms")]
    Expired {
        /// The id.
        id: String,
        /// When it ended, in milliseconds of the caller's clock.
        expired_ms: u64,
    },
}

/// The catalogue: files by id.
///
/// ```
/// use core::time::Duration;
/// use lwm2m_fota::campaign::{Catalogue, Category, NewFile, Retention};
/// use lwm2m_fota::model::Instant;
///
/// let mut catalogue = Catalogue::default();
/// let t0 = Instant::from_millis(0);
/// let file = NewFile { retention: Retention::For(Duration::from_secs(3600)), ..NewFile::firmware("fw-2", "app-2.0.0.bin", 262_144) };
/// assert_eq!(catalogue.add(t0, file).unwrap().name, "app-2.0.0.bin");
/// let config = NewFile { category: Category::from("config"), ..NewFile::firmware("cfg-1", "apn.cfg", 80) };
/// catalogue.add(t0, config).unwrap();
/// // Only firmware is listed and can be chosen.
/// assert_eq!(catalogue.firmware(t0).map(|f| f.id.as_str()).collect::<Vec<_>>(), ["fw-2"]);
/// assert!(catalogue.choose(t0, "cfg-1").is_err());
/// // An hour later the image's retention has ended.
/// let later = Instant::from_millis(3_600_000);
/// assert!(catalogue.choose(later, "fw-2").is_err());
/// assert_eq!(catalogue.expired(later).map(|f| f.id.as_str()).collect::<Vec<_>>(), ["fw-2"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Catalogue {
    files: BTreeMap<String, CatalogueFile>,
}

impl Catalogue {
    /// Adds a file uploaded at `now` (its name defaults to the uploaded
    /// file's name).
    ///
    /// # Errors
    /// [`CatalogueError::DuplicateId`], [`CatalogueError::Empty`].
    pub fn add(&mut self, now: Instant, file: NewFile) -> Result<&CatalogueFile, CatalogueError> {
        let name = file.name.filter(|n| !n.is_empty()).unwrap_or(file.uploaded_name);
        if file.id.is_empty() || name.is_empty() {
            return Err(CatalogueError::Empty { id: file.id });
        }
        if self.files.contains_key(&file.id) {
            return Err(CatalogueError::DuplicateId { id: file.id });
        }
        let entry = CatalogueFile {
            id: file.id.clone(),
            name,
            description: file.description.filter(|d| !d.is_empty()),
            category: file.category,
            version: file.version,
            size: file.size,
            sha256: file.sha256,
            uploaded: now,
            retention: file.retention,
        };
        Ok(self.files.entry(file.id).or_insert(entry))
    }

    /// The file with id `id`.
    pub fn get(&self, id: &str) -> Option<&CatalogueFile> {
        self.files.get(id)
    }

    /// Removes the file with id `id`.
    pub fn remove(&mut self, id: &str) -> Option<CatalogueFile> {
        self.files.remove(id)
    }

    /// Every file, by id.
    pub fn files(&self) -> impl Iterator<Item = &CatalogueFile> {
        self.files.values()
    }

    /// The firmware list (F1, F3): files of category `firmware` whose
    /// retention has not ended at `now`, by id.
    pub fn firmware(&self, now: Instant) -> impl Iterator<Item = &CatalogueFile> {
        self.files.values().filter(move |f| f.category == Category::Firmware && !f.is_expired(now))
    }

    /// The file `id`, if it can be an upgrade's image at `now`.
    ///
    /// # Errors
    /// [`CatalogueError::UnknownFile`], [`CatalogueError::NotFirmware`],
    /// [`CatalogueError::Expired`].
    pub fn choose(&self, now: Instant, id: &str) -> Result<&CatalogueFile, CatalogueError> {
        let file = self.files.get(id).ok_or_else(|| CatalogueError::UnknownFile { id: String::from(id) })?;
        if file.category != Category::Firmware {
            return Err(CatalogueError::NotFirmware { id: String::from(id), category: file.category.clone() });
        }
        match file.expires() {
            Some(at) if now >= at => Err(CatalogueError::Expired { id: String::from(id), expired_ms: at.as_millis() }),
            _ => Ok(file),
        }
    }

    /// The files whose retention has ended by `now`: the store should
    /// delete their bytes ([`purge_expired`](Self::purge_expired) removes
    /// their entries).
    pub fn expired(&self, now: Instant) -> impl Iterator<Item = &CatalogueFile> {
        self.files.values().filter(move |f| f.is_expired(now))
    }

    /// Removes and returns the files whose retention has ended by `now`.
    pub fn purge_expired(&mut self, now: Instant) -> Vec<CatalogueFile> {
        let ids: Vec<String> = self.expired(now).map(|f| f.id.clone()).collect();
        ids.iter().filter_map(|id| self.files.remove(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn secs(s: u64) -> Instant {
        Instant::from_millis(s * 1000)
    }

    #[test]
    fn names_default_to_the_uploaded_file_and_metadata_is_kept() {
        let mut catalogue = Catalogue::default();
        let file = NewFile {
            description: Some("release 2".into()),
            version: Some("2.0.0".into()),
            sha256: Some([7; 32]),
            ..NewFile::firmware("fw-2", "app-2.0.0.bin", 262_144)
        };
        let added = catalogue.add(secs(5), file).unwrap().clone();
        assert_eq!((added.name.as_str(), added.uploaded, added.size), ("app-2.0.0.bin", secs(5), 262_144));
        assert_eq!((added.description.as_deref(), added.version.as_deref()), (Some("release 2"), Some("2.0.0")));
        assert_eq!(added.sha256, Some([7; 32]));
        let named = NewFile { name: Some("Release 3".into()), ..NewFile::firmware("fw-3", "a.bin", 1) };
        assert_eq!(catalogue.add(secs(5), named).unwrap().name, "Release 3");
        // An empty name given is no name.
        let empty = NewFile { name: Some(String::new()), ..NewFile::firmware("fw-4", "b.bin", 1) };
        assert_eq!(catalogue.add(secs(5), empty).unwrap().name, "b.bin");
        assert_eq!(catalogue.get("fw-2"), Some(&added));
    }

    #[test]
    fn bad_additions_are_refused_by_name() {
        let mut catalogue = Catalogue::default();
        catalogue.add(secs(0), NewFile::firmware("fw", "a.bin", 1)).unwrap();
        let again = catalogue.add(secs(0), NewFile::firmware("fw", "b.bin", 1)).unwrap_err();
        assert_eq!(again, CatalogueError::DuplicateId { id: "fw".into() });
        assert_eq!(again.to_string(), "file fw: the id is taken");
        assert!(matches!(catalogue.add(secs(0), NewFile::firmware("", "a.bin", 1)), Err(CatalogueError::Empty { .. })));
        assert!(matches!(catalogue.add(secs(0), NewFile::firmware("x", "", 1)), Err(CatalogueError::Empty { .. })));
        assert_eq!(catalogue.files().count(), 1, "nothing refused is kept");
    }

    #[test]
    fn only_firmware_within_its_retention_can_be_chosen() {
        let mut catalogue = Catalogue::default();
        let kept =
            NewFile { retention: Retention::For(Duration::from_secs(100)), ..NewFile::firmware("fw", "a.bin", 1) };
        catalogue.add(secs(10), kept).unwrap();
        catalogue.add(secs(0), NewFile::firmware("forever", "f.bin", 1)).unwrap();
        let other = NewFile { category: Category::from("certificate"), ..NewFile::firmware("cert", "c.pem", 1) };
        catalogue.add(secs(0), other).unwrap();
        assert_eq!(catalogue.choose(secs(109), "fw").map(|f| f.id.as_str()), Ok("fw"));
        // The retention ends at upload + retention, exactly.
        let expired = catalogue.choose(secs(110), "fw").unwrap_err();
        assert_eq!(expired, CatalogueError::Expired { id: "fw".into(), expired_ms: 110_000 });
        assert_eq!(expired.to_string(), "file fw: its retention ended at 110000 ms");
        let not_firmware = catalogue.choose(secs(0), "cert").unwrap_err();
        assert_eq!(not_firmware.to_string(), "file cert: category certificate is not firmware");
        assert_eq!(catalogue.choose(secs(0), "nope").unwrap_err(), CatalogueError::UnknownFile { id: "nope".into() });
        let listed = |at| catalogue.firmware(at).map(|f| f.id.clone()).collect::<Vec<_>>();
        assert_eq!(listed(secs(109)), ["forever", "fw"]);
        assert_eq!(listed(secs(110)), ["forever"]);
        assert_eq!(catalogue.choose(secs(1_000_000), "forever").map(|f| f.expires()), Ok(None));
    }

    #[test]
    fn expired_files_are_reported_then_purged() {
        let mut catalogue = Catalogue::default();
        for (id, keep) in [("a", 10), ("b", 20), ("c", 30)] {
            let file =
                NewFile { retention: Retention::For(Duration::from_secs(keep)), ..NewFile::firmware(id, "x", 1) };
            catalogue.add(secs(0), file).unwrap();
        }
        // Files of any category expire.
        let other = NewFile {
            category: Category::from("config"),
            retention: Retention::For(Duration::from_secs(5)),
            ..NewFile::firmware("cfg", "y", 1)
        };
        catalogue.add(secs(0), other).unwrap();
        let expired = |c: &Catalogue, at| c.expired(at).map(|f| f.id.clone()).collect::<Vec<_>>();
        assert_eq!(expired(&catalogue, secs(20)), ["a", "b", "cfg"]);
        let purged: Vec<String> = catalogue.purge_expired(secs(20)).into_iter().map(|f| f.id).collect();
        assert_eq!(purged, ["a", "b", "cfg"]);
        assert_eq!(catalogue.files().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["c"]);
        assert!(catalogue.purge_expired(secs(20)).is_empty());
        assert_eq!(catalogue.remove("c").map(|f| f.id), Some("c".into()));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn categories_serialize_as_their_names() {
        let json = serde_json::to_string(&Category::Firmware).unwrap();
        assert_eq!(json, "\"firmware\"");
        assert_eq!(serde_json::from_str::<Category>("\"config\"").unwrap(), Category::Other("config".into()));
        assert_eq!(serde_json::from_str::<Category>("\"firmware\"").unwrap(), Category::Firmware);
    }
}
