//! Serving a firmware image over CoAP Block2 (RFC 7959 §2.4), sans-I/O: the
//! caller's [`ImageSource`] holds the bytes (memory, a file, a store); a
//! block request's option value goes in, the block to answer with comes out.

use alloc::vec::Vec;
use bytes::Bytes;

use crate::model::{Block, ResponseCode};

/// Where the image's bytes come from.
pub trait ImageSource {
    /// The image's size in bytes.
    fn size(&self) -> u64;
    /// An entity tag that changes whenever the bytes do (RFC 7252 §5.10.6):
    /// a client that sees it change starts its download again.
    fn etag(&self) -> [u8; 8];
    /// Fills `out` with the bytes at `offset..offset + out.len()` (within the image).
    ///
    /// # Errors
    /// The source's failure to read them; the request is answered 5.00.
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), ImageReadError>;
}

/// An image source could not read its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the image source failed to read {len} bytes at {offset}")]
pub struct ImageReadError {
    /// Where the read started.
    pub offset: u64,
    /// How much it wanted.
    pub len: usize,
}

/// An image held in memory, with an ETag from its bytes (FNV-1a 64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryImage {
    bytes: Bytes,
    etag: [u8; 8],
}

impl MemoryImage {
    /// The image `bytes`.
    pub fn new(bytes: impl Into<Bytes>) -> MemoryImage {
        let bytes = bytes.into();
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for byte in bytes.iter() {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
        MemoryImage { bytes, etag: hash.to_be_bytes() }
    }
}

impl ImageSource for MemoryImage {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn etag(&self) -> [u8; 8] {
        self.etag
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), ImageReadError> {
        let len = out.len();
        let start = usize::try_from(offset).map_err(|_| ImageReadError { offset, len })?;
        let end =
            start.checked_add(len).filter(|end| *end <= self.bytes.len()).ok_or(ImageReadError { offset, len })?;
        out.copy_from_slice(&self.bytes[start..end]);
        Ok(())
    }
}

/// The answer to a block request: 2.05 Content with these options and the
/// block's bytes as payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedBlock {
    /// The Block2 option to answer with (its size may be smaller than asked).
    pub block: Block,
    /// Size2 (the image's size), sent with the first block.
    pub size2: Option<u64>,
    /// The ETag option.
    pub etag: [u8; 8],
}

/// The largest block size a server sends (SZX 6).
pub const MAX_BLOCK_SIZE: u32 = 1024;

