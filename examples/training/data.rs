//! The training data and the order it is visited in: the wine-quality data set that
//! `linfa-datasets` ships inside the crate (1599 red wines, 11 measurements, quality 3 to 8 as
//! 6 classes), or a synthetic regression task whose targets a fixed random teacher network
//! computes; and the plan that cuts every epoch's shuffled order into steps (global batches),
//! replica shards and micro-batches. Every process derives the same plan from the same options.

/// What the network learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Wine quality as a 6-class classification (softmax cross-entropy).
    Wine,
    /// Regression onto a fixed random teacher (mean squared error): `input` features in,
    /// `width` out; every stage of the student but the first is a `width x width` layer, the
    /// first `input x width` (see [`balanced_input`] for why the default `input` is wider).
    Synthetic {
        /// Features in (the first stage's input width).
        input: usize,
        /// Features out, and the student's hidden width.
        width: usize,
        /// Samples per epoch.
        samples: usize,
    },
}

/// What a sample should produce.
#[derive(Debug, Clone)]
pub enum Targets {
    /// A class index per sample, of `classes`.
    Classes {
        /// One per sample.
        labels: Vec<u32>,
        /// Number of classes (the last layer's width).
        classes: usize,
    },
    /// `width` values per sample, row-major.
    Values {
        /// `samples * width` values.
        values: Vec<f32>,
        /// Values per sample.
        width: usize,
    },
}

impl Targets {
    /// The width of the network's output.
    pub fn width(&self) -> usize {
        match self {
            Targets::Classes { classes, .. } => *classes,
            Targets::Values { width, .. } => *width,
        }
    }
}

/// Features (row-major, `samples x features`) and targets.
#[derive(Debug, Clone)]
pub struct Data {
    /// `samples * features` values, standardised.
    pub features: Vec<f32>,
    /// Features per sample.
    pub width: usize,
    /// Number of samples.
    pub samples: usize,
    /// What each sample should produce.
    pub targets: Targets,
}

/// SplitMix64: the one source of pseudo-random numbers (initial weights, teacher, shuffles).
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform value in `[-1, 1)` from key `k`.
pub fn uniform(k: u64) -> f32 {
    ((splitmix(k) >> 40) as f32 / (1u64 << 23) as f32) - 1.0
}

impl Data {
    /// Loads `task`'s data (`seed` draws the synthetic teacher and inputs).
    pub fn load(task: Task, seed: u64) -> Data {
        match task {
            Task::Wine => Self::wine(),
            Task::Synthetic {
                input,
                width,
                samples,
            } => Self::synthetic(input, width, samples, seed),
        }
    }

    /// The red wine-quality data set, features standardised to mean 0 and variance 1.
    fn wine() -> Data {
        let ds = linfa_datasets::winequality();
        let records = ds.records();
        let (samples, width) = records.dim();
        let mut features = vec![0.0f32; samples * width];
        for j in 0..width {
            let col = records.column(j);
            let mean = col.sum() / samples as f64;
            let var = col.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / samples as f64;
            let sd = var.sqrt().max(1e-12);
            for (i, x) in col.iter().enumerate() {
                features[i * width + j] = ((x - mean) / sd) as f32;
            }
        }
        // Quality 3..=8 in this set: class = quality - 3.
        let lowest = ds.targets().iter().copied().min().unwrap_or(0);
        let labels: Vec<u32> = ds.targets().iter().map(|&q| (q - lowest) as u32).collect();
        let classes = labels.iter().copied().max().unwrap_or(0) as usize + 1;
        Data {
            features,
            width,
            samples,
            targets: Targets::Classes { labels, classes },
        }
    }

    /// `input` inputs uniform in `[-1, 1)`, `width` targets `W2 tanh(W1 x)` of a fixed random
    /// teacher with 32 hidden units. With `input == width` the data are those of the versions
    /// before `--input` existed (the same keys draw the same values).
    fn synthetic(input: usize, width: usize, samples: usize, seed: u64) -> Data {
        const TEACHER: usize = 32;
        let key = |tag: u64, i: usize| seed ^ (tag << 56) ^ (i as u64).wrapping_mul(0x9E37);
        let features: Vec<f32> = (0..samples * input).map(|i| uniform(key(1, i))).collect();
        let scale1 = (3.0 / input as f32).sqrt();
        let w1: Vec<f32> = (0..TEACHER * input)
            .map(|i| uniform(key(2, i)) * scale1)
            .collect();
        let scale2 = (3.0 / TEACHER as f32).sqrt();
        let w2: Vec<f32> = (0..width * TEACHER)
            .map(|i| uniform(key(3, i)) * scale2)
            .collect();
        let mut values = vec![0.0f32; samples * width];
        let mut h = [0.0f32; TEACHER];
        for s in 0..samples {
            let x = &features[s * input..(s + 1) * input];
            for (k, hk) in h.iter_mut().enumerate() {
                *hk = super::model::dot(&w1[k * input..(k + 1) * input], x).tanh();
            }
            for (o, y) in values[s * width..(s + 1) * width].iter_mut().enumerate() {
                *y = super::model::dot(&w2[o * TEACHER..(o + 1) * TEACHER], &h);
            }
        }
        Data {
            features,
            width: input,
            samples,
            targets: Targets::Values { values, width },
        }
    }
}

