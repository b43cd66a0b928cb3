//! Bar charts as inline SVG.
//!
//! Every chart is an `<svg id="chart-…">` with one `<rect class="bar">` per item, whatever its
//! value (a zero draws a bar of no length, so "no one used it" is shown rather than left out).
//! Each bar carries `data-name` and `data-value` and a `<title>` with the exact numbers: a
//! reader hovers for them, a screen reader reads them, and a test checks what a browser drew.
//! Under each chart, a collapsed table holds the same numbers as text.
//!
//! The geometry is in the SVG's own units (`viewBox`); the page scales it to its width, and the
//! colours come from the page's CSS, so a chart follows the reader's light or dark theme.

use maud::{Markup, html};

/// How wide a chart is drawn, in SVG units, which are CSS pixels until the page is narrower than
/// the chart: text keeps the page's size, and shrinks with the chart only on a small screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Width {
    /// The whole width of the page.
    Full,
    /// One of two charts side by side.
    Half,
}

impl Width {
    fn units(self) -> f64 {
        match self {
            Width::Full => 1_068.0,
            Width::Half => 500.0,
        }
    }
}
/// Names longer than this are cut (with `…`) in the chart; the title and table keep them whole.
const MAX_LABEL_CHARS: usize = 32;
/// A rough width of one character of the charts' 13-unit font, to fit the label column.
const CHAR_WIDTH: f64 = 6.8;
/// The same for the 12-unit names under a column chart's axis, which are mostly digits: wide
/// enough for DejaVu Sans, the widest of the usual sans-serif fonts.
const AXIS_CHAR_WIDTH: f64 = 7.2;

/// How a bar is coloured, as a class beside `bar`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tone {
    /// The chart's usual colour.
    Plain,
    /// A result that went well (a completed run).
    Good,
    /// A failure.
    Bad,
    /// Neither (a cancelled run).
    Neutral,
    /// Numbers of another kind than their neighbours' (a day kept only as aggregates).
    Faded,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Tone::Plain => "bar",
            Tone::Good => "bar good",
            Tone::Bad => "bar bad",
            Tone::Neutral => "bar neutral",
            Tone::Faded => "bar faded",
        }
    }
}

/// One bar.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Bar {
    /// What the bar stands for (a feature, a day, a version).
    pub(super) name: String,
    /// The count behind it.
    pub(super) value: u64,
    /// Its length as a share of the longest possible bar, from 0 to 1.
    pub(super) fraction: f64,
    /// The number written beside it.
    pub(super) shown: String,
    /// The sentence in its `<title>`.
    pub(super) title: String,
    /// Its colour.
    pub(super) tone: Tone,
}

impl Bar {
    /// Bars for counts, each as long as its share of the largest count.
    pub(super) fn for_counts(
        counts: impl IntoIterator<Item = (String, u64)>,
        describe: impl Fn(&str, u64) -> String,
    ) -> Vec<Bar> {
        let counts: Vec<(String, u64)> = counts.into_iter().collect();
        let largest = counts.iter().map(|(_, value)| *value).max().unwrap_or(0);
        counts
            .into_iter()
            .map(|(name, value)| Bar {
                title: describe(&name, value),
                shown: super::group_digits(value),
                fraction: ratio(value, largest),
                name,
                value,
                tone: Tone::Plain,
            })
            .collect()
    }

    /// The same bar in another colour.
    pub(super) fn with_tone(self, tone: Tone) -> Bar {
        Bar { tone, ..self }
    }
}

/// `part / whole`, 0 when `whole` is 0.
pub(super) fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 / whole as f64).clamp(0.0, 1.0)
    }
}