/// Answers a GET of the image: `block2` is the request's Block2 option value
/// (`None`: no option, the first block), `max_size` the largest block the
/// server sends (a power of two from 16 to 1024; a larger request is answered
/// with this size at the same byte offset, as RFC 7959 §2.2 lets a server do).
/// The block's bytes are appended to `payload`.
///
/// ```
/// use lwm2m_fota::server::{serve_block, MemoryImage};
/// let image = MemoryImage::new(vec![7u8; 3000]);
/// let mut payload = Vec::new();
/// // Block 2 of 1024 bytes (NUM 2, SZX 6): the last 952 bytes.
/// let served = serve_block(&image, Some(2 << 4 | 6), 1024, &mut payload).unwrap();
/// assert_eq!((served.block.number, served.block.more, payload.len()), (2, false, 952));
/// ```
///
/// # Errors
/// The code to answer with: 4.00 for the reserved SZX 7 or a block that
/// starts past the image's end, 5.00 when the source cannot read.
pub fn serve_block<S: ImageSource + ?Sized>(
    source: &S,
    block2: Option<u64>,
    max_size: u32,
    payload: &mut Vec<u8>,
) -> Result<ServedBlock, ResponseCode> {
    let value = block2.unwrap_or(6);
    let szx = (value & 7) as u32;
    if szx == 7 {
        return Err(ResponseCode::BAD_REQUEST);
    }
    let asked = 16u32 << szx;
    let number = value >> 4;
    if number > u64::from(u32::MAX >> 4) {
        return Err(ResponseCode::BAD_REQUEST);
    }
    let offset = number * u64::from(asked);
    let image_size = source.size();
    if offset >= image_size && !(offset == 0 && image_size == 0) {
        return Err(ResponseCode::BAD_REQUEST);
    }
    let size = asked.min(max_size.clamp(16, MAX_BLOCK_SIZE).next_power_of_two());
    let number = u32::try_from(offset / u64::from(size)).map_err(|_| ResponseCode::BAD_REQUEST)?;
    let len = (image_size - offset).min(u64::from(size));
    let len = usize::try_from(len).map_err(|_| ResponseCode::BAD_REQUEST)?;
    let start = payload.len();
    payload.resize(start + len, 0);
    if source.read(offset, &mut payload[start..]).is_err() {
        payload.truncate(start);
        return Err(ResponseCode::INTERNAL_SERVER_ERROR);
    }
    let more = offset + (len as u64) < image_size;
    Ok(ServedBlock {
        block: Block { number, more, size },
        size2: (number == 0).then_some(image_size),
        etag: source.etag(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn image(len: usize) -> MemoryImage {
        MemoryImage::new((0..len).map(|i| i as u8).collect::<Vec<u8>>())
    }

    #[test]
    fn every_block_size_covers_the_image_exactly() {
        let source = image(3000);
        for szx in 0..7u64 {
            let size = 16usize << szx;
            let mut whole = Vec::new();
            let mut number = 0u64;
            loop {
                let served = serve_block(&source, Some(number << 4 | szx), 1024, &mut whole).unwrap();
                assert_eq!(served.block.size as usize, size);
                assert_eq!(served.size2, (number == 0).then_some(3000));
                if !served.block.more {
                    break;
                }
                number += 1;
            }
            assert_eq!(whole, (0..3000).map(|i| i as u8).collect::<Vec<u8>>(), "SZX {szx}");
        }
    }

    #[test]
    fn the_server_may_answer_with_a_smaller_block_at_the_same_offset() {
        let source = image(3000);
        let mut payload = Vec::new();
        // Block 1 of 1024 bytes, answered in 256-byte blocks: block 4.
        let served = serve_block(&source, Some(1 << 4 | 6), 256, &mut payload).unwrap();
        assert_eq!((served.block.number, served.block.size, served.block.more), (4, 256, true));
        assert_eq!(payload[0], (1024 % 256) as u8);
        assert_eq!(payload.len(), 256);
    }

    #[test]
    fn refusals() {
        let source = image(3000);
        let mut payload = Vec::new();
        assert_eq!(serve_block(&source, Some(7), 1024, &mut payload), Err(ResponseCode::BAD_REQUEST), "SZX 7");
        assert_eq!(serve_block(&source, Some(3 << 4 | 6), 1024, &mut payload), Err(ResponseCode::BAD_REQUEST));
        assert_eq!(serve_block(&source, Some(u64::MAX << 4 | 6), 1024, &mut payload), Err(ResponseCode::BAD_REQUEST));
        assert!(payload.is_empty());
        // No Block2 option: the first 1024 bytes.
        let served = serve_block(&source, None, 1024, &mut payload).unwrap();
        assert_eq!((served.block.number, served.block.more, payload.len()), (0, true, 1024));
        // An empty image has one empty block.
        let served = serve_block(&image(0), None, 1024, &mut payload).unwrap();
        assert_eq!((served.block.more, served.size2), (false, Some(0)));
    }

    #[test]
    fn the_etag_follows_the_bytes() {
        assert_eq!(image(100).etag(), image(100).etag());
        assert_ne!(image(100).etag(), MemoryImage::new(vec![1u8; 100]).etag());
    }

    struct Failing;

    impl ImageSource for Failing {
        fn size(&self) -> u64 {
            10
        }
        fn etag(&self) -> [u8; 8] {
            [0; 8]
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), ImageReadError> {
            Err(ImageReadError { offset, len: out.len() })
        }
    }

    #[test]
    fn a_source_that_cannot_read_is_a_server_error() {
        let mut payload = vec![1];
        assert_eq!(serve_block(&Failing, None, 1024, &mut payload), Err(ResponseCode::INTERNAL_SERVER_ERROR));
        assert_eq!(payload, [1], "nothing appended");
        // Usable as a trait object.
        let dynamic: &dyn ImageSource = &Failing;
        assert_eq!(dynamic.size(), 10);
    }
}
