//! The control block (protocol version 4): identity, topology and a table of end slots, at slab
//! offset 0; and the [`Ring`] that maps it: create, attach (validate) and claim an end slot.
//!
//! Every word of the control block is an atomic: another process may write any of them at any
//! time, so none is read through a plain reference. Words written once before the magic word
//! (the identity) are loaded `Relaxed` after an `Acquire` load of the magic, and copies of them
//! are validated and used from then on; they are never reread.
//!
//! # Layout
//!
//! ```text
//! offset 0     identity, 2 lines (256 bytes; see `layout` for every word)
//!              magic, version, topology, flags, slot count, region offset and length, type id,
//!              fingerprint, payload size and alignment, creator pid and start time, PID
//!              namespace, wait spins and yields, message type name (64 bytes)
//! offset 256   end slot 0, 2 lines (256 bytes):
//!                line A  position (the end's cursor), waiting (consumer hint)
//!                line B  owner word, process start time, parked word (futex)
//! offset 512   end slot 1, ... (as many slots as the topology asks for at creation)
//! REGION_OFFSET = round_up(256 + 256 * slots + 32, 4096) - 32: ring byte 0
//! ```
//!
//! The **owner word** of a slot is `pid | generation << 32 | CLAIMING << 62 | CLOSED << 63`:
//! 0 for a slot never attached; a live end has its pid and a generation that grows by one with
//! each process that takes the slot; `CLOSED` once the end dropped or its process was found
//! dead; `CLAIMING` while a new process is taking the slot (its start time is not yet stored).
//! A slot is taken by a compare-and-swap of the owner word, so of two racing openers exactly
//! one wins, and a liveness checker marks a dead end closed by a compare-and-swap of the owner
//! word it saw, so it never closes the end of a process that took the slot meanwhile.
//!
//! This module never sleeps, wakes, or knows of channels, transports or CUDA: liveness checks
//! are given to it as functions, the parked words are only words here.

use super::format::{self, HEADER, MAX_ALIGN, MAX_REGION, MIN_REGION, Region, pending};
use crate::message::Message;
use crate::slab::Slab;
use crate::sync::{AtomicU32, AtomicU64, Futex, Ordering};
use core::ptr::NonNull;
use crossbeam_utils::CachePadded;
use std::sync::Arc;

/// `b"PSYNRING"` read as a little-endian `u64`: marks an initialised control block.
pub const MAGIC: u64 = u64::from_le_bytes(*b"PSYNRING");
/// Version of the ring protocol and control-block layout described in [`crate::ring`]: 4 (end
/// slots, pending marks, the message type's name and payload layout in the identity).
pub const PROTOCOL_VERSION: u32 = 4;
/// Bytes of the message type name kept in the control block (longer names are cut).
pub(crate) const NAME_BYTES: usize = 64;

/// Control-block flag: the producer stamps each header with its send time.
pub(crate) const FLAG_TIMESTAMPS: u32 = 1 << 0;
/// Control-block flag: ends may sleep on their parked words (else they only spin).
pub(crate) const FLAG_PARK: u32 = 1 << 1;
/// Control-block flag of a broadcast ring: the producer may cut off a lagging consumer, so
/// consumers hold their read position while they read (see `broadcast.rs`).
pub(crate) const FLAG_DROP_LAGGING: u32 = 1 << 2;

/// The largest spin count an opener takes from a control block (larger ones are cut to this):
/// what a peer's values can cost an honest waiter is bounded.
pub(crate) const MAX_SPINS: u32 = 1 << 20;
/// The largest yield count an opener takes from a control block.
pub(crate) const MAX_YIELDS: u32 = 1 << 12;

/// Owner word bit: the end is gone (dropped, or its process found dead).
const CLOSED: u64 = 1 << 63;
/// Owner word bit: a process is taking the slot and has not stored its start time yet.
const CLAIMING: u64 = 1 << 62;
/// Owner word: the generation's bits (30 bits above the pid).
const GENERATION_MASK: u64 = (1 << 30) - 1;

/// The most producers of a multi-producer ring.
pub const MAX_PRODUCERS: usize = 64;

/// The most consumers of a broadcast ring.
pub const MAX_CONSUMERS: usize = 64;

/// What the ring carries between which ends: stored in the control block (a tag and the slot
/// count), checked by openers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One producer (slot 0), one consumer (slot 1), one region.
    Spsc,
    /// `producers` producers, one consumer: a lane (region) per producer. Slot `i` is producer
    /// `i`, slot `producers + i` holds the consumer's read position in lane `i`, slot
    /// `2 * producers` is the consumer (see `mpsc.rs`).
    Mpsc {
        /// Producers (lanes), `1 ..= MAX_PRODUCERS`.
        producers: usize,
    },
    /// One producer (slot 0), up to `consumers` consumers (slots `1 ..= consumers`), one region
    /// every consumer reads (see `broadcast.rs`).
    Broadcast {
        /// Consumer slots, `1 ..= MAX_CONSUMERS`.
        consumers: usize,
        /// The producer may cut off lagging consumers (`FLAG_DROP_LAGGING`).
        drop_lagging: bool,
    },
}

