//! Charts drawn on the server as SVG: no script, so they print, work with
//! script off and pass the CSP (colours are presentation attributes, never
//! `style`). One kind: stacked columns of counts over time, one colour per
//! series (group), with labelled axes, a legend, a `<title>` and `<desc>`
//! for screen readers, a tooltip per column part, and the same figures as a
//! plain HTML table ([`Chart::table`]) for those who would rather read them.

use std::fmt::Write;

/// Colours for the series, in order: a colour-blind-safe set (after
/// Okabe and Ito, darkened), each at least 3:1 against the white plot
/// (WCAG 1.4.11, checked in the tests) and distinct from its neighbours.
pub const PALETTE: [&str; 6] = ["#0072B2", "#C25400", "#007A5A", "#8E4585", "#5A5A5A", "#8A6D00"];

/// The plot's size in SVG units (the CSS scales the whole to its box).
const WIDTH: f64 = 480.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 22.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 36.0;

/// One series: a label (the legend's) and a value per column.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub values: Vec<u64>,
}

/// Columns over time, stacked by series.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Used to make the element ids unique on a page ("hourly-lookups").
    pub id: String,
    /// What the chart shows ("Lookups per hour, last 24 hours").
    pub title: String,
    /// The x axis's name ("Hour") and the y axis's ("Lookups").
    pub x_name: String,
    pub y_name: String,
    /// One label per column ("14:00", "30 Nov").
    pub columns: Vec<String>,
    /// Label every n-th column (at least 1), counted back from the last
    /// (which always has its label), so labels do not collide.
    pub label_every: usize,
    pub series: Vec<Series>,
}

impl Chart {
    /// The sum of every series in column `index`.
    fn column_total(&self, index: usize) -> u64 {
        self.series.iter().map(|series| series.values.get(index).copied().unwrap_or(0)).sum()
    }

    /// The largest column (every series stacked).
    pub fn largest(&self) -> u64 {
        (0..self.columns.len()).map(|index| self.column_total(index)).max().unwrap_or(0)
    }

    /// The figures in words, for the `<desc>`: the total and the busiest column.
    fn summary(&self) -> String {
        let total: u64 = (0..self.columns.len()).map(|index| self.column_total(index)).sum();
        let busiest = (0..self.columns.len()).max_by_key(|&index| (self.column_total(index), usize::MAX - index));
        match busiest {
            Some(index) if total > 0 => format!(
                "{} in all; the most, {}, at {}. The same figures are in the table that follows.",
                thousands(total),
                thousands(self.column_total(index)),
                self.columns[index]
            ),
            _ => "None in this period.".to_string(),
        }
    }

    /// The chart as an `<svg>` element.
    pub fn svg(&self) -> String {
        let id = escape(&self.id);
        let top = nice_ceiling(self.largest());
        let plot_width = WIDTH - LEFT - RIGHT;
        let plot_height = HEIGHT - TOP - BOTTOM;
        let columns = self.columns.len().max(1) as f64;
        let slot = plot_width / columns;
        let bar = (slot * 0.8).max(1.0);
        let y = |value: u64| TOP + plot_height - plot_height * value as f64 / top as f64;
        let mut svg = String::new();
        let _ = write!(
            svg,
            "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
             role=\"img\" aria-labelledby=\"{id}-title {id}-desc\" font-family=\"system-ui, sans-serif\">\
             <title id=\"{id}-title\">{}</title><desc id=\"{id}-desc\">{}</desc>",
            escape(&self.title),
            escape(&self.summary())
        );
        // Grid lines and the y axis's labels: 0, a quarter, a half, ... of the top.
        for step in 0..=4u64 {
            let value = top / 4 * step;
            let at = y(value);
            let _ = write!(
                svg,
                "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{at:.1}\" y2=\"{at:.1}\" stroke=\"{}\" stroke-width=\"1\"/>\
                 <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"12\" fill=\"#333\">{}</text>",
                WIDTH - RIGHT,
                if step == 0 { "#333" } else { "#d8d8d8" },
                LEFT - 6.0,
                at + 4.0,
                compact(value)
            );
        }
        let _ = write!(
            svg,
            "<text x=\"12\" y=\"{:.1}\" font-size=\"12\" fill=\"#333\" text-anchor=\"middle\" \
             transform=\"rotate(-90 12 {:.1})\">{}</text>",
            TOP + plot_height / 2.0,
            TOP + plot_height / 2.0,
            escape(&self.y_name)
        );
        // The columns, each series stacked on the ones before it.
        for (index, label) in self.columns.iter().enumerate() {
            let x = LEFT + slot * index as f64 + (slot - bar) / 2.0;
            let mut base = 0u64;
            for (number, series) in self.series.iter().enumerate() {
                let value = series.values.get(index).copied().unwrap_or(0);
                if value == 0 {
                    continue;
                }
                let (high, low) = (y(base + value), y(base));
                let _ = write!(
                    svg,
                    "<rect x=\"{x:.1}\" y=\"{high:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{}\">\
                     <title>{}, {}: {}</title></rect>",
                    (low - high).max(0.5),
                    PALETTE[number % PALETTE.len()],
                    escape(label),
                    escape(&series.label),
                    thousands(value)
                );
                base += value;
            }
            if (self.columns.len() - 1 - index) % self.label_every.max(1) == 0 {
                let _ = write!(
                    svg,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"12\" fill=\"#333\">{}</text>",
                    x + bar / 2.0,
                    TOP + plot_height + 16.0,
                    escape(label)
                );
            }
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"12\" fill=\"#333\">{}</text></svg>",
            LEFT + plot_width / 2.0,
            HEIGHT - 4.0,
            escape(&self.x_name)
        );
        svg
    }

