//! Pictures of a training run (plotters; PNG and SVG, text in the embedded
//! DejaVu Sans, so no system fonts are needed): loss and accuracy curves, the
//! confusion matrix, and a grid of misclassified images. Each function writes
//! `DIR/NAME.png` and `DIR/NAME.svg`, atomically; its `*_picture` sibling
//! returns the same [`Picture`] in memory (the training dashboard serves it).

use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::model::History;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

const FONT: &str = "sans-serif";
const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VALIDATION: RGBColor = RGBColor(255, 127, 14);

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| unreachable!("the embedded DejaVu Sans is a valid font"));
    });
}

/// A drawn picture, as PNG bytes and SVG text.
#[derive(Clone, Debug)]
pub struct Picture {
    /// What it shows, the files' stem: "curves", "confusion_matrix", ...
    pub name: &'static str,
    pub png: Vec<u8>,
    pub svg: String,
}

impl Picture {
    /// Writes `dir/NAME.png` and `dir/NAME.svg`, atomically; returns the PNG's path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let png_path = dir.join(format!("{}.png", self.name));
        write_atomic(&png_path, &self.png)?;
        write_atomic(&dir.join(format!("{}.svg", self.name)), self.svg.as_bytes())?;
        Ok(png_path)
    }
}

/// Draws a `size` picture twice, with `draw_png` on a bitmap and `draw_svg` on an SVG.
fn render(
    name: &'static str,
    size: (u32, u32),
    draw_png: impl FnOnce(DrawingArea<BitMapBackend, Shift>) -> DrawResult,
    draw_svg: impl FnOnce(DrawingArea<SVGBackend, Shift>) -> DrawResult,
) -> Result<Picture> {
    register_font();
    let failed = |e: Box<dyn std::error::Error>| Error::State(format!("cannot draw {name}: {e}"));
    let mut rgb = vec![0u8; (size.0 * size.1 * 3) as usize];
    draw_png(BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area()).map_err(failed)?;
    let image = image::RgbImage::from_raw(size.0, size.1, rgb).expect("buffer sized for the image");
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::State(format!("cannot encode {name}.png: {e}")))?;
    let mut svg = String::new();
    draw_svg(SVGBackend::with_string(&mut svg, size).into_drawing_area()).map_err(failed)?;
    Ok(Picture { name, png, svg })
}

/// `curves.{png,svg}`: loss and accuracy per epoch, training and validation.
pub fn training_curves(history: &History, dir: &Path) -> Result<PathBuf> {
    curves_picture(history)?.write(dir)
}

/// The picture of [`training_curves`].
pub fn curves_picture(history: &History) -> Result<Picture> {
    if history.epochs.is_empty() {
        return Err(Error::InvalidArgument("the History has no epochs to plot".into()));
    }
    let size = (1200, 500);
    render("curves", size, |root| draw_curves(root, history), |root| draw_curves(root, history))
}

fn draw_curves<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, history: &History) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(600);
    let epochs: Vec<f64> = history.epochs.iter().map(|e| e.epoch as f64).collect();
    let accuracy = history.epochs[0].logs.keys().find(|k| !k.starts_with("val_") && k.ends_with("accuracy")).cloned();
    for (area, metric) in [(&left, Some("loss".to_string())), (&right, accuracy)] {
        let Some(metric) = metric else { continue };
        let series = [(metric.clone(), TRAIN, "training"), (format!("val_{metric}"), VALIDATION, "validation")];
        let values: Vec<(Vec<f64>, RGBColor, &str)> = series
            .iter()
            .map(|(name, colour, label)| (history.series(name), *colour, *label))
            .filter(|(v, _, _)| v.len() == epochs.len())
            .collect();
        let (lo, hi) =
            values.iter().flat_map(|(v, _, _)| v).fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let pad = ((hi - lo) * 0.1).max(1e-3);
        let (first, last) = (epochs[0], *epochs.last().expect("not empty"));
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{metric} per epoch"), (FONT, 24))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(first - 0.2..last + 0.2, lo - pad..hi + pad)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(metric.as_str())
            .x_labels(epochs.len().min(12))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()?;
        for (v, colour, label) in values {
            let points: Vec<(f64, f64)> = epochs.iter().copied().zip(v).collect();
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.9)).border_style(BLACK).draw()?;
    }
    root.present()?;
    Ok(())
}

