//! Dataset list files, in the formats the official GSM/TSM code and mmaction2 read:
//! - rawframes: `<dir> <num_frames> <label>`;
//! - rawframes with offset (mmaction2): `<dir> <start> <num_frames> <label>`;
//! - videos: `<path> <label>`;
//! - segments with two labels (EPIC-Kitchens' verb and noun): `<dir> <start> <num_frames>
//!   <verb> <noun>`.
//!
//! Fields are whitespace separated and read from the right, so paths may contain spaces.
//! CRLF line ends and blank lines are accepted; anything else malformed is an error naming
//! the file and line.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::limits;

/// Which list layout a file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ListFormat {
    /// Decide from the first entry: a video file extension means `video`, four fields with
    /// three trailing integers mean `frames-offset`, five with four `verb-noun`, else `frames`.
    Auto,
    Frames,
    FramesOffset,
    Video,
    /// `<dir> <start> <num_frames> <verb> <noun>`: a segment of a recording, two heads.
    VerbNoun,
}

/// Container extensions recognised as videos by `auto`.
pub const VIDEO_EXTENSIONS: &[&str] = &["mp4", "avi", "mkv", "webm", "mov", "m4v", "mpg", "mpeg", "flv", "wmv"];

/// One list entry: a frame folder or video file, with its label and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The folder or file, joined with the dataset root.
    pub path: PathBuf,
    /// First frame offset (mmaction2 offset form; 0 otherwise).
    pub start: usize,
    /// Frame count from the list (videos: `None`, counted when opened).
    pub num_frames: Option<usize>,
    pub label: usize,
    /// The second head's label (EPIC-Kitchens' noun; `label` is the verb).
    pub noun: Option<usize>,
    /// 1-based line number in the list file; 0 for an input given on the command line.
    pub line: usize,
    pub is_video: bool,
}

impl Entry {
    /// "list.txt:12" — where this entry was read, for error messages.
    pub fn origin(&self, list: &Path) -> String {
        format!("{}:{}", list.display(), self.line)
    }
}

/// A parsed list file.
#[derive(Clone, Debug)]
pub struct List {
    pub file: PathBuf,
    pub format: ListFormat,
    pub entries: Vec<Entry>,
}

impl List {
    /// Reads `file`; relative entry paths are joined with `root`. With `classes`, labels
    /// must lie in `0..classes`.
    pub fn read(file: &Path, root: Option<&Path>, format: ListFormat, classes: Option<usize>) -> Result<Self> {
        let bytes = crate::io::read_regular(file, "list file")?;
        let text = String::from_utf8(bytes).map_err(|e| {
            anyhow::anyhow!("list file {} is not UTF-8 (byte {})", file.display(), e.utf8_error().valid_up_to())
        })?;
        Self::parse(&text, file, root, format, classes)
    }

    /// Parses list text; `file` is only used in messages.
    pub fn parse(
        text: &str,
        file: &Path,
        root: Option<&Path>,
        format: ListFormat,
        classes: Option<usize>,
    ) -> Result<Self> {
        let mut format = format;
        let mut entries = Vec::new();
        for (i, raw) in text.split('\n').enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim().is_empty() {
                continue;
            }
            let at = || format!("{}:{}", file.display(), i + 1);
            if format == ListFormat::Auto {
                format = detect(line);
            }
            let mut entry =
                parse_line(line, format).with_context(|| format!("{}: malformed list line {line:?}", at()))?;
            entry.line = i + 1;
            if let Some(k) = classes
                && entry.label >= k
            {
                bail!("{}: label {} is out of range for {k} classes", at(), entry.label);
            }
            if let Some(root) = root
                && entry.path.is_relative()
            {
                entry.path = root.join(&entry.path);
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            bail!("list file {} has no entries", file.display());
        }
        Ok(Self { file: file.to_path_buf(), format, entries })
    }

    /// Largest label + 1.
    pub fn num_classes(&self) -> usize {
        self.entries.iter().map(|e| e.label + 1).max().unwrap_or(0)
    }

