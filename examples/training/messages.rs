//! What travels between stages, replicas and aggregators besides the tensors' elements.

use psyne::PsyneMessage;

/// Parameters per [`Chunk`]: gradients and updates of a stage travel in pieces of this many.
pub const CHUNK: usize = 1024;

/// The user header of every tensor on the pipeline's forward and backward channels.
#[derive(Clone, Copy, Debug, PartialEq, PsyneMessage)]
#[repr(C)]
pub struct Tag {
    /// Optimiser step.
    pub step: u64,
    /// Micro-batch index (or, for [`Tag::FINAL`] and [`Tag::STATS`], the stage it is from).
    pub micro: u32,
    /// [`Tag::ACTIVATION`], [`Tag::GRADIENT`], [`Tag::FINAL`] or [`Tag::STATS`].
    pub kind: u32,
    /// On gradients: the micro-batch's summed loss, passed down to stage 0. On final
    /// weights: the stage's parameter count.
    pub value: f64,
    /// On final weights: where this piece starts.
    pub offset: u64,
}

impl Tag {
    /// Activations of a micro-batch (forward).
    pub const ACTIVATION: u32 = 0;
    /// Input gradient of a micro-batch (backward).
    pub const GRADIENT: u32 = 1;
    /// A piece of a stage's final weights, after the last step (backward direction).
    pub const FINAL: u32 = 2;
    /// A stage's measurements (`f64`s, see [`Stats`]), after the last step.
    pub const STATS: u32 = 3;
}

/// A piece of a stage's gradient (replica to aggregator) or of its update (aggregator to
/// replicas): `len` values starting at parameter `offset`.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
pub struct Chunk {
    /// Optimiser step.
    pub step: u32,
    /// The replica that sent it (gradients).
    pub replica: u32,
    /// First parameter.
    pub offset: u32,
    /// Values used.
    pub len: u32,
    /// The values; `values[len..]` is unused.
    pub values: [f32; CHUNK],
}

/// The first message over a `--connect` link: the connecting side's options, which must be
/// the listening side's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PsyneMessage)]
#[repr(C)]
pub struct Hello {
    /// A digest of every option that shapes the run.
    pub digest: u64,
}

/// One stage's measurements of one replica, sent as `f64`s. Every second of the window is
/// one of: computing (`forward`, `backward`, `update`), waiting on a channel (`wait_*`), or
/// the rest (`window` minus both: gathering stage 0's input rows, checks, bookkeeping).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// Seconds in forward passes (copying the input out of the ring, the layer, the ReLU
    /// written into the next ring) after warm-up.
    pub forward: f64,
    /// Seconds in backward passes (loss or ReLU gradient, parameter and input gradients).
    pub backward: f64,
    /// Seconds applying updates (momentum SGD here, or the aggregator's chunks).
    pub update: f64,
    /// Seconds waiting for the previous stage's activations.
    pub wait_activation: f64,
    /// Seconds waiting for the next stage's gradients.
    pub wait_gradient: f64,
    /// Seconds waiting for room in an outgoing ring (a full channel).
    pub wait_room: f64,
    /// Seconds sending gradients to the aggregator and waiting for its update.
    pub wait_update: f64,
    /// Seconds from the end of warm-up to the end of the last step.
    pub window: f64,
    /// Heap allocations by the stage's thread in that window.
    pub allocations: f64,
    /// Steps in the window.
    pub steps: f64,
}

impl Stats {
    /// Values per [`Stats::to_array`].
    pub const LEN: usize = 10;

    /// As sent.
    pub fn to_array(self) -> [f64; Stats::LEN] {
        [
            self.forward,
            self.backward,
            self.update,
            self.wait_activation,
            self.wait_gradient,
            self.wait_room,
            self.wait_update,
            self.window,
            self.allocations,
            self.steps,
        ]
    }

    /// As received.
    pub fn from_slice(v: &[f64]) -> Stats {
        let g = |i: usize| v.get(i).copied().unwrap_or(f64::NAN);
        Stats {
            forward: g(0),
            backward: g(1),
            update: g(2),
            wait_activation: g(3),
            wait_gradient: g(4),
            wait_room: g(5),
            wait_update: g(6),
            window: g(7),
            allocations: g(8),
            steps: g(9),
        }
    }

    /// Seconds computing.
    pub fn busy(&self) -> f64 {
        self.forward + self.backward + self.update
    }

    /// Seconds waiting on a channel.
    pub fn waiting(&self) -> f64 {
        self.wait_activation + self.wait_gradient + self.wait_room + self.wait_update
    }

    /// The idle fraction of the window: everything but computing.
    pub fn bubble(&self) -> f64 {
        1.0 - self.busy() / self.window
    }
}