/// `confusion_matrix.{png,svg}`: counts per (true, predicted) class, shaded
/// by the share of the true class, with each class's accuracy beside its row.
pub fn confusion_matrix(matrix: &[Vec<usize>], class_names: &[String], dir: &Path) -> Result<PathBuf> {
    confusion_matrix_picture(matrix, class_names)?.write(dir)
}

/// The picture of [`confusion_matrix`].
pub fn confusion_matrix_picture(matrix: &[Vec<usize>], class_names: &[String]) -> Result<Picture> {
    let n = matrix.len();
    if n == 0 || class_names.len() != n {
        return Err(Error::InvalidArgument(format!("{n} classes in the matrix but {} names", class_names.len())));
    }
    let cell = (600 / n as u32).clamp(24, 60);
    let size = (cell * n as u32 + 260, cell * n as u32 + 170);
    let (names, cell) = (class_names, cell as i32);
    render(
        "confusion_matrix",
        size,
        |r| draw_confusion(r, matrix, names, cell),
        |r| draw_confusion(r, matrix, names, cell),
    )
}

fn draw_confusion<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    matrix: &[Vec<usize>],
    names: &[String],
    cell: i32,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (x0, y0) = (110, 90);
    let total: usize = matrix.iter().flatten().sum();
    let correct: usize = (0..matrix.len()).map(|i| matrix[i][i]).sum();
    let title =
        format!("Confusion matrix: {correct} of {total} right ({:.2}%)", 100.0 * correct as f64 / total.max(1) as f64);
    root.draw(&Text::new(title, (20, 15), (FONT, 22)))?;
    root.draw(&Text::new("predicted class", (x0, y0 - 50), (FONT, 16)))?;
    root.draw(&Text::new("true class", (10, y0 - 25), (FONT, 16)))?;
    let small = (FONT, (cell / 3).clamp(10, 16));
    for (i, row) in matrix.iter().enumerate() {
        let row_total: usize = row.iter().sum();
        let (y, i32_i) = (y0 + i as i32 * cell, i as i32);
        root.draw(&Text::new(names[i].clone(), (x0 - 60, y + cell / 3), small))?;
        root.draw(&Text::new(names[i].clone(), (x0 + i32_i * cell + cell / 3, y0 - 22), small))?;
        for (j, &count) in row.iter().enumerate() {
            let share = count as f64 / row_total.max(1) as f64;
            let shade = (255.0 * (1.0 - share)) as u8;
            let fill =
                if i == j { RGBColor(shade, 255 - (255 - shade) / 3, shade) } else { RGBColor(255, shade, shade) };
            let x = x0 + j as i32 * cell;
            root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], fill.filled()))?;
            root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], BLACK.mix(0.2)))?;
            if count > 0 {
                let colour = if share > 0.6 { WHITE } else { BLACK };
                root.draw(&Text::new(count.to_string(), (x + 4, y + cell / 3), small.into_font().color(&colour)))?;
            }
        }
        let accuracy = 100.0 * row[i] as f64 / row_total.max(1) as f64;
        let x = x0 + matrix.len() as i32 * cell + 10;
        root.draw(&Text::new(format!("{accuracy:.1}%"), (x, y + cell / 3), small))?;
    }
    root.present()?;
    Ok(())
}

/// One image for [`misclassified`]: `h` x `w` grey or RGB bytes and its labels.
pub struct Misclassified {
    pub pixels: Vec<u8>,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub truth: String,
    pub predicted: String,
}

/// `misclassified.{png,svg}`: a grid of wrongly classified images, each
/// titled with its true and predicted class.
pub fn misclassified(images: &[Misclassified], dir: &Path) -> Result<PathBuf> {
    misclassified_picture(images)?.write(dir)
}

