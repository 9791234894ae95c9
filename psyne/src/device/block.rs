//! The device block: the words a device channel keeps beside its descriptor ring, in host
//! memory (an anonymous slab in one process, `/dev/shm/<name>.device` across processes).
//!
//! Layout, in 64-bit words (every one accessed atomically; a peer may write anything, so every
//! value read from here is checked or only passed to the driver, which validates handles):
//!
//! | word | what |
//! |---|---|
//! | 0 | magic `PSYNEDEV`, stored last (`Release`) by the creator |
//! | 1 | layout version |
//! | 2, 3 | slot count, slot bytes |
//! | 4, 5 | producer part, consumer part: 0 free, 1 claimed, 2 published (`Release`) |
//! | 6 | messages the consumer has released (`Release`) |
//! | 8..10, 10..12 | producer's and consumer's GPU UUID |
//! | 16..24 | the producer's device-region IPC handle |
//! | 24 + 17 i .. | slot i: ready-event handle (8 words), release-event handle (8 words), and the *evented* word: `s + 1` when the release of message `s` (in this slot) recorded the release event |

use std::time::{Duration, Instant};

use super::DeviceError;
use super::api::{GpuUuid, IpcHandle};
use crate::slab::{Slab, SlabError};
use crate::sync::{AtomicU64, Ordering};

const MAGIC: u64 = u64::from_le_bytes(*b"PSYNEDEV");
const VERSION: u64 = 1;
/// Most slots a device channel may have.
pub(crate) const MAX_SLOTS: usize = 64;
/// Bytes of the block.
const BYTES: usize = 16 * 1024;
const _: () = assert!((24 + 17 * MAX_SLOTS) * 8 <= BYTES);

/// Which end a part of the block belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Producer,
    Consumer,
}

/// Part states.
pub(crate) const FREE: u64 = 0;
pub(crate) const CLAIMED: u64 = 1;
pub(crate) const PUBLISHED: u64 = 2;

/// A mapped device block, its geometry as validated when it was mapped.
#[derive(Debug)]
pub(crate) struct Block {
    slab: Slab,
    slots: usize,
    slot_bytes: usize,
}

