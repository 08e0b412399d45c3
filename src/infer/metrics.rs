//! Accuracy measures: top-k, mean class accuracy and the confusion matrix.

/// Whether `label` is among the `k` highest of `scores`.
pub fn in_top_k(scores: &[f32], label: usize, k: usize) -> bool {
    let target = scores[label];
    // Rank = number of classes scoring strictly higher (ties resolved in the label's favour).
    scores.iter().filter(|&&s| s > target).count() < k
}

/// Index of the largest score.
pub fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best
}

/// Running accuracy counters over a set of predictions.
#[derive(Clone, Debug)]
pub struct Accuracy {
    pub classes: usize,
    pub count: usize,
    pub top1: usize,
    pub top5: usize,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

impl Accuracy {
    pub fn new(classes: usize) -> Self {
        Self { classes, count: 0, top1: 0, top5: 0, confusion: vec![vec![0; classes]; classes] }
    }

    pub fn add(&mut self, scores: &[f32], label: usize) {
        self.count += 1;
        self.top1 += in_top_k(scores, label, 1) as usize;
        self.top5 += in_top_k(scores, label, 5) as usize;
        self.confusion[label][argmax(scores)] += 1;
    }

    pub fn top1(&self) -> f64 {
        self.top1 as f64 / self.count.max(1) as f64
    }

    pub fn top5(&self) -> f64 {
        self.top5 as f64 / self.count.max(1) as f64
    }

    /// Accuracy of each class (`None` for classes without samples).
    pub fn per_class(&self) -> Vec<Option<f64>> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let n: usize = row.iter().sum();
                (n > 0).then(|| row[c] as f64 / n as f64)
            })
            .collect()
    }

    /// Mean over the classes that have samples.
    pub fn mean_class(&self) -> f64 {
        let v: Vec<f64> = self.per_class().into_iter().flatten().collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_and_mean_class() {
        let mut a = Accuracy::new(6);
        a.add(&[0.1, 0.9, 0.0, 0.0, 0.0, 0.0], 1); // right
        a.add(&[0.9, 0.1, 0.0, 0.0, 0.0, 0.0], 1); // top-2
        a.add(&[0.5, 0.4, 0.3, 0.2, 0.1, 0.0], 5); // rank 6
        assert_eq!((a.top1, a.top5, a.count), (1, 2, 3));
        // class 1: 1/2, class 5: 0/1 → mean 0.25.
        assert!((a.mean_class() - 0.25).abs() < 1e-12);
        assert_eq!(a.confusion[1][0], 1);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }
}