/// One row per bar, the name on the left and the number after the bar: for categories, which
/// read best as a list.
pub(super) fn rows(id: &str, caption: &str, width: Width, bars: &[Bar]) -> Markup {
    const ROW: f64 = 24.0;
    const THICKNESS: f64 = 15.0;
    const VALUE_ROOM: f64 = 96.0;
    let longest = bars
        .iter()
        .map(|bar| label(&bar.name).chars().count())
        .max()
        .unwrap_or(0);
    let label_width = (longest as f64 * CHAR_WIDTH + 14.0).clamp(56.0, 240.0);
    let width = width.units();
    let track = width - label_width - VALUE_ROOM;
    let height = ROW * bars.len() as f64 + 4.0;
    html! {
        figure.chart {
            svg id=(id) class="rows" role="img" aria-label=(caption)
                width=(units(width)) height=(units(height))
                viewBox=(format!("0 0 {} {}", units(width), units(height)))
                xmlns="http://www.w3.org/2000/svg" {
                @for (index, bar) in bars.iter().enumerate() {
                    @let top = 2.0 + ROW * index as f64;
                    @let middle = top + ROW / 2.0;
                    @let length = track * bar.fraction.clamp(0.0, 1.0);
                    g.row {
                        text.label x=(units(label_width - 8.0)) y=(units(middle)) { (label(&bar.name)) }
                        rect.track x=(units(label_width)) y=(units(middle - THICKNESS / 2.0))
                            width=(units(track)) height=(units(THICKNESS)) rx="3" {}
                        rect class=(bar.tone.class()) data-name=(bar.name) data-value=(bar.value)
                            x=(units(label_width)) y=(units(middle - THICKNESS / 2.0))
                            width=(units(length)) height=(units(THICKNESS)) rx="3" {
                            title { (bar.title) }
                        }
                        text.value x=(units(label_width + length + 6.0)) y=(units(middle)) { (bar.shown) }
                    }
                }
            }
            (table(caption, bars))
        }
    }
}

/// One column per bar, left to right in the order given: for a series (days), whose order is
/// the point.
pub(super) fn columns(id: &str, caption: &str, width: Width, bars: &[Bar]) -> Markup {
    const HEIGHT: f64 = 220.0;
    const LEFT: f64 = 40.0;
    const RIGHT: f64 = 12.0;
    const TOP: f64 = 18.0;
    const BOTTOM: f64 = 26.0;
    // Numbers above the columns only while they fit; the titles and the table always have them.
    const MOST_COLUMNS_WITH_NUMBERS: usize = 16;
    let width = width.units();
    let plot_width = width - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let baseline = TOP + plot_height;
    let count = bars.len().max(1);
    let slot = plot_width / count as f64;
    let column = (slot * 0.78).max(0.5);
    // Every how many columns a name fits under the axis without touching the next one.
    let longest = bars
        .iter()
        .map(|bar| label(&bar.name).chars().count())
        .max()
        .unwrap_or(0);
    let label_room = longest as f64 * AXIS_CHAR_WIDTH + 8.0;
    let label_every = ((label_room / slot).ceil() as usize).max(1);
    let largest = bars.iter().map(|bar| bar.value).max().unwrap_or(0);
    let numbers_on_top = bars.len() <= MOST_COLUMNS_WITH_NUMBERS;
    html! {
        figure.chart {
            svg id=(id) class="columns" role="img" aria-label=(caption)
                width=(units(width)) height=(units(HEIGHT))
                viewBox=(format!("0 0 {} {HEIGHT}", units(width)))
                xmlns="http://www.w3.org/2000/svg" {
                g.axis {
                    line x1=(units(LEFT)) x2=(units(width - RIGHT)) y1=(units(TOP)) y2=(units(TOP)) {}
                    line x1=(units(LEFT)) x2=(units(width - RIGHT)) y1=(units(baseline)) y2=(units(baseline)) {}
                    text.tick x=(units(LEFT - 6.0)) y=(units(TOP)) { (super::group_digits(largest)) }
                    text.tick x=(units(LEFT - 6.0)) y=(units(baseline)) { "0" }
                }
                @for (index, bar) in bars.iter().enumerate() {
                    @let center = LEFT + slot * (index as f64 + 0.5);
                    @let height = plot_height * bar.fraction.clamp(0.0, 1.0);
                    g.column {
                        rect class=(bar.tone.class()) data-name=(bar.name) data-value=(bar.value)
                            x=(units(center - column / 2.0)) y=(units(baseline - height))
                            width=(units(column)) height=(units(height)) rx=(units(column.min(6.0) / 3.0)) {
                            title { (bar.title) }
                        }
                        @if numbers_on_top && bar.value > 0 {
                            text.value x=(units(center)) y=(units(baseline - height - 9.0)) { (bar.shown) }
                        }
                        // Counted from the last column, which is always named: the latest day matters most.
                        @if (bars.len() - 1 - index).is_multiple_of(label_every) {
                            text.category x=(units(center)) y=(units(baseline + 16.0)) { (label(&bar.name)) }
                        }
                    }
                }
            }
            (table(caption, bars))
        }
    }
}

