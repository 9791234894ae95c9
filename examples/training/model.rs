//! The network's arithmetic: one fully connected layer per pipeline stage (ReLU after every
//! stage but the last), the loss, and momentum SGD. Every pipeline stage, aggregator and the
//! single-thread reference call these same functions, so equal inputs give equal bits: each
//! reduction here has one fixed order (a dot product keeps 8 partial sums, combined the same
//! way every time; a gradient is accumulated sample after sample, micro-batch after
//! micro-batch), and the data-parallel sum adds replica 0, then 1, and so on.

use super::data::{Targets, uniform};

/// One fully connected layer: `output x input` weights (row-major) followed by `output`
/// biases, in one flat parameter vector (the unit gradients and updates travel in).
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// Inputs per sample.
    pub input: usize,
    /// Outputs per sample.
    pub output: usize,
    /// Weights then biases: `output * input + output` values.
    pub params: Vec<f32>,
}

impl Layer {
    /// Layer `index` with weights uniform in `±sqrt(6 / input)` (He-style for ReLU), biases 0,
    /// drawn from `seed`.
    pub fn init(index: usize, input: usize, output: usize, seed: u64) -> Layer {
        let scale = (6.0 / input as f32).sqrt();
        let mut params = vec![0.0f32; output * input + output];
        for (i, p) in params[..output * input].iter_mut().enumerate() {
            *p = uniform(seed ^ ((index as u64 + 1) << 48) ^ i as u64) * scale;
        }
        Layer {
            input,
            output,
            params,
        }
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether the layer has no parameters.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    fn weights(&self) -> &[f32] {
        &self.params[..self.output * self.input]
    }

    fn biases(&self) -> &[f32] {
        &self.params[self.output * self.input..]
    }
}

/// `a · b` with 8 partial sums in a fixed order (so the compiler may keep them in one SIMD
/// register without changing the result).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    for (x, y) in ca.iter().zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `y += g * x`, element by element.
#[inline]
fn axpy(y: &mut [f32], g: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += g * x;
    }
}

/// `z = W x + b` for `n` samples (`x`: `n x input`, `z`: `n x output`).
pub fn forward(layer: &Layer, x: &[f32], n: usize, z: &mut [f32]) {
    let (i, o) = (layer.input, layer.output);
    let (w, b) = (layer.weights(), layer.biases());
    // Weight row outside, samples inside: each row is read from memory once per micro-batch
    // (not once per sample) while the micro-batch's inputs stay in cache. Every output is the
    // same dot product either way, so the order of the loops does not change a bit.
    for (k, wk) in w.chunks_exact(i).enumerate() {
        for s in 0..n {
            z[s * o + k] = dot(wk, &x[s * i..(s + 1) * i]) + b[k];
        }
    }
}

/// `a = max(z, 0)`.
pub fn relu(z: &[f32], a: &mut [f32]) {
    for (a, &z) in a.iter_mut().zip(z) {
        *a = if z > 0.0 { z } else { 0.0 };
    }
}

/// `dz = da` where `z > 0`, else 0.
pub fn relu_backward(z: &[f32], da: &[f32], dz: &mut [f32]) {
    for ((d, &z), &g) in dz.iter_mut().zip(z).zip(da) {
        *d = if z > 0.0 { g } else { 0.0 };
    }
}

/// The loss of the output `z` (`rows.len() x width`) for the samples `rows`, summed over
/// them, and its gradient times `scale` (1 / the step's sample count) in `dz`.
pub fn loss(targets: &Targets, z: &[f32], rows: &[u32], scale: f32, dz: &mut [f32]) -> f64 {
    let width = targets.width();
    let mut total = 0.0f64;
    for (s, &row) in rows.iter().enumerate() {
        let (zs, ds) = (
            &z[s * width..(s + 1) * width],
            &mut dz[s * width..(s + 1) * width],
        );
        match targets {
            Targets::Classes { labels, .. } => {
                // Softmax cross-entropy, shifted by the largest logit.
                let y = labels[row as usize] as usize;
                let m = zs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0f32;
                for (d, &v) in ds.iter_mut().zip(zs) {
                    *d = (v - m).exp();
                    sum += *d;
                }
                for (c, d) in ds.iter_mut().enumerate() {
                    let p = *d / sum;
                    *d = (p - if c == y { 1.0 } else { 0.0 }) * scale;
                }
                total += f64::from(sum.ln() - (zs[y] - m));
            }
            Targets::Values { values, .. } => {
                // Half the squared error.
                let ys = &values[row as usize * width..(row as usize + 1) * width];
                let mut e = 0.0f32;
                for ((d, &v), &y) in ds.iter_mut().zip(zs).zip(ys) {
                    let r = v - y;
                    e += r * r;
                    *d = r * scale;
                }
                total += f64::from(0.5 * e);
            }
        }
    }
    total
}

/// Accumulates the parameter gradient of `n` samples into `grad` (`dz`: `n x output`, `x`:
/// `n x input`), sample after sample, and writes the input gradient into `dx` if given.
pub fn backward(
    layer: &Layer,
    x: &[f32],
    dz: &[f32],
    n: usize,
    grad: &mut [f32],
    dx: Option<&mut [f32]>,
) {
    let (i, o) = (layer.input, layer.output);
    let (gw, gb) = grad.split_at_mut(o * i);
    // Row outside, samples inside (each gradient and weight row streamed once per micro-batch,
    // the micro-batch's rows in cache): every element still accumulates its terms in the same
    // order (samples ascending for the parameter gradient, rows ascending for the input
    // gradient), so the result is the same bits as sample-outside loops.
    for (k, (gwk, gbk)) in gw.chunks_exact_mut(i).zip(gb.iter_mut()).enumerate() {
        for s in 0..n {
            let g = dz[s * o + k];
            axpy(gwk, g, &x[s * i..(s + 1) * i]);
            *gbk += g;
        }
    }
    if let Some(dx) = dx {
        let dx = &mut dx[..n * i];
        dx.fill(0.0);
        for (k, wk) in layer.weights().chunks_exact(i).enumerate() {
            for (s, ds) in dx.chunks_exact_mut(i).enumerate() {
                axpy(ds, dz[s * o + k], wk);
            }
        }
    }
}

/// Momentum SGD's update from the (summed) gradient: `v = beta v + g`, `u = lr v` (written
/// into `update`).
pub fn momentum_update(momentum: &mut [f32], grad: &[f32], lr: f32, beta: f32, update: &mut [f32]) {
    for ((v, &g), u) in momentum.iter_mut().zip(grad).zip(update.iter_mut()) {
        *v = beta * *v + g;
        *u = lr * *v;
    }
}

/// `w -= u`.
pub fn apply(params: &mut [f32], update: &[f32]) {
    for (w, &u) in params.iter_mut().zip(update) {
        *w -= u;
    }
}

/// The stage layers of a network with `stages` stages from `input` features to `output`.
pub fn layers(stages: usize, input: usize, hidden: usize, output: usize, seed: u64) -> Vec<Layer> {
    (0..stages)
        .map(|s| {
            let i = if s == 0 { input } else { hidden };
            let o = if s + 1 == stages { output } else { hidden };
            Layer::init(s, i, o, seed)
        })
        .collect()
}