/// The synthetic task's default input width for hidden width `hidden`: `1.5 x hidden`, rounded
/// up to a multiple of 8 (the dot product's chunk), so that the pipeline's stages do equal
/// work. A layer with `i` inputs and `o` outputs costs about `i * o` multiply-adds for each of
/// its forward, weight gradient and input gradient; stage 0 computes no input gradient (there
/// is no stage before it to send one to), so with `i = o = hidden` everywhere it does 2 units
/// of work where the others do 3, and idles for the difference. With `1.5 x hidden` inputs it
/// does `1.5 + 1.5 = 3`, like the others: cost-balanced stages, the textbook bubble's
/// assumption and what partitioners such as GPipe's and PipeDream's aim for.
pub fn balanced_input(hidden: usize) -> usize {
    (hidden * 3 / 2).div_ceil(8).max(1) * 8
}

/// Splits `len` items into `parts` near-equal parts; part `i` as `(offset, len)`.
pub fn split(len: usize, parts: usize, i: usize) -> (usize, usize) {
    let base = len / parts;
    let extra = len % parts;
    (i * base + i.min(extra), base + usize::from(i < extra))
}

/// The order every sample is visited in, and how it is cut: each epoch is a shuffled order of
/// all samples; a step takes the next `batch` of them (the epoch's last step takes what is
/// left, so it is smaller unless `batch` divides the sample count); a step's samples are split
/// into `replicas` shards and every shard into `micro` micro-batches, as evenly as possible.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Samples per epoch.
    pub samples: usize,
    /// Samples per step (global batch).
    pub batch: usize,
    /// Data-parallel replicas.
    pub replicas: usize,
    /// Micro-batches per shard.
    pub micro: usize,
    /// Epochs.
    pub epochs: usize,
    /// Steps per epoch.
    pub steps_per_epoch: usize,
    /// `epochs * samples` sample indices: every epoch's shuffled order, one after another.
    order: Vec<u32>,
}

impl Plan {
    /// The plan for `samples` samples (shuffles drawn from `seed`).
    pub fn new(
        samples: usize,
        batch: usize,
        replicas: usize,
        micro: usize,
        epochs: usize,
        seed: u64,
    ) -> Plan {
        let mut order = Vec::with_capacity(samples * epochs);
        for e in 0..epochs {
            let start = order.len();
            order.extend(0..samples as u32);
            let epoch = &mut order[start..];
            for i in (1..samples).rev() {
                let j = (splitmix(seed ^ ((e as u64) << 32) ^ i as u64) % (i as u64 + 1)) as usize;
                epoch.swap(i, j);
            }
        }
        Plan {
            samples,
            batch,
            replicas,
            micro,
            epochs,
            steps_per_epoch: samples.div_ceil(batch),
            order,
        }
    }

    /// Steps in the whole run.
    pub fn steps(&self) -> usize {
        self.steps_per_epoch * self.epochs
    }

    /// Where step `t`'s samples start in the order, and how many there are.
    fn step_span(&self, t: usize) -> (usize, usize) {
        let (e, k) = (t / self.steps_per_epoch, t % self.steps_per_epoch);
        let first = k * self.batch;
        (
            e * self.samples + first,
            self.batch.min(self.samples - first),
        )
    }

    /// Samples in step `t` (all replicas).
    pub fn step_len(&self, t: usize) -> usize {
        self.step_span(t).1
    }

    /// The sample indices of micro-batch `m` of replica `r` at step `t`.
    pub fn rows(&self, t: usize, r: usize, m: usize) -> &[u32] {
        let (start, len) = self.step_span(t);
        let (shard_off, shard_len) = split(len, self.replicas, r);
        let (off, n) = split(shard_len, self.micro, m);
        let from = start + shard_off + off;
        &self.order[from..from + n]
    }

    /// The largest micro-batch of the run.
    pub fn max_micro(&self) -> usize {
        self.batch.div_ceil(self.replicas).div_ceil(self.micro)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_balanced_input_is_one_and_a_half_hidden_in_multiples_of_8() {
        assert_eq!(balanced_input(1024), 1536);
        assert_eq!(balanced_input(64), 96);
        assert_eq!(balanced_input(10), 16);
        assert_eq!(balanced_input(1), 8);
    }

    #[test]
    fn the_synthetic_task_takes_input_features_and_gives_width_targets() {
        let d = Data::load(
            Task::Synthetic {
                input: 24,
                width: 16,
                samples: 5,
            },
            7,
        );
        assert_eq!((d.width, d.samples, d.features.len()), (24, 5, 120));
        assert_eq!(d.targets.width(), 16);
    }
}
