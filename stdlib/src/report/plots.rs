//! Charts of the report, drawn with plotters to PNG (with the bundled
//! DejaVu Sans font) and SVG from one drawing routine.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// DejaVu Sans (Bitstream Vera licence with public-domain DejaVu changes; see
/// fonts/LICENSE-DejaVu.txt), used for all text in the bitmaps.
static FONT: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and known to parse; a failure would only
        // lose text, never crash.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// (x, y, optional (low, high) interval of y).
pub type XyInterval = (f64, f64, Option<(f64, f64)>);

/// A named line of points.
pub struct Series {
    pub name: String,
    /// Sorted by x when drawn.
    pub points: Vec<XyInterval>,
}

/// A line chart with horizontal reference lines.
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// (label, y): constant references (source model, larger model, 0.5).
    pub references: Vec<(String, f64)>,
    /// Tick labels as powers of ten (x holds log10 values).
    pub x_log10: bool,
}

/// Horizontal grouped bars: one row per category, one bar per group.
pub struct BarChart {
    pub title: String,
    pub x_label: String,
    pub categories: Vec<String>,
    pub groups: Vec<String>,
    /// values[category][group]
    pub values: Vec<Vec<f64>>,
    /// Stack the groups instead of placing them side by side.
    pub stacked: bool,
}

/// A parallel-categories (Sankey-style) figure of two columns: the same
/// items' categories before (left) and after (right), with a band from
/// each left category to each right one as wide as the items that moved so.
pub struct FlowChart {
    pub title: String,
    pub left: String,
    pub right: String,
    pub categories: Vec<String>,
    /// counts[left][right]
    pub counts: Vec<Vec<u64>>,
}

const SIZE: (u32, u32) = (960, 560);

fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    C[i % C.len()]
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn pad(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    if (hi - lo).abs() < 1e-12 {
        return (lo - 0.5 * lo.abs().max(1e-3), hi + 0.5 * hi.abs().max(1e-3));
    }
    let m = (hi - lo) * 0.08;
    (lo - m, hi + m)
}

fn draw_lines<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    c: &LineChart,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(err)?;
    let xs: Vec<f64> = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let mut ys: Vec<f64> = c
        .series
        .iter()
        .flat_map(|s| {
            s.points
                .iter()
                .flat_map(|p| [p.1, p.2.map_or(p.1, |i| i.0), p.2.map_or(p.1, |i| i.1)])
        })
        .collect();
    ys.extend(c.references.iter().map(|r| r.1));
    let (x0, x1) = pad(
        xs.iter().copied().fold(f64::INFINITY, f64::min),
        xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let (y0, y1) = pad(
        ys.iter().copied().fold(f64::INFINITY, f64::min),
        ys.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let mut chart = ChartBuilder::on(root)
        .caption(&c.title, (FAMILY, 22))
        .margin(18)
        .x_label_area_size(55)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    let x_fmt = |v: &f64| {
        if c.x_log10 {
            format!("1e{v:.1}")
        } else {
            human(*v)
        }
    };
    chart
        .configure_mesh()
        .x_desc(&c.x_label)
        .y_desc(&c.y_label)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|v| format!("{v:.3}"))
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    for (k, (name, y)) in c.references.iter().enumerate() {
        const REF: [RGBColor; 4] = [
            RGBColor(80, 80, 80),
            RGBColor(170, 30, 30),
            RGBColor(30, 30, 170),
            RGBColor(30, 130, 130),
        ];
        let style = ShapeStyle {
            color: REF[k % REF.len()].mix(0.9),
            filled: false,
            stroke_width: 2,
        };
        // Dashes: short segments along the reference.
        let n = 40;
        let seg = (x1 - x0) / n as f64;
        chart
            .draw_series((0..n).step_by(2).map(move |i| {
                PathElement::new(
                    vec![(x0 + i as f64 * seg, *y), (x0 + (i as f64 + 1.0) * seg, *y)],
                    style,
                )
            }))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 8, y), (x + 12, y), (x + 20, y)], style)
            });
    }
    for (i, s) in c.series.iter().enumerate() {
        let col = color(i);
        let mut pts = s.points.clone();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0, p.1)),
                col.stroke_width(2),
            ))
            .map_err(err)?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 4, col.filled())))
            .map_err(err)?;
        chart
            .draw_series(pts.iter().filter_map(|p| {
                p.2.map(|(lo, hi)| {
                    PathElement::new(vec![(p.0, lo), (p.0, hi)], col.stroke_width(1))
                })
            }))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 14))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

