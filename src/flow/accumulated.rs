//! CoViAR's accumulated motion vectors (Wu et al., CVPR 2018, §3.1): a P-frame's vectors
//! say where each block was copied from in the frame before, so following them back frame
//! by frame to the group's I-frame gives each pixel's whole displacement since that I-frame,
//!
//!   D_t(p) = d_t(p) + D_{t−1}(p − d_t(p)),   D = 0 at each I-frame,
//!
//! a less noisy, longer-range motion than one frame's vectors. As CoViAR's loader
//! (`coviar_data_loader.c`), the trace is kept in whole pixels from libav's integer block
//! centres (`src`, `dst`), pixels a vector does not cover (intra blocks, unmoved blocks)
//! keep their place, and pixels whose source lies outside the frame keep their trace.
//!
//! CoViAR's videos have no B-frames. Here a B-frame is traced from the reference frames on
//! either side of it (its past vectors into the last I or P frame, its future ones into the
//! next P frame of its GOP), so it waits for that next reference; it is a reference for no
//! frame. Streams that break this model are followed only approximately: H.264 vectors from
//! an older reference (libav's export does not say which) are taken as from the last one,
//! and B-frames used as references (B-pyramids) as not. CoViAR's own encoding (MPEG-4 part
//! 2, GOP 12, no B-frames) has none of these.

use std::path::Path;

use anyhow::Result;

use super::motion_vectors::{self, FrameVectors, PictureType};
use super::plane::Plane;
use super::tvl1::Flow;

/// The traces of a video's frames, fed in display order.
pub struct Accumulator {
    w: usize,
    h: usize,
    /// For each pixel of the last reference frame, where it was in the GOP's I-frame.
    reference: Vec<(i32, i32)>,
    /// The B-frames since that reference, waiting for the next one.
    pending: Vec<FrameVectors>,
}

impl Accumulator {
    /// An accumulator for frames of `w`×`h`, starting as at an I-frame.
    pub fn new((w, h): (usize, usize)) -> Self {
        Self { w, h, reference: identity(w, h), pending: Vec::new() }
    }

    /// Takes the next frame; returns the accumulated fields D of the frames now complete, in
    /// display order: none for a B-frame (it waits for its future reference), else those of
    /// the waiting B-frames and then this frame's. D is zero at an I-frame (where the trace
    /// restarts), else each pixel's displacement from its place in the I-frame.
    pub fn push(&mut self, frame: FrameVectors) -> Vec<Flow> {
        if frame.kind == PictureType::B {
            self.pending.push(frame);
            return Vec::new();
        }
        let traced = match frame.kind {
            PictureType::I => identity(self.w, self.h),
            _ => self.trace(&self.reference, None, &frame),
        };
        // A B-frame's future reference in the same GOP; an I-frame starts a new trace.
        let future = (frame.kind == PictureType::P).then_some(traced.as_slice());
        let mut fields: Vec<Flow> =
            self.pending.iter().map(|b| self.field(&self.trace(&self.reference, future, b))).collect();
        self.pending.clear();
        fields.push(self.field(&traced));
        self.reference = traced;
        fields
    }

    /// The fields of the B-frames still waiting at the end of the video, traced from the past.
    pub fn finish(&mut self) -> Vec<Flow> {
        let pending = std::mem::take(&mut self.pending);
        pending.iter().map(|b| self.field(&self.trace(&self.reference, None, b))).collect()
    }

    /// The `past` reference's trace carried along the frame's vectors: pixel p of a block takes
    /// the trace of the reference pixel the block was copied from (in `future` for a vector
    /// from the future; such vectors are left out without one).
    fn trace(&self, past: &[(i32, i32)], future: Option<&[(i32, i32)]>, frame: &FrameVectors) -> Vec<(i32, i32)> {
        let (w, h) = (self.w as i64, self.h as i64);
        let inside = |x: i64, y: i64| (0..w).contains(&x) && (0..h).contains(&y);
        let mut traced = past.to_vec();
        for mv in &frame.vectors {
            let from = match (mv.source < 0, future) {
                (true, _) if mv.src == mv.dst => continue,
                (true, _) => past,
                (false, Some(f)) => f,
                (false, None) => continue,
            };
            let (bw, bh) = (mv.w as i64, mv.h as i64);
            for dy in -bh / 2..bh / 2 {
                for dx in -bw / 2..bw / 2 {
                    let (px, py) = (mv.dst.0 as i64 + dx, mv.dst.1 as i64 + dy);
                    let (sx, sy) = (mv.src.0 as i64 + dx, mv.src.1 as i64 + dy);
                    if inside(px, py) && inside(sx, sy) {
                        traced[(py * w + px) as usize] = from[(sy * w + sx) as usize];
                    }
                }
            }
        }
        traced
    }