    /// Checks that every entry carries a noun label below `nouns` when the model has a
    /// second head (`nouns` > 0), and none when it has not; the error names the line.
    pub fn check_nouns(&self, nouns: usize) -> Result<()> {
        for e in &self.entries {
            let at = || e.origin(&self.file);
            match (e.noun, nouns) {
                (Some(n), k) if k > 0 && n >= k => bail!("{}: noun {n} is out of range for {k} noun classes", at()),
                (None, k) if k > 0 => {
                    bail!(
                        "{}: no noun label: a two-head model reads `<dir> <start> <frames> <verb> <noun>` lines",
                        at()
                    )
                }
                (Some(_), 0) => bail!("{}: a verb-noun line, but the model has one head (set noun_classes)", at()),
                _ => {}
            }
        }
        Ok(())
    }
}

fn is_video_path(p: &str) -> bool {
    Path::new(p)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn detect(line: &str) -> ListFormat {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let int = |s: &&str| s.parse::<usize>().is_ok();
    if fields.len() == 2 || is_video_path(&fields[..fields.len().saturating_sub(1)].join(" ")) {
        ListFormat::Video
    } else if fields.len() == 4 && fields[1..].iter().all(int) {
        ListFormat::FramesOffset
    } else if fields.len() == 5 && fields[1..].iter().all(int) {
        ListFormat::VerbNoun
    } else {
        ListFormat::Frames
    }
}

/// Splits `n` integer fields off the right of `line`, returning the rest (the path) too.
fn split_right(line: &str, n: usize) -> Result<(String, Vec<usize>)> {
    let mut rest = line.trim_end();
    let mut nums = Vec::with_capacity(n);
    for k in 0..n {
        let cut = rest
            .rfind(char::is_whitespace)
            .ok_or_else(|| anyhow::anyhow!("expected a path and {n} integer field(s), found {} field(s)", k + 1))?;
        let field = &rest[cut + 1..];
        let v = field.parse::<usize>().map_err(|_| anyhow::anyhow!("field {field:?} is not a non-negative integer"))?;
        nums.push(v);
        rest = rest[..cut].trim_end();
    }
    nums.reverse();
    let path = rest.trim_start();
    if path.is_empty() {
        bail!("missing path");
    }
    Ok((path.to_string(), nums))
}

fn parse_line(line: &str, format: ListFormat) -> Result<Entry> {
    let mut noun = None;
    let (path, start, num_frames, label, is_video) = match format {
        ListFormat::Video => {
            let (p, n) = split_right(line, 1)?;
            (p, 0, None, n[0], true)
        }
        ListFormat::VerbNoun => {
            let (p, n) = split_right(line, 4)?;
            noun = Some(n[3]);
            (p, n[0], Some(n[1]), n[2], false)
        }
        ListFormat::Frames | ListFormat::Auto => {
            let (p, n) = split_right(line, 2)?;
            if p.split_whitespace().any(|f| f.parse::<i64>().is_ok()) && p.split_whitespace().count() > 1 {
                bail!("too many fields for `<dir> <num_frames> <label>`");
            }
            (p, 0, Some(n[0]), n[1], false)
        }
        ListFormat::FramesOffset => {
            let (p, n) = split_right(line, 3)?;
            (p, n[0], Some(n[1]), n[2], false)
        }
    };
    // Counts that size loops and buffers are bounded here, where the line can be named.
    limits::at_most("frame offset", start, limits::MAX_LIST_FRAMES)?;
    if let Some(n) = num_frames {
        limits::at_most("frame count", n, limits::MAX_LIST_FRAMES)?;
    }
    if let Some(big) = [Some(label), noun].into_iter().flatten().find(|&l| l >= limits::MAX_CLASSES) {
        bail!("label {big} is beyond the largest supported class count ({})", limits::MAX_CLASSES);
    }
    Ok(Entry { path: PathBuf::from(path), start, num_frames, label, noun, line: 0, is_video })
}

/// Reads a class-name file: one name per line, line k names class k (blank lines are errors).
pub fn read_class_names(file: &Path) -> Result<Vec<String>> {
    let bytes = crate::io::read_regular(file, "class-name file")?;
    let text = String::from_utf8(bytes).with_context(|| format!("class-name file {} is not UTF-8", file.display()))?;
    let mut names = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let name = raw.trim_end_matches('\r').trim();
        if name.is_empty() {
            if text.lines().skip(i).all(|l| l.trim().is_empty()) {
                break;
            }
            bail!("{}:{}: empty class name", file.display(), i + 1);
        }
        names.push(name.to_string());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, format: ListFormat) -> Result<List> {
        List::parse(text, Path::new("l.txt"), Some(Path::new("/data")), format, Some(10))
    }

    #[test]
    fn reads_the_three_layouts() {
        let l = parse("a/b 30 2\r\n\nc 12 9\n", ListFormat::Auto).unwrap();
        assert_eq!(l.format, ListFormat::Frames);
        assert_eq!(l.entries[0].path, PathBuf::from("/data/a/b"));
        assert_eq!((l.entries[0].num_frames, l.entries[0].label, l.entries[0].line), (Some(30), 2, 1));
        assert_eq!(l.entries[1].line, 3);
        let l = parse("x 5 30 1\n", ListFormat::Auto).unwrap();
        assert_eq!(l.format, ListFormat::FramesOffset);
        assert_eq!((l.entries[0].start, l.entries[0].num_frames, l.entries[0].label), (5, Some(30), 1));
        let l = parse("clips/My Video 1.mp4 3\n", ListFormat::Auto).unwrap();
        assert_eq!(l.format, ListFormat::Video);
        assert_eq!(l.entries[0].path, PathBuf::from("/data/clips/My Video 1.mp4"));
        assert!(l.entries[0].is_video);
    }

    #[test]
    fn verb_noun_segments() {
        let l = parse("P01/rgb_frames/P01_01 30 12 4 7\n", ListFormat::Auto).unwrap();
        assert_eq!(l.format, ListFormat::VerbNoun);
        let e = &l.entries[0];
        assert_eq!((e.start, e.num_frames, e.label, e.noun), (30, Some(12), 4, Some(7)));
        assert!(l.check_nouns(8).is_ok());
        assert!(format!("{:#}", l.check_nouns(7).unwrap_err()).contains("l.txt:1"));
        assert!(l.check_nouns(0).is_err());
        let one = parse("a 3 1\n", ListFormat::Auto).unwrap();
        assert!(one.check_nouns(0).is_ok() && format!("{:#}", one.check_nouns(5).unwrap_err()).contains("no noun"));
        assert!(parse("a 1 2 3 x\n", ListFormat::VerbNoun).is_err());
    }

    #[test]
    fn path_with_spaces_in_frames_list() {
        let l = parse("my clip 30 2\n", ListFormat::Frames).unwrap();
        assert_eq!(l.entries[0].path, PathBuf::from("/data/my clip"));
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let e = parse("a 30 2\nb 30\n", ListFormat::Frames).unwrap_err();
        assert!(format!("{e:#}").contains("l.txt:2"), "{e:#}");
        let e = parse("a 30 x\n", ListFormat::Frames).unwrap_err();
        assert!(format!("{e:#}").contains("l.txt:1") && format!("{e:#}").contains("\"x\""), "{e:#}");
        let e = parse("a 30 10\n", ListFormat::Frames).unwrap_err();
        assert!(format!("{e:#}").contains("out of range"), "{e:#}");
        let e = parse("a 3 30 2\n", ListFormat::Frames).unwrap_err();
        assert!(format!("{e:#}").contains("too many fields"), "{e:#}");
        let e = parse("a -3 2\n", ListFormat::Frames).unwrap_err();
        assert!(format!("{e:#}").contains("l.txt:1"), "{e:#}");
        for huge in ["a 18446744073709551615 2\n", "a 100000001 2\n", "a 3 100000 \n", "a 99999999999 5 1\n"] {
            let e = List::parse(huge, Path::new("l.txt"), None, ListFormat::Auto, None).unwrap_err();
            assert!(format!("{e:#}").contains("l.txt:1"), "{huge:?}: {e:#}");
        }
        let e = parse("\n\r\n", ListFormat::Auto).unwrap_err();
        assert!(format!("{e:#}").contains("no entries"), "{e:#}");
    }
}
