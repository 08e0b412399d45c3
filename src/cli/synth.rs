//! `gateshift synth`: writes the time-reversal-pairs dataset (see `gateshift::synth`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use gateshift::synth::{self, SynthConfig, sources::Sources};

#[derive(Args, Debug, Clone)]
pub struct SynthArgs {
    /// Output folder (frames/, train.txt, val.txt, classes.txt).
    #[arg(long, default_value = "runs/synth")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 100, value_parser = super::at_least_one::<usize>)]
    pub train_per_class: usize,
    #[arg(long, default_value_t = 30, value_parser = super::at_least_one::<usize>)]
    pub val_per_class: usize,
    /// Number of reversal pairs (classes = 2 × pairs), at most 5.
    #[arg(long, default_value_t = 5)]
    pub pairs: usize,
    /// Frame side in pixels.
    #[arg(long, default_value_t = 64, value_parser = super::side)]
    pub size: u32,
    #[arg(long, default_value_t = 16, value_parser = super::count_up_to(gateshift::limits::MAX_SEGMENTS))]
    pub min_frames: usize,
    #[arg(long, default_value_t = 32, value_parser = super::count_up_to(gateshift::limits::MAX_SEGMENTS))]
    pub max_frames: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fashion-MNIST folder (IDX files).
    #[arg(long, default_value = synth::sources::FASHION_MNIST_DIR)]
    pub objects: PathBuf,
    /// Background photos (default: the cached `skimage-data` asset).
    #[arg(long)]
    pub backgrounds: Option<PathBuf>,
}

impl SynthArgs {
    pub fn config(&self) -> SynthConfig {
        SynthConfig {
            train_per_class: self.train_per_class,
            val_per_class: self.val_per_class,
            size: self.size,
            min_frames: self.min_frames,
            max_frames: self.max_frames,
            pairs: self.pairs,
            seed: self.seed,
            ..Default::default()
        }
    }

    /// Loads the object and background images.
    pub fn sources(&self) -> Result<Sources> {
        let backgrounds = match &self.backgrounds {
            Some(b) => b.clone(),
            None => {
                let root = gateshift::assets::cache_dir();
                gateshift::assets::SKIMAGE_DATA.fetch(&root)?
            }
        };
        Sources::load(&self.objects, &backgrounds, 6000)
    }
}

pub fn run(a: SynthArgs) -> Result<()> {
    let cfg = a.config();
    let sources = a.sources()?;
    let total = (cfg.train_per_class + cfg.val_per_class) * 2 * cfg.pairs;
    let bar = gateshift::report::progress::progress_bar(true, total as u64, "synth");
    let w = synth::generate(&cfg, &sources, &a.out, &|| bar.inc(1))?;
    bar.finish_and_clear();
    say!(
        "wrote {} clips to {}: {} , {} , {}",
        w.clips,
        w.root.display(),
        w.train_list.display(),
        w.val_list.display(),
        w.classes.display()
    )?;
    Ok(())
}
