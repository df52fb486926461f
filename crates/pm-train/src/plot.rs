//! Line charts as self-contained SVG, for the curves people would rather look at than read:
//! obsolescence over training (`pm plot obsolescence`), and any other series of a run.
//!
//! Hand-written SVG (axes, ticks, one polyline per series, a legend) keeps the workspace free
//! of font and rendering dependencies; any browser or the docs viewer shows it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::{Error, Result, StepMetrics};

/// One line of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// (x, y) points in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Index into the palette (series of one run share a colour).
    pub colour: usize,
    /// Line style (statistics of one run differ by style).
    pub dash: Dash,
}

/// Line style of a series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dash {
    /// A solid line.
    #[default]
    Solid,
    /// Long dashes.
    Dashed,
    /// Dots.
    Dotted,
}

/// One chart: a title, axis labels and its series.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    /// Chart title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
    /// Y axis range; `None` fits the data. Panels meant to be compared share one.
    pub y_range: Option<(f64, f64)>,
}

const PANEL_W: f64 = 460.0;
const PANEL_H: f64 = 330.0;
/// Height of one legend line, below the panel.
const LEGEND_ROW: f64 = 17.0;
const MARGIN: (f64, f64, f64, f64) = (62.0, 20.0, 40.0, 48.0); // left, right, top, bottom
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#7f7f7f",
];

/// Renders panels side by side under a title.
pub fn svg(title: &str, panels: &[Panel]) -> String {
    let width = PANEL_W * panels.len().max(1) as f64;
    let legend_rows = panels.iter().map(|p| p.series.len()).max().unwrap_or(0);
    let height = PANEL_H + 30.0 + LEGEND_ROW * legend_rows as f64 + 8.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="15">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    for (i, panel) in panels.iter().enumerate() {
        draw_panel(&mut out, panel, i as f64 * PANEL_W, 30.0);
    }
    out.push_str("</svg>\n");
    out
}

fn draw_panel(out: &mut String, panel: &Panel, x0: f64, y0: f64) {
    let (left, right, top, bottom) = MARGIN;
    let (px, py) = (x0 + left, y0 + top);
    let (pw, ph) = (PANEL_W - left - right, PANEL_H - top - bottom);
    let points = panel.series.iter().flat_map(|s| s.points.iter());
    let finite: Vec<&(f64, f64)> = points
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let (x_lo, x_hi) = range(finite.iter().map(|p| p.0));
    let (y_lo, y_hi) = panel
        .y_range
        .unwrap_or_else(|| range(finite.iter().map(|p| p.1)));
    let sx = |x: f64| px + (x - x_lo) / (x_hi - x_lo) * pw;
    let sy = |y: f64| py + ph - (y - y_lo) / (y_hi - y_lo) * ph;

    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle" font-size="13">{}</text>"##,
        px + pw / 2.0,
        py - 12.0,
        escape(&panel.title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{px}" y="{py}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    for tick in ticks(x_lo, x_hi) {
        let x = sx(tick);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            py,
            py + ph,
            py + ph + 15.0,
            label(tick)
        );
    }
    for tick in ticks(y_lo, y_hi) {
        let y = sy(tick);
        let _ = writeln!(
            out,
            r##"<line x1="{px}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            px + pw,
            px - 5.0,
            y + 4.0,
            label(tick)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        px + pw / 2.0,
        py + ph + 34.0,
        escape(&panel.x_label)
    );
    let (lx, ly) = (x0 + 14.0, py + ph / 2.0);
    let _ = writeln!(
        out,
        r#"<text x="{lx}" y="{ly}" text-anchor="middle" transform="rotate(-90 {lx} {ly})">{}</text>"#,
        escape(&panel.y_label)
    );

    for (i, series) in panel.series.iter().enumerate() {
        let colour = COLOURS[series.colour % COLOURS.len()];
        let path: Vec<String> = series
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let dash = match series.dash {
            Dash::Solid => "",
            Dash::Dashed => r#" stroke-dasharray="6,4""#,
            Dash::Dotted => r#" stroke-dasharray="1.5,3""#,
        };
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.8"{dash}/>"#,
            path.join(" ")
        );
        let ky = y0 + PANEL_H + LEGEND_ROW * i as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{}" y1="{ky}" x2="{}" y2="{ky}" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            px + 8.0,
            px + 30.0,
            px + 35.0,
            ky + 4.0,
            escape(&series.label)
        );
    }
}

