//! Property test: random sequences of allocate / send / drop-loan / receive / drop-received on one
//! thread, checked against a `VecDeque` model of the queue.

use proptest::prelude::*;
use psyne::{Channel, Message, PsyneMessage, RecvError, SendError, ring};
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, PsyneMessage)]
#[repr(C)]
struct Vector {
    data: [f32; 20],
    id: u64,
}

#[derive(Clone, Debug)]
enum Op {
    /// `try_allocate_bytes(len)`, fill, `send(type_id)`.
    SendBytes { len: usize, type_id: u64 },
    /// `try_allocate::<Vector>()`, fill, send.
    SendTyped { id: u64 },
    /// Allocate, scribble, drop without sending.
    DropLoan { len: usize },
    /// `try_recv`, check against the model, drop.
    Recv,
    /// `try_recv` and drop without reading (the space is still released).
    RecvUnread,
    /// Receive everything, then a maximal payload must fit after at most one filler.
    DrainThenMax,
}

fn op(max: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..=max, 0u64..4).prop_map(|(len, type_id)| Op::SendBytes { len, type_id }),
        2 => any::<u64>().prop_map(|id| Op::SendTyped { id }),
        1 => (0..=max).prop_map(|len| Op::DropLoan { len }),
        4 => Just(Op::Recv),
        1 => Just(Op::RecvUnread),
        1 => Just(Op::DrainThenMax),
    ]
}

#[derive(Debug, PartialEq)]
enum Item {
    Bytes(u64, Vec<u8>),
    Typed(Vector),
}

fn vector(id: u64) -> Vector {
    Vector {
        data: core::array::from_fn(|i| id as f32 * 0.5 + i as f32),
        id,
    }
}

fn record(item: &Item) -> usize {
    match item {
        Item::Bytes(_, b) => ring::record_size(b.len()).unwrap(),
        Item::Typed(_) => ring::record_size(core::mem::size_of::<Vector>()).unwrap(),
    }
}

fn run(capacity: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (mut tx, mut rx) = Channel::raw().capacity_bytes(capacity).build().unwrap();
    let ring_len = tx.capacity_bytes();
    let max = tx.max_payload();
    let mut model: VecDeque<Item> = VecDeque::new();
    let mut max_record = 0usize;
    let mut sequence = 0u64;
    let mut salt = 0u8;

    let check_full = |model: &VecDeque<Item>, need: usize, max_record: usize| {
        // Full is only allowed if the data in flight, one filler (smaller than the largest record
        // seen), the wasted end before a wrap (smaller than `need`) and the line the producer
        // always leaves free leave no room for `need`.
        let in_flight: usize = model.iter().map(record).sum();
        in_flight + max_record + 2 * need + 64 > ring_len
    };

    for op in ops {
        match op {
            Op::SendBytes { len, type_id } => {
                let len = len.min(max);
                salt = salt.wrapping_add(1);
                let payload: Vec<u8> = (0..len)
                    .map(|i| (i as u8).wrapping_mul(31) ^ salt)
                    .collect();
                // Even a failed attempt may publish a filler smaller than its record.
                max_record = max_record.max(ring::record_size(len).unwrap());
                match tx.try_allocate_bytes(len) {
                    Ok(mut loan) => {
                        loan.copy_from_slice(&payload);
                        loan.send(type_id);
                        model.push_back(Item::Bytes(type_id, payload));
                    }
                    Err(SendError::Full) => {
                        prop_assert!(check_full(
                            &model,
                            ring::record_size(len).unwrap(),
                            max_record
                        ))
                    }
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
            }
            Op::SendTyped { id } => {
                max_record = max_record.max(128);
                match tx.try_allocate::<Vector>() {
                    Ok(mut loan) => {
                        *loan = vector(id);
                        loan.send();
                        model.push_back(Item::Typed(vector(id)));
                    }
                    Err(SendError::Full) => prop_assert!(check_full(&model, 128, max_record)),
                    Err(SendError::TooLarge { .. }) => {
                        prop_assert!(ring::max_record(ring_len) < 128)
                    }
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
            }
            Op::DropLoan { len } => {
                max_record = max_record.max(ring::record_size(len.min(max)).unwrap());
                if let Ok(mut loan) = tx.try_allocate_bytes(len.min(max)) {
                    loan.fill(0xEE);
                }
            }
            Op::Recv | Op::RecvUnread => match rx.try_recv() {
                Ok(m) => {
                    let expected = model.pop_front();
                    prop_assert!(expected.is_some(), "received more than was sent");
                    prop_assert_eq!(m.header().sequence, sequence);
                    sequence += 1;
                    if matches!(op, Op::Recv) {
                        let got = if m.type_id() == Vector::TYPE_ID {
                            Item::Typed(*m.downcast::<Vector>().unwrap())
                        } else {
                            prop_assert!(m.downcast::<Vector>().is_none());
                            Item::Bytes(m.type_id(), m.bytes().to_vec())
                        };
                        prop_assert_eq!(Some(got), expected);
                    }
                }
                Err(RecvError::Empty) => prop_assert!(model.is_empty(), "lost {:?}", model.len()),
                Err(e) => prop_assert!(false, "unexpected {e}"),
            },
            Op::DrainThenMax => {
                while let Ok(m) = rx.try_recv() {
                    prop_assert!(model.pop_front().is_some());
                    prop_assert_eq!(m.header().sequence, sequence);
                    sequence += 1;
                }
                prop_assert!(model.is_empty());
                let mut tries = 0;
                loop {
                    tries += 1;
                    match tx.try_allocate_bytes(max) {
                        Ok(loan) => {
                            drop(loan); // publishes nothing
                            break;
                        }
                        Err(SendError::Full) if tries == 1 => {
                            // A filler was published on its own: skipping it frees the ring.
                            prop_assert_eq!(rx.try_recv().unwrap_err(), RecvError::Empty);
                        }
                        Err(e) => prop_assert!(false, "max payload after drain: {e}"),
                    }
                }
            }
        }
    }
    // Everything left is delivered, in order, after the producer is gone.
    drop(tx);
    while let Some(expected) = model.pop_front() {
        let m = rx.try_recv().unwrap();
        prop_assert_eq!(m.header().sequence, sequence);
        sequence += 1;
        let got = if m.type_id() == Vector::TYPE_ID {
            Item::Typed(*m.downcast::<Vector>().unwrap())
        } else {
            Item::Bytes(m.type_id(), m.bytes().to_vec())
        };
        prop_assert_eq!(got, expected);
    }
    prop_assert_eq!(rx.try_recv().unwrap_err(), RecvError::Disconnected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn small_rings_against_a_queue_model(
        capacity in prop::sample::select(vec![64usize, 128, 256, 512, 1024]),
        ops in prop::collection::vec(op(1000), 1..200),
    ) {
        run(capacity, ops)?;
    }

    #[test]
    fn larger_ring_against_a_queue_model(ops in prop::collection::vec(op(3000), 1..400)) {
        run(4096, ops)?;
    }
}