fn draw_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    c: &BarChart,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(err)?;
    let n = c.categories.len().max(1);
    let g = c.groups.len().max(1);
    let vmax = c
        .values
        .iter()
        .map(|row| {
            if c.stacked {
                row.iter().sum::<f64>()
            } else {
                row.iter().copied().fold(0.0, f64::max)
            }
        })
        .fold(0.0, f64::max);
    let vmax = if vmax > 0.0 { vmax * 1.1 } else { 1.0 };
    let label_width = c
        .categories
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 32) as u32
        * 8
        + 20;
    let mut chart = ChartBuilder::on(root)
        .caption(&c.title, (FAMILY, 22))
        .margin(18)
        .x_label_area_size(55)
        .y_label_area_size(label_width)
        .build_cartesian_2d(0.0..vmax, -0.5..(n as f64 - 0.5))
        .map_err(err)?;
    let cats = c.categories.clone();
    let y_fmt = move |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < cats.len() {
            let s = &cats[cats.len() - 1 - i as usize];
            if s.chars().count() > 32 {
                format!("{}…", s.chars().take(31).collect::<String>())
            } else {
                s.clone()
            }
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_desc(&c.x_label)
        .y_labels(n * 2 + 1)
        .y_label_formatter(&y_fmt)
        .x_label_formatter(&|v| human(*v))
        .disable_y_mesh()
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    let band = 0.8;
    for (gi, gname) in c.groups.iter().enumerate() {
        let col = color(gi);
        let rects: Vec<Rectangle<(f64, f64)>> = c
            .values
            .iter()
            .enumerate()
            .map(|(ci, row)| {
                // Categories run top to bottom.
                let yc = (n - 1 - ci) as f64;
                let v = row.get(gi).copied().unwrap_or(0.0);
                if c.stacked {
                    let start: f64 = row.iter().take(gi).sum();
                    Rectangle::new(
                        [(start, yc - band / 2.0), (start + v, yc + band / 2.0)],
                        col.filled(),
                    )
                } else {
                    let h = band / g as f64;
                    // The first group on top, as in the legend.
                    let y0 = yc + band / 2.0 - (gi + 1) as f64 * h;
                    Rectangle::new([(0.0, y0), (v, y0 + h * 0.92)], col.filled())
                }
            })
            .collect();
        chart
            .draw_series(rects)
            .map_err(err)?
            .label(gname.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], col.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

fn draw_flow<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    c: &FlowChart,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(err)?;
    let k = c.categories.len();
    let cell = |l: usize, r: usize| {
        c.counts
            .get(l)
            .and_then(|row| row.get(r))
            .copied()
            .unwrap_or(0)
    };
    let left: Vec<u64> = (0..k).map(|l| (0..k).map(|r| cell(l, r)).sum()).collect();
    let right: Vec<u64> = (0..k).map(|r| (0..k).map(|l| cell(l, r)).sum()).collect();
    let total = left.iter().sum::<u64>().max(1) as f64;
    let mut chart = ChartBuilder::on(root)
        .caption(&c.title, (FAMILY, 22))
        .margin(18)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)
        .map_err(err)?;
    // Columns at x0..x0+w and x1-w..x1; categories top to bottom with gaps.
    let (x0, x1, w) = (0.18, 0.82, 0.04);
    let shown = left.iter().chain(&right).filter(|&&n| n > 0).count().max(1);
    let gap = 0.04_f64.min(0.3 / shown as f64);
    let scale = (0.9 - gap * (k.saturating_sub(1)) as f64) / total;
    let tops = |sizes: &[u64]| -> Vec<f64> {
        let mut y = 0.95;
        sizes
            .iter()
            .map(|&n| {
                let top = y;
                if n > 0 {
                    y -= n as f64 * scale + gap;
                }
                top
            })
            .collect()
    };
    let (lt, rt) = (tops(&left), tops(&right));
    // Bands, each leaving its left category in right-category order and
    // entering its right category in left-category order.
    let mut l_used = vec![0.0; k];
    let mut r_used = vec![0.0; k];
    let steps = 24;
    for l in 0..k {
        for r in 0..k {
            let n = cell(l, r);
            if n == 0 {
                continue;
            }
            let h = n as f64 * scale;
            let (ly, ry) = (lt[l] - l_used[l], rt[r] - r_used[r]);
            l_used[l] += h;
            r_used[r] += h;
            let (a, b) = (x0 + w, x1 - w);
            let curve = |y_left: f64, y_right: f64, t: f64| {
                let s = t * t * (3.0 - 2.0 * t);
                (a + (b - a) * t, y_left + (y_right - y_left) * s)
            };
            let mut poly: Vec<(f64, f64)> = (0..=steps)
                .map(|i| curve(ly, ry, i as f64 / steps as f64))
                .collect();
            poly.extend(
                (0..=steps)
                    .rev()
                    .map(|i| curve(ly - h, ry - h, i as f64 / steps as f64)),
            );
            chart
                .draw_series(std::iter::once(Polygon::new(
                    poly,
                    color(l).mix(0.45).filled(),
                )))
                .map_err(err)?;
        }
    }
    for (side, sizes, top, x) in [(0, &left, &lt, x0), (1, &right, &rt, x1 - w)] {
        for i in 0..k {
            if sizes[i] == 0 {
                continue;
            }
            let h = sizes[i] as f64 * scale;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x, top[i]), (x + w, top[i] - h)],
                    color(i).filled(),
                )))
                .map_err(err)?;
            let label = format!("{} ({})", c.categories[i], sizes[i]);
            let style = TextStyle::from((FAMILY, 15).into_font()).color(&BLACK);
            let (lx, anchor) = if side == 0 {
                (x - 0.01, Pos::new(HPos::Right, VPos::Center))
            } else {
                (x + w + 0.01, Pos::new(HPos::Left, VPos::Center))
            };
            chart
                .draw_series(std::iter::once(Text::new(
                    label,
                    (lx, top[i] - h / 2.0),
                    style.pos(anchor),
                )))
                .map_err(err)?;
        }
    }
    let head = TextStyle::from((FAMILY, 16).into_font()).color(&BLACK);
    for (text, x) in [(&c.left, x0 + w / 2.0), (&c.right, x1 - w / 2.0)] {
        chart
            .draw_series(std::iter::once(Text::new(
                text.clone(),
                (x, 0.99),
                head.pos(Pos::new(HPos::Center, VPos::Top)),
            )))
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// Numbers as 1.2k, 3.4M, 5.6B, 7.8T, or with 3 decimals below 10.
pub fn human(v: f64) -> String {
    let a = v.abs();
    if a >= 1e12 {
        format!("{:.1}T", v / 1e12)
    } else if a >= 1e9 {
        format!("{:.1}B", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// What a chart is.
pub enum Chart {
    Lines(LineChart),
    Bars(BarChart),
    Flow(FlowChart),
}

/// Draws `chart` to `<stem>.png` and `<stem>.svg` in `dir`; returns the SVG text.
pub fn render(dir: &Path, stem: &str, chart: &Chart) -> Result<String, String> {
    register_font();
    let png = dir.join(format!("{stem}.png"));
    let svg_path = dir.join(format!("{stem}.svg"));
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        match chart {
            Chart::Lines(c) => draw_lines(&root, c)?,
            Chart::Bars(c) => draw_bars(&root, c)?,
            Chart::Flow(c) => draw_flow(&root, c)?,
        }
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        match chart {
            Chart::Lines(c) => draw_lines(&root, c)?,
            Chart::Bars(c) => draw_bars(&root, c)?,
            Chart::Flow(c) => draw_flow(&root, c)?,
        }
    }
    std::fs::write(&svg_path, &svg).map_err(|e| format!("writing {}: {e}", svg_path.display()))?;
    Ok(svg)
}
