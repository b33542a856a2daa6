//! SVG plots of the runs of one invocation (`--plots DIR`), drawn with
//! plotters' SVG backend:
//!
//! - `latency-cdf.svg`: per transport (per sender -> receiver pair in a mixed
//!   run), the share of deliveries at or below each one-way latency, on a
//!   log latency axis.
//! - `received-per-second.svg`: per transport, ticks the receivers read in
//!   each second since sending started (warm-up and drain included; one
//!   step per second, the last one partly past the drain deadline), the
//!   measured window shaded, and the deliveries per second asked for.
//!
//! The points are computed by pure functions ([`cdf_points`], [`rate_points`])
//! so they are tested apart from the drawing.

use crate::live::RunSeries;
use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Plot size in SVG pixels.
const SIZE: (u32, u32) = (960, 540);

/// At most this many points per CDF curve (the histogram's distinct values
/// are thinned evenly beyond it, keeping the last).
const MAX_CDF_POINTS: usize = 2000;

/// File names written in the plot directory.
pub const LATENCY_CDF_FILE: &str = "latency-cdf.svg";
pub const RECEIVED_RATE_FILE: &str = "received-per-second.svg";

/// `(latency ms, % of samples at or below it)` for each distinct recorded
/// value of `h` (µs), thinned to at most [`MAX_CDF_POINTS`]; empty for an
/// empty histogram.
pub fn cdf_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let total = h.len();
    if total == 0 {
        return Vec::new();
    }
    let mut points = Vec::new();
    let mut below = 0u64;
    for v in h.iter_recorded() {
        below += v.count_at_value();
        let ms = h.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0;
        points.push((ms, 100.0 * below as f64 / total as f64));
    }
    if points.len() > MAX_CDF_POINTS {
        let step = points.len().div_ceil(MAX_CDF_POINTS);
        let last = points.last().copied();
        points = points.into_iter().step_by(step).collect();
        if points.last().copied() != last
            && let Some(last) = last
        {
            points.push(last);
        }
    }
    points
}

/// `(s, count)` for a per-second series, as steps: the count of second `i`
/// held from `i` to `i + 1` (two points per second).
pub fn rate_points(per_second: &[u64]) -> Vec<(f64, f64)> {
    per_second
        .iter()
        .enumerate()
        .flat_map(|(i, &n)| [(i as f64, n as f64), (i as f64 + 1.0, n as f64)])
        .collect()
}

/// Writes both plots of `runs` into `dir` (created if missing); returns the
/// files written.
pub fn write_plots(dir: &Path, runs: &[RunSeries]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cdf = dir.join(LATENCY_CDF_FILE);
    write_file(&cdf, &latency_cdf_svg(runs)?)?;
    let rate = dir.join(RECEIVED_RATE_FILE);
    write_file(&rate, &received_rate_svg(runs)?)?;
    Ok(vec![cdf, rate])
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn color(i: usize) -> RGBColor {
    // Distinct, readable on white.
    const COLORS: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(23, 190, 207),
    ];
    COLORS[i % COLORS.len()]
}

/// plotters' errors borrow the backend's error type; turn them into text.
fn draw_err<E: std::fmt::Debug>(what: &'static str) -> impl FnOnce(E) -> anyhow::Error {
    move |e| anyhow::anyhow!("drawing {what}: {e:?}")
}

/// Draws each curve in its colour, then the legend of everything drawn.
fn draw_curves_and_legend<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    curves: Vec<(String, Vec<(f64, f64)>)>,
) -> Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, (label, points)) in curves.into_iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(2)))
            .map_err(draw_err("a curve"))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err("the legend"))?;
    Ok(())
}

