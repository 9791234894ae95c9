//! Where the stages run and how their channels are made, one function per placement:
//! [`threads`] (one process, in-process rings), [`processes`] (one process per stage and
//! replica, shared-memory rings created by their consumers and opened by name by their
//! producers), and TCP ([`listen`] on the side that runs stage 0, [`connect`] on the side that
//! runs stages 1 and up; `--tcp` runs both on loopback). Stage 0 of every replica and the
//! aggregators always run in the process the user started.

use super::aggregate::{GradIn, GradOut};
use super::messages::{CHUNK, Chunk, Hello};
use super::model::Layer;
use super::stage::{Ends, Sync};
use super::{Config, Error, PATIENCE, update};
use psyne::net::{Listener, NetBuilder, RawNetBuilder};
use psyne::{Channel, Consumer, Message, Producer, TensorConsumer, TensorProducer};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A stage's aggregator and its channels.
pub struct Aggregator {
    /// The stage.
    pub stage: usize,
    /// Parameters of the stage.
    pub params: usize,
    /// Gradients in.
    pub grads: GradIn,
    /// Updates out.
    pub out: update::UpdateOut,
}

/// Child processes, killed if still running when dropped (an error path).
#[derive(Default)]
pub struct Children(Vec<Child>);

impl Children {
    /// Waits for every child; an error if one failed.
    pub fn wait(mut self) -> Result<(), Error> {
        for mut c in std::mem::take(&mut self.0) {
            let status = c.wait()?;
            if !status.success() {
                return Err(format!("a stage process failed: {status}").into());
            }
        }
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The last word between the two sides of a TCP run. psyne's TCP pumps are threads that a
/// process's exit ends, so a side must not exit before the other has read everything it sent:
/// the listening side, once it has collected the results, tells the connecting side, which
/// waits for that before it exits.
pub enum Finish {
    /// Nothing to wait for (threads, processes).
    Nothing,
    /// The listening side: tell the other side when done.
    Tell(Producer<Hello>),
    /// The connecting side: wait to be told.
    Await(Consumer<Hello>),
}

impl Finish {
    /// Tells, or waits to be told.
    pub fn run(self, digest: u64) -> Result<(), Error> {
        match self {
            Finish::Nothing => Ok(()),
            Finish::Tell(mut tx) => Ok(tx.send_timeout(&Hello { digest }, PATIENCE)?),
            Finish::Await(mut rx) => {
                rx.recv_timeout(PATIENCE)?;
                Ok(())
            }
        }
    }
}

/// The channels of the stages this process runs, its aggregators and its children.
pub struct Wiring {
    /// What to do after the run (TCP).
    pub finish: Finish,
    /// `(replica, stage, ends)` of every stage that runs here as a thread.
    pub local: Vec<(usize, usize, Ends)>,
    /// The aggregators (data parallel only).
    pub aggregators: Vec<Aggregator>,
    /// Processes started for the other stages.
    pub children: Children,
}

/// Bytes of ring per tensor channel: room for every micro-batch of a step, at least 64 KiB.
pub fn tensor_capacity(cfg: &Config, layers: &[Layer]) -> usize {
    let width = layers
        .iter()
        .map(|l| l.input.max(l.output))
        .max()
        .unwrap_or(1);
    let micro = cfg.batch.div_ceil(cfg.replicas).div_ceil(cfg.micro);
    ((cfg.micro + 1) * (256 + micro * width * 4))
        .max(64 << 10)
        .next_power_of_two()
}

/// Chunks of room per gradient or update channel: a whole step's worth, at most 256.
pub fn chunk_capacity(layers: &[Layer]) -> usize {
    let chunks = layers
        .iter()
        .map(|l| l.len().div_ceil(CHUNK))
        .max()
        .unwrap_or(1);
    (chunks + 1).min(256)
}

fn grid(cfg: &Config) -> Vec<Vec<Ends>> {
    (0..cfg.replicas)
        .map(|_| (0..cfg.stages).map(|_| Ends::empty()).collect())
        .collect()
}

fn flatten(ends: Vec<Vec<Ends>>, keep: impl Fn(usize) -> bool) -> Vec<(usize, usize, Ends)> {
    let mut out = Vec::new();
    for (r, row) in ends.into_iter().enumerate() {
        for (s, e) in row.into_iter().enumerate() {
            if keep(s) {
                out.push((r, s, e));
            }
        }
    }
    out
}

/// In-process aggregator channels for `stage`: one many-producers channel with a lane per
/// replica, and the update path back.
fn local_aggregator(
    cfg: &Config,
    layers: &[Layer],
    stage: usize,
    ends: &mut [Vec<Ends>],
) -> Result<Aggregator, Error> {
    let cap = chunk_capacity(layers);
    let (tx, rx) = Channel::<Chunk>::mpsc()
        .capacity(cap)
        .max_producers(cfg.replicas)
        .build()?;
    let mut txs = vec![tx];
    for _ in 1..cfg.replicas {
        txs.push(txs[0].try_clone()?);
    }
    let (out, ins) = update::threads(cfg.replicas, cap)?;
    for ((row, tx), updates) in ends.iter_mut().zip(txs).zip(ins) {
        row[stage].sync = Sync::Remote {
            grads: GradOut::Mpsc(tx),
            updates,
        };
    }
    Ok(Aggregator {
        stage,
        params: layers[stage].len(),
        grads: GradIn::Mpsc(rx),
        out,
    })
}

/// Every stage a thread of this process.
pub fn threads(cfg: &Config, layers: &[Layer]) -> Result<Wiring, Error> {
    let cap = tensor_capacity(cfg, layers);
    let mut ends = grid(cfg);
    for row in ends.iter_mut() {
        for s in 0..cfg.stages - 1 {
            let (ftx, frx) = Channel::tensors().capacity_bytes(cap).build()?;
            let (btx, brx) = Channel::tensors().capacity_bytes(cap).build()?;
            row[s].fwd_out = Some(ftx);
            row[s + 1].fwd_in = Some(frx);
            row[s + 1].bwd_out = Some(btx);
            row[s].bwd_in = Some(brx);
        }
    }
    let mut aggregators = Vec::new();
    if cfg.replicas > 1 {
        for s in 0..cfg.stages {
            aggregators.push(local_aggregator(cfg, layers, s, &mut ends)?);
        }
    }
    Ok(Wiring {
        local: flatten(ends, |_| true),
        aggregators,
        children: Children::default(),
        finish: Finish::Nothing,
    })
}

/// Calls `open` until it succeeds or 20 s have passed (the peer that creates the channel may
/// not have started yet).
fn retry<T, E: Into<Error>>(mut open: impl FnMut() -> Result<T, E>) -> Result<T, Error> {
    let start = Instant::now();
    loop {
        match open() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() > Duration::from_secs(20) => return Err(e.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// Shared-memory names of one run (`prefix` is unique to the run).
struct Names<'a>(&'a str);

impl Names<'_> {
    fn fwd(&self, r: usize, s: usize) -> String {
        format!("{}-f{r}-{s}", self.0)
    }
    fn bwd(&self, r: usize, s: usize) -> String {
        format!("{}-b{r}-{s}", self.0)
    }
    fn grads(&self, s: usize) -> String {
        format!("{}-g{s}", self.0)
    }
    fn updates(&self, s: usize) -> String {
        format!("{}-u{s}", self.0)
    }
}

/// The channels of stage `s` of replica `r` in the processes placement: it creates the
/// channels it consumes and opens the ones it produces into.
fn shared_ends(
    cfg: &Config,
    layers: &[Layer],
    prefix: &str,
    r: usize,
    s: usize,
) -> Result<Ends, Error> {
    let names = Names(prefix);
    let cap = tensor_capacity(cfg, layers);
    let create = |name: String| {
        Channel::tensors()
            .capacity_bytes(cap)
            .shared(&name)
            .create_consumer()
    };
    let mut e = Ends::empty();
    if s > 0 {
        e.fwd_in = Some(create(names.fwd(r, s - 1))?);
    }
    if s + 1 < cfg.stages {
        e.bwd_in = Some(create(names.bwd(r, s))?);
        e.fwd_out = Some(retry(|| Channel::tensors_open_producer(&names.fwd(r, s)))?);
    }
    if s > 0 {
        e.bwd_out = Some(retry(|| {
            Channel::tensors_open_producer(&names.bwd(r, s - 1))
        })?);
    }
    if cfg.replicas > 1 {
        e.sync = Sync::Remote {
            grads: GradOut::Mpsc(retry(|| {
                Channel::<Chunk>::open_mpsc_producer(&names.grads(s))
            })?),
            updates: retry(|| update::shared_open(&names.updates(s), r))?,
        };
    }
    Ok(e)
}

/// Stage 0 of every replica and the aggregators here; every other stage of every replica a
/// process of its own (`exe` started with `--stage-process`), over shared memory.
pub fn processes(cfg: &Config, layers: &[Layer], exe: &Path) -> Result<Wiring, Error> {
    // Unique per run, so that runs one after another in one process never meet an old name.
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let prefix = format!("psyne-train-{}-{run}", std::process::id());
    let names = Names(&prefix);
    let mut aggregators = Vec::new();
    if cfg.replicas > 1 {
        let cap = chunk_capacity(layers);
        for (s, layer) in layers.iter().enumerate() {
            let grads = Channel::<Chunk>::mpsc()
                .capacity(cap)
                .max_producers(cfg.replicas)
                .shared(&names.grads(s))
                .create_consumer()?;
            let out = update::shared_create(&names.updates(s), cfg.replicas, cap)?;
            aggregators.push(Aggregator {
                stage: s,
                params: layer.len(),
                grads: GradIn::Mpsc(grads),
                out,
            });
        }
    }
    let mut children = Children::default();
    for r in 0..cfg.replicas {
        for s in 1..cfg.stages {
            children.0.push(
                Command::new(exe)
                    .args([
                        super::STAGE_PROCESS,
                        &prefix,
                        &r.to_string(),
                        &s.to_string(),
                    ])
                    .args(cfg.to_args())
                    .spawn()?,
            );
        }
    }
    let mut local = Vec::new();
    for r in 0..cfg.replicas {
        local.push((r, 0, shared_ends(cfg, layers, &prefix, r, 0)?));
    }
    Ok(Wiring {
        local,
        aggregators,
        children,
        finish: Finish::Nothing,
    })
}

/// A stage process (`--stage-process PREFIX R S`): opens its channels and trains.
pub fn stage_process(
    cfg: &Config,
    layers: &[Layer],
    prefix: &str,
    r: usize,
    s: usize,
) -> Result<Ends, Error> {
    if r >= cfg.replicas || s == 0 || s >= cfg.stages {
        return Err(format!("no stage {s} of replica {r} in this run").into());
    }
    shared_ends(cfg, layers, prefix, r, s)
}

fn raw_net(cap: usize, key: Option<&str>) -> RawNetBuilder {
    let b = Channel::raw()
        .capacity_bytes(cap)
        .net()
        .handshake_timeout(Duration::from_secs(30))
        .accept_timeout(Duration::from_secs(60));
    match key {
        Some(k) => b.auth_key(k.as_bytes()),
        None => b,
    }
}

fn typed_net<T: Message>(cap: usize, key: Option<&str>) -> NetBuilder<T> {
    let b = Channel::<T>::builder()
        .capacity(cap)
        .net()
        .handshake_timeout(Duration::from_secs(30))
        .accept_timeout(Duration::from_secs(60));
    match key {
        Some(k) => b.auth_key(k.as_bytes()),
        None => b,
    }
}

/// A tensor channel over TCP on loopback, both ends in this process.
fn loopback_pair(cap: usize) -> Result<(TensorProducer, TensorConsumer), Error> {
    let listener = Listener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let connecting = std::thread::spawn(move || raw_net(cap, None).connect_producer(addr));
    let rx = raw_net(cap, None).accept_consumer(&listener)?;
    let tx = connecting
        .join()
        .map_err(|_| "the connecting thread panicked")??;
    Ok((TensorProducer::from_raw(tx), TensorConsumer::from_raw(rx)))
}

/// The side that runs stage 0 and the aggregators: binds `addr` (loopback, or any address with
/// `--key`), starts the other side itself for `--tcp` (`exe --connect`), and accepts, in a fixed
/// order that [`connect`] follows: the options check and the finish channel, then per replica the activations to
/// stage 1 and the gradients from it, then per stage 1.. and replica the gradient and update
/// channels of the aggregators (one TCP channel each way per replica: TCP has no
/// many-producers or broadcast channel).
pub fn listen(
    cfg: &Config,
    layers: &[Layer],
    addr: &str,
    spawn: Option<&Path>,
) -> Result<Wiring, Error> {
    if cfg.stages < 2 {
        return Err("TCP placement needs at least 2 stages".into());
    }
    let key = cfg.key.as_deref();
    let listener = match key {
        Some(_) => Listener::bind_authenticated(addr)?,
        None => Listener::bind(addr)
            .map_err(|e| format!("{e} (to listen on another address, give --key)"))?,
    };
    let bound = listener.local_addr()?;
    let mut children = Children::default();
    match spawn {
        Some(exe) => children.0.push(
            Command::new(exe)
                .args(["--connect", &bound.to_string()])
                .args(cfg.to_args())
                .spawn()?,
        ),
        None => eprintln!(
            "listening on {bound}: start the other side with the same options and --connect {bound}"
        ),
    }
    let mut hello = typed_net::<Hello>(4, key)
        .accept_consumer(&listener)
        .map_err(|e| format!("accepting the other side: {e}"))?;
    let theirs = hello
        .recv_timeout(PATIENCE)
        .map_err(|e| format!("the other side's options: {e}"))?
        .digest;
    if theirs != cfg.digest() {
        return Err("the connecting side was started with other options".into());
    }
    let bye = typed_net::<Hello>(4, key).accept_producer(&listener)?;
    let cap = tensor_capacity(cfg, layers);
    let mut ends = grid(cfg);
    for row in ends.iter_mut() {
        row[0].fwd_out = Some(TensorProducer::from_raw(
            raw_net(cap, key).accept_producer(&listener)?,
        ));
        row[0].bwd_in = Some(TensorConsumer::from_raw(
            raw_net(cap, key).accept_consumer(&listener)?,
        ));
    }
    let mut aggregators = Vec::new();
    if cfg.replicas > 1 {
        aggregators.push(local_aggregator(cfg, layers, 0, &mut ends)?);
        let cc = chunk_capacity(layers);
        for (s, layer) in layers.iter().enumerate().skip(1) {
            let (mut grads, mut outs) = (Vec::new(), Vec::new());
            for _ in 0..cfg.replicas {
                grads.push(typed_net::<Chunk>(cc, key).accept_consumer(&listener)?);
                outs.push(typed_net::<Chunk>(cc, key).accept_producer(&listener)?);
            }
            aggregators.push(Aggregator {
                stage: s,
                params: layer.len(),
                grads: GradIn::Direct(grads),
                out: update::tcp(outs),
            });
        }
    }
    Ok(Wiring {
        local: flatten(ends, |s| s == 0),
        aggregators,
        children,
        finish: Finish::Tell(bye),
    })
}

/// The side that runs stages 1.. of every replica: connects to `addr` in [`listen`]'s order;
/// the edges between its own stages are TCP channels on loopback.
pub fn connect(cfg: &Config, layers: &[Layer], addr: &str) -> Result<Wiring, Error> {
    if cfg.stages < 2 {
        return Err("TCP placement needs at least 2 stages".into());
    }
    let key = cfg.key.as_deref();
    let mut hello = retry(|| typed_net::<Hello>(4, key).connect_producer(addr))?;
    hello.send(&Hello {
        digest: cfg.digest(),
    })?;
    let bye = typed_net::<Hello>(4, key).connect_consumer(addr)?;
    let cap = tensor_capacity(cfg, layers);
    let mut ends = grid(cfg);
    for row in ends.iter_mut() {
        row[1].fwd_in = Some(TensorConsumer::from_raw(
            raw_net(cap, key).connect_consumer(addr)?,
        ));
        row[1].bwd_out = Some(TensorProducer::from_raw(
            raw_net(cap, key).connect_producer(addr)?,
        ));
    }
    if cfg.replicas > 1 {
        let cc = chunk_capacity(layers);
        for s in 1..cfg.stages {
            for row in ends.iter_mut() {
                let grads = typed_net::<Chunk>(cc, key).connect_producer(addr)?;
                let updates = typed_net::<Chunk>(cc, key).connect_consumer(addr)?;
                row[s].sync = Sync::Remote {
                    grads: GradOut::Direct(grads),
                    updates: update::tcp_in(updates),
                };
            }
        }
    }
    for row in ends.iter_mut() {
        for s in 1..cfg.stages - 1 {
            let (ftx, frx) = loopback_pair(cap)?;
            let (btx, brx) = loopback_pair(cap)?;
            row[s].fwd_out = Some(ftx);
            row[s + 1].fwd_in = Some(frx);
            row[s + 1].bwd_out = Some(btx);
            row[s].bwd_in = Some(brx);
        }
    }
    drop(hello);
    Ok(Wiring {
        local: flatten(ends, |s| s > 0),
        aggregators: Vec::new(),
        children: Children::default(),
        finish: Finish::Await(bye),
    })
}
