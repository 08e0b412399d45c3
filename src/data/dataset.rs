//! A clip dataset: list entries → sampled frame indices → decoded frames (rawframes or
//! video) → group transforms → normalised floats in the layout the models take.

use std::path::PathBuf;

use anyhow::{Result, bail};
use image::{GrayImage, RgbImage};
use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::data::gop::FrameTypes;
use crate::data::list::{Entry, List};
use crate::data::live_flow::{self as live, LiveFlow};
use crate::data::rawframes::{FrameNaming, read_grey, read_rgb};
use crate::data::transform::{self, Crop, FlipMap};
use crate::data::{sampling, video};
use crate::model::modality::Input;
use crate::model::{InputSpec, Modality};

/// How frame indices are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Sampling {
    /// TSN segments: random frame per segment in training, centres (or centres + starts for
    /// two clips) at test.
    #[default]
    Tsn,
    /// Dense: `segments` frames `interval` apart in one window.
    Dense,
    /// `segments` consecutive frames (3D networks such as I3D): a random window in
    /// training, evenly spread windows (one: the centre) at test.
    Window,
    /// CoViAR's sampling of motion vectors (`extract-flow --method motion-vectors`): TSN-like
    /// segments of frames 1 … n − 2, a sampled I-frame replaced by the last frame of the GOP
    /// before it (`data::gop`); one field per segment (`--new-length 1`).
    Coviar,
}

impl Sampling {
    /// Refuses a sampling that cannot feed `input`.
    pub fn check(self, input: &Input) -> Result<()> {
        if self == Self::Coviar && (input.modality != Modality::Flow || input.frames_per_segment() != 1) {
            bail!(
                "--sampling coviar samples one motion-vector field per segment, as CoViAR: it needs \
                 --modality flow --new-length 1 (this model: {:?}, {} per segment)",
                input.modality,
                input.frames_per_segment()
            );
        }
        Ok(())
    }
}

/// Order of the sampled frames handed to the model (the temporal-reliance diagnostic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum FrameOrder {
    #[default]
    Normal,
    /// A fixed random permutation per video.
    Shuffle,
    Reverse,
}

/// Training-time or test-time processing.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// Multi-scale crop from frames scaled to short side `scale`, then an optional flip.
    Train { scale: u32, flip: bool, flip_map: FlipMap },
    /// Short side to `scale`, then `crops` crops (1, 3, 5, 10) of each of `clips` clips.
    Test { scale: u32, crops: usize, clips: usize },
}

/// Everything that turns a list entry into model input.
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub spec: InputSpec,
    /// Network input side (crop size).
    pub size: u32,
    pub segments: usize,
    pub sampling: Sampling,
    /// Dense sampling: frames between samples.
    pub interval: usize,
    pub mode: Mode,
    pub order: FrameOrder,
    /// What a segment reads: one RGB frame, `new_length` + 1 for RGB difference, or
    /// `new_length` flow fields.
    pub input: Input,
    /// How a flow input that is a video gets its flow.
    pub live_flow: LiveFlow,
}

impl Pipeline {
    /// Test-time processing with TSN sampling: frames scaled to short side `scale`, then
    /// `crops` crops of `size`² from each of `clips` clips.
    pub fn test(spec: InputSpec, size: u32, scale: u32, segments: usize, crops: usize, clips: usize) -> Self {
        Self {
            spec,
            size,
            segments,
            sampling: Sampling::Tsn,
            interval: 1,
            mode: Mode::Test { scale, crops, clips },
            order: FrameOrder::Normal,
            input: Input::RGB,
            live_flow: LiveFlow::default(),
        }
    }

    /// [`Pipeline::test`] for `model`'s input: its backbone's colour spec, segments and
    /// modality.
    pub fn for_model(model: &crate::model::ModelConfig, size: u32, scale: u32, crops: usize, clips: usize) -> Self {
        let test = Self::test(model.arch.input(), size, scale, model.segments, crops, clips);
        Self { input: model.input(), ..test }
    }

    /// Channels of one view: `segments · frames per segment · planes`.
    pub fn channels(&self) -> usize {
        self.segments * self.input.channels_per_segment()
    }

    fn flow(&self) -> bool {
        self.input.modality == Modality::Flow
    }
}

