//! The motion vectors compressed video already stores, the cheap motion cue of CoViAR (Wu et
//! al., CVPR 2018) and DMC-Net (Shou et al., CVPR 2019): each inter-coded block says from
//! where in a reference frame it was copied. libav's decoders export them on request
//! (`flags2 +export_mvs`) for H.264, MPEG-4 part 2, H.263 and MPEG-1/2; HEVC, VP8/9 and AV1
//! decoders do not, and such videos are refused by name. Needs the `libav` feature.
//!
//! A block predicted from a past frame at `src` and drawn at `dst` moved by `dst − src`
//! between the two: the forward displacement of its content, the same sense as optical flow.
//! Vectors predicting from a future frame (B-frames) are left out, as CoViAR uses P-frames.

use std::path::Path;

use anyhow::Result;

use super::plane::Plane;
use super::tvl1::Flow;

/// How a frame was coded, as far as motion goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PictureType {
    /// Intra-coded (libav's I and SI): no vectors; a GOP starts here.
    I,
    /// Predicted from the past (P, S, SP, or a frame libav leaves untyped): a reference
    /// the frames after it are predicted from.
    #[default]
    P,
    /// Bidirectional (B, BI): predicted from both sides, a reference for no frame.
    B,
}

impl PictureType {
    pub fn letter(self) -> char {
        match self {
            Self::I => 'I',
            Self::P => 'P',
            Self::B => 'B',
        }
    }
}

/// One block's vector, as libav's `AVMotionVector`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MotionVector {
    /// Where the reference frame lies: negative for a past frame, positive for a future one.
    pub source: i32,
    pub w: u8,
    pub h: u8,
    /// Centre of the block in the reference frame and in this frame, pixels.
    pub src: (i16, i16),
    pub dst: (i16, i16),
    /// The exact displacement `src − dst` is `motion / scale` (sub-pixel).
    pub motion: (i32, i32),
    pub scale: u16,
}

/// The vectors of one decoded frame (none for an intra-coded frame) and how it was coded.
#[derive(Clone, Debug, Default)]
pub struct FrameVectors {
    pub vectors: Vec<MotionVector>,
    pub kind: PictureType,
}

/// Streams the vectors of each frame, in display order, to `f` with the video's size (one
/// frame's vectors in memory at a time); returns the number of frames.
pub fn read(path: &Path, f: &mut dyn FnMut((usize, usize), FrameVectors) -> Result<()>) -> Result<usize> {
    crate::io::require_regular(path, "video")?;
    libav::read(path, f)
}

/// The dense displacement field of one frame: every pixel of a block predicted from a past
/// frame gets the block's `dst − src`, the rest 0.
pub fn field(frame: &FrameVectors, (w, h): (usize, usize)) -> Flow {
    let mut flow = Flow { u: Plane::zeros(w, h), v: Plane::zeros(w, h) };
    for mv in frame.vectors.iter().filter(|m| m.source < 0 && m.scale > 0) {
        let (u, v) = (-(mv.motion.0 as f32) / mv.scale as f32, -(mv.motion.1 as f32) / mv.scale as f32);
        let x0 = (mv.dst.0 as i64 - mv.w as i64 / 2).clamp(0, w as i64) as usize;
        let y0 = (mv.dst.1 as i64 - mv.h as i64 / 2).clamp(0, h as i64) as usize;
        let x1 = (mv.dst.0 as i64 + mv.w as i64 / 2).clamp(0, w as i64) as usize;
        let y1 = (mv.dst.1 as i64 + mv.h as i64 / 2).clamp(0, h as i64) as usize;
        for y in y0..y1 {
            flow.u.data[y * w + x0..y * w + x1].fill(u);
            flow.v.data[y * w + x0..y * w + x1].fill(v);
        }
    }
    flow
}

#[cfg(feature = "libav")]
mod libav {
    use std::path::Path;

    use anyhow::{Context, Result, bail};
    use ffmpeg_next as ff;

    use super::{FrameVectors, MotionVector, PictureType};

    /// Codecs whose libav decoder exports motion vectors.
    const EXPORTING: &[ff::codec::Id] = &[
        ff::codec::Id::H264,
        ff::codec::Id::MPEG4,
        ff::codec::Id::H263,
        ff::codec::Id::MPEG1VIDEO,
        ff::codec::Id::MPEG2VIDEO,
    ];