    /// The legend as HTML: a swatch (an SVG square, so no inline style) and
    /// the series' name for each series.
    pub fn legend(&self) -> String {
        let mut html = String::from("<ul class=\"chart-legend\">");
        for (number, series) in self.series.iter().enumerate() {
            let _ = write!(
                html,
                "<li><svg width=\"14\" height=\"14\" aria-hidden=\"true\"><rect width=\"14\" height=\"14\" \
                 fill=\"{}\"/></svg> {}</li>",
                PALETTE[number % PALETTE.len()],
                escape(&series.label)
            );
        }
        html.push_str("</ul>");
        html
    }

    /// The same figures as an HTML table: a row per column, a column per series and a total.
    pub fn table(&self) -> String {
        let mut html = format!("<table class=\"chart-table\"><caption>{}</caption><thead><tr>", escape(&self.title));
        let _ = write!(html, "<th scope=\"col\">{}</th>", escape(&self.x_name));
        for series in &self.series {
            let _ = write!(html, "<th scope=\"col\" class=\"number\">{}</th>", escape(&series.label));
        }
        html.push_str("<th scope=\"col\" class=\"number\">Total</th></tr></thead><tbody>");
        for (index, label) in self.columns.iter().enumerate() {
            let _ = write!(html, "<tr><th scope=\"row\">{}</th>", escape(label));
            for series in &self.series {
                let value = series.values.get(index).copied().unwrap_or(0);
                let _ = write!(html, "<td class=\"number\">{}</td>", thousands(value));
            }
            let _ = write!(html, "<td class=\"number\">{}</td></tr>", thousands(self.column_total(index)));
        }
        html.push_str("</tbody></table>");
        html
    }
}

/// The smallest 1, 2 or 5 times a power of ten, times 4 (so the four grid
/// steps are whole), at or above `value`; at least 4.
pub fn nice_ceiling(value: u64) -> u64 {
    let mut power = 1u64;
    while power.checked_mul(20).is_some() {
        for step in [1, 2, 5] {
            let top = step * power * 4;
            if top >= value {
                return top;
            }
        }
        match power.checked_mul(10) {
            Some(next) => power = next,
            None => break,
        }
    }
    u64::MAX
}

/// `1234567` -> `1,234,567`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A short axis label: `800`, `12k`, `1.5M`.
pub fn compact(value: u64) -> String {
    let short = |value: u64, unit: u64, suffix: &str| {
        if value % unit == 0 {
            format!("{}{suffix}", value / unit)
        } else {
            format!("{:.1}{suffix}", value as f64 / unit as f64)
        }
    };
    match value {
        0..1_000 => value.to_string(),
        1_000..1_000_000 => short(value, 1_000, "k"),
        1_000_000..1_000_000_000 => short(value, 1_000_000, "M"),
        _ => short(value, 1_000_000_000, "G"),
    }
}

