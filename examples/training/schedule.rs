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
}
