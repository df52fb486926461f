//! Verification metrics over pair scores: k-fold accuracy with insightface's threshold rule, and
//! TAR at a target FAR.
//!
//! Inputs are one similarity score per pair (higher means more alike) and whether the pair shows
//! the same identity. A pair is predicted "same" iff `score > threshold`.
//!
//! Threshold search is exact: the candidates are the midpoints between consecutive distinct
//! sorted scores plus the two ends, `min - 1` (everything same) and `max + 1` (everything
//! different). Scores are sorted once; each fold is then one linear sweep, so a k-fold run costs
//! O(n log n + k n) rather than the O(n²) of trying every threshold against every pair.
//!
//! ```text
//! accuracy_f = correct_f(t_f) / |fold f|
//! t_f        = argmax_t correct_{other folds}(t), the smallest t on ties
//! mean       = Σ_f accuracy_f / k
//! std        = sqrt(Σ_f (accuracy_f - mean)² / k)
//! TAR@FAR    = TP(t*) / #same,  t* = min { t : FP(t) / #different <= target }
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Accuracy of k-fold verification: per-fold accuracies, their mean and population std.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FoldAccuracy {
    /// Mean of the fold accuracies, in [0, 1].
    pub mean: f64,
    /// Population standard deviation of the fold accuracies (divides by k, as insightface does).
    pub std: f64,
    /// Accuracy on each held-out fold, in fold order.
    pub folds: Vec<f64>,
    /// The threshold chosen on the other folds for each fold.
    pub thresholds: Vec<f64>,
}

/// True-accept rate at a target false-accept rate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TarAtFar {
    /// The requested FAR bound.
    pub far_target: f64,
    /// Fraction of same pairs accepted at `threshold`.
    pub tar: f64,
    /// Fraction of different pairs accepted at `threshold`; never above `far_target`.
    pub far: f64,
    /// The chosen threshold (a pair is accepted iff its score is above it).
    pub threshold: f64,
}

/// Pairs that share one score value, in ascending score order.
struct ScoreGroup {
    score: f32,
    same: usize,
    different: usize,
}

/// Groups pairs, given in ascending score order, by equal score.
fn group_sorted(sorted: impl Iterator<Item = (f32, bool)>) -> Vec<ScoreGroup> {
    let mut groups: Vec<ScoreGroup> = Vec::new();
    for (score, same) in sorted {
        let group = match groups.last_mut() {
            Some(last) if last.score == score => last,
            _ => {
                groups.push(ScoreGroup {
                    score,
                    same: 0,
                    different: 0,
                });
                let last = groups.len() - 1;
                &mut groups[last]
            }
        };
        if same {
            group.same += 1;
        } else {
            group.different += 1;
        }
    }
    groups
}

/// The candidate threshold just above group `g`: the midpoint to the next group, or `max + 1`.
fn threshold_after(groups: &[ScoreGroup], g: usize) -> f64 {
    let here = f64::from(groups[g].score);
    match groups.get(g + 1) {
        Some(next) => (here + f64::from(next.score)) / 2.0,
        None => here + 1.0,
    }
}

/// The candidate threshold below every group: `min - 1` (or 0 with no groups).
fn threshold_below(groups: &[ScoreGroup]) -> f64 {
    groups.first().map_or(0.0, |g| f64::from(g.score) - 1.0)
}

/// Checks that scores and labels match in length, are non-empty and finite.
fn check_scores(scores: &[f32], same: &[bool]) -> Result<()> {
    if scores.len() != same.len() {
        let what = format!("{} scores but {} labels", scores.len(), same.len());
        return Err(Error::Protocol(what));
    }
    if scores.is_empty() {
        return Err(Error::Protocol("no pairs to score".to_owned()));
    }
    if let Some(pair) = scores.iter().position(|s| !s.is_finite()) {
        let what = format!(
            "score of pair {pair} is {}, expected a finite number",
            scores[pair]
        );
        return Err(Error::Protocol(what));
    }
    Ok(())
}

/// Pair indices in ascending score order (scores are finite).
fn ascending_order(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&i, &j| scores[i].total_cmp(&scores[j]));
    order
}

/// The threshold maximising accuracy over `groups` (the smallest one on ties).
fn best_threshold(groups: &[ScoreGroup]) -> f64 {
    // Below every score all pairs are predicted same: exactly the same pairs are right.
    let mut correct: usize = groups.iter().map(|g| g.same).sum();
    let mut best = (correct, threshold_below(groups));

    // Raising the threshold past a group flips it to "different".
    for (g, group) in groups.iter().enumerate() {
        correct = correct + group.different - group.same;
        if correct > best.0 {
            best = (correct, threshold_after(groups, g));
        }
    }
    best.1
}

