//! Counting global allocator: after a tensor channel is built, the tensor path allocates
//! nothing: `allocate_tensor` (blocking, try, timeout; with and without a user header), fill,
//! send, `recv` / `try_recv` / `recv_timeout`, `view`, `header`, `matrix`, and the raw ends'
//! `allocate_tensor` / `tensor()`, on every wait strategy.
//!
//! Its own test binary (`harness = false`): no test harness threads allocate while we count.

use psyne::{Channel, PsyneMessage, RecvError, Wait};
use std::time::Duration;

#[path = "common/counting.rs"]
mod counting;
use counting::{Counting, count};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Step {
    index: u64,
    layer: u32,
    step: u32,
}

const MESSAGES: usize = 50_000;

/// The shape of message `n`: rank 1 to 8 (ndarray would allocate above 4; nalgebra and slices
/// never do), batch sizes that vary.
fn shape(n: usize, out: &mut [usize; 8]) -> &[usize] {
    let rank = 1 + n % 8;
    for (d, o) in out.iter_mut().enumerate().take(rank) {
        *o = if d == 0 { 1 + n % 5 } else { 1 + (n + d) % 3 };
    }
    &out[..rank]
}

fn tensors(wait: Wait) -> usize {
    let (mut tx, mut rx) = Channel::tensors()
        .capacity_bytes(1 << 16)
        .wait(wait)
        .timestamps(true)
        .build()
        .unwrap();
    count(
        move || {
            let mut dims = [0usize; 8];
            for n in 0..MESSAGES {
                let shape = shape(n, &mut dims);
                let step = Step {
                    index: n as u64,
                    layer: 1,
                    step: 2,
                };
                let mut t = match n % 4 {
                    0 => tx.allocate_tensor::<f32>(shape).unwrap(),
                    1 => tx
                        .allocate_tensor_timeout::<f32>(shape, Duration::from_secs(10))
                        .unwrap(),
                    2 => loop {
                        // The try path, including Full.
                        if let Ok(t) = tx.try_allocate_tensor::<f32>(shape) {
                            break t;
                        }
                    },
                    _ => tx.allocate_tensor_with::<Step, f32>(step, shape).unwrap(),
                };
                t.as_mut_slice().fill(n as f32);
                t.matrix_mut()[(0, 0)] = -1.0;
                t.send();
            }
            {
                let _dropped = tx.allocate_tensor::<u8>(&[3, 3]).unwrap();
            }
            drop(tx);
        },
        move || {
            let mut n = 0;
            let mut dims = [0usize; 8];
            loop {
                let r = match n % 3 {
                    0 => rx.recv(),
                    1 => rx.recv_timeout(Duration::from_secs(10)),
                    _ => match rx.try_recv() {
                        Err(RecvError::Empty) => continue,
                        r => r,
                    },
                };
                match r {
                    Ok(r) => {
                        let v = r.view::<f32>().unwrap();
                        assert_eq!(v.shape(), shape(n, &mut dims));
                        assert_eq!(v.as_slice()[0], -1.0);
                        assert!(v.as_slice()[1..].iter().all(|&e| e == n as f32));
                        assert_eq!(v.matrix().len(), v.len());
                        if n % 4 == 3 {
                            assert_eq!(r.header::<Step>().unwrap().index, n as u64);
                        } else {
                            assert!(r.header::<Step>().is_err());
                        }
                        assert!(r.view::<u8>().is_err());
                        n += 1;
                    }
                    Err(RecvError::Disconnected) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(n, MESSAGES);
        },
    )
}

fn raw(wait: Wait) -> usize {
    let (mut tx, mut rx) = Channel::raw()
        .capacity_bytes(1 << 14)
        .wait(wait)
        .build()
        .unwrap();
    count(
        move || {
            for n in 0..MESSAGES {
                if n % 2 == 0 {
                    let mut t = tx.allocate_tensor::<u16>(&[n % 7, 3]).unwrap();
                    t.as_mut_slice().fill(n as u16);
                    t.send();
                } else {
                    tx.send_bytes(n as u64, &[1, 2, 3]).unwrap();
                }
            }
        },
        move || {
            for n in 0..MESSAGES {
                let m = rx.recv().unwrap();
                match m.tensor() {
                    Ok(t) => {
                        assert_eq!(n % 2, 0);
                        let v = t.view::<u16>().unwrap();
                        assert_eq!(v.shape(), &[n % 7, 3]);
                        assert!(v.as_slice().iter().all(|&e| e == n as u16));
                    }
                    Err(e) => {
                        assert_eq!(n % 2, 1, "{e}");
                        assert_eq!(m.bytes(), &[1, 2, 3]);
                    }
                }
            }
            assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
        },
    )
}

fn main() {
    counting::assert_counter_works();

    let mut total = 0;
    for wait in counting::waits() {
        let t = tensors(wait);
        let r = raw(wait);
        println!(
            "{wait:?}: {t} allocations over {MESSAGES} tensors, {r} over {MESSAGES} raw messages"
        );
        total += t + r;
    }
    assert_eq!(total, 0, "the tensor path allocated");
    println!("tensor_alloc: ok, 0 heap allocations per tensor");
}
