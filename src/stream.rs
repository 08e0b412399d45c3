//! Streaming inference: class scores over sliding windows of the most recent frames of a live
//! or recorded frame sequence, as the frames arrive. A producer (a decoder thread) hands over
//! frames already cropped and normalised; [`Schedule`] says which windows are scored; the
//! model sees each window as a whole clip — TSN test sampling of its segments for the
//! recognizers (GSM, TSM and GSF mix frames at every layer, so nothing is reused between
//! windows), every frame for I3D. Online (`--online`), a causal recognizer scores every frame
//! as it arrives with one frame's forward instead (`infer::online`).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};

use crate::data::sampling::{tsn_test, windows};
use crate::model::Recognizer;
use crate::model::i3d::I3d;

/// Which windows are scored: every `stride` frames the last `window` frames, from the first
/// moment `window` frames have arrived; at the end of the input the last `window` frames if
/// that window was not scored yet (all frames, when fewer arrived).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub window: usize,
    pub stride: usize,
}

impl Schedule {
    pub fn new(window: usize, stride: usize) -> Result<Self> {
        if window == 0 || stride == 0 {
            bail!("--window and --stride must be at least 1 (got {window} and {stride})");
        }
        Ok(Self { window, stride })
    }

    /// The window scored once `seen` frames have arrived, if one is due then.
    pub fn due(&self, seen: usize) -> Option<Range<usize>> {
        (seen >= self.window && (seen - self.window).is_multiple_of(self.stride)).then(|| seen - self.window..seen)
    }

    /// The window scored when the input ends after `seen` frames, the last scored window
    /// having ended at `last_end`.
    pub fn last(&self, seen: usize, last_end: Option<usize>) -> Option<Range<usize>> {
        (seen > 0 && last_end != Some(seen)).then(|| seen.saturating_sub(self.window)..seen)
    }
}

/// The most recent frames, by frame index.
struct Recent {
    frames: VecDeque<Vec<f32>>,
    capacity: usize,
    seen: usize,
}

impl Recent {
    fn push(&mut self, frame: Vec<f32>) {
        if self.frames.len() == self.capacity {
            self.frames.pop_front();
        }
        self.frames.push_back(frame);
        self.seen += 1;
    }

    /// Frames `range`, which must still be held.
    fn get(&self, range: Range<usize>) -> Vec<&[f32]> {
        let first = self.seen - self.frames.len();
        assert!(range.start >= first && range.end <= self.seen, "frames {range:?} no longer held");
        range.map(|i| self.frames[i - first].as_slice()).collect()
    }
}

/// One scored window.
#[derive(Clone, Debug)]
pub struct Scored {
    /// Frame indices of the window, from the start of the input.
    pub frames: Range<usize>,
    /// Class probabilities.
    pub probs: Vec<f32>,
    /// Time the model took for this window.
    pub latency: Duration,
    /// Due windows passed over before this one to catch up with the input (`latest`).
    pub skipped: usize,
}

/// What a whole stream did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub frames: usize,
    pub windows: usize,
    pub skipped: usize,
    /// Model time per scored window.
    pub latencies: Vec<Duration>,
}