/// The decoded images of one clip: RGB frames, or flow fields as their x and y planes.
enum Images {
    Rgb(Vec<RgbImage>),
    Flow(Vec<(GrayImage, GrayImage)>),
}

impl Images {
    /// Every image's size, named for messages ("frame 4", "flow field 4 x") from `indices`.
    fn dimensions(&self, indices: &[usize]) -> Vec<(String, (u32, u32))> {
        match self {
            Self::Rgb(v) => v.iter().zip(indices).map(|(img, i)| (format!("frame {i}"), img.dimensions())).collect(),
            Self::Flow(v) => v
                .iter()
                .zip(indices)
                .flat_map(|((x, y), i)| {
                    [(format!("flow field {i} x"), x.dimensions()), (format!("flow field {i} y"), y.dimensions())]
                })
                .collect(),
        }
    }
}

/// One processed sample: `views` stacks of `(segments·frames per segment·3, size, size)` floats.
#[derive(Clone, Debug)]
pub struct Clip {
    pub data: Vec<f32>,
    pub views: usize,
    pub label: usize,
    /// The second head's label (EPIC-Kitchens' noun).
    pub noun: Option<usize>,
}

/// A list of videos or frame folders and how to read them.
#[derive(Clone, Debug)]
pub struct ClipDataset {
    pub list: List,
    pub naming: FrameNaming,
    pub pipeline: Pipeline,
}

/// Where an entry's frames come from once opened.
enum Opened {
    Frames { dir: PathBuf, start: usize, frames: usize, types: Option<FrameTypes> },
    Video { path: PathBuf, info: video::VideoInfo, types: Option<FrameTypes> },
}

impl ClipDataset {
    pub fn len(&self) -> usize {
        self.list.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.entries.is_empty()
    }

    /// "list.txt:12: ", where an entry was read, as a message prefix; empty for an entry given
    /// on the command line (line 0), whose path the message names already.
    fn at(&self, e: &Entry) -> String {
        if e.line == 0 { String::new() } else { format!("{}: ", e.origin(&self.list.file)) }
    }

    /// Sample `index` for messages: "list.txt:12 (videos/a.mp4)", or the path alone.
    pub fn describe(&self, index: usize) -> String {
        match self.list.entries.get(index) {
            Some(e) if e.line > 0 => format!("list line {} ({})", e.origin(&self.list.file), e.path.display()),
            Some(e) => e.path.display().to_string(),
            None => format!("sample {index}"),
        }
    }

    /// `err` with the list line it happened at, if the entry came from a list.
    fn locate(&self, e: &Entry, err: anyhow::Error) -> anyhow::Error {
        if e.line == 0 { err } else { err.context(format!("list line {}", e.origin(&self.list.file))) }
    }

    fn open(&self, e: &Entry) -> Result<Opened> {
        if e.is_video {
            let info = video::probe_cached(&e.path).map_err(|err| self.locate(e, err))?;
            if info.frames == 0 {
                bail!("{}video {} has no frames", self.at(e), e.path.display());
            }
            if self.pipeline.flow() && info.frames < 2 {
                bail!("{}video {} has one frame: flow needs two", self.at(e), e.path.display());
            }
            let types = (self.pipeline.sampling == Sampling::Coviar)
                .then(|| self.pipeline.live_flow.frame_types(&e.path).map_err(|err| self.locate(e, err)))
                .transpose()?;
            Ok(Opened::Video { path: e.path.clone(), info, types })
        } else {
            let frames = e.num_frames.unwrap_or(0);
            if frames == 0 {
                bail!("{}{} lists 0 frames", self.at(e), e.path.display());
            }
            let types = (self.pipeline.sampling == Sampling::Coviar)
                .then(|| FrameTypes::read(&e.path, frames).map_err(|err| self.locate(e, err)))
                .transpose()?;
            Ok(Opened::Frames { dir: e.path.clone(), start: e.start, frames, types })
        }
    }

