//! The wire side of a pushed image block (RFC 7959 §2.3, §2.9.3): the task
//! asks for one [`RequestKind::PackageBlock`](super::RequestKind::PackageBlock);
//! a device may want it in smaller blocks (a smaller SZX in its 2.31, or 4.13
//! with the Block1 size it can take). [`WireBlock`] is the one owner of what
//! those answers mean, so the task only hears the answer for its whole block.

use crate::model::{Block, ResponseCode};

/// One Block1 request on the wire, carrying part (or all) of the task's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct WireBlock {
    task_block: Block,
    total: u64,
    wire: Block,
}

/// What to do with a device's answer to a [`WireBlock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushStep {
    /// Send this block next; the task's block is not done.
    Send(WireBlock),
    /// The task's block is done (or refused): give the task this answer.
    Answer(ResponseCode),
}

impl WireBlock {
    /// The first wire block of the task's `task_block` of an image of `total`
    /// bytes, in blocks of at most `size` (the size the device last asked for).
    pub fn new(task_block: Block, total: u64, size: u32) -> WireBlock {
        let size = size.clamp(16, task_block.size.max(16)).next_power_of_two().min(task_block.size.max(16));
        WireBlock { task_block, total, wire: WireBlock::at(task_block.offset(), size, total) }
    }

    fn at(offset: u64, size: u32, total: u64) -> Block {
        let number = u32::try_from(offset / u64::from(size)).unwrap_or(u32::MAX);
        Block { number, more: offset + u64::from(size) < total, size }
    }

    /// The Block1 option of this request.
    pub fn block(&self) -> Block {
        self.wire
    }

    /// The image's size (Size1).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The bytes this request carries: `start..end` of the image.
    pub fn range(&self) -> (u64, u64) {
        let start = self.wire.offset().min(self.total);
        (start, (start + u64::from(self.wire.size)).min(self.total))
    }

    fn task_end(&self) -> u64 {
        (self.task_block.offset() + u64::from(self.task_block.size)).min(self.total)
    }

    /// The device answered `code`, with the Block1 option `block1` if its
    /// answer had one, and Size1 `size1` if it had that.
    ///
    /// - 2.31 Continue: the next wire block while the task's block has more
    ///   (at the device's smaller size if its Block1 says so); else the answer.
    /// - 4.13 with a smaller Block1 size: the same bytes again in blocks of
    ///   that size (RFC 7959 §2.9.3). With Size1 below the image's size: the
    ///   image is too large, the task hears 4.13 (Update Result 2). Bare: half
    ///   the size, down to 16 bytes, then the task hears 4.13.
    /// - Anything else: the task hears it.
    pub fn answer(&self, code: ResponseCode, block1: Option<Block>, size1: Option<u64>) -> PushStep {
        let smaller = block1.map(|b| b.size).filter(|size| *size < self.wire.size && *size >= 16);
        match code {
            ResponseCode::CONTINUE => {
                let (_, sent_end) = self.range();
                if sent_end >= self.task_end() {
                    return PushStep::Answer(code);
                }
                let size = smaller.unwrap_or(self.wire.size);
                PushStep::Send(WireBlock { wire: WireBlock::at(sent_end, size, self.total), ..*self })
            }
            ResponseCode::REQUEST_ENTITY_TOO_LARGE => {
                let too_large = size1.is_some_and(|limit| limit < self.total);
                let size = match smaller {
                    Some(size) => size,
                    None if !too_large && self.wire.size > 16 => self.wire.size / 2,
                    None => return PushStep::Answer(code),
                };
                PushStep::Send(WireBlock { wire: WireBlock::at(self.wire.offset(), size, self.total), ..*self })
            }
            _ => PushStep::Answer(code),
        }
    }

