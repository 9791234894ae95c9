//! Transports: how the two ends of a channel reach the same ring.
//!
//! * In-process (the default, [`crate::ChannelBuilder::build`]): one anonymous slab, both ends in
//!   this process.
//! * [`shm`]: a named slab in `/dev/shm`, one end in each of two processes, created with
//!   `.shared(name)` on a builder and opened with [`crate::Channel::open_consumer`] and friends.
//!   The ends are the same [`crate::Producer`] / [`crate::Consumer`] types with the same zero-copy
//!   path; only waiting differs (a waiter also watches the other process's liveness).
//!
//! TCP and GPU transports are later issues.

pub mod shm;
