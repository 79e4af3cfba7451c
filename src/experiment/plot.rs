//! A small SVG line chart with error bars, for the study figures (no plotting dependency).

use std::fmt::Write as _;

/// One line: points `(x, mean, spread)`, drawn with ± spread bars.
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64, f64)>,
}

/// A chart of one or more series against x, plus dashed horizontal reference lines.
#[derive(Clone, Debug)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Log-scaled x axis (group sizes, parameter counts).
    pub log_x: bool,
    pub series: Vec<Series>,
    /// `(label, y)` drawn as dashed lines across the chart.
    pub references: Vec<(String, f64)>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// Round tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| span / s <= 6.0)
        .unwrap_or(magnitude * 10.0);
    let first = (lo / step).ceil();
    (0..)
        .map(|i| (first + f64::from(i)) * step)
        .take_while(|t| *t <= hi + 1e-9 * span)
        .take(20)
        .collect()
}

fn label(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v.abs() >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl LinePlot {
    /// The chart as a standalone SVG document.
    pub fn svg(&self) -> String {
        let fx = |x: f64| if self.log_x { x.max(1e-12).log10() } else { x };
        let xs: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| fx(p.0)))
            .collect();
        let ys: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().flat_map(|p| [p.1 - p.2, p.1 + p.2]))
            .chain(self.references.iter().map(|r| r.1))
            .filter(|y| y.is_finite())
            .collect();
        let (x0, x1) = bounds(&xs);
        let x_pad = (x1 - x0) * 0.05;
        let (x0, x1) = (x0 - x_pad, x1 + x_pad);
        let (y0, y1) = bounds(&ys);
        let pad = (y1 - y0).max(1e-6) * 0.08;
        let (y0, y1) = (y0 - pad, y1 + pad);
        let px = |x: f64| LEFT + (fx(x) - x0) / (x1 - x0).max(1e-12) * (WIDTH - LEFT - RIGHT);
        let py = |y: f64| TOP + (y1 - y) / (y1 - y0).max(1e-12) * (HEIGHT - TOP - BOTTOM);

        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            svg,
            r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
            WIDTH / 2.0,
            escape(&self.title)
        );
        // Axes, ticks and labels.
        let (bx, by) = (HEIGHT - BOTTOM, WIDTH - RIGHT);
        let _ = writeln!(
            svg,
            r#"<path d="M{LEFT} {TOP} V{bx} H{by}" stroke="black" fill="none"/>"#
        );
        for t in ticks(y0, y1) {
            let y = py(t);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{by}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT - 6.0,
                y + 4.0,
                label(t)
            );
        }
        let x_ticks: Vec<f64> = if self.log_x {
            let mut seen: Vec<f64> = self
                .series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.0))
                .collect();
            seen.sort_by(f64::total_cmp);
            seen.dedup();
            seen
        } else {
            ticks(x0, x1)
        };
        for t in x_ticks {
            let x = px(t);
            let _ = writeln!(
                svg,
                r#"<line x1="{x:.1}" y1="{bx}" x2="{x:.1}" y2="{}" stroke="black"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
                bx + 5.0,
                bx + 18.0,
                label(t)
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (LEFT + WIDTH - RIGHT) / 2.0,
            HEIGHT - 18.0,
            escape(&self.x_label),
            (TOP + HEIGHT - BOTTOM) / 2.0,
            escape(&self.y_label)
        );
        // Reference lines.
        for (i, (name, y)) in self.references.iter().enumerate() {
            let y = py(*y);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{by}" y2="{y:.1}" stroke="#555" stroke-dasharray="6 4"/><text x="{by}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
                y - 4.0 - 12.0 * i as f64,
                escape(name)
            );
        }
        // Series: line, points and ± spread bars.
        for (i, s) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let path: Vec<String> = s
                .points
                .iter()
                .map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" stroke="{colour}" stroke-width="2" fill="none"/>"#,
                path.join(" ")
            );
            for &(x, mean, spread) in &s.points {
                let (cx, lo, hi) = (px(x), py(mean - spread), py(mean + spread));
                let _ = writeln!(
                    svg,
                    r#"<line x1="{cx:.1}" y1="{lo:.1}" x2="{cx:.1}" y2="{hi:.1}" stroke="{colour}"/><line x1="{:.1}" y1="{lo:.1}" x2="{:.1}" y2="{lo:.1}" stroke="{colour}"/><line x1="{:.1}" y1="{hi:.1}" x2="{:.1}" y2="{hi:.1}" stroke="{colour}"/><circle cx="{cx:.1}" cy="{:.1}" r="3.5" fill="{colour}"/>"#,
                    cx - 4.0,
                    cx + 4.0,
                    cx - 4.0,
                    cx + 4.0,
                    py(mean)
                );
            }
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" fill="{colour}">{}</text>"#,
                LEFT + 10.0,
                TOP + 14.0 + 14.0 * i as f64,
                escape(&s.label)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

fn bounds(values: &[f64]) -> (f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        (0.0, 1.0)
    } else if (hi - lo).abs() < 1e-12 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_every_point_and_reference() {
        let plot = LinePlot {
            title: "K <study>".into(),
            x_label: "K".into(),
            y_label: "H@6".into(),
            log_x: true,
            series: vec![Series {
                label: "GoalRank".into(),
                points: vec![(2.0, 0.4, 0.01), (8.0, 0.5, 0.02), (64.0, 0.45, 0.0)],
            }],
            references: vec![("baseline".into(), 0.42)],
        };
        let svg = plot.svg();
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("stroke-dasharray"));
        assert!(svg.contains("K &lt;study&gt;"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = ticks(0.0, 1.0);
        assert_eq!(t.len(), 6, "{t:?}");
        assert!(
            t.iter()
                .zip([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
                .all(|(a, b)| (a - b).abs() < 1e-9)
        );
        let t = ticks(0.31, 0.58);
        assert!(
            t.first().copied().unwrap_or(0.0) >= 0.31 && t.len() >= 3,
            "{t:?}"
        );
    }
}
