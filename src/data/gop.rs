//! The picture types of a compressed video's frames (I, P, B), stored beside its motion
//! vectors, and CoViAR's rule for sampling by them (Wu et al., CVPR 2018, `get_gop_pos`):
//! an I-frame carries no motion, so a sampled I-frame is replaced by the last frame of the
//! group of pictures (GOP) before it.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// The file `extract-flow --method motion-vectors` writes into each folder: one letter per
/// decoded frame of the video, in display order (`IPPPPPPPPPPPIPP…`).
pub const FILE: &str = "frame_types.txt";

pub use crate::flow::motion_vectors::PictureType;

/// The picture types of every frame of one video.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FrameTypes(pub Vec<PictureType>);

impl FrameTypes {
    /// Writes the types into `dir`'s [`FILE`].
    pub fn write(&self, dir: &Path) -> Result<()> {
        let mut text: String = self.0.iter().map(|t| t.letter()).collect();
        text.push('\n');
        let path = dir.join(FILE);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Reads the types of a motion-vector folder holding `fields` fields (`fields + 1` frames).
    pub fn read(dir: &Path, fields: usize) -> Result<Self> {
        let path = dir.join(FILE);
        if !path.exists() {
            bail!(
                "{} is missing: GOP sampling needs the picture types that `gateshift data extract-flow \
                 --method motion-vectors` writes beside the vectors (optical flow has none; folders \
                 extracted by an older gateshift lack them: extract them again)",
                path.display()
            );
        }
        // One letter a frame and a line end: a larger file is not one, and is not read whole.
        let size = crate::io::open_regular(&path, "picture-type file")?.metadata()?.len();
        if size > fields as u64 + 3 {
            bail!(
                "{} holds {size} bytes, more than the types of the {} frames its folder is listed with",
                path.display(),
                fields + 1
            );
        }
        let bytes = crate::io::read_regular(&path, "picture-type file")?;
        let types = parse(&bytes, &path)?;
        if types.0.len() != fields + 1 {
            bail!(
                "{} holds the types of {} frame(s), but its folder is listed with {fields} field(s), \
                 which come from {} frames: the list and the folder disagree",
                path.display(),
                types.0.len(),
                fields + 1
            );
        }
        Ok(types)
    }

    /// CoViAR's `get_gop_pos` for a P-frame representation: frame `f` itself, or, where `f` is
    /// an I-frame, the last frame before it that is not (the previous GOP's last frame). Frame
    /// 0 is never returned; an I-frame with none but I-frames before it is kept (its field is 0).
    pub fn motion_frame(&self, f: usize) -> usize {
        let mut g = f;
        while g > 1 && self.0.get(g) == Some(&PictureType::I) {
            g -= 1;
        }
        if self.0.get(g) == Some(&PictureType::I) { f.max(1) } else { g.max(1) }
    }
}

/// The letters of a picture-type file; anything else is refused with its place.
fn parse(bytes: &[u8], path: &Path) -> Result<FrameTypes> {
    let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let mut types = Vec::with_capacity(text.len());
    for (column, &b) in text.iter().enumerate() {
        types.push(match b {
            b'I' => PictureType::I,
            b'P' => PictureType::P,
            b'B' => PictureType::B,
            _ => bail!(
                "{}:1:{}: {:?} is not a picture type (one line of I, P and B, one letter per frame)",
                path.display(),
                column + 1,
                char::from(b)
            ),
        });
    }
    if types.is_empty() {
        bail!("{} is empty: it should hold one letter (I, P or B) per frame", path.display());
    }
    Ok(FrameTypes(types))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(s: &str) -> FrameTypes {
        parse(s.as_bytes(), Path::new("t")).unwrap()
    }

    /// A sampled I-frame moves to the last frame of the GOP before it, as CoViAR's
    /// `get_gop_pos` (GOP 12: frame 12 → 11); other frames stay.
    #[test]
    fn an_i_frame_gives_way_to_the_frame_before_it() {
        let t = types(&("IPPPPPPPPPPP".repeat(3)));
        assert_eq!((t.motion_frame(12), t.motion_frame(24), t.motion_frame(13), t.motion_frame(5)), (11, 23, 13, 5));
        // Two I-frames in a row walk back over both; B-frames are kept.
        let t = types("IPBPIIPB");
        assert_eq!((t.motion_frame(5), t.motion_frame(4), t.motion_frame(2), t.motion_frame(7)), (3, 3, 2, 7));
        // Only I-frames before: kept, never frame 0.
        let t = types("IIIP");
        assert_eq!((t.motion_frame(2), t.motion_frame(0), t.motion_frame(3)), (2, 1, 3));
    }

    #[test]
    fn bad_picture_type_files_are_refused_with_their_place() {
        let e = parse(b"IPPXP\n", Path::new("f.txt")).unwrap_err().to_string();
        assert!(e.contains("f.txt:1:4") && e.contains("'X'"), "{e}");
        assert!(parse(b"", Path::new("f")).is_err());
        assert!(parse(b"IPP\n\n", Path::new("f")).is_err());
        assert_eq!(types("IPB\n").0, [PictureType::I, PictureType::P, PictureType::B]);
        assert_eq!(types("IPB\r\n").0.len(), 3);
    }

    #[test]
    fn the_file_must_match_the_listed_fields() {
        let dir = std::env::temp_dir().join(format!("gateshift-gop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = FrameTypes::read(&dir, 3).unwrap_err().to_string();
        assert!(e.contains("frame_types.txt is missing") && e.contains("motion-vectors"), "{e}");
        types("IPPP").write(&dir).unwrap();
        assert_eq!(FrameTypes::read(&dir, 3).unwrap(), types("IPPP"));
        let e = FrameTypes::read(&dir, 5).unwrap_err().to_string();
        assert!(e.contains("4 frame(s)") && e.contains("5 field(s)"), "{e}");
        let e = FrameTypes::read(&dir, 1).unwrap_err().to_string();
        assert!(e.contains("holds 5 bytes"), "{e}");
        // A directory or a FIFO in its place: refused without blocking.
        std::fs::remove_file(dir.join(FILE)).unwrap();
        std::fs::create_dir(dir.join(FILE)).unwrap();
        assert!(FrameTypes::read(&dir, 3).unwrap_err().to_string().contains("not a regular file"));
        std::fs::remove_dir(dir.join(FILE)).unwrap();
        let fifo = std::ffi::CString::new(dir.join(FILE).to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(FrameTypes::read(&dir, 3).unwrap_err().to_string().contains("not a regular file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
