//! Pipeline schedules: the order in which one stage runs the forward (F) and backward (B)
//! passes of a step's M micro-batches. Both schedules flush at the end of every step (all
//! backward passes done before the weights change), and both run the backward passes in
//! micro-batch order 0, 1, ..., M-1 at every stage, so the gradient sums, and with them the
//! weights, are the same bits under either schedule.

/// One pass of one micro-batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Forward pass of micro-batch `m`.
    Forward(usize),
    /// Backward pass of micro-batch `m`.
    Backward(usize),
}

/// Which schedule the stages follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// GPipe: all M forward passes (fill), then all M backward passes (drain).
    GPipe,
    /// One forward, one backward (PipeDream-flush): stage s runs S-1-s forward passes ahead,
    /// then alternates, so at most S-s micro-batches' activations are held at once.
    OneFOneB,
}

impl Schedule {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Schedule::GPipe => "gpipe",
            Schedule::OneFOneB => "1f1b",
        }
    }

    /// Parses `gpipe` or `1f1b`.
    pub fn parse(s: &str) -> Option<Schedule> {
        match s {
            "gpipe" => Some(Schedule::GPipe),
            "1f1b" => Some(Schedule::OneFOneB),
            _ => None,
        }
    }

    /// Stage `stage`'s passes for one step of `micro` micro-batches over `stages` stages.
    pub fn ops(self, stage: usize, stages: usize, micro: usize) -> Vec<Op> {
        let mut ops = Vec::with_capacity(2 * micro);
        match self {
            Schedule::GPipe => {
                ops.extend((0..micro).map(Op::Forward));
                ops.extend((0..micro).map(Op::Backward));
            }
            Schedule::OneFOneB => {
                let warm = (stages - 1 - stage).min(micro);
                ops.extend((0..warm).map(Op::Forward));
                for i in 0..micro - warm {
                    ops.push(Op::Forward(warm + i));
                    ops.push(Op::Backward(i));
                }
                ops.extend((micro - warm..micro).map(Op::Backward));
            }
        }
        ops
    }
}

/// The textbook bubble fraction of a flushed pipeline with equal stages: `(S-1) / (M+S-1)`.
pub fn textbook_bubble(stages: usize, micro: usize) -> f64 {
    (stages as f64 - 1.0) / (micro + stages - 1) as f64
}

/// One stage's compute per pass: seconds per forward pass, per backward pass and per update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    /// Seconds per forward pass of a micro-batch.
    pub forward: f64,
    /// Seconds per backward pass of a micro-batch.
    pub backward: f64,
    /// Seconds per update (once a step).
    pub update: f64,
}