    /// The size the device takes, for the next task block.
    pub fn size(&self) -> u32 {
        self.wire.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(number: u32, total: u64) -> WireBlock {
        WireBlock::new(Block { number, more: (u64::from(number) + 1) * 1024 < total, size: 1024 }, total, 1024)
    }

    #[test]
    fn a_device_that_takes_the_task_size_answers_the_task() {
        let push = task(1, 4000);
        assert_eq!(push.block(), Block { number: 1, more: true, size: 1024 });
        assert_eq!(push.range(), (1024, 2048));
        assert_eq!(push.answer(ResponseCode::CONTINUE, None, None), PushStep::Answer(ResponseCode::CONTINUE));
        let last = task(3, 4000);
        assert_eq!(last.range(), (3072, 4000));
        assert!(!last.block().more);
        assert_eq!(last.answer(ResponseCode::CHANGED, None, None), PushStep::Answer(ResponseCode::CHANGED));
    }

    #[test]
    fn a_smaller_szx_in_2_31_splits_the_task_block() {
        // 2.31 to a wire block that was the whole task block: the task hears it.
        let whole = task(1, 4000);
        let smaller = Some(Block { number: 1, more: true, size: 256 });
        assert_eq!(whole.answer(ResponseCode::CONTINUE, smaller, None), PushStep::Answer(ResponseCode::CONTINUE));
        // The first 256 bytes of task block 0 acknowledged with SZX 4: the rest at 256.
        let first = WireBlock::new(Block { number: 0, more: true, size: 1024 }, 4000, 512);
        let PushStep::Send(next) = first.answer(ResponseCode::CONTINUE, smaller, None) else { panic!() };
        assert_eq!((next.block(), next.range()), (Block { number: 2, more: true, size: 256 }, (512, 768)));
        let mut small = WireBlock::new(Block { number: 0, more: true, size: 1024 }, 4000, 256);
        assert_eq!(small.range(), (0, 256));
        let mut sent = 256;
        while let PushStep::Send(next) = small.answer(ResponseCode::CONTINUE, None, None) {
            assert_eq!(next.range().0, sent);
            sent = next.range().1;
            small = next;
        }
        assert_eq!(sent, 1024, "four 256-byte blocks, then the task hears 2.31");
        assert_eq!(small.size(), 256);
    }

    #[test]
    fn four_thirteen_renegotiates_or_means_too_large() {
        let push = task(0, 4000);
        let PushStep::Send(renegotiated) =
            push.answer(ResponseCode::REQUEST_ENTITY_TOO_LARGE, Some(Block { number: 0, more: true, size: 512 }), None)
        else {
            panic!()
        };
        assert_eq!((renegotiated.block().size, renegotiated.range()), (512, (0, 512)));
        // Size1 below the image: the image does not fit.
        assert_eq!(
            push.answer(ResponseCode::REQUEST_ENTITY_TOO_LARGE, None, Some(2000)),
            PushStep::Answer(ResponseCode::REQUEST_ENTITY_TOO_LARGE)
        );
        // Bare: halve down to 16 bytes, then tell the task.
        let mut bare = push;
        let mut halvings = 0;
        while let PushStep::Send(next) = bare.answer(ResponseCode::REQUEST_ENTITY_TOO_LARGE, None, None) {
            assert_eq!(next.range().0, 0, "the same offset");
            bare = next;
            halvings += 1;
        }
        assert_eq!((halvings, bare.size()), (6, 16));
        // A Block1 size that is not smaller is no renegotiation.
        assert_eq!(
            WireBlock::new(Block { number: 0, more: true, size: 16 }, 4000, 16).answer(
                ResponseCode::REQUEST_ENTITY_TOO_LARGE,
                Some(Block { number: 0, more: true, size: 16 }),
                None
            ),
            PushStep::Answer(ResponseCode::REQUEST_ENTITY_TOO_LARGE)
        );
    }

    #[test]
    fn other_answers_go_to_the_task() {
        let push = task(2, 4000);
        for code in
            [ResponseCode::BAD_REQUEST, ResponseCode::REQUEST_ENTITY_INCOMPLETE, ResponseCode::SERVICE_UNAVAILABLE]
        {
            assert_eq!(push.answer(code, None, None), PushStep::Answer(code));
        }
    }
}