    pub fn read(path: &Path, f: &mut dyn FnMut((usize, usize), FrameVectors) -> Result<()>) -> Result<usize> {
        ff::init().context("starting libav")?;
        let mut input = ff::format::input(path).with_context(|| format!("cannot open video {}", path.display()))?;
        let stream = input
            .streams()
            .best(ff::media::Type::Video)
            .with_context(|| format!("{} has no video stream", path.display()))?;
        let index = stream.index();
        let context = ff::codec::context::Context::from_parameters(stream.parameters())?;
        let id = context.id();
        if !EXPORTING.contains(&id) {
            bail!(
                "{} is {id:?}: its decoder stores no motion vectors libav exports (H.264, MPEG-4 part 2, H.263, MPEG-1/2 do)",
                path.display()
            );
        }
        let codec = ff::decoder::find(id).with_context(|| format!("no libav decoder for {id:?}"))?;
        let mut options = ff::Dictionary::new();
        options.set("flags2", "+export_mvs");
        let mut decoder = context.decoder().open_as_with(codec, options)?.video()?;
        let size = (decoder.width() as usize, decoder.height() as usize);
        if (size.0 as u64) * (size.1 as u64) > crate::limits::MAX_FRAME_PIXELS || size.0 == 0 || size.1 == 0 {
            bail!("{} declares frames of {}×{}: not a size gateshift reads", path.display(), size.0, size.1);
        }
        let mut count = 0usize;
        let mut frame = ff::frame::Video::empty();
        let mut drain = |decoder: &mut ff::decoder::Video| -> Result<()> {
            while decoder.receive_frame(&mut frame).is_ok() {
                count += 1;
                f(size, vectors(&frame))?;
            }
            Ok(())
        };
        for (s, packet) in input.packets() {
            if s.index() == index {
                decoder.send_packet(&packet).with_context(|| format!("decoding {}", path.display()))?;
                drain(&mut decoder)?;
            }
        }
        decoder.send_eof()?;
        drain(&mut decoder)?;
        if count == 0 {
            bail!("{} decoded to no frame", path.display());
        }
        Ok(count)
    }

    /// The `AVMotionVector` records of a frame's side data, read field by field at their
    /// offsets in libav's struct.
    fn vectors(frame: &ff::frame::Video) -> FrameVectors {
        use ff::ffi::AVMotionVector as Mv;
        use ff::picture::Type;
        use std::mem::{offset_of, size_of};
        let kind = match frame.kind() {
            Type::I | Type::SI => PictureType::I,
            Type::B | Type::BI => PictureType::B,
            _ => PictureType::P,
        };
        let Some(data) = frame.side_data(ff::frame::side_data::Type::MotionVectors) else {
            return FrameVectors { vectors: Vec::new(), kind };
        };
        let bytes = data.data();
        let i16_at = |r: &[u8], o: usize| i16::from_ne_bytes([r[o], r[o + 1]]);
        let i32_at = |r: &[u8], o: usize| i32::from_ne_bytes([r[o], r[o + 1], r[o + 2], r[o + 3]]);
        let vectors = bytes
            .chunks_exact(size_of::<Mv>())
            .map(|r| MotionVector {
                source: i32_at(r, offset_of!(Mv, source)),
                w: r[offset_of!(Mv, w)],
                h: r[offset_of!(Mv, h)],
                src: (i16_at(r, offset_of!(Mv, src_x)), i16_at(r, offset_of!(Mv, src_y))),
                dst: (i16_at(r, offset_of!(Mv, dst_x)), i16_at(r, offset_of!(Mv, dst_y))),
                motion: (i32_at(r, offset_of!(Mv, motion_x)), i32_at(r, offset_of!(Mv, motion_y))),
                scale: u16::from_ne_bytes([r[offset_of!(Mv, motion_scale)], r[offset_of!(Mv, motion_scale) + 1]]),
            })
            .collect();
        FrameVectors { vectors, kind }
    }
}

#[cfg(not(feature = "libav"))]
mod libav {
    use std::path::Path;

    use anyhow::{Result, bail};

    use super::FrameVectors;

    pub fn read(path: &Path, _: &mut dyn FnMut((usize, usize), FrameVectors) -> Result<()>) -> Result<usize> {
        bail!(
            "reading the motion vectors of {} needs libav: this build has no `libav` feature \
             (scripts/setup.sh installs libavcodec-dev, libavformat-dev, libavutil-dev; then cargo build --release --features libav)",
            path.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_from_the_past_fills_its_area_with_its_displacement() {
        let mv = MotionVector { source: -1, w: 4, h: 4, src: (4, 5), dst: (6, 4), motion: (-8, 4), scale: 4 };
        let future = MotionVector { source: 1, dst: (2, 2), ..mv };
        let f = field(&FrameVectors { vectors: vec![mv, future], kind: PictureType::B }, (10, 8));
        // motion/scale = src − dst = (−2, 1): the content moved (2, −1).
        assert_eq!((f.u.at(4, 2), f.v.at(4, 2), f.u.at(7, 5)), (2.0, -1.0, 2.0));
        assert_eq!((f.u.at(8, 2), f.u.at(1, 1), f.u.at(3, 6)), (0.0, 0.0, 0.0));
    }
}