/// Scores the windows of `schedule` over the frames arriving on `frames` (each a
/// preprocessed frame, or the producer's error, which ends the stream with that error) and
/// hands each result to `emit` as soon as it exists. With `latest`, a window is scored only
/// if no later one is already due among the frames that arrived meanwhile: a live source
/// faster than the model is followed with the freshest window instead of falling behind.
pub fn run(
    frames: &Receiver<Result<Vec<f32>>>,
    schedule: Schedule,
    latest: bool,
    mut score: impl FnMut(&[&[f32]]) -> Result<Vec<f32>>,
    mut emit: impl FnMut(&Scored) -> Result<()>,
) -> Result<Summary> {
    // The most recent `window` frames: every due window is scored from them, or (with
    // `latest`, once later frames arrive before it is scored) from a copy taken then, so
    // memory stays two windows whatever the stride.
    let capacity = schedule.window;
    let mut recent = Recent { frames: VecDeque::with_capacity(capacity), capacity, seen: 0 };
    let mut summary = Summary::default();
    let mut last_end = None;
    let mut scored = |range: Range<usize>, frames: &[&[f32]], skipped: usize, summary: &mut Summary| -> Result<()> {
        let start = Instant::now();
        let probs = score(frames)?;
        let result = Scored { frames: range, probs, latency: start.elapsed(), skipped };
        summary.windows += 1;
        summary.skipped += skipped;
        summary.latencies.push(result.latency);
        emit(&result)
    };
    while let Ok(frame) = frames.recv() {
        recent.push(frame?);
        let Some(mut due) = schedule.due(recent.seen) else { continue };
        let (mut skipped, mut held) = (0, None::<Vec<Vec<f32>>>);
        if latest {
            while let Ok(frame) = frames.try_recv() {
                if held.is_none() {
                    held = Some(recent.get(due.clone()).into_iter().map(<[f32]>::to_vec).collect());
                }
                recent.push(frame?);
                if let Some(later) = schedule.due(recent.seen) {
                    (due, held) = (later, None);
                    skipped += 1;
                }
            }
        }
        last_end = Some(due.end);
        match &held {
            Some(copy) => scored(due, &copy.iter().map(Vec::as_slice).collect::<Vec<_>>(), skipped, &mut summary)?,
            None => scored(due.clone(), &recent.get(due), skipped, &mut summary)?,
        }
    }
    summary.frames = recent.seen;
    if let Some(range) = schedule.last(recent.seen, last_end) {
        scored(range.clone(), &recent.get(range), 0, &mut summary)?;
    }
    Ok(summary)
}

/// A model that scores a window of frames, each `(3, size, size)` normalised for it.
pub enum WindowModel {
    /// A TSN-style recognizer: its `segments` frames at the segment centres of the window
    /// (the test sampling of `gateshift test` and `predict`), one view.
    Recognizer(Box<Recognizer>, crate::model::ModelConfig),
    /// I3D: `length` consecutive frames — the window, looped if shorter (as `predict` does).
    I3d { model: Box<I3d>, length: usize },
}

impl WindowModel {
    /// Class probabilities for `frames`.
    pub fn score(&self, frames: &[&[f32]], size: usize, device: &Device) -> Vec<f32> {
        let (indices, shape_t) = match self {
            Self::Recognizer(m, _) => {
                // Per segment its frame, or (RGB difference) its L + 1 consecutive frames.
                let length = m.input.frames_per_segment();
                let starts = tsn_test(frames.len(), m.num_segments, length);
                (crate::data::sampling::consecutive(&starts, length, frames.len()), m.num_segments * length)
            }
            Self::I3d { length, .. } => (windows(frames.len(), *length, 1).remove(0), *length),
        };
        let plane = 3 * size * size;
        let mut data = Vec::with_capacity(indices.len() * plane);
        for &i in &indices {
            assert_eq!(frames[i].len(), plane, "frame of {} values, expected 3·{size}²", frames[i].len());
            data.extend_from_slice(frames[i]);
        }
        let logits = match self {
            Self::Recognizer(m, _) => {
                m.forward(Tensor::<4>::from_data(TensorData::new(data, [1, shape_t * 3, size, size]), device))
            }
            Self::I3d { model, .. } => {
                let x = Tensor::<5>::from_data(TensorData::new(data, [1, shape_t, 3, size, size]), device);
                model.forward(x.permute([0, 2, 1, 3, 4]))
            }
        };
        let probs = softmax(logits, 1).into_data().convert::<f32>();
        probs.try_into_vec::<f32>().expect("float32 after convert")
    }
}

