//! Two layers of a network on two threads, exchanging `Embedding256` activations through a psyne
//! channel: layer 1 writes each activation straight into channel memory through an nalgebra view,
//! layer 2 reads it in place (no copy) and applies its weights.
//!
//! Prints the message count, throughput, both ends' counters and whether the checksum computed by
//! layer 2 matches the one layer 1 expects.
//!
//! Run with `cargo run --release --example pipeline` (it takes no options; `--help` prints what
//! it does).

use nalgebra::SVector;
use psyne::{Channel, RecvError};
use psyne_examples::args::Args;
use psyne_schemas::Embedding256;
use std::time::Instant;

const BATCHES: u32 = 2_000;
const BATCH_SIZE: u32 = 64;

/// The scale of the ramp layer 1 writes for sample `i` of batch `b`.
fn scale(b: u32, i: u32) -> f32 {
    1.0 + (b % 7) as f32 * 0.25 + i as f32 / 64.0
}

/// What `--help` prints.
const USAGE: &str = "\
Two layers on two threads exchanging 128000 Embedding256 activations through a psyne channel,
written and read in place; prints throughput, both ends' counters and a checksum.

usage: pipeline   (no options)
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    Args::parse(&[], USAGE)?;
    let (mut tx, mut rx) = Channel::<Embedding256>::builder()
        .capacity(256)
        .timestamps(true)
        .build()?;
    // Layer 2's weights: the same on both sides so that layer 1 can predict the checksum.
    let weights = SVector::<f32, 256>::from_fn(|k, _| if k % 2 == 0 { 0.5 } else { -0.25 });
    let weights2 = weights; // a copy for layer 1 (an SVector is `Copy`)

    let start = Instant::now();
    // Layer 1: produces activations in place.
    let layer1 = std::thread::spawn(
        move || -> Result<(u64, f64, psyne::ProducerStats), psyne::SendError> {
            let mut expected = 0.0f64;
            let mut sent = 0u64;
            for b in 0..BATCHES {
                for i in 0..BATCH_SIZE {
                    let mut msg = tx.allocate()?; // a slot in the ring
                    let s = scale(b, i);
                    for (k, x) in msg.data_vector_mut().iter_mut().enumerate() {
                        *x = s * (k % 16) as f32; // written in place, in channel memory
                    }
                    msg.batch_idx = b;
                    msg.layer_id = 1;
                    expected += f64::from(weights2.dot(&msg.data_vector()).max(0.0));
                    msg.send();
                    sent += 1;
                }
            }
            Ok((sent, expected, tx.stats()))
        },
    );

    // Layer 2: reads each activation in place and applies its weights (a ReLU neuron).
    let mut received = 0u64;
    let mut checksum = 0.0f64;
    let mut latency_ns = 0u64;
    loop {
        match rx.recv() {
            Ok(msg) => {
                checksum += f64::from(weights.dot(&msg.data_vector()).max(0.0));
                assert_eq!(msg.layer_id, 1);
                latency_ns +=
                    psyne::channel::monotonic_ns().saturating_sub(msg.header().timestamp_ns);
                received += 1;
            } // released here: the space goes back to layer 1
            Err(RecvError::Disconnected) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let elapsed = start.elapsed();
    let (sent, expected, tx_stats) = layer1.join().expect("layer 1 panicked")?;

    println!("pipeline: {sent} activations sent, {received} received in {elapsed:.2?}");
    println!(
        "  {:.2} M messages/s, {:.2} GB/s of payload; mean send-to-receive {:.0} ns incl. queueing (clock read ~25 ns)",
        received as f64 / elapsed.as_secs_f64() / 1e6,
        received as f64 * 1032.0 / elapsed.as_secs_f64() / 1e9,
        latency_ns as f64 / received.max(1) as f64
    );
    println!("  producer {tx_stats:?}");
    println!("  consumer {:?}", rx.stats());
    let ok = sent == received && checksum == expected;
    println!(
        "  checksum {checksum:.3} (expected {expected:.3}): {}",
        if ok { "OK" } else { "MISMATCH" }
    );
    if !ok {
        return Err("checksum mismatch".into());
    }
    Ok(())
}