/// The picture of [`misclassified`].
pub fn misclassified_picture(images: &[Misclassified]) -> Result<Picture> {
    let columns = images.len().clamp(1, 6);
    let rows = images.len().div_ceil(columns).max(1);
    let tile = 150u32;
    let size = (tile * columns as u32, tile * rows as u32 + 50);
    render("misclassified", size, |r| draw_grid(r, images, columns, tile), |r| draw_grid(r, images, columns, tile))
}

fn draw_grid<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    images: &[Misclassified],
    columns: usize,
    tile: u32,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let title = if images.is_empty() {
        "No misclassified images".to_string()
    } else {
        format!("{} misclassified images (true / predicted)", images.len())
    };
    root.draw(&Text::new(title, (10, 12), (FONT, 20)))?;
    for (k, im) in images.iter().enumerate() {
        let (x0, y0) = ((k % columns) as i32 * tile as i32, 50 + (k / columns) as i32 * tile as i32);
        root.draw(&Text::new(format!("{} / {}", im.truth, im.predicted), (x0 + 10, y0 + 2), (FONT, 16)))?;
        let scale = ((tile as usize - 40) / im.height.max(im.width)).max(1) as i32;
        let (ox, oy) = (x0 + 10, y0 + 24);
        for r in 0..im.height {
            for c in 0..im.width {
                let p = &im.pixels[(r * im.width + c) * im.channels..][..im.channels];
                let colour = if im.channels >= 3 { RGBColor(p[0], p[1], p[2]) } else { RGBColor(p[0], p[0], p[0]) };
                let (x, y) = (ox + c as i32 * scale, oy + r as i32 * scale);
                root.draw(&Rectangle::new([(x, y), (x + scale, y + scale)], colour.filled()))?;
            }
        }
    }
    root.present()?;
    Ok(())
}

/// One classifier's bars in [`comparison`].
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    pub name: String,
    pub accuracy: f64,
    pub macro_f1: Option<f64>,
}

/// `comparison.{png,svg}`: test accuracy and macro F1 per classifier, as
/// horizontal bars, best first as given.
pub fn comparison(runs: &[Scored], dir: &Path) -> Result<PathBuf> {
    if runs.is_empty() {
        return Err(Error::InvalidArgument("no runs to compare".into()));
    }
    let size = (1000, 120 + 56 * runs.len() as u32);
    render("comparison", size, |root| draw_comparison(root, runs), |root| draw_comparison(root, runs))?.write(dir)
}

fn draw_comparison<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, runs: &[Scored]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let lowest = runs.iter().flat_map(|r| [Some(r.accuracy), r.macro_f1]).flatten().fold(1.0f64, f64::min);
    let from = ((lowest - 0.05).max(0.0) * 10.0).floor() / 10.0;
    let n = runs.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption("test accuracy and macro F1", (FONT, 24))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(200)
        .build_cartesian_2d(from..1.0, 0.0..n)?;
    let names: Vec<String> = runs.iter().map(|r| r.name.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("score")
        .y_labels(runs.len() * 2 + 1)
        .y_label_formatter(&|y| {
            let i = (n - y - 0.5).round();
            if (n - y - 0.5 - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .draw()?;
    for (i, run) in runs.iter().enumerate() {
        let top = n - i as f64;
        let bars = [(Some(run.accuracy), TRAIN, 0.1, 0.5), (run.macro_f1, VALIDATION, 0.5, 0.9)];
        for (value, colour, a, b) in bars {
            if let Some(v) = value {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(from, top - b), (v.max(from), top - a)],
                    colour.filled(),
                )))?;
                chart.draw_series(std::iter::once(Text::new(
                    format!("{v:.4}"),
                    (v.max(from) + 0.002, top - (a + b) / 2.0 + 0.12),
                    (FONT, 14),
                )))?;
            }
        }
    }
    for (label, colour) in [("accuracy", TRAIN), ("macro F1", VALIDATION)] {
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