impl Topology {
    /// The tag stored in the control block.
    pub(crate) fn tag(self) -> u32 {
        match self {
            Topology::Spsc => 1,
            Topology::Mpsc { .. } => 2,
            Topology::Broadcast { .. } => 3,
        }
    }

    /// End slots of this topology.
    pub(crate) fn slots(self) -> usize {
        match self {
            Topology::Spsc => 2,
            Topology::Mpsc { producers } => 2 * producers + 1,
            Topology::Broadcast { consumers, .. } => 1 + consumers,
        }
    }

    /// Regions (lanes) of this topology.
    pub(crate) fn regions(self) -> usize {
        match self {
            Topology::Spsc => 1,
            Topology::Mpsc { producers } => producers,
            Topology::Broadcast { .. } => 1,
        }
    }

    /// The topology a control block's tag and slot count describe, if valid.
    fn from_words(tag: u32, slots: usize) -> Option<Topology> {
        match tag {
            1 if slots == 2 => Some(Topology::Spsc),
            2 if slots % 2 == 1 && (3..=2 * MAX_PRODUCERS + 1).contains(&slots) => {
                Some(Topology::Mpsc {
                    producers: (slots - 1) / 2,
                })
            }
            3 if (2..=MAX_CONSUMERS + 1).contains(&slots) => Some(Topology::Broadcast {
                consumers: slots - 1,
                drop_lagging: false,
            }),
            _ => None,
        }
    }
}

/// Byte offsets of the control block's words (protocol version 4, native byte order: a control
/// block is read only on the machine that wrote it). For tests and tools that inspect or
/// corrupt a shared channel on purpose; only psyne writes them.
#[doc(hidden)]
pub mod layout {
    /// `u64` magic.
    pub const MAGIC: usize = 0;
    /// `u32` protocol version.
    pub const VERSION: usize = 8;
    /// `u32` topology tag (1: SPSC).
    pub const TOPOLOGY: usize = 12;
    /// `u32` flags (timestamps, park).
    pub const FLAGS: usize = 16;
    /// `u32` number of end slots.
    pub const SLOTS: usize = 20;
    /// `u64` slab offset of ring byte 0.
    pub const REGION_OFFSET: usize = 24;
    /// `u64` ring region length.
    pub const REGION_LEN: usize = 32;
    /// `u64` type id (0: raw).
    pub const TYPE_ID: usize = 40;
    /// `u64` layout fingerprint (0: raw).
    pub const FINGERPRINT: usize = 48;
    /// `u32` payload size of the message type (0: raw).
    pub const PAYLOAD_SIZE: usize = 56;
    /// `u32` alignment of the message type (0: raw).
    pub const PAYLOAD_ALIGN: usize = 60;
    /// `u32` pid of the creator.
    pub const CREATOR_PID: usize = 64;
    /// `u32` spins of the wait strategy.
    pub const WAIT_SPINS: usize = 68;
    /// `u64` start time of the creator's process.
    pub const CREATOR_START: usize = 72;
    /// `u64` PID namespace inode of the creator.
    pub const PID_NAMESPACE: usize = 80;
    /// `u32` yields of the wait strategy.
    pub const WAIT_YIELDS: usize = 88;
    /// `u32` length of the type name.
    pub const NAME_LEN: usize = 92;
    /// 64 bytes: the message type name (UTF-8, cut at 64 bytes).
    pub const NAME: usize = 96;
    /// Offset of end slot 0.
    pub const SLOT_TABLE: usize = 256;
    /// Bytes per end slot.
    pub const SLOT_SIZE: usize = 256;
    /// In a slot: `u64` the end's position (SPSC consumer: read position).
    pub const SLOT_POSITION: usize = 0;
    /// In a slot: `u64` waiting hint (SPSC consumer).
    pub const SLOT_WAITING: usize = 8;
    /// In a slot: `u64` owner word.
    pub const SLOT_OWNER: usize = 128;
    /// In a slot: `u64` start time of the owner's process.
    pub const SLOT_START: usize = 136;
    /// In a slot: `u32` parked word.
    pub const SLOT_PARKED: usize = 144;
    /// Offset of a word `field` of end slot `slot`.
    pub const fn slot(slot: usize, field: usize) -> usize {
        SLOT_TABLE + slot * SLOT_SIZE + field
    }
}

