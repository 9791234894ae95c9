//! One embedding layer feeding two heads through a psyne broadcast channel: the layer writes
//! each `Embedding256` once, in ring memory; both heads (threads, or with `--processes`
//! processes over shared memory) read the same bytes in place and compute their own `W * x`
//! from the received message's nalgebra view (`Matrix::data_matrix() * data_vector()`), no copy
//! of the activation anywhere. Each head keeps a running checksum of its outputs; the example
//! checks both against a sequential computation of the same products: bit-identical.
//!
//! Run with `cargo run --release --example broadcast_heads -- [--steps 100000] [--processes]`.

use psyne::{BroadcastConsumer, Channel, RecvError};
use psyne_schemas::{Embedding256, Matrix};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Output sizes of the two heads (say, a classifier and a regressor).
const HEAD0: usize = 8;
const HEAD1: usize = 4;

/// The weights of head `head` (`R` outputs), deterministic.
fn weights<const R: usize>(head: usize) -> Box<Matrix<R, 256>> {
    let mut w: Box<Matrix<R, 256>> = Box::new(psyne::bytemuck::Zeroable::zeroed());
    for (j, col) in w.data.iter_mut().enumerate() {
        for (i, v) in col.iter_mut().enumerate() {
            *v = ((i * 7 + j * 3 + head * 5) % 17) as f32 / 17.0 - 0.5;
        }
    }
    w
}

/// The layer's output for step `t`.
fn fill(x: &mut Embedding256, t: u64) {
    for (k, v) in x.data.iter_mut().enumerate() {
        *v = ((t as usize * 31 + k) % 101) as f32 / 101.0;
    }
    x.batch_idx = t as u32;
    x.layer_id = 1;
}

/// A head: receives until the layer is gone, computing `W * x` on the message in place; returns
/// (messages, checksum of every output).
fn head<const R: usize>(rx: &mut BroadcastConsumer<Embedding256>, head: usize) -> (u64, f64) {
    let w = weights::<R>(head);
    let (mut n, mut sum) = (0u64, 0.0f64);
    loop {
        match rx.recv() {
            Ok(x) => {
                let y = w.data_matrix() * x.data_vector(); // reads the ring bytes in place
                sum += y.iter().map(|&v| f64::from(v)).sum::<f64>();
                n += 1;
            }
            Err(RecvError::Disconnected) => return (n, sum),
            Err(e) => panic!("head {head}: {e}"),
        }
    }
}

/// The same products, computed sequentially on a local copy.
fn expected<const R: usize>(head: usize, steps: u64) -> f64 {
    let w = weights::<R>(head);
    let mut x: Embedding256 = psyne::bytemuck::Zeroable::zeroed();
    let mut sum = 0.0f64;
    for t in 0..steps {
        fill(&mut x, t);
        let y = w.data_matrix() * x.data_vector();
        sum += y.iter().map(|&v| f64::from(v)).sum::<f64>();
    }
    sum
}

/// A head process: `--head I --name NAME`.
fn child(head_index: usize, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut rx = Channel::<Embedding256>::open_broadcast_consumer(name)?;
    println!("READY");
    let (n, sum) = if head_index == 0 {
        head::<HEAD0>(&mut rx, 0)
    } else {
        head::<HEAD1>(&mut rx, 1)
    };
    println!("HEAD {head_index} COUNT {n} SUM {sum:e}");
    Ok(())
}

/// What `--help` prints.
const USAGE: &str = "\
usage: broadcast_heads [--steps N] [--processes]

One embedding layer broadcasting Embedding256 activations to two heads, each computing its own
W * x from the shared view in place; both heads' checksums are checked bit for bit against a
sequential computation.

  --steps N     activations to send (100000)
  --processes   the heads run in two child processes over shared memory (default: threads)";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `--head` and `--name` are the hidden options of a head process started by `--processes`.
    let args = psyne_examples::args::Args::parse(&["steps", "processes", "head", "name"], USAGE)?;
    if let (Some(h), Some(name)) = (args.get("head"), args.get("name")) {
        return child(h.parse()?, name);
    }
    let steps: u64 = args.value("steps", 100_000u64)?;
    let processes = args.get("processes").is_some();

    let builder = Channel::<Embedding256>::broadcast()
        .capacity(64)
        .max_consumers(2);
    let started;
    let results: Vec<(u64, f64)> = if processes {
        let name = format!("psyne-broadcast-heads-{}", std::process::id());
        let mut tx = builder.shared(&name).create_producer()?;
        let exe = std::env::current_exe()?;
        let mut children = Vec::new();
        for h in 0..2 {
            let mut c = Command::new(&exe)
                .args(["--head", &h.to_string(), "--name", &name])
                .stdout(Stdio::piped())
                .spawn()?;
            let mut lines = BufReader::new(c.stdout.take().ok_or("no stdout")?).lines();
            if lines.next().transpose()?.is_none_or(|l| l != "READY") {
                return Err(format!("head {h} did not start").into());
            }
            children.push((c, lines));
        }
        started = Instant::now();
        for t in 0..steps {
            let mut x = tx.allocate()?; // written once, in shared memory
            fill(&mut x, t);
            x.send();
        }
        drop(tx); // both heads drain, then see Disconnected
        let mut out = Vec::new();
        for (mut c, mut lines) in children {
            let line = lines.next().transpose()?.ok_or("head exited early")?;
            let f: Vec<&str> = line.split_whitespace().collect();
            out.push((f[3].parse()?, f[5].parse()?));
            if !c.wait()?.success() {
                return Err("a head failed".into());
            }
        }
        out
    } else {
        let (mut tx, mut rx0) = builder.build()?;
        let mut rx1 = tx.subscribe()?;
        let h0 = std::thread::spawn(move || head::<HEAD0>(&mut rx0, 0));
        let h1 = std::thread::spawn(move || head::<HEAD1>(&mut rx1, 1));
        started = Instant::now();
        for t in 0..steps {
            let mut x = tx.allocate()?;
            fill(&mut x, t);
            x.send();
        }
        drop(tx);
        vec![
            h0.join().map_err(|_| "head 0 panicked")?,
            h1.join().map_err(|_| "head 1 panicked")?,
        ]
    };
    let elapsed = started.elapsed().max(Duration::from_nanos(1));
    let want = [expected::<HEAD0>(0, steps), expected::<HEAD1>(1, steps)];
    for (h, (&(n, sum), want)) in results.iter().zip(want).enumerate() {
        println!("head {h}: {n} embeddings, checksum {sum:e} (sequential {want:e})");
        if n != steps || sum.to_bits() != want.to_bits() {
            return Err(format!("head {h} differs from the sequential computation").into());
        }
    }
    println!(
        "{} x Embedding256 to 2 heads ({}): {:.2} M embeddings/s, {:.1} ns each, bit-identical",
        steps,
        if processes { "processes" } else { "threads" },
        steps as f64 / elapsed.as_secs_f64() / 1e6,
        elapsed.as_nanos() as f64 / steps as f64,
    );
    Ok(())
}