    /// The displacement p − (its place in the I-frame) of every pixel.
    fn field(&self, trace: &[(i32, i32)]) -> Flow {
        let mut flow = Flow { u: Plane::zeros(self.w, self.h), v: Plane::zeros(self.w, self.h) };
        for (i, &(sx, sy)) in trace.iter().enumerate() {
            let (x, y) = ((i % self.w) as i32, (i / self.w) as i32);
            flow.u.data[i] = (x - sx) as f32;
            flow.v.data[i] = (y - sy) as f32;
        }
        flow
    }
}

/// Every field of the video at `path` in display order, to `f`: field k is frame k's own
/// vectors ([`motion_vectors::field`]) or, with `accumulate`, its trace; returns each frame's
/// picture type. What `extract-flow` stores and what a network reading a video computes.
pub fn read_fields(path: &Path, accumulate: bool, f: &mut dyn FnMut(Flow) -> Result<()>) -> Result<Vec<PictureType>> {
    let mut kinds = Vec::new();
    let mut accumulator: Option<Accumulator> = None;
    motion_vectors::read(path, &mut |size, vectors| {
        kinds.push(vectors.kind);
        if accumulate {
            accumulator.get_or_insert_with(|| Accumulator::new(size)).push(vectors).into_iter().try_for_each(&mut *f)
        } else {
            f(motion_vectors::field(&vectors, size))
        }
    })?;
    accumulator.map_or(Vec::new(), |mut a| a.finish()).into_iter().try_for_each(&mut *f)?;
    Ok(kinds)
}

fn identity(w: usize, h: usize) -> Vec<(i32, i32)> {
    (0..h).flat_map(|y| (0..w).map(move |x| (x as i32, y as i32))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::motion_vectors::MotionVector;

    /// One 4×4 block at the frame's centre, copied from `by` pixels back.
    fn moved(by: (i16, i16), kind: PictureType) -> FrameVectors {
        let dst = (8, 8);
        let src = (dst.0 - by.0, dst.1 - by.1);
        let mv = MotionVector { source: -1, w: 4, h: 4, src, dst, motion: (0, 0), scale: 1 };
        FrameVectors { vectors: vec![mv], kind }
    }

    /// A whole frame moving by (2, −1) per frame: every vector points 2, −1 back, so the
    /// trace grows by (2, −1) a frame, D_t = t·(2, −1), and restarts at the next I-frame.
    #[test]
    fn a_steady_translation_accumulates_and_restarts_at_the_i_frame() {
        let (w, h) = (32, 24);
        let whole = |kind| {
            let vectors = (0..h / 4)
                .flat_map(|by| (0..w / 4).map(move |bx| (bx, by)))
                .map(|(bx, by)| {
                    let dst = (bx as i16 * 4 + 2, by as i16 * 4 + 2);
                    MotionVector { source: -1, w: 4, h: 4, src: (dst.0 - 2, dst.1 + 1), dst, motion: (0, 0), scale: 1 }
                })
                .collect();
            FrameVectors { vectors, kind }
        };
        let mut acc = Accumulator::new((w, h));
        let i_frame = FrameVectors { vectors: vec![], kind: PictureType::I };
        assert_eq!(acc.push(i_frame.clone())[0].u.at(16, 12), 0.0);
        for t in 1..=3 {
            let f = acc.push(whole(PictureType::P)).remove(0);
            // Pixels at least 2·t from the left and t from the bottom trace back inside the frame.
            assert_eq!((f.u.at(20, 8), f.v.at(20, 8)), (2.0 * t as f32, -(t as f32)), "frame {t}");
        }
        let f = acc.push(i_frame).remove(0);
        assert!(f.u.data.iter().chain(&f.v.data).all(|&d| d == 0.0));
        assert_eq!(acc.push(whole(PictureType::P))[0].u.at(20, 8), 2.0);
    }

    /// A B-frame waits for the reference after it and is traced through its future vectors
    /// into that one's trace; it is itself no reference. At the end, waiting B-frames are
    /// traced from the past alone.
    #[test]
    fn b_frames_wait_for_their_future_reference() {
        let mut acc = Accumulator::new((16, 16));
        // I B P: the P moved 2 from the I; the B's block comes from the P, 1 back from it.
        assert_eq!(acc.push(FrameVectors { vectors: vec![], kind: PictureType::I }).len(), 1);
        let mut b = moved((-1, 0), PictureType::B);
        b.vectors[0].source = 1;
        assert!(acc.push(b).is_empty(), "a B-frame waits");
        let out = acc.push(moved((2, 0), PictureType::P));
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].u.at(8, 8), out[1].u.at(8, 8)), (1.0, 2.0), "B is 1 past the I, P 2");
        // The next P builds on the P, not the B; a B left at the end uses its past vectors.
        assert!(acc.push(moved((3, 0), PictureType::B)).is_empty());
        let end = acc.finish();
        // Its pixel (8, 8) comes from (5, 8), outside the P's moved block: 3 from the I-frame.
        assert_eq!(end[0].u.at(8, 8), 3.0);
        assert_eq!(acc.push(moved((1, 0), PictureType::P))[0].u.at(8, 8), 3.0);
    }
}