impl Block {
    /// The shared-memory name of the block of channel `name`.
    pub(crate) fn name_of(name: &str) -> String {
        format!("{name}.device")
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < BYTES / 8);
        // SAFETY: the slab is BYTES long (checked when mapped), page-aligned and alive as long
        // as `self`; every word of it is only accessed atomically.
        unsafe { &*self.slab.as_ptr().as_ptr().cast::<AtomicU64>().add(i) }
    }

    fn init(slab: Slab, slots: usize, slot_bytes: usize) -> Block {
        let b = Block {
            slab,
            slots,
            slot_bytes,
        };
        b.word(1).store(VERSION, Ordering::Relaxed);
        b.word(2).store(slots as u64, Ordering::Relaxed);
        b.word(3).store(slot_bytes as u64, Ordering::Relaxed);
        b.word(0).store(MAGIC, Ordering::Release);
        b
    }

    /// A block in this process only.
    pub(crate) fn private(slots: usize, slot_bytes: usize) -> Result<Block, DeviceError> {
        let slab = Slab::builder(BYTES).build().map_err(DeviceError::Slab)?;
        Ok(Self::init(slab, slots, slot_bytes))
    }

    /// Creates the shared block of channel `name`, whose descriptor ring this process has just
    /// created: an object left at the block's name is a stale one (its ring was gone), removed.
    pub(crate) fn create(
        name: &str,
        slots: usize,
        slot_bytes: usize,
    ) -> Result<Block, DeviceError> {
        let block = Self::name_of(name);
        let slab = match Slab::create_shared(&block, Slab::builder(BYTES)) {
            Err(SlabError::AlreadyExists { .. }) => {
                let _ = std::fs::remove_file(format!("/dev/shm/{block}"));
                Slab::create_shared(&block, Slab::builder(BYTES))
            }
            other => other,
        }
        .map_err(DeviceError::Slab)?;
        Ok(Self::init(slab, slots, slot_bytes))
    }

    /// Maps and validates the block of channel `name`, waiting until `timeout` for its creator
    /// to finish it.
    pub(crate) fn open(name: &str, timeout: Duration) -> Result<Block, DeviceError> {
        let block = Self::name_of(name);
        let deadline = Instant::now() + timeout;
        loop {
            let retry = match Slab::open_shared(&block) {
                Ok(slab) if slab.len() >= BYTES => {
                    let b = Block {
                        slab,
                        slots: 0,
                        slot_bytes: 0,
                    };
                    match b.word(0).load(Ordering::Acquire) {
                        MAGIC => return b.validated(),
                        0 => None,
                        _ => {
                            return Err(DeviceError::Corrupted {
                                what: "device block magic",
                            });
                        }
                    }
                }
                Ok(_) => {
                    return Err(DeviceError::Corrupted {
                        what: "device block size",
                    });
                }
                Err(SlabError::NotFound { .. } | SlabError::SharedEmpty { .. }) => None,
                Err(e) => Some(e),
            };
            if let Some(e) = retry {
                return Err(DeviceError::Slab(e));
            }
            if Instant::now() >= deadline {
                return Err(DeviceError::Timeout);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn validated(mut self) -> Result<Block, DeviceError> {
        if self.word(1).load(Ordering::Relaxed) != VERSION {
            return Err(DeviceError::Corrupted {
                what: "device block version",
            });
        }
        let slots = self.word(2).load(Ordering::Relaxed);
        let slot_bytes = self.word(3).load(Ordering::Relaxed);
        if slots == 0 || slots > MAX_SLOTS as u64 {
            return Err(DeviceError::Corrupted {
                what: "device block slot count",
            });
        }
        if slot_bytes == 0 || !slot_bytes.is_multiple_of(super::SLOT_ALIGN as u64) {
            return Err(DeviceError::Corrupted {
                what: "device block slot size",
            });
        }
        let total = slots.checked_mul(slot_bytes);
        if total.is_none_or(|t| t > super::MAX_REGION as u64) {
            return Err(DeviceError::Corrupted {
                what: "device block region size",
            });
        }
        self.slots = slots as usize;
        self.slot_bytes = slot_bytes as usize;
        Ok(self)
    }

    pub(crate) fn slots(&self) -> usize {
        self.slots
    }

    pub(crate) fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    fn state_word(&self, side: Side) -> &AtomicU64 {
        self.word(match side {
            Side::Producer => 4,
            Side::Consumer => 5,
        })
    }

    /// Claims `side`'s part: refuses a second end of that side (device channels do not take a
    /// returning end: its predecessor's regions and events are gone).
    pub(crate) fn claim(&self, side: Side) -> Result<(), DeviceError> {
        self.state_word(side)
            .compare_exchange(FREE, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(|_| DeviceError::AlreadyAttached)
    }

    /// The state of `side`'s part (`Acquire`: a published part's handles are visible after).
    pub(crate) fn state(&self, side: Side) -> u64 {
        self.state_word(side).load(Ordering::Acquire)
    }

    /// Publishes `side`'s part, whose handles and UUID were written before.
    pub(crate) fn publish(&self, side: Side) {
        self.state_word(side).store(PUBLISHED, Ordering::Release);
    }

    fn uuid_base(side: Side) -> usize {
        match side {
            Side::Producer => 8,
            Side::Consumer => 10,
        }
    }

    pub(crate) fn set_uuid(&self, side: Side, uuid: GpuUuid) {
        let b = Self::uuid_base(side);
        let (lo, hi) = uuid.0.split_at(8);
        self.word(b).store(
            u64::from_le_bytes(lo.try_into().unwrap_or_default()),
            Ordering::Relaxed,
        );
        self.word(b + 1).store(
            u64::from_le_bytes(hi.try_into().unwrap_or_default()),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn uuid(&self, side: Side) -> GpuUuid {
        let b = Self::uuid_base(side);
        let mut u = [0u8; 16];
        u[..8].copy_from_slice(&self.word(b).load(Ordering::Relaxed).to_le_bytes());
        u[8..].copy_from_slice(&self.word(b + 1).load(Ordering::Relaxed).to_le_bytes());
        GpuUuid(u)
    }

    fn set_handle(&self, at: usize, h: &IpcHandle) {
        for (i, chunk) in h.0.chunks_exact(8).enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            self.word(at + i)
                .store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
    }

    fn handle(&self, at: usize) -> IpcHandle {
        let mut h = [0u8; 64];
        for (i, chunk) in h.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&self.word(at + i).load(Ordering::Relaxed).to_le_bytes());
        }
        IpcHandle(h)
    }

    fn slot_base(slot: usize) -> usize {
        24 + 17 * slot
    }

    pub(crate) fn set_memory_handle(&self, h: &IpcHandle) {
        self.set_handle(16, h);
    }

    pub(crate) fn memory_handle(&self) -> IpcHandle {
        self.handle(16)
    }

    /// Slot `slot`'s event handle of `side` (producer: ready event; consumer: release event).
    pub(crate) fn set_event_handle(&self, side: Side, slot: usize, h: &IpcHandle) {
        let at = Self::slot_base(slot) + if side == Side::Producer { 0 } else { 8 };
        self.set_handle(at, h);
    }

    pub(crate) fn event_handle(&self, side: Side, slot: usize) -> IpcHandle {
        let at = Self::slot_base(slot) + if side == Side::Producer { 0 } else { 8 };
        self.handle(at)
    }

    /// Messages the consumer has released (`Acquire`).
    pub(crate) fn released(&self) -> u64 {
        self.word(6).load(Ordering::Acquire)
    }

    /// The consumer has released message `seq`, recording slot `slot`'s release event if
    /// `evented`.
    pub(crate) fn release(&self, slot: usize, seq: u64, evented: bool) {
        if evented {
            self.word(Self::slot_base(slot) + 16)
                .store(seq + 1, Ordering::Relaxed);
        }
        self.word(6).store(seq + 1, Ordering::Release);
    }

    /// Slot `slot`'s evented word (read after [`released`](Self::released)).
    pub(crate) fn evented(&self, slot: usize) -> u64 {
        self.word(Self::slot_base(slot) + 16)
            .load(Ordering::Relaxed)
    }
}