/// Text made safe inside XML and HTML, text or attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        Chart {
            id: "hourly".into(),
            title: "Lookups per hour".into(),
            x_name: "Hour".into(),
            y_name: "Lookups".into(),
            columns: vec!["10:00".into(), "11:00".into(), "12:00".into()],
            label_every: 1,
            series: vec![
                Series { label: "pupil".into(), values: vec![100, 300, 0] },
                Series { label: "staff <&>".into(), values: vec![50, 100, 0] },
            ],
        }
    }

    /// Every `<tag` has its `</tag>` or is `/>`: a small check of well-formedness.
    fn balanced(xml: &str) -> bool {
        let mut open: Vec<String> = Vec::new();
        let mut rest = xml;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').map(|end| start + end).unwrap();
            let tag = &rest[start + 1..end];
            if let Some(name) = tag.strip_prefix('/') {
                if open.pop().as_deref() != Some(name) {
                    return false;
                }
            } else if !tag.ends_with('/') {
                open.push(tag.split_whitespace().next().unwrap().to_string());
            }
            rest = &rest[end + 1..];
        }
        open.is_empty()
    }

    fn attribute(element: &str, name: &str) -> f64 {
        let start = element.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        let end = element[start..].find('"').unwrap() + start;
        element[start..end].parse().unwrap()
    }

    #[test]
    fn the_svg_is_balanced_labelled_and_escaped() {
        let svg = chart().svg();
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"));
        assert!(balanced(&svg), "{svg}");
        assert!(svg.contains("role=\"img\"") && svg.contains("aria-labelledby=\"hourly-title hourly-desc\""));
        assert!(svg.contains("<title id=\"hourly-title\">Lookups per hour</title>"));
        assert!(svg.contains("550 in all; the most, 400, at 11:00."), "{svg}");
        for label in ["10:00", "11:00", "12:00", ">Hour<", ">Lookups<"] {
            assert!(svg.contains(label), "{label} in {svg}");
        }
        assert!(svg.contains("staff &lt;&amp;&gt;") && !svg.contains("<&>"));
        assert!(!svg.contains("style="), "no inline style: the CSP forbids it");
        // The axis runs to 400 (the largest column), in quarters.
        for tick in [">0<", ">100<", ">200<", ">300<", ">400<"] {
            assert!(svg.contains(tick), "{tick}");
        }
    }

    #[test]
    fn columns_are_scaled_to_their_values() {
        let svg = chart().svg();
        let rects: Vec<&str> = svg.split("<rect ").skip(1).collect();
        // 12:00 is all zero: no rectangle. Four parts in all.
        assert_eq!(rects.len(), 4);
        let heights: Vec<f64> = rects.iter().map(|rect| attribute(rect, "height")).collect();
        let full = HEIGHT - TOP - BOTTOM;
        let expected = [100.0, 50.0, 300.0, 100.0].map(|value| full * value / 400.0);
        for (height, expected) in heights.iter().zip(expected) {
            assert!((height - expected).abs() < 0.2, "{height} against {expected}");
        }
        // Stacked: staff's part sits on top of pupil's.
        let pupil_top = attribute(rects[0], "y");
        let staff_bottom = attribute(rects[1], "y") + attribute(rects[1], "height");
        assert!((pupil_top - staff_bottom).abs() < 0.2);
        assert!(rects[2].contains("<title>11:00, pupil: 300</title>"));
    }

    #[test]
    fn the_table_and_legend_carry_the_same_figures() {
        let chart = chart();
        let table = chart.table();
        assert!(balanced(&table), "{table}");
        assert!(table.contains("<caption>Lookups per hour</caption>"));
        assert!(table.contains("<th scope=\"row\">11:00</th><td class=\"number\">300</td><td class=\"number\">100</td><td class=\"number\">400</td>"));
        let legend = chart.legend();
        assert!(balanced(&legend));
        assert!(legend.contains(PALETTE[0]) && legend.contains("pupil") && legend.contains("staff &lt;&amp;&gt;"));
    }

    #[test]
    fn an_empty_chart_says_so() {
        let mut empty = chart();
        empty.series.clear();
        let svg = empty.svg();
        assert!(balanced(&svg));
        assert!(svg.contains("None in this period."));
        assert!(!svg.contains("<rect"));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(nice_ceiling(0), 4);
        assert_eq!(nice_ceiling(400), 400);
        assert_eq!(nice_ceiling(401), 800);
        assert_eq!(nice_ceiling(5_000_001), 8_000_000);
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(compact(12_000), "12k");
        assert_eq!(compact(1_500_000), "1.5M");
        assert_eq!(compact(800), "800");
    }

    /// WCAG relative luminance and contrast.
    fn luminance(hex: &str) -> f64 {
        let channel = |at: usize| {
            let value = u8::from_str_radix(&hex[at..at + 2], 16).unwrap() as f64 / 255.0;
            if value <= 0.03928 { value / 12.92 } else { ((value + 0.055) / 1.055).powf(2.4) }
        };
        0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5)
    }

    #[test]
    fn every_colour_stands_out_from_the_white_plot() {
        for colour in PALETTE {
            let contrast = (1.0 + 0.05) / (luminance(colour) + 0.05);
            assert!(contrast >= 3.0, "{colour}: {contrast:.2}:1 against white");
        }
    }
}
