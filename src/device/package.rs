//! Pushed images: the blocks of a Package write (`/5/0/0`) and the caller's
//! store they stream into.

use crate::model::UpdateResult;

/// One Block1 block of a pushed Package write (`/5/0/0`), or a whole
/// non-block-wise write as block 0 without more blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackageBlock<'a> {
    /// Block number (NUM).
    pub number: u32,
    /// True when more blocks follow (M).
    pub more: bool,
    /// Block size in bytes (16 × 2^SZX); the block's offset is `number × size`.
    pub size: u32,
    /// The block's bytes.
    pub data: &'a [u8],
    /// Total image size, when the server announced it (Size1).
    pub total_size: Option<u64>,
}

impl<'a> PackageBlock<'a> {
    /// A whole Package write that is not block-wise.
    pub fn whole(data: &'a [u8]) -> PackageBlock<'a> {
        PackageBlock { number: 0, more: false, size: data.len().max(1) as u32, data, total_size: None }
    }

    /// The image byte this block starts at.
    pub(crate) fn offset(&self) -> u64 {
        u64::from(self.number) * u64::from(self.size)
    }

    /// True for a Package write in one piece (block 0 and no more).
    pub(crate) fn is_whole(&self) -> bool {
        self.number == 0 && !self.more
    }
}

/// Why the image store refused bytes; each maps to an Update Result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    /// Update Result 2.
    #[error("not enough flash memory for the new package")]
    NotEnoughFlash,
    /// Update Result 3.
    #[error("out of RAM during download")]
    OutOfRam,
    /// Update Result 5.
    #[error("integrity check failure for the downloaded package")]
    IntegrityCheckFailure,
    /// Update Result 6.
    #[error("unsupported package type")]
    UnsupportedPackageType,
}

impl PackageError {
    /// The Update Result the device reports.
    pub fn update_result(self) -> UpdateResult {
        match self {
            PackageError::NotEnoughFlash => UpdateResult::NotEnoughFlash,
            PackageError::OutOfRam => UpdateResult::OutOfRam,
            PackageError::IntegrityCheckFailure => UpdateResult::IntegrityCheckFailure,
            PackageError::UnsupportedPackageType => UpdateResult::UnsupportedPackageType,
        }
    }
}

/// Where a pushed image goes: the object streams blocks into it and never
/// buffers the image itself.
pub trait PackageSink {
    /// A new transfer starts: forget any earlier bytes.
    fn begin(&mut self, total_size: Option<u64>) -> Result<(), PackageError>;
    /// Store `data` at byte `offset` (always the next byte after the last write).
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), PackageError>;
    /// The transfer is complete at `size` bytes: verify the image.
    fn finish(&mut self, size: u64) -> Result<(), PackageError>;
}

/// A sink that discards the bytes and only counts them, for devices that
/// validate nothing and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountingSink {
    /// Bytes written in the current transfer.
    pub written: u64,
    /// Transfers begun.
    pub transfers: u32,
}

impl PackageSink for CountingSink {
    fn begin(&mut self, _total_size: Option<u64>) -> Result<(), PackageError> {
        self.written = 0;
        self.transfers += 1;
        Ok(())
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> Result<(), PackageError> {
        self.written += data.len() as u64;
        Ok(())
    }

    fn finish(&mut self, _size: u64) -> Result<(), PackageError> {
        Ok(())
    }
}
