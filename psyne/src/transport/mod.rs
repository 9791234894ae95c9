//! Transports: how the two ends of a channel reach the same ring.
//!
//! * In-process (the default, [`crate::ChannelBuilder::build`]): one anonymous slab, both ends in
//!   this process.
//! * [`shm`]: a named slab in `/dev/shm`, one end in each of two processes, created with
//!   `.shared(name)` on a builder and opened with [`crate::Channel::open_consumer`] and friends.
//!   The ends are the same [`crate::Producer`] / [`crate::Consumer`] types with the same zero-copy
//!   path; only waiting differs (a waiter also watches the other process's liveness).
//!
//! * [`net`]: TCP, one end on each machine; an ordinary ring on each side, a pump thread
//!   writing the sender's records to the socket and the consumer's own calls reading them into
//!   its ring, after a versioned, checked, optionally authenticated
//!   handshake (the wire protocol is specified there). Built with `accept_consumer` /
//!   `connect_producer` (and the swapped pair) on a channel builder.
//!
//! The GPU transport is a later issue.

pub mod net;
pub mod shm;