/// The identity lines. Written before the magic word (stored last, `Release`).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Identity {
    magic: AtomicU64,
    version: AtomicU32,
    topology: AtomicU32,
    flags: AtomicU32,
    slots: AtomicU32,
    region_offset: AtomicU64,
    region_len: AtomicU64,
    type_id: AtomicU64,
    fingerprint: AtomicU64,
    payload_size: AtomicU32,
    payload_align: AtomicU32,
    creator_pid: AtomicU32,
    wait_spins: AtomicU32,
    creator_start: AtomicU64,
    pid_namespace: AtomicU64,
    wait_yields: AtomicU32,
    name_len: AtomicU32,
    name: [AtomicU64; NAME_BYTES / 8],
}

/// Line A of an end slot: the end's cursor, written by the end only.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Cursor {
    /// The end's position (SPSC: the consumer's read position; unused by the producer).
    pub(crate) position: AtomicU64,
    /// SPSC consumer: the read position at which it waits inside a blocking receive, any other
    /// value (`u64::MAX`) when it does not. A hint.
    pub(crate) waiting: AtomicU64,
}

/// Line B of an end slot: who holds it, and its parked word.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Presence {
    owner: AtomicU64,
    start: AtomicU64,
    /// `1` while the end sleeps (or is about to), else `0`.
    pub(crate) parked: Futex,
    reserved: AtomicU32,
}

/// One end slot.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct EndSlot {
    pub(crate) cursor: CachePadded<Cursor>,
    pub(crate) presence: CachePadded<Presence>,
}

impl EndSlot {
    fn new(owner: u64, start: u64) -> Self {
        EndSlot {
            cursor: CachePadded::new(Cursor {
                position: AtomicU64::new(0),
                waiting: AtomicU64::new(u64::MAX),
            }),
            presence: CachePadded::new(Presence {
                owner: AtomicU64::new(owner),
                start: AtomicU64::new(start),
                parked: Futex::new(0),
                reserved: AtomicU32::new(0),
            }),
        }
    }
}

const IDENTITY_SIZE: usize = core::mem::size_of::<CachePadded<Identity>>();
const SLOT_SIZE: usize = core::mem::size_of::<EndSlot>();

#[cfg(all(not(loom), any(target_arch = "x86_64", target_arch = "aarch64")))]
const _: () = {
    use core::mem::offset_of;
    assert!(IDENTITY_SIZE == layout::SLOT_TABLE && SLOT_SIZE == layout::SLOT_SIZE);
    assert!(offset_of!(Identity, magic) == layout::MAGIC);
    assert!(offset_of!(Identity, version) == layout::VERSION);
    assert!(offset_of!(Identity, topology) == layout::TOPOLOGY);
    assert!(offset_of!(Identity, flags) == layout::FLAGS);
    assert!(offset_of!(Identity, slots) == layout::SLOTS);
    assert!(offset_of!(Identity, region_offset) == layout::REGION_OFFSET);
    assert!(offset_of!(Identity, region_len) == layout::REGION_LEN);
    assert!(offset_of!(Identity, type_id) == layout::TYPE_ID);
    assert!(offset_of!(Identity, fingerprint) == layout::FINGERPRINT);
    assert!(offset_of!(Identity, payload_size) == layout::PAYLOAD_SIZE);
    assert!(offset_of!(Identity, payload_align) == layout::PAYLOAD_ALIGN);
    assert!(offset_of!(Identity, creator_pid) == layout::CREATOR_PID);
    assert!(offset_of!(Identity, wait_spins) == layout::WAIT_SPINS);
    assert!(offset_of!(Identity, creator_start) == layout::CREATOR_START);
    assert!(offset_of!(Identity, pid_namespace) == layout::PID_NAMESPACE);
    assert!(offset_of!(Identity, wait_yields) == layout::WAIT_YIELDS);
    assert!(offset_of!(Identity, name_len) == layout::NAME_LEN);
    assert!(offset_of!(Identity, name) == layout::NAME);
    assert!(offset_of!(Cursor, position) == layout::SLOT_POSITION);
    assert!(offset_of!(Cursor, waiting) == layout::SLOT_WAITING);
    assert!(offset_of!(EndSlot, presence) + offset_of!(Presence, owner) == layout::SLOT_OWNER);
    assert!(offset_of!(EndSlot, presence) + offset_of!(Presence, start) == layout::SLOT_START);
    assert!(offset_of!(EndSlot, presence) + offset_of!(Presence, parked) == layout::SLOT_PARKED);
};

/// Slab offset of ring byte 0 for a control block of `slots` end slots: 32 bytes before a page
/// boundary, so that headers sit in the second half of a cache line.
pub(crate) const fn region_offset(slots: usize) -> usize {
    (IDENTITY_SIZE + slots * SLOT_SIZE + HEADER).next_multiple_of(4096) - HEADER
}

