//! Which frames of a video form a clip: TSN segment sampling and its test-time variants,
//! exactly as the official GSM/TSM code (`_sample_indices`, `_get_val_indices`,
//! `twice_sample`, `dense_sample`), but returning 0-based frame indices.

use rand::Rng;

/// TSN training: T equal segments, one random frame in each. Videos with fewer usable
/// frames than segments get sorted random frames, and videos with none repeat frame 0 —
/// the official behaviour (which fails where `new_length` exceeds the video; frame 0 here).
pub fn tsn_train(num_frames: usize, segments: usize, new_length: usize, rng: &mut impl Rng) -> Vec<usize> {
    let usable = num_frames.saturating_add(1).saturating_sub(new_length);
    let average = usable / segments;
    if average > 0 {
        (0..segments).map(|i| i * average + rng.random_range(0..average)).collect()
    } else if num_frames > segments && usable > 0 {
        let mut v: Vec<usize> = (0..segments).map(|_| rng.random_range(0..usable)).collect();
        v.sort_unstable();
        v
    } else {
        vec![0; segments]
    }
}

/// TSN test/validation: the centre frame of each segment (frame 0 for short videos).
pub fn tsn_test(num_frames: usize, segments: usize, new_length: usize) -> Vec<usize> {
    if num_frames > segments + new_length - 1 {
        let tick = (num_frames - new_length + 1) as f64 / segments as f64;
        (0..segments).map(|i| (tick / 2.0 + tick * i as f64) as usize).collect()
    } else {
        vec![0; segments]
    }
}

/// The official two-clip test: segment centres, then segment starts.
pub fn two_clip_test(num_frames: usize, segments: usize, new_length: usize) -> Vec<Vec<usize>> {
    let tick = num_frames.saturating_add(1).saturating_sub(new_length) as f64 / segments as f64;
    let centres = (0..segments).map(|i| (tick / 2.0 + tick * i as f64) as usize).collect();
    let starts = (0..segments).map(|i| (tick * i as f64) as usize).collect();
    vec![centres, starts]
}

/// N clips of segment centres, each shifted by a fraction of a segment (N uniform clips).
pub fn uniform_clips(num_frames: usize, segments: usize, clips: usize) -> Vec<Vec<usize>> {
    let tick = num_frames as f64 / segments as f64;
    (0..clips)
        .map(|c| {
            let offset = tick * (c as f64 + 0.5) / clips as f64;
            (0..segments).map(|i| ((offset + tick * i as f64) as usize).min(num_frames.saturating_sub(1))).collect()
        })
        .collect()
}

/// Dense sampling, training: a window of `clip_len · interval` frames at a random start,
/// `clip_len` frames `interval` apart (wrapping modulo the video length, as the official code).
pub fn dense_train(num_frames: usize, clip_len: usize, interval: usize, rng: &mut impl Rng) -> Vec<usize> {
    let window = clip_len * interval;
    let positions = num_frames.saturating_add(1).saturating_sub(window).max(1);
    let start = if positions == 1 { 0 } else { rng.random_range(0..positions) };
    (0..clip_len).map(|i| (i * interval + start) % num_frames.max(1)).collect()
}

/// Dense sampling, test: `clips` windows with starts spread evenly over the video.
pub fn dense_test(num_frames: usize, clip_len: usize, interval: usize, clips: usize) -> Vec<Vec<usize>> {
    let window = clip_len * interval;
    let positions = num_frames.saturating_add(1).saturating_sub(window).max(1);
    (0..clips)
        .map(|c| {
            let start = if clips == 1 { 0 } else { c * (positions - 1) / (clips - 1) };
            (0..clip_len).map(|i| (i * interval + start) % num_frames.max(1)).collect()
        })
        .collect()
}

/// Contiguous windows of `len` consecutive frames at the video's own frame rate (how 3D
/// networks such as I3D are fed), with centres spread evenly: one window sits at the
/// video's centre, N windows at the centres of N equal parts. Videos shorter than a window
/// are looped, as the I3D reference code does.
pub fn windows(num_frames: usize, len: usize, clips: usize) -> Vec<Vec<usize>> {
    let n = num_frames.max(1);
    let positions = n.saturating_add(1).saturating_sub(len).max(1);
    (0..clips.max(1))
        .map(|c| {
            // Start whose window centre is at the centre of part c (of `clips` parts).
            let start = ((2 * c + 1) * (positions - 1)) / (2 * clips.max(1));
            (start..start + len).map(|i| i % n).collect()
        })
        .collect()
}