    /// The frame indices of every test clip (or the one training clip) of a video: per
    /// segment its first frame and the `frames_per_segment − 1` after it (TSN repeats the last
    /// frame where a segment runs past the end). Shuffling permutes segments, keeping each
    /// one's frames in order; reversing reverses every frame. CoViAR's sampling picks among
    /// the `frames + 1` frames of the video whose `frames` motion fields these are.
    fn indices(&self, frames: usize, types: Option<&FrameTypes>, rng: &mut impl Rng) -> Vec<Vec<usize>> {
        let p = &self.pipeline;
        let length = p.input.frames_per_segment();
        let mut clips = match (&p.mode, p.sampling) {
            (Mode::Train { .. }, Sampling::Tsn) => vec![sampling::tsn_train(frames, p.segments, length, rng)],
            (Mode::Train { .. }, Sampling::Dense) => vec![sampling::dense_train(frames, p.segments, p.interval, rng)],
            (Mode::Test { clips: 1, .. }, Sampling::Tsn) => vec![sampling::tsn_test(frames, p.segments, length)],
            (Mode::Test { clips: 2, .. }, Sampling::Tsn) => sampling::two_clip_test(frames, p.segments, length),
            (Mode::Test { clips, .. }, Sampling::Tsn) => sampling::uniform_clips(frames, p.segments, *clips),
            (Mode::Test { clips, .. }, Sampling::Dense) => sampling::dense_test(frames, p.segments, p.interval, *clips),
            (Mode::Train { .. }, Sampling::Window) => vec![sampling::dense_train(frames, p.segments, 1, rng)],
            (Mode::Test { clips, .. }, Sampling::Window) => sampling::windows(frames, p.segments, *clips),
            (Mode::Train { .. }, Sampling::Coviar) => vec![sampling::coviar_train(frames + 1, p.segments, rng)],
            (Mode::Test { clips, .. }, Sampling::Coviar) => sampling::coviar_test(frames + 1, p.segments, *clips),
        };
        if let Some(types) = types {
            // Video frame f's field is field f − 1.
            clips.iter_mut().flatten().for_each(|f| *f = (types.motion_frame(*f) - 1).min(frames.saturating_sub(1)));
        }
        for c in &mut clips {
            if p.order == FrameOrder::Shuffle {
                c.shuffle(rng);
            }
            *c = sampling::consecutive(c, length, frames);
            if p.order == FrameOrder::Reverse {
                c.reverse();
            }
        }
        clips
    }

    /// Reads frames (or flow fields) `indices` of an opened entry, scaled to short side `short`.
    fn read(&self, e: &Entry, opened: &Opened, indices: &[usize], short: u32) -> Result<Images> {
        if self.pipeline.flow() {
            return self.read_flow(e, opened, indices, short).map(Images::Flow);
        }
        match opened {
            Opened::Video { path, info, .. } => {
                video::read_frames(path, info, indices, Some(short)).map(Images::Rgb).map_err(|err| self.locate(e, err))
            }
            Opened::Frames { dir, start, frames, .. } => {
                let mut unique: Vec<usize> = indices.to_vec();
                unique.sort_unstable();
                unique.dedup();
                let mut images = Vec::with_capacity(unique.len());
                for &i in &unique {
                    debug_assert!(i < *frames);
                    let file = self.naming.path(dir, *start, i);
                    let img = read_rgb(&file)
                        .map_err(|err| self.locate(e, err.context(format!("frame {i} of {}", dir.display()))))?;
                    let (w, h) = img.dimensions();
                    images.push(if w.min(h) == short { img } else { transform::resize_short(&img, short) });
                }
                Ok(Images::Rgb(in_order(images, &unique, indices)))
            }
        }
    }

    /// Flow fields `indices`: a flow folder's x and y images, or a video's fields computed now.
    fn read_flow(
        &self,
        e: &Entry,
        opened: &Opened,
        indices: &[usize],
        short: u32,
    ) -> Result<Vec<(GrayImage, GrayImage)>> {
        let scaled = |img: GrayImage| {
            if img.width().min(img.height()) == short { img } else { transform::resize_short(&img, short) }
        };
        let fields = match opened {
            Opened::Video { path, info, .. } => {
                self.pipeline.live_flow.read(path, info, indices).map_err(|err| self.locate(e, err))?
            }
            Opened::Frames { dir, start, .. } => {
                let mut unique: Vec<usize> = indices.to_vec();
                unique.sort_unstable();
                unique.dedup();
                let mut fields = Vec::with_capacity(unique.len());
                for &i in &unique {
                    let y_file = self.naming.y_path(dir, *start, i).ok_or_else(|| {
                        anyhow::anyhow!("flow input needs a template naming the direction, such as {{}}_{{:05d}}.jpg")
                    })?;
                    let read = |file: &std::path::Path| {
                        read_grey(file)
                            .map_err(|err| self.locate(e, err.context(format!("flow field {i} of {}", dir.display()))))
                    };
                    fields.push((read(&self.naming.path(dir, *start, i))?, read(&y_file)?));
                }
                in_order(fields, &unique, indices)
            }
        };
        Ok(fields.into_iter().map(|(x, y)| (scaled(x), scaled(y))).collect())
    }