/// Slab bytes needed for a ring of `topology` with regions of `len` bytes each.
pub(crate) fn slab_size(topology: Topology, len: usize) -> usize {
    region_offset(topology.slots()) + topology.regions() * len
}

/// A process as an owner word and start time record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessStamp {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22), 0 if unknown.
    pub start: u64,
}

/// Payload size and alignment of a typed channel's message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PayloadLayout {
    /// `size_of::<T>()`.
    pub size: usize,
    /// `align_of::<T>()`.
    pub align: usize,
}

/// What a channel carries: the one description of a channel's message type, written into the
/// control block by the creator, checked by openers and, per record, by typed consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChannelIdentity {
    /// [`Message::TYPE_ID`], 0 for a raw channel.
    pub type_id: u64,
    /// [`Message::FINGERPRINT`], 0 for a raw channel.
    pub fingerprint: u64,
    /// [`Message::NAME`], `"raw"` for a raw channel.
    pub name: &'static str,
    /// Payload layout of the message type; `None` for a raw channel.
    pub payload: Option<PayloadLayout>,
}

impl ChannelIdentity {
    /// A raw channel: any type ids, any payloads.
    pub(crate) const RAW: ChannelIdentity = ChannelIdentity {
        type_id: 0,
        fingerprint: 0,
        name: "raw",
        payload: None,
    };

    /// A typed channel of `T`.
    pub(crate) const fn of<T: Message>() -> ChannelIdentity {
        ChannelIdentity {
            type_id: T::TYPE_ID,
            fingerprint: T::FINGERPRINT,
            name: T::NAME,
            payload: Some(PayloadLayout {
                size: core::mem::size_of::<T>(),
                align: core::mem::align_of::<T>(),
            }),
        }
    }
}

/// How the ends of a ring wait, as the control block records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaitWords {
    /// Ends may sleep on their parked words.
    pub park: bool,
    /// Spins before yielding.
    pub spins: u32,
    /// Yields before sleeping.
    pub yields: u32,
}

/// Everything a creator decides about a ring besides its message type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingConfig {
    /// Region length: a power of two in `MIN_REGION ..= MAX_REGION`.
    pub len: usize,
    /// The topology (and so the number of end slots).
    pub topology: Topology,
    /// How ends wait.
    pub wait: WaitWords,
    /// Whether producers stamp headers with send times.
    pub timestamps: bool,
}

/// Who creates a shared ring, for the identity line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Creator {
    /// The creating process.
    pub me: ProcessStamp,
    /// Its PID namespace inode (0: unknown).
    pub pid_namespace: u64,
    /// The end slot the creator holds from the start.
    pub slot: usize,
    /// Whether ends may live in other processes (a named ring); `false` for an in-process ring
    /// whose other slots are claimed later (a multi-producer ring's producers).
    pub shared: bool,
}

/// Why [`Ring::attach`] or [`Ring::claim`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpenFailure {
    /// The magic word is 0: the creator has not finished initialising (or died doing so).
    NotReady,
    /// Another protocol version.
    VersionMismatch { expected: u32, found: u32 },
    /// Another topology.
    TopologyMismatch { expected: u32, found: u32 },
    /// Another message type (with both names).
    IncompatibleType {
        expected: u64,
        found: u64,
        expected_name: &'static str,
        found_name: String,
    },
    /// Same type id, another layout.
    IncompatibleLayout {
        expected: u64,
        found: u64,
        name: &'static str,
    },
    /// The end is attached to a live process.
    AlreadyConnected { pid: u32 },
    /// Every producer slot of a multi-producer ring is held by a live producer.
    TooManyProducers { max: usize },
    /// Every consumer slot of a broadcast ring is held by a live consumer.
    TooManyConsumers { max: usize },
    /// The creator lives in another PID namespace.
    ForeignPidNamespace { expected: u64, found: u64 },
    /// A check of the control block failed.
    Corrupted(&'static str),
}

/// How an end slot was claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claimed {
    /// It had never been attached.
    Fresh,
    /// It was held by an end that is gone (dropped, or its process died): this one takes over.
    TakenOver,
}

/// A mapped ring: its slab, where the control block and the region are in it, and the copies
/// of identity words validated when it was set up. Shared (through an `Arc`) by the ends of
/// this process.
#[derive(Debug)]
pub(crate) struct Ring {
    /// Slab offset 0: the control block; valid while `slab` lives.
    control: NonNull<u8>,
    /// End slots (a validated copy).
    slots: usize,
    /// What the ring carries between which ends.
    topology: Topology,
    /// The ring bytes: one region per lane (SPSC: one), consecutive after the control block.
    regions: Vec<Region>,
    /// How ends wait (validated copies).
    wait: WaitWords,
    /// Whether producers stamp headers.
    timestamps: bool,
    /// Whether ends may live in other processes (a named ring).
    shared: bool,
    /// Owns the memory the pointers above point into.
    #[cfg_attr(
        not(feature = "cuda"),
        expect(dead_code, reason = "read only for CUDA device addresses")
    )]
    slab: Slab,
}

