//! PNG figures with plotters: training curves and confusion matrices. Text uses the
//! DejaVu Sans font from Debian's `fonts-dejavu-core` (installed by `scripts/setup.sh`).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Result, bail};
use plotters::prelude::*;

use crate::report::EpochMetrics;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Registers the plot font once; an error names the paths tried.
pub(crate) fn ensure_font() -> Result<()> {
    static FONT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let r = FONT.get_or_init(|| {
        let path = std::env::var("GATESHIFT_FONT").ok();
        let candidates: Vec<&str> = path.as_deref().into_iter().chain(FONT_PATHS.iter().copied()).collect();
        for p in &candidates {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                return plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                    .map_err(|_| format!("{p} is not a usable font"));
            }
        }
        Err(format!(
            "no font for plots: tried {} (install fonts-dejavu-core, or set GATESHIFT_FONT)",
            candidates.join(", ")
        ))
    });
    match r {
        Ok(()) => Ok(()),
        Err(e) => bail!("{e}"),
    }
}

/// Renders to a temporary PNG beside `path`, then renames it into place.
pub(crate) fn atomic_png(
    path: &Path,
    w: u32,
    h: u32,
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    ensure_font()?;
    let tmp = path.with_extension(format!("tmp.{}.png", std::process::id()));
    {
        let root = BitMapBackend::new(&tmp, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        draw(&root)?;
        root.present().map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    let bytes = std::fs::read(&tmp)?;
    let _ = std::fs::remove_file(&tmp);
    crate::io::write_atomic(path, &bytes)
}

pub(crate) fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plot: {e}")
}

/// Loss and accuracy per epoch, side by side.
pub fn curves(history: &[EpochMetrics], path: &Path, title: &str) -> Result<()> {
    curves_many(&[(title.to_string(), history.to_vec())], path)
}

/// Several runs' curves in one figure (left: training loss; right: train and val top-1).
pub fn curves_many(runs: &[(String, Vec<EpochMetrics>)], path: &Path) -> Result<()> {
    let epochs = runs.iter().flat_map(|(_, h)| h.iter().map(|m| m.epoch)).max().unwrap_or(1).max(2);
    let max_loss = runs.iter().flat_map(|(_, h)| h.iter().map(|m| m.loss)).fold(0.1f64, f64::max);
    atomic_png(path, 1100, 420, |root| {
        let (left, right) = root.split_horizontally(550);
        let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
        let mut loss = ChartBuilder::on(&left)
            .caption("training loss", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(1f64..epochs as f64, 0f64..max_loss * 1.05)
            .map_err(err)?;
        loss.configure_mesh().x_desc("epoch").y_desc("loss").draw().map_err(err)?;
        let mut acc = ChartBuilder::on(&right)
            .caption("top-1 accuracy (solid: val, dashed: train)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(1f64..epochs as f64, 0f64..100f64)
            .map_err(err)?;
        acc.configure_mesh().x_desc("epoch").y_desc("%").draw().map_err(err)?;
        for (i, (name, h)) in runs.iter().enumerate() {
            let c = colors[i % colors.len()];
            loss.draw_series(LineSeries::new(h.iter().map(|m| (m.epoch as f64, m.loss)), c.stroke_width(2)))
                .map_err(err)?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            let val: Vec<(f64, f64)> =
                h.iter().filter_map(|m| m.val_top1.map(|v| (m.epoch as f64, 100.0 * v))).collect();
            acc.draw_series(LineSeries::new(val, c.stroke_width(2))).map_err(err)?;
            acc.draw_series(DashedLineSeries::new(
                h.iter().map(|m| (m.epoch as f64, 100.0 * m.train_top1)),
                6,
                4,
                c.stroke_width(1),
            ))
            .map_err(err)?;
        }
        loss.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(err)?;
        Ok(())
    })
}

/// A confusion matrix as a heat map (rows: true class, columns: predicted), row-normalised.
pub fn confusion(matrix: &[Vec<usize>], names: &[String], path: &Path) -> Result<()> {
    let k = matrix.len().max(1);
    let cell = (560 / k as u32).clamp(4, 60);
    let side = cell * k as u32;
    atomic_png(path, side + 260, side + 80, |root| {
        let (plot, legend) = root.split_horizontally(side + 40);
        let mut chart = ChartBuilder::on(&plot)
            .caption("confusion: rows true class, columns predicted (row-normalised)", ("sans-serif", 14))
            .margin(10)
            .build_cartesian_2d(0..k as i32, 0..k as i32)
            .map_err(err)?;
        chart
            .draw_series(matrix.iter().enumerate().flat_map(|(t, row)| {
                let n = row.iter().sum::<usize>().max(1) as f64;
                row.iter().enumerate().map(move |(p, &v)| {
                    let f = v as f64 / n;
                    let shade = (255.0 * (1.0 - f)) as u8;
                    let y = (k - 1 - t) as i32;
                    Rectangle::new([(p as i32, y), (p as i32 + 1, y + 1)], RGBColor(shade, shade, 255).filled())
                })
            }))
            .map_err(err)?;
        for (i, name) in names.iter().enumerate().take(40) {
            legend
                .draw_text(
                    &format!("{i}: {name}"),
                    &("sans-serif", 11).into_text_style(&legend),
                    (0, 30 + 13 * i as i32),
                )
                .map_err(err)?;
        }
        Ok(())
    })
}