/// Fraction of pairs classified correctly by `score > threshold`.
fn accuracy_at(scores: &[f32], same: &[bool], threshold: f64) -> f64 {
    let correct = scores
        .iter()
        .zip(same)
        .filter(|&(&score, &same)| (f64::from(score) > threshold) == same)
        .count();
    correct as f64 / scores.len() as f64
}

/// k-fold verification accuracy with the best-accuracy threshold of the other folds.
///
/// Folds are contiguous equal blocks of pairs. For each fold, the threshold that maximises
/// accuracy on all other folds (exact search, smallest threshold on ties) scores the held-out
/// fold. The std is the population std over folds.
///
/// # Errors
/// [`Error::Protocol`] if lengths differ, there are no pairs, a score is NaN or infinite,
/// `folds < 2`, or the pair count is not a multiple of `folds`.
pub fn kfold_accuracy(scores: &[f32], same: &[bool], folds: usize) -> Result<FoldAccuracy> {
    check_scores(scores, same)?;
    if folds < 2 || !scores.len().is_multiple_of(folds) {
        let what = format!(
            "{} pairs cannot form {folds} equal folds (need >= 2)",
            scores.len()
        );
        return Err(Error::Protocol(what));
    }
    let fold_size = scores.len() / folds;
    let order = ascending_order(scores);

    let mut accuracies = Vec::with_capacity(folds);
    let mut thresholds = Vec::with_capacity(folds);
    for fold in 0..folds {
        let held_out = fold * fold_size..(fold + 1) * fold_size;
        let training = order.iter().filter(|i| !held_out.contains(i));
        let groups = group_sorted(training.map(|&i| (scores[i], same[i])));
        let threshold = best_threshold(&groups);
        accuracies.push(accuracy_at(
            &scores[held_out.clone()],
            &same[held_out],
            threshold,
        ));
        thresholds.push(threshold);
    }

    let (mean, std) = mean_and_population_std(&accuracies);
    Ok(FoldAccuracy {
        mean,
        std,
        folds: accuracies,
        thresholds,
    })
}

/// Mean and population standard deviation (divides by n) of non-empty `values`.
fn mean_and_population_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, variance.sqrt())
}

/// TAR at the lowest candidate threshold whose FAR does not exceed `far_target` (conservative).
///
/// Computed over all pairs. FAR is the fraction of different pairs with `score > threshold`, TAR
/// the fraction of same pairs. Candidates are the same as for [`kfold_accuracy`]; the reported
/// threshold is the midpoint above the last rejected score (or `min - 1` if nothing need be
/// rejected), so any threshold in that gap gives the same TAR and FAR.
///
/// # Errors
/// [`Error::Protocol`] if lengths differ, a score is not finite, `far_target` is not in [0, 1],
/// or there are no same or no different pairs.
pub fn tar_at_far(scores: &[f32], same: &[bool], far_target: f64) -> Result<TarAtFar> {
    check_scores(scores, same)?;
    if !(0.0..=1.0).contains(&far_target) {
        return Err(Error::Protocol(format!(
            "FAR target {far_target} is not in [0, 1]"
        )));
    }
    let groups = group_sorted(
        ascending_order(scores)
            .into_iter()
            .map(|i| (scores[i], same[i])),
    );
    let n_same: usize = groups.iter().map(|g| g.same).sum();
    let n_different: usize = groups.iter().map(|g| g.different).sum();
    if n_same == 0 || n_different == 0 {
        let what = format!("TAR@FAR needs both kinds: {n_same} same, {n_different} different");
        return Err(Error::Protocol(what));
    }

    // Sweep thresholds upwards; the first one within the FAR bound is the lowest.
    let (mut accepted_same, mut accepted_different) = (n_same, n_different);
    let mut threshold = threshold_below(&groups);
    for (g, group) in groups.iter().enumerate() {
        if accepted_different as f64 / n_different as f64 <= far_target {
            break;
        }
        accepted_same -= group.same;
        accepted_different -= group.different;
        threshold = threshold_after(&groups, g);
    }

    let tar = accepted_same as f64 / n_same as f64;
    let far = accepted_different as f64 / n_different as f64;
    Ok(TarAtFar {
        far_target,
        tar,
        far,
        threshold,
    })
}
