//! Slot accounting and the event ordering rules of a device channel, as pure functions of
//! sequence numbers and the words of the device block (no driver calls, no memory), so that
//! they are tested on their own.
//!
//! Message `s` uses slot `s % slots` at device offset `(s % slots) * slot_bytes`; slots are
//! reused in order. For each message:
//!
//! 1. **loan** (producer): message `s` may take its slot once the consumer has released message
//!    `s - slots` (`released >= s - slots + 1`, a CPU-side count in the block). If that release
//!    recorded the slot's release event (`evented == s - slots + 1`), the producer's stream
//!    waits for it *on the device* before the producer's work on the slot;
//! 2. **send_after** (producer): the slot's ready event is recorded on the producer's stream,
//!    then the descriptor is published in the ring;
//! 3. **wait_on** (consumer): the consumer's stream waits for the slot's ready event;
//! 4. **release** (consumer): if the consumer's stream waited (it may have read), the slot's
//!    release event is recorded on that stream and `evented` set; then `released` is raised.
//!
//! Why an event is never re-recorded before its waiter has waited: the ready event of slot `k`
//! is recorded again only for message `s + slots`, which needs the release of `s`, which comes
//! after the consumer's wait on it; the release event of `k` is recorded again only by the
//! release of `s + slots`, which needs that message to be sent, after the producer's wait at its
//! loan. So every wait sees the record it is meant to see (CUDA waits for the most recent record
//! at the time of the call).

/// The geometry of a device channel's region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub slots: usize,
    pub slot_bytes: usize,
}

/// What a producer must do before loaning message `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// The slot is still held by the consumer (message `s - slots` not released).
    Busy,
    /// The slot is free; the stream must wait for its release event first if `wait_event`.
    Free { wait_event: bool },
}

impl Plan {
    /// The slot of message `seq`.
    pub(crate) fn slot(&self, seq: u64) -> usize {
        (seq % self.slots as u64) as usize
    }

    /// The device offset of message `seq`'s payload.
    pub(crate) fn offset(&self, seq: u64) -> usize {
        self.slot(seq) * self.slot_bytes
    }

    /// Whether message `seq` may take its slot, given the consumer's `released` count and the
    /// slot's `evented` word; `Err` for counts an honest consumer never leaves (more released
    /// than sent, or an evented word ahead of the released count).
    pub(crate) fn reuse(
        &self,
        seq: u64,
        released: u64,
        evented: u64,
    ) -> Result<Reuse, &'static str> {
        if released > seq {
            return Err("released count ahead of the messages sent");
        }
        let slots = self.slots as u64;
        if seq < slots {
            return Ok(Reuse::Free { wait_event: false });
        }
        let previous = seq - slots; // the message that last used this slot
        if released <= previous {
            return Ok(Reuse::Busy);
        }
        if evented > released {
            return Err("release event word ahead of the released count");
        }
        Ok(Reuse::Free {
            wait_event: evented == previous + 1,
        })
    }

    /// Checks a received descriptor (`offset`, `len`, `slot`) against the sequence number the
    /// consumer expects.
    pub(crate) fn check(
        &self,
        seq: u64,
        offset: u64,
        len: u64,
        slot: u32,
    ) -> Result<(), &'static str> {
        if slot as usize != self.slot(seq) {
            return Err("device descriptor slot");
        }
        if offset != self.offset(seq) as u64 {
            return Err("device descriptor offset");
        }
        if len > self.slot_bytes as u64 {
            return Err("device descriptor length");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: Plan = Plan {
        slots: 4,
        slot_bytes: 1024,
    };

    #[test]
    fn first_lap_is_free_without_waits() {
        for s in 0..4 {
            assert_eq!(PLAN.reuse(s, 0, 0), Ok(Reuse::Free { wait_event: false }));
            assert_eq!(PLAN.offset(s), s as usize * 1024);
        }
    }

    #[test]
    fn reuse_needs_the_release_of_the_previous_lap() {
        // Message 4 reuses slot 0, last used by message 0.
        assert_eq!(PLAN.reuse(4, 0, 0), Ok(Reuse::Busy));
        // Message 0 released without an event (the consumer never waited on the device).
        assert_eq!(PLAN.reuse(4, 1, 0), Ok(Reuse::Free { wait_event: false }));
        // Message 0 released with its event: the stream waits for it.
        assert_eq!(PLAN.reuse(4, 1, 1), Ok(Reuse::Free { wait_event: true }));
        // Message 5 reuses slot 1 (last message 1): released 1 is not enough.
        assert_eq!(PLAN.reuse(5, 1, 0), Ok(Reuse::Busy));
        // An evented word from an older lap does not make the stream wait.
        assert_eq!(PLAN.reuse(9, 6, 2), Ok(Reuse::Free { wait_event: false }));
        assert_eq!(PLAN.reuse(9, 6, 6), Ok(Reuse::Free { wait_event: true }));
    }

    #[test]
    fn impossible_counts_are_refused() {
        assert!(PLAN.reuse(3, 4, 0).is_err());
        assert!(PLAN.reuse(8, 5, 7).is_err());
    }

    #[test]
    fn descriptors_are_checked_against_the_sequence() {
        assert_eq!(PLAN.check(6, 2048, 1024, 2), Ok(()));
        assert_eq!(
            PLAN.check(6, 2048, 1025, 2),
            Err("device descriptor length")
        );
        assert_eq!(PLAN.check(6, 1024, 10, 2), Err("device descriptor offset"));
        assert_eq!(PLAN.check(6, 2048, 10, 1), Err("device descriptor slot"));
    }
}
