//! `--plot FILE.svg`: one-way latency CDFs, one panel per payload size, one line per contender
//! plus the one-way floor. The y axis counts "nines" (90 %, 99 %, 99.9 %...) so tails show.

use super::report::{Floors, Row};
use hdrhistogram::Histogram;
use plotters::prelude::*;

/// Boxed error.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

fn cdf(h: &Histogram<u64>, y_max: f64) -> Vec<(f64, f64)> {
    let n = h.len() as f64;
    let mut pts = Vec::new();
    let mut seen = 0u64;
    for v in h.iter_recorded() {
        let x = v.value_iterated_to().max(1) as f64;
        // fraction at or below the previous value, then at or below this one: a step
        let before = seen as f64 / n;
        seen += v.count_at_value();
        let after = seen as f64 / n;
        let nines = |q: f64| {
            if q >= 1.0 {
                y_max
            } else {
                (-(1.0 - q).log10()).min(y_max)
            }
        };
        pts.push((x, nines(before)));
        pts.push((x, nines(after)));
    }
    pts
}

/// `1500.0` -> `"1.5 µs"`.
fn si_ns(ns: f64) -> String {
    match ns {
        n if n < 1e3 => format!("{n:.0} ns"),
        n if n < 1e6 => format!("{} µs", n / 1e3),
        n => format!("{} ms", n / 1e6),
    }
}

/// Draws the CDFs to `path`.
pub fn draw(path: &str, rows: &[Row], floors: &Floors, sizes: &[usize]) -> Result<(), Error> {
    let cols = 2;
    let nrows = sizes.len().div_ceil(cols).max(1);
    let root = SVGBackend::new(path, (1100, 360 * nrows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let panels = root.split_evenly((nrows, cols));
    let colors = [
        RGBColor(200, 30, 30),
        RGBColor(30, 90, 200),
        RGBColor(30, 150, 60),
        RGBColor(150, 80, 160),
    ];
    for (panel, &size) in panels.iter().zip(sizes) {
        let these: Vec<&Row> = rows.iter().filter(|r| r.size == size).collect();
        let Some(first) = these.first() else { continue };
        let mut hists: Vec<(String, &Histogram<u64>)> =
            these.iter().map(|r| (r.label(), &r.ow.hist)).collect();
        hists.push(("one-way floor (1 cache line)".into(), &floors.one_way.hist));
        let hists: Vec<_> = hists.into_iter().filter(|(_, h)| !h.is_empty()).collect();
        if hists.is_empty() {
            continue;
        }
        let max_count = hists.iter().map(|(_, h)| h.len()).max().unwrap_or(1) as f64;
        let y_max = max_count.log10().ceil().max(1.0);
        let x_lo = hists.iter().map(|(_, h)| h.min()).min().unwrap_or(1).max(1) as f64 * 0.8;
        let x_hi = hists.iter().map(|(_, h)| h.max()).max().unwrap_or(10) as f64 * 1.25;
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("one-way latency CDF, {}", first.payload),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), 0f64..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("one-way latency (log scale; includes one timer read)")
            .y_desc("percentile")
            .y_labels(y_max as usize + 1)
            .y_label_formatter(&|y| {
                let q = 100.0 * (1.0 - 10f64.powf(-y));
                format!("{q:.*}%", (y.round() as usize).saturating_sub(2))
            })
            .x_label_formatter(&|x| si_ns(*x))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (label, h)) in hists.iter().enumerate() {
            let color = if i + 1 == hists.len() {
                BLACK
            } else {
                colors[i % colors.len()]
            };
            chart
                .draw_series(LineSeries::new(cdf(h, y_max), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