// SAFETY: a `Ring` is shared by the ends of one ring, which access the region only as the
// protocol allows (disjoint byte ranges, ordered by release/acquire of commit words and
// positions) and the control block only through atomics.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

/// A volatile-free load of an identity word: they are atomics, loaded `Relaxed` after the magic.
macro_rules! id_load {
    ($id:expr, $field:ident) => {
        $id.$field.load(Ordering::Relaxed)
    };
}

impl Ring {
    /// Initialises the control block of `slab` (zero-filled, page-aligned, at least
    /// [`slab_size`] bytes, not yet visible to anyone) and returns the ring. For an in-process
    /// ring (`creator: None`) every end slot is held by this process; for a shared one, only the
    /// creator's slot (the others are claimed by openers with [`Ring::claim`]).
    pub(crate) fn create(
        slab: Slab,
        config: RingConfig,
        identity: &ChannelIdentity,
        creator: Option<Creator>,
    ) -> Arc<Ring> {
        let slots = config.topology.slots();
        debug_assert!(config.len.is_power_of_two());
        debug_assert!((MIN_REGION..=MAX_REGION).contains(&config.len));
        assert!(
            slab.len() >= slab_size(config.topology, config.len),
            "slab smaller than requested"
        );
        let base = slab.as_ptr();
        let own = std::process::id();
        let (me, ns) = match creator {
            None => (ProcessStamp { pid: own, start: 0 }, 0),
            Some(c) => (c.me, c.pid_namespace),
        };
        // First generation of this process's slots; every other slot never attached (0).
        let owner_of = |slot: usize| match creator {
            None => (u64::from(own) | 1 << 32, 0),
            Some(c) if c.slot == slot => (u64::from(c.me.pid) | 1 << 32, c.me.start),
            Some(_) => (0, 0),
        };
        let id = identity_lines(&config, identity, me, ns);
        // SAFETY: the slab is page-aligned, zero-filled, at least `slab_size` bytes and not yet
        // visible as a ring to anyone (openers wait for the magic word, stored last); the
        // identity and `slots` end slots end before `region_offset(slots)` (by its definition),
        // so these writes stay inside the slab and outside the region.
        unsafe {
            base.cast::<CachePadded<Identity>>().as_ptr().write(id);
            for i in 0..slots {
                let (owner, start) = owner_of(i);
                slot_ptr(base, i).as_ptr().write(EndSlot::new(owner, start));
            }
        }
        let regions = regions_of(base, config.topology, config.len);
        for region in &regions {
            // The first record's commit word must say "nothing here, message 0 comes next"
            // before anyone can see the ring.
            // SAFETY: offset 0 is a record start in the region; no end exists yet.
            unsafe { region.store_commit(0, pending(0), Ordering::Relaxed) };
        }
        let ring = Ring {
            control: base,
            slots,
            topology: config.topology,
            regions,
            wait: config.wait,
            timestamps: config.timestamps,
            shared: creator.is_some_and(|c| c.shared),
            slab,
        };
        ring.identity().magic.store(MAGIC, Ordering::Release);
        Arc::new(ring)
    }

