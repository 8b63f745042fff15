//! Latency summaries for `purgectl bench`.

use serde::Serialize;

/// Nearest-rank percentile (the smallest sample with at least `p`% of the
/// samples at or below it) of an ascending slice; `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.saturating_sub(1).min(sorted.len() - 1);
    sorted.get(idx).copied()
}

/// P50/P90/P99/max of a set of latencies in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl LatencySummary {
    /// `None` for no samples; NaNs are dropped since they cannot be ranked.
    pub fn from_samples(samples: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| !v.is_nan()).collect();
        sorted.sort_by(f64::total_cmp);
        let max_ms = *sorted.last()?;
        Some(LatencySummary {
            count: sorted.len(),
            p50_ms: percentile(&sorted, 50.0)?,
            p90_ms: percentile(&sorted, 90.0)?,
            p99_ms: percentile(&sorted, 99.0)?,
            max_ms,
            mean_ms: sorted.iter().sum::<f64>() / sorted.len() as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_on_one_to_hundred() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 90.0), Some(90.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
    }

    #[test]
    fn small_and_empty_sets() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), Some(2.0));
        assert_eq!(percentile(&v, 51.0), Some(3.0));
        assert_eq!(percentile(&v, 99.0), Some(4.0));
    }

    #[test]
    fn summary_sorts_and_ignores_nan() {
        let s = LatencySummary::from_samples(&[30.0, f64::NAN, 10.0, 20.0, 40.0]).unwrap();
        assert_eq!(s.count, 4);
        assert_eq!(s.p50_ms, 20.0);
        assert_eq!(s.p90_ms, 40.0);
        assert_eq!(s.max_ms, 40.0);
        assert_eq!(s.mean_ms, 25.0);
        assert!(LatencySummary::from_samples(&[]).is_none());
        assert!(LatencySummary::from_samples(&[f64::NAN]).is_none());
    }
}
