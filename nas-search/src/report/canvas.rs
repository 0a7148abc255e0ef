//! Where plots are drawn: a small [`Canvas`] in pixel coordinates, with an
//! SVG implementation (written by hand, so its text needs no font here)
//! and a PNG one (plotters' bitmap backend, whose text needs a TrueType
//! font; without one the PNG is drawn without text). Plots are laid out
//! once against this trait, so both files show the same thing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// An RGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

/// Horizontal anchor of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    Start,
    Middle,
    End,
}

/// Pixel-space drawing operations (origin top left, y down).
pub(crate) trait Canvas {
    /// An open polyline.
    fn polyline(&mut self, pts: &[(f64, f64)], color: Rgb, width: f64);
    /// A closed polygon, filled and/or outlined.
    fn polygon(&mut self, pts: &[(f64, f64)], fill: Option<Rgb>, stroke: Option<Rgb>);
    /// A circle, filled and/or outlined.
    fn circle(&mut self, c: (f64, f64), r: f64, fill: Option<Rgb>, stroke: Option<Rgb>);
    /// A text whose baseline's vertical centre is at `at`; `vertical` turns
    /// it 90° counter-clockwise (for a y-axis label).
    fn text(
        &mut self,
        at: (f64, f64),
        s: &str,
        size: f64,
        anchor: Anchor,
        color: Rgb,
        vertical: bool,
    );

    /// A dashed straight line.
    fn dashed(&mut self, a: (f64, f64), b: (f64, f64), color: Rgb, width: f64, dash: f64) {
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len = dx.hypot(dy);
        if len <= 0.0 {
            return;
        }
        let n = (len / dash).ceil() as usize;
        for k in (0..n).step_by(2) {
            let t0 = k as f64 * dash / len;
            let t1 = ((k + 1) as f64 * dash / len).min(1.0);
            self.polyline(
                &[
                    (a.0 + dx * t0, a.1 + dy * t0),
                    (a.0 + dx * t1, a.1 + dy * t1),
                ],
                color,
                width,
            );
        }
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG document being drawn.
pub(crate) struct SvgCanvas {
    out: String,
}

impl SvgCanvas {
    pub(crate) fn new(w: f64, h: f64) -> SvgCanvas {
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
        SvgCanvas { out }
    }

    pub(crate) fn finish(mut self) -> String {
        self.out.push_str("</svg>\n");
        self.out
    }
}

fn paint(fill: Option<Rgb>, stroke: Option<Rgb>) -> String {
    format!(
        r#"fill="{}" stroke="{}""#,
        fill.map_or("none".into(), Rgb::hex),
        stroke.map_or("none".into(), Rgb::hex)
    )
}

impl Canvas for SvgCanvas {
    fn polyline(&mut self, pts: &[(f64, f64)], color: Rgb, width: f64) {
        let p: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            self.out,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{width}"/>"#,
            p.join(" "),
            color.hex()
        );
    }

    fn polygon(&mut self, pts: &[(f64, f64)], fill: Option<Rgb>, stroke: Option<Rgb>) {
        let p: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            self.out,
            r#"<polygon points="{}" {} stroke-width="1.5"/>"#,
            p.join(" "),
            paint(fill, stroke)
        );
    }

    fn circle(&mut self, c: (f64, f64), r: f64, fill: Option<Rgb>, stroke: Option<Rgb>) {
        let _ = writeln!(
            self.out,
            r#"<circle cx="{:.1}" cy="{:.1}" r="{r}" {} stroke-width="1.5"/>"#,
            c.0,
            c.1,
            paint(fill, stroke)
        );
    }

    fn text(
        &mut self,
        at: (f64, f64),
        s: &str,
        size: f64,
        anchor: Anchor,
        color: Rgb,
        vertical: bool,
    ) {
        let a = match anchor {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        };
        let transform = if vertical {
            format!(r#" transform="rotate(-90 {:.1} {:.1})""#, at.0, at.1)
        } else {
            String::new()
        };
        let _ = writeln!(
            self.out,
            r#"<text x="{:.1}" y="{:.1}" dy="0.35em" text-anchor="{a}" font-size="{size}" fill="{}"{transform}>{}</text>"#,
            at.0,
            at.1,
            color.hex(),
            xml_escape(s)
        );
    }
}

/// A PNG being drawn with plotters; the first drawing error is kept and
/// returned by [`PngCanvas::finish`].
pub(crate) struct PngCanvas<'a> {
    area: plotters::drawing::DrawingArea<
        plotters::prelude::BitMapBackend<'a>,
        plotters::coord::Shift,
    >,
    text: bool,
    error: Option<String>,
}