    /// Validates the control block of a mapped shared slab against what this opener expects
    /// (see the module docs of [`crate::ring`]) and returns the ring. Nothing in the slab is
    /// trusted: every identity word is checked, and the values used afterwards are copies taken
    /// here. Attaches no end: see [`Ring::claim`].
    pub(crate) fn attach(
        slab: Slab,
        kind: Topology,
        expect: &ChannelIdentity,
        pid_namespace: u64,
    ) -> Result<Arc<Ring>, OpenFailure> {
        if slab.len() < IDENTITY_SIZE + 4096 {
            return Err(OpenFailure::Corrupted(
                "segment smaller than a control block and a ring",
            ));
        }
        let base = slab.as_ptr();
        // SAFETY: the slab is page-aligned and longer than the identity lines (checked above);
        // every field is an atomic integer, valid for any bytes, accessed atomically only.
        let id = unsafe { base.cast::<CachePadded<Identity>>().as_ref() };
        let topology = check_kind(id, kind)?;
        let slots = topology.slots();
        let offset = region_offset(slots);
        if id_load!(id, region_offset) != offset as u64 {
            return Err(OpenFailure::Corrupted("region offset"));
        }
        let len = id_load!(id, region_len);
        if !len.is_power_of_two()
            || !(MIN_REGION as u64..=MAX_REGION as u64).contains(&len)
            || len.saturating_mul(topology.regions() as u64) > (slab.len() - offset) as u64
        {
            return Err(OpenFailure::Corrupted("region length"));
        }
        let len = len as usize;
        check_identity(id, expect, len)?;
        let ns = id_load!(id, pid_namespace);
        if ns != 0 && pid_namespace != 0 && ns != pid_namespace {
            return Err(OpenFailure::ForeignPidNamespace {
                expected: pid_namespace,
                found: ns,
            });
        }
        let flags = id_load!(id, flags);
        let topology = match topology {
            Topology::Broadcast { consumers, .. } => Topology::Broadcast {
                consumers,
                drop_lagging: flags & FLAG_DROP_LAGGING != 0,
            },
            t => t,
        };
        let wait = WaitWords {
            park: flags & FLAG_PARK != 0,
            spins: id_load!(id, wait_spins).min(MAX_SPINS),
            yields: id_load!(id, wait_yields).min(MAX_YIELDS),
        };
        // `offset + regions * len <= slab.len()` was checked above.
        let regions = regions_of(base, topology, len);
        Ok(Arc::new(Ring {
            control: base,
            slots,
            topology,
            regions,
            wait,
            timestamps: flags & FLAG_TIMESTAMPS != 0,
            shared: true,
            slab,
        }))
    }