/// The chart's numbers as a table, collapsed under it.
fn table(caption: &str, bars: &[Bar]) -> Markup {
    // A chart that shows shares gets a column for the counts behind them.
    let counts_apart = bars
        .iter()
        .any(|bar| bar.shown != super::group_digits(bar.value));
    html! {
        details.numbers {
            summary { "Numbers" }
            table {
                caption { (caption) }
                tbody {
                    @for bar in bars {
                        tr {
                            th scope="row" { (bar.name) }
                            td { (bar.shown) }
                            @if counts_apart { td { (super::group_digits(bar.value)) } }
                        }
                    }
                }
            }
        }
    }
}

/// A name as the chart writes it: cut when too long for the label column.
fn label(name: &str) -> String {
    if name.chars().count() <= MAX_LABEL_CHARS {
        name.to_owned()
    } else {
        let mut cut: String = name.chars().take(MAX_LABEL_CHARS - 1).collect();
        cut.push('…');
        cut
    }
}

/// A coordinate, to a tenth of a unit: finer would only lengthen the page.
fn units(value: f64) -> String {
    // Every coordinate of these charts is at or right of, and at or below, the origin.
    let value = if value.is_finite() {
        value.max(0.0)
    } else {
        0.0
    };
    let text = format!("{value:.1}");
    text.strip_suffix(".0").map(str::to_owned).unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_in_the_chart_only() {
        let long = "a".repeat(MAX_LABEL_CHARS + 5);
        let cut = label(&long);
        assert_eq!(cut.chars().count(), MAX_LABEL_CHARS);
        assert!(cut.ends_with('…'));
        assert_eq!(label("caching"), "caching");
        let bars = Bar::for_counts([(long.clone(), 1)], |name, _| name.to_owned());
        let svg = rows("chart-test", "test", Width::Half, &bars).into_string();
        assert!(svg.contains(&format!("data-name=\"{long}\"")), "{svg}");
        assert!(svg.contains(&format!("<title>{long}</title>")), "{svg}");
    }

    #[test]
    fn bars_are_as_long_as_their_share_of_the_largest() {
        let bars = Bar::for_counts(
            [
                ("a".to_owned(), 4),
                ("b".to_owned(), 1),
                ("c".to_owned(), 0),
            ],
            |name, value| format!("{name} {value}"),
        );
        let fractions: Vec<f64> = bars.iter().map(|bar| bar.fraction).collect();
        assert_eq!(fractions, [1.0, 0.25, 0.0]);
        assert!(
            Bar::for_counts([("z".to_owned(), 0)], |_, _| String::new())[0]
                .fraction
                .abs()
                < f64::EPSILON
        );
    }

    #[test]
    fn coordinates_are_short_and_finite() {
        for (value, expected) in [
            (12.0, "12"),
            (12.345, "12.3"),
            (-0.04, "0"),
            (f64::NAN, "0"),
            (f64::INFINITY, "0"),
        ] {
            assert_eq!(units(value), expected, "{value}");
        }
    }
}