    /// Produces sample `index` with all randomness drawn from `rng`.
    pub fn get(&self, index: usize, rng: &mut impl Rng) -> Result<Clip> {
        let e = &self.list.entries[index];
        let opened = self.open(e)?;
        let (frames, types) = match &opened {
            Opened::Frames { frames, types, .. } => (*frames, types.as_ref()),
            Opened::Video { types: Some(t), .. } => (live::fields(t.0.len()), Some(t)),
            Opened::Video { info, .. } if self.pipeline.flow() => (live::fields(info.frames), None),
            Opened::Video { info, .. } => (info.frames, None),
        };
        let clips = self.indices(frames, types, rng);
        let p = &self.pipeline;
        let plane = (p.size * p.size) as usize;
        let mut label = e.label;
        let crops_per_clip = match &p.mode {
            Mode::Train { .. } => 1,
            Mode::Test { crops, .. } => *crops,
        };
        let mut data = Vec::with_capacity(clips.len() * crops_per_clip * p.channels() * plane);
        let mut views = 0;
        for idx in &clips {
            let (scale, crops) = match &p.mode {
                Mode::Train { scale, .. } => (*scale, None),
                Mode::Test { scale, crops, .. } => (*scale, Some(*crops)),
            };
            let images = self.read(e, &opened, idx, scale)?;
            let (w, h) = same_size(&images, idx).map_err(|err| self.locate(e, err))?;
            let crops: Vec<Crop> = match (crops, &p.mode) {
                (Some(n), _) => transform::test_crops(w, h, p.size, n),
                (None, Mode::Train { flip, flip_map, .. }) => {
                    let scales: &[f64] = if p.flow() { &transform::FLOW_SCALES } else { &transform::SCALES };
                    let mut c = transform::multi_scale_crop(w, h, p.size, scales, rng);
                    if *flip && rng.random_bool(0.5) {
                        c.flip = true;
                        label = flip_map.apply(label);
                    }
                    vec![c]
                }
                (None, Mode::Test { .. }) => unreachable!(),
            };
            for crop in crops {
                match &images {
                    Images::Rgb(v) => {
                        v.iter().for_each(|img| transform::crop_normalise_append(img, crop, p.size, &p.spec, &mut data))
                    }
                    Images::Flow(v) => v.iter().for_each(|(x, y)| {
                        transform::crop_normalise_flow_append((x, y), crop, p.size, &p.spec, &mut data)
                    }),
                }
                views += 1;
            }
        }
        Ok(Clip { data, views, label, noun: e.noun })
    }
}

/// `images` of the sorted, distinct indices `unique`, in the order (and repeats) of `indices`.
fn in_order<T: Clone>(images: Vec<T>, unique: &[usize], indices: &[usize]) -> Vec<T> {
    if unique == indices {
        return images;
    }
    indices.iter().map(|i| images[unique.binary_search(i).expect("present")].clone()).collect()
}

/// The size all frames of a clip share after scaling; frames of different shapes (a folder
/// mixing extractions) are refused, naming the frames, rather than cropped out of bounds.
fn same_size(images: &Images, indices: &[usize]) -> Result<(u32, u32)> {
    let dims = images.dimensions(indices);
    let (name, first) = dims.first().cloned().ok_or_else(|| anyhow::anyhow!("no frames decoded"))?;
    if let Some((other, (w, h))) = dims.iter().find(|(_, d)| *d != first) {
        bail!(
            "images of one clip differ in shape: {name} is {}×{}, {other} is {w}×{h} (after scaling the short side)",
            first.0,
            first.1,
        );
    }
    Ok(first)
}