/// The data range, padded, never empty.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        (lo, hi) = (lo.min(v), hi.max(v));
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

/// About five round tick values inside `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi - lo) / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

fn label(value: f64) -> String {
    let text = format!("{value:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Reads a run's `metrics.jsonl`.
///
/// # Errors
/// [`Error::Io`] if it cannot be read; [`Error::Config`] naming the file and line for a line
/// that is not a metrics record.
pub fn read_metrics(path: &Path) -> Result<Vec<StepMetrics>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| Error::Config {
                path: path.to_path_buf(),
                what: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// The obsolescence chart of labelled runs: the mean and 10th-percentile cosine between the
/// stored rows the loss used and their identity's prototype under the current encoder, the
/// same for the step's fresh rows (the control at age 0), and the mean age of the stored rows,
/// against the training step.
///
/// # Errors
/// The errors of [`read_metrics`], and [`Error::Config`] for a run with no obsolescence
/// measurement (trained without `run.obsolescence_every`).
pub fn obsolescence_chart(runs: &[(String, PathBuf)]) -> Result<String> {
    let (mut cosine, mut age) = (Vec::new(), Vec::new());
    for (colour, (name, run)) in runs.iter().enumerate() {
        let found = obsolescence_of(run)?;
        cosine.extend(cosine_series(name, &found, colour));
        age.push(age_series(name, &found, colour));
    }
    let panels = [
        Panel {
            title: "stored row vs prototype under the current encoder".into(),
            x_label: "step".into(),
            y_label: "cosine".into(),
            series: cosine,
            y_range: None,
        },
        age_panel(age),
    ];
    Ok(svg("Prototype obsolescence", &panels))
}

/// The same statistics as [`obsolescence_chart`], one cosine panel per run side by side on a
/// shared cosine axis (for heads whose curves would hide each other in one panel, such as
/// Partial FC against Prototype Memory), then the ages of all runs in one panel.
///
/// # Errors
/// As [`obsolescence_chart`].
pub fn obsolescence_by_run_chart(runs: &[(String, PathBuf)]) -> Result<String> {
    let (mut panels, mut age) = (Vec::new(), Vec::new());
    for (colour, (name, run)) in runs.iter().enumerate() {
        let found = obsolescence_of(run)?;
        panels.push(Panel {
            title: name.clone(),
            x_label: "step".into(),
            y_label: "cosine to the current-encoder prototype".into(),
            series: cosine_series(name, &found, colour),
            y_range: None,
        });
        age.push(age_series(name, &found, colour));
    }
    let values = panels
        .iter()
        .flat_map(|p| p.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)))
        .filter(|y| y.is_finite());
    let shared = range(values);
    for panel in &mut panels {
        panel.y_range = Some(shared);
    }
    panels.push(age_panel(age));
    Ok(svg("Row obsolescence, run by run", &panels))
}

/// The obsolescence measurements of a run's `metrics.jsonl`.
fn obsolescence_of(run: &Path) -> Result<Vec<crate::Obsolescence>> {
    let path = run.join("metrics.jsonl");
    let found: Vec<_> = read_metrics(&path)?
        .into_iter()
        .filter_map(|line| line.obsolescence)
        .collect();
    if found.is_empty() {
        return Err(Error::Config {
            path,
            what: "no obsolescence measurement: train with run.obsolescence_every > 0".into(),
        });
    }
    Ok(found)
}

fn points(found: &[crate::Obsolescence], f: fn(&crate::Obsolescence) -> f64) -> Vec<(f64, f64)> {
    found.iter().map(|o| (o.step as f64, f(o))).collect()
}

/// Stored rows' mean and 10th percentile cosine, and the fresh-row control, in one colour.
fn cosine_series(name: &str, found: &[crate::Obsolescence], colour: usize) -> Vec<Series> {
    let series = |label: &str, points, dash| Series {
        label: format!("{name}: {label}"),
        points,
        colour,
        dash,
    };
    vec![
        series("stored, mean", points(found, |o| o.cos_mean), Dash::Solid),
        series(
            "stored, 10th pct",
            points(found, |o| o.cos_p10),
            Dash::Dashed,
        ),
        series(
            "fresh rows (age 0)",
            points(found, |o| o.fresh_cos_mean),
            Dash::Dotted,
        ),
    ]
}

fn age_series(name: &str, found: &[crate::Obsolescence], colour: usize) -> Series {
    Series {
        label: name.to_owned(),
        points: points(found, |o| o.age_mean),
        colour,
        dash: Dash::Solid,
    }
}

fn age_panel(series: Vec<Series>) -> Panel {
    Panel {
        title: "age of the stored rows the loss used".into(),
        x_label: "step".into(),
        y_label: "mean age (steps)".into(),
        series,
        y_range: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run directory whose metrics hold obsolescence measurements with cosines around `cos`.
    fn run_with_obsolescence(dir: &Path, cos: f64) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let lines: Vec<String> = (1..=4u64)
            .map(|i| {
                let line = StepMetrics {
                    step: 10 * i,
                    obsolescence: Some(crate::Obsolescence {
                        step: 10 * i,
                        age_mean: i as f64,
                        cos_mean: cos + 0.01 * i as f64,
                        cos_p10: cos - 0.1,
                        fresh_cos_mean: cos + 0.1,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                serde_json::to_string(&line).unwrap()
            })
            .collect();
        std::fs::write(dir.join("metrics.jsonl"), lines.join("\n")).unwrap();
        dir.to_owned()
    }

    #[test]
    fn the_by_run_chart_puts_each_run_in_its_panel_on_one_cosine_axis() {
        let dir = tempfile::tempdir().unwrap();
        let runs = vec![
            (
                "low".to_owned(),
                run_with_obsolescence(&dir.path().join("a"), 0.1),
            ),
            (
                "high".to_owned(),
                run_with_obsolescence(&dir.path().join("b"), 0.7),
            ),
        ];
        let svg = obsolescence_by_run_chart(&runs).unwrap();
        // Two cosine panels of three lines each, then one age line per run.
        assert_eq!(svg.matches("<polyline").count(), 3 + 3 + 2);
        assert_eq!(svg.matches(r##"fill="none" stroke="#444""##).count(), 3);
        // A shared axis: the 0.8 tick of the high run shows in both cosine panels, and the low
        // run's lines sit in the lower part of its panel instead of filling it.
        let left_panel = &svg[..svg.find(">high<").unwrap()];
        assert!(left_panel.contains(">0.8<"), "{svg}");
        let overlaid = obsolescence_chart(&runs).unwrap();
        assert_eq!(overlaid.matches("<polyline").count(), 3 + 3 + 2);
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        std::fs::write(empty.join("metrics.jsonl"), "").unwrap();
        let err = obsolescence_by_run_chart(&[("e".into(), empty)]).unwrap_err();
        assert!(err.to_string().contains("obsolescence_every"), "{err}");
    }

    #[test]
    fn ticks_are_round_and_inside() {
        assert_eq!(ticks(0.0, 10.0), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(0.13, 0.97);
        assert!(t.iter().all(|&v| (0.13..=0.97).contains(&v)), "{t:?}");
        assert!(t.len() >= 3);
    }

    #[test]
    fn svg_has_one_polyline_per_series_and_escapes_text() {
        let panel = Panel {
            title: "a<b".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![
                Series {
                    label: "one".into(),
                    points: vec![(0.0, 1.0), (1.0, 2.0)],
                    colour: 0,
                    dash: Dash::Solid,
                },
                Series {
                    label: "two".into(),
                    points: vec![(0.0, f64::NAN), (1.0, 0.5)],
                    colour: 1,
                    dash: Dash::Dashed,
                },
            ],
            y_range: None,
        };
        let svg = svg("t & t", &[panel]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a&lt;b") && svg.contains("t &amp; t"));
        assert!(!svg.contains("NaN"));
    }
}