/// The latency CDF as SVG text.
pub fn latency_cdf_svg(runs: &[RunSeries]) -> Result<String> {
    let curves: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .flat_map(|r| &r.latency)
        .map(|c| (c.label.clone(), cdf_points(&c.latency_us)))
        .filter(|(_, points)| !points.is_empty())
        .collect();
    let lowest = curves
        .iter()
        .flat_map(|(_, p)| p.first())
        .map(|&(ms, _)| ms)
        .fold(f64::INFINITY, f64::min);
    let highest = curves
        .iter()
        .flat_map(|(_, p)| p.last())
        .map(|&(ms, _)| ms)
        .fold(0.0, f64::max);
    // A log axis needs a positive, non-empty range.
    let (lo, hi) = if curves.is_empty() {
        (0.01, 10.0)
    } else {
        (
            (lowest * 0.8).max(0.001),
            (highest * 1.25).max(lowest * 2.0),
        )
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err("the background"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("One-way tick latency, CDF", ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..100.0)
            .map_err(draw_err("the axes"))?;
        chart
            .configure_mesh()
            .x_desc("latency, ms (log scale)")
            .y_desc("% of deliveries at or below")
            .draw()
            .map_err(draw_err("the mesh"))?;
        draw_curves_and_legend(&mut chart, curves)?;
        root.present().map_err(draw_err("the plot"))?;
    }
    Ok(svg)
}

/// Ticks received per second as SVG text.
pub fn received_rate_svg(runs: &[RunSeries]) -> Result<String> {
    let curves: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .flat_map(|r| &r.received)
        .map(|c| (c.label.clone(), rate_points(&c.per_second)))
        .collect();
    let seconds = runs
        .iter()
        .flat_map(|r| &r.received)
        .map(|c| c.per_second.len())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let nominal = runs
        .iter()
        .map(|r| r.nominal_deliveries_per_s)
        .fold(0.0, f64::max);
    let top = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, n)| n))
        .fold(nominal, f64::max)
        .max(1.0)
        * 1.1;
    let window = runs.first().map_or((0.0, 0.0), |r| r.window_s);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err("the background"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Ticks received per second", ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..seconds, 0.0..top)
            .map_err(draw_err("the axes"))?;
        chart
            .configure_mesh()
            .x_desc("s since sending started (warm-up, window, drain)")
            .y_desc("ticks received / s")
            .draw()
            .map_err(draw_err("the mesh"))?;
        // The measured window, shaded.
        if window.1 > window.0 {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(window.0, 0.0), (window.1, top)],
                    RGBColor(200, 200, 200).mix(0.25).filled(),
                )))
                .map_err(draw_err("the window"))?
                .label("measured window")
                .legend(|(x, y)| {
                    Rectangle::new(
                        [(x, y - 5), (x + 20, y + 5)],
                        RGBColor(200, 200, 200).filled(),
                    )
                });
        }
        if nominal > 0.0 {
            let grey = RGBColor(90, 90, 90);
            chart
                .draw_series(LineSeries::new(
                    vec![(0.0, nominal), (seconds, nominal)],
                    grey.stroke_width(1),
                ))
                .map_err(draw_err("the nominal rate"))?
                .label("deliveries/s asked")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
        }
        draw_curves_and_legend(&mut chart, curves)?;
        root.present().map_err(draw_err("the plot"))?;
    }
    Ok(svg)
}

/// The texts of an SVG's `<text>` elements, trimmed (labels, legend, ticks).
pub fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|el| {
            let body = el.split_once('>')?.1;
            Some(body.split("</text>").next()?.trim().to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{LatencyCurve, RateCurve};
    use crate::report::{new_histogram, record};
    use crate::transports::TransportMix;

    #[test]
    fn cdf_points_climb_to_100_percent() {
        let mut h = new_histogram();
        // Below 2048 µs the histogram is exact.
        for us in [500, 500, 1000, 2000] {
            record(&mut h, us);
        }
        assert_eq!(cdf_points(&h), [(0.5, 50.0), (1.0, 75.0), (2.0, 100.0)]);
        assert!(cdf_points(&new_histogram()).is_empty());
        // Many distinct values: thinned, still ending at 100 %.
        let mut wide = new_histogram();
        for us in 1..=10_000 {
            record(&mut wide, us);
        }
        let points = cdf_points(&wide);
        assert!(points.len() <= MAX_CDF_POINTS + 1, "{}", points.len());
        assert_eq!(points.last().map(|p| p.1), Some(100.0));
    }

    #[test]
    fn rate_points_are_steps_one_second_wide() {
        assert_eq!(
            rate_points(&[3, 7]),
            [(0.0, 3.0), (1.0, 3.0), (1.0, 7.0), (2.0, 7.0)]
        );
    }

    #[test]
    fn svgs_name_every_curve_even_without_samples() {
        let mut h = new_histogram();
        record(&mut h, 1500);
        let runs = [
            RunSeries {
                transport: TransportMix::WebTransport,
                latency: vec![LatencyCurve {
                    label: "webtransport".into(),
                    latency_us: h,
                }],
                received: vec![RateCurve {
                    label: "webtransport".into(),
                    per_second: vec![10, 20, 30],
                }],
                window_s: (1.0, 2.0),
                nominal_deliveries_per_s: 25.0,
            },
            RunSeries {
                transport: TransportMix::WebSocket,
                latency: vec![LatencyCurve {
                    label: "websocket".into(),
                    latency_us: new_histogram(),
                }],
                received: Vec::new(),
                window_s: (1.0, 2.0),
                nominal_deliveries_per_s: 25.0,
            },
        ];
        let cdf = latency_cdf_svg(&runs).expect("draws");
        assert!(cdf.starts_with("<svg"), "{cdf}");
        let texts = svg_texts(&cdf);
        assert!(texts.iter().any(|t| t == "webtransport"), "{texts:?}");
        assert!(
            texts.iter().any(|t| t == "latency, ms (log scale)"),
            "{texts:?}"
        );
        // No samples, no curve (nothing to draw on a log axis).
        assert!(!texts.iter().any(|t| t == "websocket"), "{texts:?}");
        let texts = svg_texts(&received_rate_svg(&runs).expect("draws"));
        for label in ["webtransport", "measured window", "deliveries/s asked"] {
            assert!(texts.iter().any(|t| t == label), "{label}: {texts:?}");
        }
        assert!(received_rate_svg(&[]).is_ok() && latency_cdf_svg(&[]).is_ok());
    }
}
