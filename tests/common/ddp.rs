//! Data-parallel runs' shared helpers: the MPI launcher, the training arguments of the
//! equality runs, and the comparison of two checkpoints.

use std::path::Path;
use std::process::Command;

use gateshift::checkpoint::StateDict;

/// `mpirun -n N` around the gateshift binary, or `None` (with the reason) when this build has
/// no MPI or the machine no launcher.
pub fn mpirun(n: usize) -> Option<Command> {
    if !cfg!(feature = "mpi") {
        println!("SKIPPED: built without --features mpi");
        return None;
    }
    if Command::new("mpirun").arg("--version").output().is_err() {
        println!("SKIPPED: mpirun not installed (scripts/setup.sh installs Open MPI)");
        return None;
    }
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-n"]).arg(n.to_string());
    c.arg(env!("CARGO_BIN_EXE_gateshift"));
    Some(c)
}

/// The training arguments of the equality runs: frozen BN, no dropout (both per rank in DDP).
pub fn train_args(data: &Path, out: &Path, batch: usize, epochs: usize) -> Vec<String> {
    let mut a: Vec<String> = ["train", "--arch", "resnet-mini", "--temporal", "gsm", "--segments", "4"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (k, v) in [
        ("--epochs", epochs.to_string()),
        ("--batch-size", batch.to_string()),
        ("--input-size", "32".into()),
        ("--scale-size", "32".into()),
        ("--workers", "1".into()),
        ("--seed", "3".into()),
        ("--warmup-epochs", "1".into()),
        ("--dropout", "0".into()),
        ("--eval-every", "1".into()),
    ] {
        a.extend([k.to_string(), v]);
    }
    a.extend(["--freeze-bn".into(), "--quiet".into(), "--train-list".into()]);
    a.push(data.join("train.txt").display().to_string());
    a.push("--val-list".into());
    a.push(data.join("val.txt").display().to_string());
    a.push("--out".into());
    a.push(out.display().to_string());
    a
}

/// Largest |a − b| over the largest |b|, over every tensor of two checkpoints.
pub fn relative_difference(a: &Path, b: &Path) -> f32 {
    relative_difference_of(a, b, |_| true)
}

/// The same over the tensors whose names pass `keep`.
pub fn relative_difference_of(a: &Path, b: &Path, keep: impl Fn(&str) -> bool) -> f32 {
    let (a, b) = (StateDict::read(a).unwrap(), StateDict::read(b).unwrap());
    let (mut err, mut scale) = (0f32, 0f32);
    let mut worst = (0f32, String::new());
    for (name, tb) in b.tensors.iter().filter(|(n, _)| keep(n)) {
        let ta = a.tensors.get(name).unwrap_or_else(|| panic!("{name} missing"));
        let (va, vb) = (
            ta.clone().convert::<f32>().try_to_vec::<f32>().unwrap(),
            tb.clone().convert::<f32>().try_to_vec::<f32>().unwrap(),
        );
        for (x, y) in va.iter().zip(&vb) {
            if (x - y).abs() > worst.0 {
                worst = ((x - y).abs(), name.clone());
            }
            err = err.max((x - y).abs());
            scale = scale.max(y.abs());
        }
    }
    println!("largest difference {:.3e} in {}", worst.0, worst.1);
    err / scale.max(f32::MIN_POSITIVE)
}