impl<'a> PngCanvas<'a> {
    /// A white canvas of `w × h` pixels writing to `path`; text is drawn
    /// only if a font was found.
    pub(crate) fn new(path: &'a Path, w: u32, h: u32) -> Result<PngCanvas<'a>, String> {
        use plotters::prelude::*;
        let text = font_available();
        let area = BitMapBackend::new(path, (w, h)).into_drawing_area();
        area.fill(&WHITE).map_err(|e| e.to_string())?;
        Ok(PngCanvas {
            area,
            text,
            error: None,
        })
    }

    fn keep<E: std::fmt::Display>(&mut self, r: Result<(), E>) {
        if let Err(e) = r {
            self.error.get_or_insert(e.to_string());
        }
    }

    /// Writes the file; `true` if it has text.
    pub(crate) fn finish(self) -> Result<bool, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.area.present().map_err(|e| e.to_string())?;
        Ok(self.text)
    }
}

fn px(p: (f64, f64)) -> (i32, i32) {
    (p.0.round() as i32, p.1.round() as i32)
}

fn rgb_color(c: Rgb) -> plotters::style::RGBColor {
    plotters::style::RGBColor(c.0, c.1, c.2)
}

impl Canvas for PngCanvas<'_> {
    fn polyline(&mut self, pts: &[(f64, f64)], c: Rgb, width: f64) {
        use plotters::prelude::*;
        let style = rgb_color(c).stroke_width(width.round().max(1.0) as u32);
        let r = self.area.draw(&PathElement::new(
            pts.iter().copied().map(px).collect::<Vec<_>>(),
            style,
        ));
        self.keep(r);
    }

    fn polygon(&mut self, pts: &[(f64, f64)], fill: Option<Rgb>, stroke: Option<Rgb>) {
        use plotters::prelude::*;
        let p: Vec<(i32, i32)> = pts.iter().copied().map(px).collect();
        if let Some(f) = fill {
            let r = self
                .area
                .draw(&Polygon::new(p.clone(), rgb_color(f).filled()));
            self.keep(r);
        }
        if let Some(s) = stroke {
            let mut closed = p;
            if let Some(first) = closed.first().copied() {
                closed.push(first);
            }
            let r = self
                .area
                .draw(&PathElement::new(closed, rgb_color(s).stroke_width(2)));
            self.keep(r);
        }
    }

    fn circle(&mut self, c: (f64, f64), r: f64, fill: Option<Rgb>, stroke: Option<Rgb>) {
        use plotters::prelude::*;
        let radius = r.round().max(1.0) as i32;
        if let Some(f) = fill {
            let res = self
                .area
                .draw(&Circle::new(px(c), radius, rgb_color(f).filled()));
            self.keep(res);
        }
        if let Some(s) = stroke {
            let res = self
                .area
                .draw(&Circle::new(px(c), radius, rgb_color(s).stroke_width(2)));
            self.keep(res);
        }
    }

    fn text(&mut self, at: (f64, f64), s: &str, size: f64, anchor: Anchor, c: Rgb, vertical: bool) {
        use plotters::prelude::*;
        use plotters::style::text_anchor::{HPos, Pos, VPos};
        if !self.text {
            return;
        }
        let h = match anchor {
            Anchor::Start => HPos::Left,
            Anchor::Middle => HPos::Center,
            Anchor::End => HPos::Right,
        };
        let rgb = rgb_color(c);
        let mut font = ("sans-serif", size).into_font();
        if vertical {
            font = font.transform(FontTransform::Rotate270);
        }
        let style = font.color(&rgb).pos(Pos::new(h, VPos::Center));
        let r = self.area.draw(&Text::new(s.to_owned(), px(at), style));
        self.keep(r);
    }
}

/// Registers a TrueType font for plotters once; `true` if one was found.
pub(crate) fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = std::env::var_os("NAS_SEARCH_FONT") {
            candidates.push(p.into());
        }
        for p in [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
        ] {
            candidates.push(p.into());
        }
        candidates.extend(find_ttf(Path::new("/usr/share/fonts"), 4));
        for path in candidates {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            // plotters keeps font bytes for the life of the process; one
            // font, loaded once, is leaked on purpose.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(
                "sans-serif",
                plotters::style::FontStyle::Normal,
                bytes,
            )
            .is_ok()
            {
                tracing::debug!(font = %path.display(), "PNG font");
                return true;
            }
        }
        false
    })
}

fn find_ttf(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() && depth > 0 {
            out.extend(find_ttf(&p, depth - 1));
        } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("ttf")) {
            out.push(p);
        }
    }
    out
}
