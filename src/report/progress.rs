//! Progress bars of the long commands (training, evaluation, data tools), on stderr; hidden
//! where stderr is not a terminal.

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar with position, rate message and ETA (hidden when `show` is false).
pub fn progress_bar(show: bool, len: u64, prefix: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} · ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}
