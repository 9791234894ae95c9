//! The single-thread reference: the same network, data order and floating-point operations as
//! the pipeline, one micro-batch after another, with no channel. The pipeline's final weights
//! and losses must equal these bit for bit.

use super::data::{Data, Plan};
use super::model::{self, Layer};

/// The reference's results.
pub struct Reference {
    /// Final layers.
    pub layers: Vec<Layer>,
    /// `[replica][step]` summed loss.
    pub step_losses: Vec<Vec<f64>>,
}

/// Trains `layers` on `data` along `plan` with momentum SGD (`lr`, `beta`).
#[allow(clippy::needless_range_loop)] // `t`, `r`, `m`, `s` index several tables each
pub fn train(mut layers: Vec<Layer>, data: &Data, plan: &Plan, lr: f32, beta: f32) -> Reference {
    let stages = layers.len();
    let maxn = plan.max_micro();
    let (reps, micro) = (plan.replicas, plan.micro);
    // acts[s]: input of stage s; zs[s]: its output before the activation.
    let mut acts: Vec<Vec<f32>> = layers.iter().map(|l| vec![0.0; maxn * l.input]).collect();
    let mut zs: Vec<Vec<f32>> = layers.iter().map(|l| vec![0.0; maxn * l.output]).collect();
    let mut dzs: Vec<Vec<f32>> = layers.iter().map(|l| vec![0.0; maxn * l.output]).collect();
    let mut dxs: Vec<Vec<f32>> = layers.iter().map(|l| vec![0.0; maxn * l.input]).collect();
    let mut grads: Vec<Vec<Vec<f32>>> = (0..reps)
        .map(|_| layers.iter().map(|l| vec![0.0; l.len()]).collect())
        .collect();
    let mut momentum: Vec<Vec<f32>> = layers.iter().map(|l| vec![0.0; l.len()]).collect();
    let mut update: Vec<Vec<f32>> = layers.iter().map(|l| vec![0.0; l.len()]).collect();
    let mut sum: Vec<Vec<f32>> = layers.iter().map(|l| vec![0.0; l.len()]).collect();
    let mut step_losses = vec![vec![0.0f64; plan.steps()]; reps];
    for t in 0..plan.steps() {
        let scale = 1.0 / plan.step_len(t) as f32;
        for r in 0..reps {
            for m in 0..micro {
                let rows = plan.rows(t, r, m);
                let n = rows.len();
                let w0 = layers[0].input;
                for (i, &row) in rows.iter().enumerate() {
                    let row = row as usize * w0;
                    acts[0][i * w0..(i + 1) * w0].copy_from_slice(&data.features[row..row + w0]);
                }
                for s in 0..stages {
                    let (i, o) = (layers[s].input, layers[s].output);
                    model::forward(&layers[s], &acts[s][..n * i], n, &mut zs[s][..n * o]);
                    if s + 1 < stages {
                        model::relu(&zs[s][..n * o], &mut acts[s + 1][..n * o]);
                    }
                }
                let last = stages - 1;
                let o = layers[last].output;
                let loss = model::loss(
                    &data.targets,
                    &zs[last][..n * o],
                    rows,
                    scale,
                    &mut dzs[last][..n * o],
                );
                step_losses[r][t] += loss;
                for s in (0..stages).rev() {
                    let (i, o) = (layers[s].input, layers[s].output);
                    if s < last {
                        model::relu_backward(
                            &zs[s][..n * o],
                            &dxs[s + 1][..n * o],
                            &mut dzs[s][..n * o],
                        );
                    }
                    let dx = if s > 0 {
                        Some(&mut dxs[s][..n * i])
                    } else {
                        None
                    };
                    model::backward(
                        &layers[s],
                        &acts[s][..n * i],
                        &dzs[s][..n * o],
                        n,
                        &mut grads[r][s],
                        dx,
                    );
                }
            }
        }
        for s in 0..stages {
            let g: &[f32] = if reps == 1 {
                &grads[0][s]
            } else {
                sum[s].copy_from_slice(&grads[0][s]);
                for gr in &grads[1..] {
                    for (x, y) in sum[s].iter_mut().zip(&gr[s]) {
                        *x += y;
                    }
                }
                &sum[s]
            };
            model::momentum_update(&mut momentum[s], g, lr, beta, &mut update[s]);
            model::apply(&mut layers[s].params, &update[s]);
            for gr in grads.iter_mut() {
                gr[s].fill(0.0);
            }
        }
    }
    Reference {
        layers,
        step_losses,
    }
}