    /// Takes end slot `slot` for process `me`: a slot never attached, or one whose end is gone
    /// (closed, or held by a process `alive` says is dead). Of racing claimers exactly one wins.
    pub(crate) fn claim(
        &self,
        slot: usize,
        me: ProcessStamp,
        alive: fn(ProcessStamp) -> bool,
    ) -> Result<Claimed, OpenFailure> {
        let p = &self.slot(slot).presence;
        for _ in 0..8 {
            let seen = p.owner.load(Ordering::Acquire);
            if seen & CLOSED == 0 && owner_pid(seen) != 0 {
                let start = if seen & CLAIMING != 0 {
                    0
                } else {
                    p.start.load(Ordering::Acquire)
                };
                let holder = ProcessStamp {
                    pid: owner_pid(seen),
                    start,
                };
                if alive(holder) {
                    return Err(OpenFailure::AlreadyConnected { pid: holder.pid });
                }
            }
            let generation = ((seen >> 32) & GENERATION_MASK).wrapping_add(1) & GENERATION_MASK;
            let mine = u64::from(me.pid) | generation << 32;
            if p.owner
                .compare_exchange(seen, mine | CLAIMING, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            p.start.store(me.start, Ordering::Release);
            p.owner.store(mine, Ordering::Release);
            return Ok(if seen == 0 {
                Claimed::Fresh
            } else {
                Claimed::TakenOver
            });
        }
        Err(OpenFailure::Corrupted("owner word keeps changing"))
    }

    /// The identity lines.
    #[inline(always)]
    fn identity(&self) -> &Identity {
        // SAFETY: the slab holds an identity at offset 0 (initialised by `create`, or validated
        // by `attach`), lives as long as `self`, and is accessed through atomics only.
        unsafe { self.control.cast::<CachePadded<Identity>>().as_ref() }
    }

    /// End slot `i` (below the slot count).
    #[inline(always)]
    pub(crate) fn slot(&self, i: usize) -> &EndSlot {
        debug_assert!(i < self.slots);
        // SAFETY: `i` is below the validated slot count, so the slot lies in the control block
        // inside the slab, which lives as long as `self`; every field is an atomic.
        unsafe { slot_ptr(self.control, i).as_ref() }
    }

    /// The ring bytes of the first (for SPSC: the only) lane.
    #[inline(always)]
    pub(crate) fn region(&self) -> &Region {
        &self.regions[0]
    }

    /// The region of lane `i` (below the topology's region count).
    pub(crate) fn region_of(&self, i: usize) -> &Region {
        &self.regions[i]
    }

    /// What the ring carries between which ends.
    pub(crate) fn topology(&self) -> Topology {
        self.topology
    }

    /// How ends wait.
    #[inline(always)]
    pub(crate) fn wait_words(&self) -> WaitWords {
        self.wait
    }

    /// Whether producers stamp headers with send times.
    #[inline(always)]
    pub(crate) fn timestamps(&self) -> bool {
        self.timestamps
    }

    /// Whether ends may live in other processes.
    #[inline(always)]
    pub(crate) fn is_shared(&self) -> bool {
        self.shared
    }

    /// The slab.
    #[cfg(feature = "cuda")]
    pub(crate) fn slab(&self) -> &Slab {
        &self.slab
    }

    /// The parked word of the end in `slot`.
    #[inline(always)]
    pub(crate) fn parked(&self, slot: usize) -> &Futex {
        &self.slot(slot).presence.parked
    }

    /// The end in `slot` no longer waits (see the large-record restart in [`crate::ring`]).
    #[inline]
    pub(crate) fn stop_waiting(&self, slot: usize) {
        self.slot(slot)
            .cursor
            .waiting
            .store(u64::MAX, Ordering::Relaxed);
    }

    /// Whether the end holding `slot` is gone (`Acquire`: its last publications are visible).
    #[inline(always)]
    pub(crate) fn owner_closed(slot: &EndSlot) -> bool {
        slot.presence.owner.load(Ordering::Acquire) & CLOSED != 0
    }

    /// Whether end slot `i` was ever attached (its owner word is not 0).
    pub(crate) fn ever_attached(&self, i: usize) -> bool {
        self.slot(i).presence.owner.load(Ordering::Acquire) != 0
    }

    /// Whether end slot `i` is held by an end now: attached, not closed (its process may have
    /// died unnoticed: liveness checks close such slots).
    pub(crate) fn live(&self, i: usize) -> bool {
        let owner = self.slot(i).presence.owner.load(Ordering::Acquire);
        owner != 0 && owner & CLOSED == 0
    }

    /// The address of end slot `i` (below the slot count), for cursors that keep it.
    pub(crate) fn slot_ptr(&self, i: usize) -> NonNull<EndSlot> {
        assert!(i < self.slots, "end slot out of range");
        slot_ptr(self.control, i)
    }

    /// Marks the end in `slot` closed (it dropped).
    pub(crate) fn close(&self, slot: usize) {
        self.slot(slot)
            .presence
            .owner
            .fetch_or(CLOSED, Ordering::AcqRel);
    }

    /// Checks the end in `slot` with `alive`: if it is attached, not closed, and its process is
    /// dead, marks it closed (only if nobody took the slot meanwhile). A slot never attached, or
    /// being claimed by a live process, is left alone.
    pub(crate) fn close_if_dead(&self, slot: usize, alive: fn(ProcessStamp) -> bool) {
        let p = &self.slot(slot).presence;
        let seen = p.owner.load(Ordering::Acquire);
        if seen & CLOSED != 0 || owner_pid(seen) == 0 {
            return;
        }
        let start = if seen & CLAIMING != 0 {
            0
        } else {
            p.start.load(Ordering::Acquire)
        };
        if !alive(ProcessStamp {
            pid: owner_pid(seen),
            start,
        }) {
            let _ =
                p.owner
                    .compare_exchange(seen, seen | CLOSED, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Loom's atomics keep bookkeeping that must be released; std atomics need nothing, and
        // the memory itself is released when `slab` drops (another process may still map it).
        #[cfg(loom)]
        if !self.shared {
            // SAFETY: an in-process ring's control block was written by `create` in this
            // process, and no end holds the ring any more; nothing reads it after this.
            unsafe {
                core::ptr::drop_in_place(self.control.cast::<CachePadded<Identity>>().as_ptr());
                for i in 0..self.slots {
                    core::ptr::drop_in_place(slot_ptr(self.control, i).as_ptr());
                }
            }
        }
    }
}

/// Checks the magic word, protocol version and topology of the identity lines `id` against
/// what an opener of `kind` expects, and returns the topology they describe.
fn check_kind(id: &Identity, kind: Topology) -> Result<Topology, OpenFailure> {
    let magic = id.magic.load(Ordering::Acquire);
    if magic == 0 {
        return Err(OpenFailure::NotReady);
    }
    if magic != MAGIC {
        return Err(OpenFailure::Corrupted("magic word (not a psyne channel)"));
    }
    let version = id_load!(id, version);
    if version != PROTOCOL_VERSION {
        return Err(OpenFailure::VersionMismatch {
            expected: PROTOCOL_VERSION,
            found: version,
        });
    }
    let found = id_load!(id, topology);
    if found != kind.tag() {
        return Err(OpenFailure::TopologyMismatch {
            expected: kind.tag(),
            found,
        });
    }
    Topology::from_words(found, id_load!(id, slots) as usize)
        .ok_or(OpenFailure::Corrupted("end slot count"))
}

/// The identity lines a creator writes (magic 0: stored last, by [`Ring::create`]).
fn identity_lines(
    config: &RingConfig,
    identity: &ChannelIdentity,
    me: ProcessStamp,
    pid_namespace: u64,
) -> CachePadded<Identity> {
    let slots = config.topology.slots();
    let mut flags = if config.wait.park { FLAG_PARK } else { 0 };
    if config.timestamps {
        flags |= FLAG_TIMESTAMPS;
    }
    if let Topology::Broadcast {
        drop_lagging: true, ..
    } = config.topology
    {
        flags |= FLAG_DROP_LAGGING;
    }
    let (payload_size, payload_align) = identity
        .payload
        .map_or((0, 0), |p| (p.size as u32, p.align as u32));
    let name = identity.name.as_bytes();
    let name = &name[..name.len().min(NAME_BYTES)];
    let mut words = [0u64; NAME_BYTES / 8];
    for (i, b) in name.iter().enumerate() {
        words[i / 8] |= u64::from(*b) << (8 * (i % 8));
    }
    CachePadded::new(Identity {
        magic: AtomicU64::new(0),
        version: AtomicU32::new(PROTOCOL_VERSION),
        topology: AtomicU32::new(config.topology.tag()),
        flags: AtomicU32::new(flags),
        slots: AtomicU32::new(slots as u32),
        region_offset: AtomicU64::new(region_offset(slots) as u64),
        region_len: AtomicU64::new(config.len as u64),
        type_id: AtomicU64::new(identity.type_id),
        fingerprint: AtomicU64::new(identity.fingerprint),
        payload_size: AtomicU32::new(payload_size),
        payload_align: AtomicU32::new(payload_align),
        creator_pid: AtomicU32::new(me.pid),
        wait_spins: AtomicU32::new(config.wait.spins),
        creator_start: AtomicU64::new(me.start),
        pid_namespace: AtomicU64::new(pid_namespace),
        wait_yields: AtomicU32::new(config.wait.yields),
        name_len: AtomicU32::new(name.len() as u32),
        name: words.map(AtomicU64::new),
    })
}

/// The regions of a ring of `topology` (regions of `len` bytes each) in the slab at `base`.
///
/// Callers guarantee that `region_offset(slots) + regions * len` bytes from `base` are mapped
/// for as long as the regions are used (the ring owns the slab).
fn regions_of(base: NonNull<u8>, topology: Topology, len: usize) -> Vec<Region> {
    let offset = region_offset(topology.slots());
    (0..topology.regions())
        .map(|i| {
            // SAFETY: inside the mapping (see above); `offset` is 32 mod 64 and `len` a multiple
            // of 64, so each region's base is 32 mod 64 as `Region` requires.
            unsafe { Region::new(base.add(offset + i * len), len) }
        })
        .collect()
}

/// The pid in an owner word.
#[inline(always)]
fn owner_pid(owner: u64) -> u32 {
    owner as u32
}

/// Address of end slot `i` of the control block at `base`.
#[inline(always)]
fn slot_ptr(base: NonNull<u8>, i: usize) -> NonNull<EndSlot> {
    // SAFETY: an address computation inside the control block (callers keep `i` below the slot
    // count of a slab at least `slab_size` bytes long).
    unsafe { base.add(IDENTITY_SIZE + i * SLOT_SIZE).cast() }
}

/// Checks the type words of the identity against `expect`, for a region of `len` bytes.
fn check_identity(id: &Identity, expect: &ChannelIdentity, len: usize) -> Result<(), OpenFailure> {
    let type_id = id_load!(id, type_id);
    if type_id != expect.type_id {
        return Err(OpenFailure::IncompatibleType {
            expected: expect.type_id,
            found: type_id,
            expected_name: expect.name,
            found_name: stored_name(id),
        });
    }
    let fingerprint = id_load!(id, fingerprint);
    if fingerprint != expect.fingerprint {
        return Err(OpenFailure::IncompatibleLayout {
            expected: expect.fingerprint,
            found: fingerprint,
            name: expect.name,
        });
    }
    let size = id_load!(id, payload_size) as usize;
    let align = id_load!(id, payload_align) as usize;
    match expect.payload {
        None if size != 0 || align != 0 => {
            Err(OpenFailure::Corrupted("payload layout of a raw channel"))
        }
        None => Ok(()),
        Some(p) if p.size != size || p.align != align => {
            Err(OpenFailure::Corrupted("payload layout (size or alignment)"))
        }
        Some(p) => {
            let fits = format::record_size(p.size).is_some_and(|r| r <= format::max_record(len))
                && format::payload_align(p.align) <= len.min(MAX_ALIGN);
            if fits {
                Ok(())
            } else {
                Err(OpenFailure::Corrupted("region too small for one message"))
            }
        }
    }
}

/// The message type name stored in the identity (invalid UTF-8 replaced).
fn stored_name(id: &Identity) -> String {
    let n = (id_load!(id, name_len) as usize).min(NAME_BYTES);
    let bytes: Vec<u8> = (0..n)
        .map(|i| (id.name[i / 8].load(Ordering::Relaxed) >> (8 * (i % 8))) as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