/// The bubble each stage would have if its passes took exactly `costs[s]` and every hand-off
/// were free: the schedule played out for `steps` steps (each stage runs its passes in order,
/// a forward pass as soon as the previous stage's has finished, a backward pass as soon as the
/// next stage's has, the update after the stage's last backward pass), the idle share of each
/// stage's time over the steps after the first `warm`. With equal forward and backward costs at
/// every stage and no update this is the textbook `(S-1)/(M+S-1)` at every stage; with unequal
/// stages it is what the schedule itself costs them, beside which a measured bubble shows the
/// channels' and the machine's share.
pub fn ideal_bubble(
    schedule: Schedule,
    costs: &[Cost],
    micro: usize,
    warm: usize,
    steps: usize,
) -> Vec<f64> {
    let stages = costs.len();
    let ops: Vec<Vec<Op>> = (0..stages)
        .map(|s| schedule.ops(s, stages, micro))
        .collect();
    let mut clock = vec![0.0f64; stages];
    let mut start = vec![0.0f64; stages];
    let mut busy = vec![0.0f64; stages];
    for t in 0..steps {
        if t == warm {
            start.copy_from_slice(&clock);
            busy.fill(0.0);
        }
        let mut fdone = vec![vec![None::<f64>; micro]; stages];
        let mut bdone = vec![vec![None::<f64>; micro]; stages];
        let mut next = vec![0usize; stages];
        let mut moved = true;
        while moved {
            moved = false;
            for s in 0..stages {
                while let Some(&op) = ops[s].get(next[s]) {
                    let (ready, cost) = match op {
                        Op::Forward(_) if s == 0 => (Some(clock[s]), costs[s].forward),
                        Op::Forward(m) => (fdone[s - 1][m], costs[s].forward),
                        Op::Backward(_) if s + 1 == stages => (Some(clock[s]), costs[s].backward),
                        Op::Backward(m) => (bdone[s + 1][m], costs[s].backward),
                    };
                    let Some(ready) = ready else { break };
                    clock[s] = clock[s].max(ready) + cost;
                    busy[s] += cost;
                    match op {
                        Op::Forward(m) => fdone[s][m] = Some(clock[s]),
                        Op::Backward(m) => bdone[s][m] = Some(clock[s]),
                    }
                    next[s] += 1;
                    moved = true;
                }
            }
        }
        for s in 0..stages {
            clock[s] += costs[s].update;
            busy[s] += costs[s].update;
        }
    }
    (0..stages)
        .map(|s| 1.0 - busy[s] / (clock[s] - start[s]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schedule_runs_each_pass_once_with_backward_in_order() {
        for s in [Schedule::GPipe, Schedule::OneFOneB] {
            for stages in 1..5 {
                for micro in 1..7 {
                    for stage in 0..stages {
                        let ops = s.ops(stage, stages, micro);
                        let f: Vec<_> = ops
                            .iter()
                            .filter_map(|o| match o {
                                Op::Forward(m) => Some(*m),
                                _ => None,
                            })
                            .collect();
                        let b: Vec<_> = ops
                            .iter()
                            .filter_map(|o| match o {
                                Op::Backward(m) => Some(*m),
                                _ => None,
                            })
                            .collect();
                        let all: Vec<_> = (0..micro).collect();
                        assert_eq!((f, b), (all.clone(), all));
                        // Every backward pass comes after its forward pass.
                        for m in 0..micro {
                            let pf = ops.iter().position(|o| *o == Op::Forward(m));
                            let pb = ops.iter().position(|o| *o == Op::Backward(m));
                            assert!(pf < pb);
                        }
                    }
                }
            }
        }
        assert_eq!(
            Schedule::OneFOneB.ops(0, 3, 4),
            [
                Op::Forward(0),
                Op::Forward(1),
                Op::Forward(2),
                Op::Backward(0),
                Op::Forward(3),
                Op::Backward(1),
                Op::Backward(2),
                Op::Backward(3)
            ]
        );
    }

    #[test]
    fn equal_stages_idle_the_textbook_fraction() {
        let cost = Cost {
            forward: 1.0,
            backward: 2.0,
            update: 0.0,
        };
        for s in [Schedule::GPipe, Schedule::OneFOneB] {
            for stages in 1..6 {
                for micro in 1..9 {
                    let b = ideal_bubble(s, &vec![cost; stages], micro, 2, 6);
                    let want = textbook_bubble(stages, micro);
                    assert!(
                        b.iter().all(|x| (x - want).abs() < 1e-12),
                        "{s:?} {b:?} {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_cheaper_first_stage_idles_more_and_the_others_less() {
        // Stage 0 computes no input gradient: its backward pass costs what its forward does.
        let (f, b) = (1.0, 2.0);
        let mut costs = vec![
            Cost {
                forward: f,
                backward: b,
                update: 0.0,
            };
            3
        ];
        costs[0].backward = f;
        for s in [Schedule::GPipe, Schedule::OneFOneB] {
            let got = ideal_bubble(s, &costs, 4, 2, 8);
            // A step takes (M + S - 1)(f + b) less what stage 0 saves on the way: stage 0 idles
            // 1 - 4 * 2 / 17, the others 1 - 4 * 3 / 17.
            let want = [1.0 - 8.0 / 17.0, 1.0 - 12.0 / 17.0, 1.0 - 12.0 / 17.0];
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-12, "{s:?} {got:?}");
            }
        }
    }

    #[test]
    fn a_first_stage_balanced_by_cost_gives_1f1b_the_textbook_but_not_gpipe() {
        // The synthetic task's default: stage 0's layer is 1.5x wider and computes no input
        // gradient, so its forward and backward passes cost 1.5 each; the others' 1 and 2.
        let mut costs = vec![
            Cost {
                forward: 1.0,
                backward: 2.0,
                update: 0.0,
            };
            3
        ];
        costs[0].forward = 1.5;
        costs[0].backward = 1.5;
        // 1F1B: equal sums are all its steady state needs, every stage idles the textbook 1/3.
        let got = ideal_bubble(Schedule::OneFOneB, &costs, 4, 2, 8);
        assert!(got.iter().all(|g| (g - 1.0 / 3.0).abs() < 1e-12), "{got:?}");
        // GPipe: the fill is paced by stage 0's 1.5 forwards (4 x 1.5 + 1 + 1 = 8), the drain by
        // the 2-unit backwards (4 x 2 + 2 + 1.5 = 11.5): a step of 19.5 with 12 busy per stage.
        let got = ideal_bubble(Schedule::GPipe, &costs, 4, 2, 8);
        assert!(
            got.iter().all(|g| (g - (1.0 - 12.0 / 19.5)).abs() < 1e-12),
            "{got:?}"
        );
    }
}
