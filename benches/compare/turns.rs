//! The ratios that are goals, measured in turns: the runners of a ratio take turns, round
//! after round, and the ratio is the median of the ratios within each round.
//!
//! Why: this machine's speed drifts by a third within minutes (the host, other builds on
//! it). A ratio of two bests, each the best of three runs of its side, compared whichever
//! side caught a quick moment: the same build's process pool ÷ thread pool measured 0.71
//! and 1.06 ten minutes apart, on an idle machine. Within one round both runners see
//! nearly the same machine; the median of the rounds leaves out a round that a burst of
//! load spoiled for one side. Every other round runs the runners in reverse order, so that
//! none always goes first (into warm caches, or into a machine speeding up or slowing down
//! over the round).

use std::fmt;

/// Rounds per ratio.
pub const ROUNDS: usize = 7;

/// Runs each runner once per round, for `rounds` rounds, in turns (in reverse order in
/// every other round). Each runner's results, in round order.
pub fn in_turns(runners: &mut [&mut dyn FnMut() -> f64], rounds: usize) -> Vec<Vec<f64>> {
    let mut results = vec![Vec::with_capacity(rounds); runners.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..runners.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            results[i].push(runners[i]());
        }
    }
    results
}

/// The highest of a runner's results.
pub fn best(results: &[f64]) -> f64 {
    results.iter().copied().fold(f64::MIN, f64::max)
}

/// `a ÷ b` over paired rounds: the median of the rounds' ratios, and their range.
#[derive(Clone, Copy, Debug)]
pub struct Paired {
    pub median: f64,
    pub low: f64,
    pub high: f64,
    pub rounds: usize,
}

impl Paired {
    /// The ratios `a[i] / b[i]` of rounds where both sides measured something; `None` if
    /// none did.
    pub fn of(a: &[f64], b: &[f64]) -> Option<Paired> {
        let ratios: Vec<f64> = a
            .iter()
            .zip(b)
            .filter(|(x, y)| x.is_finite() && y.is_finite() && **y > 0.0)
            .map(|(x, y)| x / y)
            .collect();
        if ratios.is_empty() {
            return None;
        }
        Some(Paired {
            low: ratios.iter().copied().fold(f64::MAX, f64::min),
            high: ratios.iter().copied().fold(f64::MIN, f64::max),
            rounds: ratios.len(),
            median: crate::median(ratios),
        })
    }
}

impl fmt::Display for Paired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.2} (median of {} rounds in turns; rounds {:.2}–{:.2})",
            self.median, self.rounds, self.low, self.high
        )
    }
}