/// CoViAR's training sampling of a motion representation (`get_seg_range`): frames 1 … n − 2
/// of an `frames`-long video (frame 0, an I-frame, carries no motion) in T segments, one
/// random frame in each; segment bounds rounded half to even, as NumPy's `round`.
pub fn coviar_train(frames: usize, segments: usize, rng: &mut impl Rng) -> Vec<usize> {
    let size = frames.saturating_sub(2) as f64 / segments as f64;
    let last = frames.saturating_sub(1).max(1);
    (0..segments)
        .map(|s| {
            let begin = (size * s as f64).round_ties_even() as usize;
            let end = ((size * (s + 1) as f64).round_ties_even() as usize).max(begin + 1);
            (rng.random_range(begin..end) + 1).min(last)
        })
        .collect()
}

/// CoViAR's test sampling (`_get_test_frame_index`): the centre of each of T segments of
/// frames 1 … n − 2; N clips shift the centre by a fraction of a segment as
/// [`uniform_clips`] (one clip: CoViAR's own).
pub fn coviar_test(frames: usize, segments: usize, clips: usize) -> Vec<Vec<usize>> {
    let size = frames.saturating_sub(2) as f64 / segments as f64;
    let last = frames.saturating_sub(1).max(1);
    (0..clips.max(1))
        .map(|c| {
            let offset = (c as f64 + 0.5) / clips.max(1) as f64;
            (0..segments).map(|s| ((size * (s as f64 + offset)).round_ties_even() as usize + 1).min(last)).collect()
        })
        .collect()
}

