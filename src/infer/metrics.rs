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

/// Two-head (verb, noun) accuracy as EPIC-Kitchens reports it: each head's own, and the
/// action's, right when both are; action top-5 ranks verb × noun by the product of the two
/// softmax probabilities.
#[derive(Clone, Debug)]
pub struct VerbNoun {
    pub verb: Accuracy,
    pub noun: Accuracy,
    /// Videos whose verb and noun are both first.
    pub action_top1: usize,
    /// Videos whose (verb, noun) pair is among the five most probable.
    pub action_top5: usize,
}

impl VerbNoun {
    pub fn new(verbs: usize, nouns: usize) -> Self {
        Self { verb: Accuracy::new(verbs), noun: Accuracy::new(nouns), action_top1: 0, action_top5: 0 }
    }

    /// Adds one video's verb and noun scores (logits or probabilities).
    pub fn add(&mut self, verb: &[f32], noun: &[f32], labels: (usize, usize)) {
        self.verb.add(verb, labels.0);
        self.noun.add(noun, labels.1);
        self.action_top1 += (argmax(verb) == labels.0 && argmax(noun) == labels.1) as usize;
        // The five best pairs lie among the five best verbs × the five best nouns.
        let (pv, pn) = (probabilities(verb), probabilities(noun));
        let target = pv[labels.0] * pn[labels.1];
        let (tv, tn) = (top(&pv, 5), top(&pn, 5));
        let higher =
            tv.iter().flat_map(|&v| tn.iter().map(move |&n| (v, n))).filter(|&(v, n)| pv[v] * pn[n] > target).count();
        self.action_top5 += (higher < 5) as usize;
    }

    pub fn action_top1(&self) -> f64 {
        self.action_top1 as f64 / self.verb.count.max(1) as f64
    }

    pub fn action_top5(&self) -> f64 {
        self.action_top5 as f64 / self.verb.count.max(1) as f64
    }
}

/// Softmax of `scores` (in f64).
fn probabilities(scores: &[f32]) -> Vec<f64> {
    let m = scores.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let e: Vec<f64> = scores.iter().map(|&s| (s as f64 - m).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// Indices of the `k` largest values.
fn top(values: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    idx.truncate(k);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_is_right_when_verb_and_noun_are() {
        let mut a = VerbNoun::new(3, 4);
        a.add(&[0.0, 5.0, 0.0], &[0.0, 0.0, 5.0, 0.0], (1, 2)); // both right
        a.add(&[0.0, 5.0, 0.0], &[5.0, 0.0, 0.0, 0.0], (1, 2)); // noun wrong
        a.add(&[5.0, 0.0, 0.0], &[0.0, 0.0, 5.0, 0.0], (1, 2)); // verb wrong
        assert_eq!((a.verb.top1, a.noun.top1, a.action_top1), (2, 2, 1));
        assert!((a.action_top1() - 1.0 / 3.0).abs() < 1e-12);
        // 3 verbs × 4 nouns = 12 pairs; a pair ranked 6th or worse is outside the top 5.
        let mut b = VerbNoun::new(3, 4);
        b.add(&[3.0, 2.0, 1.0], &[4.0, 3.0, 2.0, 1.0], (2, 3));
        b.add(&[3.0, 2.0, 1.0], &[4.0, 3.0, 2.0, 1.0], (0, 1));
        assert_eq!(b.action_top5, 1);
    }

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
