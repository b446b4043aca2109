//! The SenML-CBOR packs of the main crate's `codec` bench, read from `data/`.

use std::sync::LazyLock;

/// The pack names, in the main bench's order; each is `data/<name>.cbor`.
pub const PACKS: [&str; 5] = ["a_device", "a_device_no22", "b_firmware", "c_send50", "d_package64k"];

/// Records in each pack (what the main crate's decoder returns for it).
pub const RECORD_COUNTS: [usize; 5] = [24, 22, 14, 50, 1];

static DATA: LazyLock<Vec<(&'static str, Vec<u8>)>> = LazyLock::new(|| {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    PACKS
        .iter()
        .map(|name| {
            let file = dir.join(format!("{name}.cbor"));
            let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            (*name, bytes)
        })
        .collect()
});

/// The bytes of pack `name`.
pub fn pack(name: &str) -> &'static [u8] {
    &DATA.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no pack {name}")).1
}
