//! `--plot FILE.svg`: forwarded packets per second and p99 latency against
//! subscribers per room, one point per ramp step, as a plain SVG file.

use std::fmt::Write as _;

use crate::loadtest::{HELD_MAX_P99_MS, StepReport};

const W: f64 = 420.0;
const H: f64 = 260.0;
const PAD: f64 = 50.0;

/// One chart: a series of (x, y) with its title and axis names.
struct Chart<'a> {
    title: &'a str,
    y_label: &'a str,
    points: Vec<(f64, f64)>,
    /// A horizontal limit line (the ramp's threshold).
    limit: Option<f64>,
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn chart(out: &mut String, c: &Chart<'_>, x0: f64, x_max: f64) {
    let y_max = nice_max(
        c.points
            .iter()
            .map(|p| p.1)
            .chain(c.limit)
            .fold(0.0, f64::max)
            * 1.05,
    );
    let sx = |x: f64| x0 + PAD + (x / x_max) * (W - 1.5 * PAD);
    let sy = |y: f64| H - PAD + 10.0 - (y / y_max) * (H - 1.6 * PAD);
    let _ = write!(
        out,
        r##"<text x="{}" y="20" font-size="14" text-anchor="middle">{}</text>"##,
        x0 + W / 2.0,
        c.title
    );
    // Axes with five ticks each.
    let _ = write!(
        out,
        r##"<line x1="{a}" y1="{b}" x2="{c}" y2="{b}" stroke="#333"/><line x1="{a}" y1="{b}" x2="{a}" y2="{d}" stroke="#333"/>"##,
        a = sx(0.0),
        b = sy(0.0),
        c = sx(x_max),
        d = sy(y_max)
    );
    for i in 0..=5 {
        let (x, y) = (x_max * f64::from(i) / 5.0, y_max * f64::from(i) / 5.0);
        let _ = write!(
            out,
            r##"<text x="{}" y="{}" font-size="10" text-anchor="middle">{x:.0}</text><text x="{}" y="{}" font-size="10" text-anchor="end">{y:.0}</text>"##,
            sx(x),
            sy(0.0) + 14.0,
            sx(0.0) - 4.0,
            sy(y) + 3.0
        );
    }
    let _ = write!(
        out,
        r##"<text x="{}" y="{}" font-size="11" text-anchor="middle">subscribers per room</text><text x="{}" y="{}" font-size="11" transform="rotate(-90 {} {})" text-anchor="middle">{}</text>"##,
        x0 + W / 2.0,
        H - 8.0,
        x0 + 12.0,
        H / 2.0,
        x0 + 12.0,
        H / 2.0,
        c.y_label
    );
    if let Some(l) = c.limit {
        let _ = write!(
            out,
            r##"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#c00" stroke-dasharray="4 3"/>"##,
            sx(0.0),
            sx(x_max),
            y = sy(l)
        );
    }
    let path: Vec<String> = c
        .points
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
        .collect();
    let _ = write!(
        out,
        r##"<polyline fill="none" stroke="#1f5fa8" stroke-width="2" points="{}"/>"##,
        path.join(" ")
    );
    for &(x, y) in &c.points {
        let _ = write!(
            out,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#1f5fa8"/>"##,
            sx(x),
            sy(y)
        );
    }
}

/// The SVG document for these steps.
pub fn svg(steps: &[StepReport]) -> String {
    let x_max = nice_max(
        steps
            .iter()
            .map(|s| s.subscribers_per_room as f64)
            .fold(0.0, f64::max),
    );
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{H}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>"##,
        2.0 * W
    );
    let pps = Chart {
        title: "forwarded packets/s",
        y_label: "packets/s",
        points: steps
            .iter()
            .map(|s| (s.subscribers_per_room as f64, s.forwarded_packets_per_sec))
            .collect(),
        limit: None,
    };
    let p99 = Chart {
        title: "p99 one-way latency (limit dashed)",
        y_label: "ms",
        points: steps
            .iter()
            .map(|s| (s.subscribers_per_room as f64, s.latency.p99_ms))
            .collect(),
        limit: Some(HELD_MAX_P99_MS),
    };
    chart(&mut out, &pps, 0.0, x_max);
    chart(&mut out, &p99, W, x_max);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(180.0), 200.0);
        assert_eq!(nice_max(2_100.0), 2_500.0);
    }
}