/// Each of `starts` followed by the `length − 1` frames after it, the last frame of a
/// `frames`-long video repeated past its end (TSN's loader: `if p < num_frames: p += 1`).
pub fn consecutive(starts: &[usize], length: usize, frames: usize) -> Vec<usize> {
    if length <= 1 {
        return starts.to_vec();
    }
    let last = frames.saturating_sub(1);
    starts.iter().flat_map(|&s| (0..length).map(move |i| s.saturating_add(i).min(last.max(s)))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each start is followed by the frames after it; past the end the last frame repeats.
    #[test]
    fn segments_read_consecutive_frames() {
        assert_eq!(consecutive(&[0, 4], 3, 10), [0, 1, 2, 4, 5, 6]);
        assert_eq!(consecutive(&[7, 9], 3, 10), [7, 8, 9, 9, 9, 9]);
        assert_eq!(consecutive(&[3, 1], 1, 10), [3, 1]);
        assert_eq!(consecutive(&[0, 0], 2, 1), [0, 0, 0, 0]);
        // A segment length longer than the video: starts at frame 0, never a panic.
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(tsn_train(10, 8, 64, &mut rng), [0; 8]);
        assert_eq!(tsn_test(10, 8, 64), [0; 8]);
        assert_eq!(two_clip_test(10, 8, 64), [[0; 8], [0; 8]]);
    }
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn tsn_test_takes_segment_centres() {
        // 80 frames, 8 segments: tick 10, centres 5, 15, …, 75.
        assert_eq!(tsn_test(80, 8, 1), vec![5, 15, 25, 35, 45, 55, 65, 75]);
        // 30 frames, 8 segments: tick 3.75 → int(1.875 + 3.75 i).
        assert_eq!(tsn_test(30, 8, 1), vec![1, 5, 9, 13, 16, 20, 24, 28]);
        // Not more frames than segments: the official code repeats the first frame.
        assert_eq!(tsn_test(8, 8, 1), vec![0; 8]);
        assert_eq!(tsn_test(3, 8, 1), vec![0; 8]);
    }

    #[test]
    fn tsn_train_picks_one_frame_per_segment() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let idx = tsn_train(83, 8, 1, &mut rng);
            // average duration 83 / 8 = 10: frame i lies in [10 i, 10 i + 10).
            for (i, &f) in idx.iter().enumerate() {
                assert!((10 * i..10 * i + 10).contains(&f), "segment {i} got {f}");
            }
        }
        // Fewer frames than segments (5 frames, 8 segments): all frame 0.
        assert_eq!(tsn_train(5, 8, 1, &mut rng), vec![0; 8]);
        // 8 < frames < 16 with 8 segments has average 1: frames i + 0.
        assert_eq!(tsn_train(9, 8, 1, &mut rng), (0..8).collect::<Vec<_>>());
        // average 0 but more frames than segments (new_length 3, 9 frames): sorted randoms in [0, 7).
        let v = tsn_train(9, 8, 3, &mut rng);
        assert!(v.windows(2).all(|w| w[0] <= w[1]) && v.iter().all(|&f| f < 7), "{v:?}");
    }

    #[test]
    fn two_clip_test_is_centres_then_starts() {
        assert_eq!(
            two_clip_test(80, 8, 1),
            vec![vec![5, 15, 25, 35, 45, 55, 65, 75], vec![0, 10, 20, 30, 40, 50, 60, 70]]
        );
    }

    #[test]
    fn uniform_clips_shift_within_a_segment() {
        // 80 frames, 4 segments (tick 20), 2 clips: offsets 5 and 15.
        assert_eq!(uniform_clips(80, 4, 2), vec![vec![5, 25, 45, 65], vec![15, 35, 55, 75]]);
        assert_eq!(uniform_clips(80, 4, 1), vec![vec![10, 30, 50, 70]]);
    }

    #[test]
    fn dense_sampling_windows() {
        // 100 frames, 8 × interval 8 = 64-frame window; 37 start positions; test starts spread 0..36.
        let clips = dense_test(100, 8, 8, 3);
        assert_eq!(clips[0], vec![0, 8, 16, 24, 32, 40, 48, 56]);
        assert_eq!(clips[1], vec![18, 26, 34, 42, 50, 58, 66, 74]);
        assert_eq!(clips[2], vec![36, 44, 52, 60, 68, 76, 84, 92]);
        // Shorter than the window: start 0, indices wrap modulo the length.
        assert_eq!(dense_test(20, 8, 8, 1), vec![vec![0, 8, 16, 4, 12, 0, 8, 16]]);
        let mut rng = StdRng::seed_from_u64(1);
        let v = dense_train(100, 8, 8, &mut rng);
        assert!(v[0] <= 36 && v.windows(2).all(|w| w[1] == w[0] + 8), "{v:?}");
    }

    #[test]
    fn windows_are_contiguous_and_centred() {
        // 100 frames, window 64: 37 start positions (0..=36); one window starts at 18.
        let w = windows(100, 64, 1);
        assert_eq!(w, vec![(18..82).collect::<Vec<_>>()]);
        // Two windows: centres of the halves of the start range, 9 and 27.
        let w = windows(100, 64, 2);
        assert_eq!((w[0][0], w[1][0]), (9, 27));
        assert!(w.iter().all(|c| c.len() == 64 && c.windows(2).all(|p| p[1] == p[0] + 1)));
        // Exactly one window's worth of frames: the whole video.
        assert_eq!(windows(64, 64, 1), vec![(0..64).collect::<Vec<_>>()]);
        // Shorter than the window: looped.
        assert_eq!(windows(3, 7, 1), vec![vec![0, 1, 2, 0, 1, 2, 0]]);
    }

    /// CoViAR's own numbers (`dataset.py`, GOP 12): 37 frames, 3 segments → segment size
    /// 35/3, ranges [1, 13), [13, 24), [24, 36); test centres round(35/3 · (s + ½)) + 1.
    #[test]
    fn coviar_sampling_skips_frame_zero_as_coviar() {
        assert_eq!(coviar_test(37, 3, 1), vec![vec![7, 19, 30]]);
        let mut rng = StdRng::seed_from_u64(3);
        let ranges = [1..13, 13..24, 24..36];
        let mut seen = [std::collections::BTreeSet::new(), Default::default(), Default::default()];
        for _ in 0..2000 {
            for (s, f) in coviar_train(37, 3, &mut rng).into_iter().enumerate() {
                assert!(ranges[s].contains(&f), "segment {s} got {f}");
                seen[s].insert(f);
            }
        }
        assert!(seen.iter().zip(&ranges).all(|(v, r)| v.len() == r.len()), "{seen:?}");
        // Two frames (one field): frame 1 only. Short videos repeat frames, never frame 0.
        assert_eq!(coviar_test(2, 4, 1), vec![vec![1; 4]]);
        assert_eq!(coviar_train(2, 4, &mut rng), vec![1; 4]);
        // An empty segment takes the frame after its start, as CoViAR's (here up to frame 4).
        assert!(coviar_train(5, 8, &mut rng).iter().all(|&f| (1..5).contains(&f)));
        // Half to even: 26 frames, 8 segments, size 3 → centres round(1.5)=2, round(4.5)=4, …
        assert_eq!(coviar_test(26, 8, 1)[0][..2], [3, 5]);
        assert_eq!(coviar_test(37, 3, 2), vec![vec![4, 16, 27], vec![10, 21, 33]]);
    }
}