/// Class probabilities of the next frame `(3, size, size)` (normalised for the model) of an
/// online stream (`stream --online`).
pub fn score_online(
    online: &mut crate::infer::online::Online,
    frame: &[f32],
    size: usize,
    device: &Device,
) -> Vec<f32> {
    assert_eq!(frame.len(), 3 * size * size, "frame of {} values, expected 3·{size}²", frame.len());
    let x = Tensor::<4>::from_data(TensorData::new(frame.to_vec(), [1, 3, size, size]), device);
    let probs = softmax(online.push(x), 1).into_data().convert::<f32>();
    probs.try_into_vec::<f32>().expect("float32 after convert")
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::sync_channel;

    use super::*;

    #[test]
    fn schedule_windows() {
        let s = Schedule::new(4, 2).unwrap();
        let due: Vec<_> = (0..=11).filter_map(|n| s.due(n)).collect();
        assert_eq!(due, vec![0..4, 2..6, 4..8, 6..10]);
        assert_eq!(s.last(10, Some(10)), None);
        assert_eq!(s.last(11, Some(10)), Some(7..11));
        // Shorter than a window: everything once, at the end.
        assert_eq!(s.last(3, None), Some(0..3));
        assert_eq!(s.last(0, None), None);
        assert!(Schedule::new(0, 1).is_err() && Schedule::new(1, 0).is_err());
    }

    /// Frames whose single value is their index; the "model" returns the window's indices.
    fn stream(n: usize, schedule: Schedule, latest: bool, prefill: bool) -> (Vec<Scored>, Summary) {
        let (tx, rx) = sync_channel(n.max(1));
        let producer = move || {
            for i in 0..n {
                tx.send(Ok(vec![i as f32])).unwrap();
            }
        };
        // Prefilled: every frame is waiting before the first window is scored (a source
        // faster than the model).
        let handle = if prefill {
            producer();
            drop(producer); // closes the channel
            None
        } else {
            Some(std::thread::spawn(producer))
        };
        let mut out = Vec::new();
        let score = |w: &[&[f32]]| Ok(w.iter().map(|f| f[0]).collect());
        let summary = run(&rx, schedule, latest, score, |s| {
            out.push(s.clone());
            Ok(())
        })
        .unwrap();
        if let Some(h) = handle {
            h.join().unwrap();
        }
        (out, summary)
    }

    #[test]
    fn every_due_window_is_scored_with_its_frames() {
        let (out, summary) = stream(11, Schedule::new(4, 3).unwrap(), false, false);
        let ranges: Vec<_> = out.iter().map(|s| s.frames.clone()).collect();
        assert_eq!(ranges, vec![0..4, 3..7, 6..10, 7..11]);
        for s in &out {
            let expected: Vec<f32> = s.frames.clone().map(|i| i as f32).collect();
            assert_eq!(s.probs, expected);
        }
        assert_eq!((summary.frames, summary.windows, summary.skipped), (11, 4, 0));
    }

    #[test]
    fn latest_skips_to_the_freshest_window() {
        let (out, summary) = stream(12, Schedule::new(4, 2).unwrap(), true, true);
        // All 12 frames wait when the first window (0..4) is due: it is passed over for
        // 8..12, the last due one, which holds the right frames.
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].frames, 8..12);
        assert_eq!(out[0].probs, vec![8.0, 9.0, 10.0, 11.0]);
        assert_eq!((out[0].skipped, summary.skipped, summary.frames), (4, 4, 12));
        // A stride far beyond the window: windows 0..2, 5..7, 10..12; frames 12 and 13 arrive
        // after the last due one, which is scored from its copy (the two most recent frames
        // are then 12 and 13), then the tail 12..14.
        let (out, _) = stream(14, Schedule::new(2, 5).unwrap(), true, true);
        let got: Vec<_> = out.iter().map(|s| (s.frames.clone(), s.probs.clone())).collect();
        assert_eq!(got, vec![(10..12, vec![10.0, 11.0]), (12..14, vec![12.0, 13.0])]);
    }

    #[test]
    fn a_producer_error_ends_the_stream() {
        let (tx, rx) = sync_channel(4);
        tx.send(Ok(vec![0.0])).unwrap();
        tx.send(Err(anyhow::anyhow!("cannot decode frame 1 of clip.mp4"))).unwrap();
        drop(tx);
        let err = run(&rx, Schedule::new(1, 1).unwrap(), false, |_| Ok(vec![1.0]), |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("clip.mp4"), "{err}");
    }
}
