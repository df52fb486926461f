//! How a face photograph becomes the `size × size` RGB8 crop the encoder sees.
//!
//! The same [`Preprocess`] value is used when packing a training set into shards and when
//! reading evaluation pairs, so train and test crops come out of one code path:
//!
//! ```text
//! file bytes -> decode (gray / RGBA / 16-bit -> RGB8)
//!            -> square crop -> resize (Triangle filter) -> size × size × 3 bytes, HWC
//! ```
//!
//! Two crops exist: a centre square ([`Crop::Center`], the usual recipe for LFW's 250×250
//! deep-funneled frames) and a square around landmark points ([`Crop::Landmarks`], for CFP's
//! `Data/Fiducials`). Every failure names the file it came from; no file content can panic.

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader, RgbImage};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest accepted output side, in pixels (a guard against a mistyped configuration).
pub(crate) const MAX_SIZE: u32 = 4096;

/// A landmark crop may reach this many times the image's longer side, no further.
const MAX_CROP_FACTOR: f64 = 4.0;

/// Absolute cap on a landmark crop's side, so that wild landmarks cannot allocate gigabytes.
const MAX_CROP_SIDE: f64 = 8192.0;

/// Which square of the decoded image becomes the face crop.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Crop {
    /// Centre square of side `fraction` × min(width, height).
    Center {
        /// Side of the square as a fraction of the shorter image side, in (0, 1].
        fraction: f32,
    },
    /// Square around the bounding box of the landmark points (CFP `Data/Fiducials`, one "x,y"
    /// line per point), side = max(box w, box h) × (1 + 2·margin), centred on the box centre;
    /// pixels outside the image are filled by clamping to the edge.
    /// The landmark file of image `images_root/<rel>.jpg` is `fiducials_root/<rel>.txt`.
    Landmarks {
        /// Folder the image paths are relative to.
        images_root: PathBuf,
        /// Folder holding one landmark file per image, mirroring `images_root`.
        fiducials_root: PathBuf,
        /// Extra border on each side, as a fraction of the box side (≥ 0).
        margin: f32,
    },
}

/// Decoding, cropping and resizing of one face image to `size × size` RGB8.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Which square to cut out.
    pub crop: Crop,
    /// Side of the output image, in pixels.
    pub size: u32,
}

/// A square in image coordinates; it may reach outside the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Square {
    x0: i64,
    y0: i64,
    side: u32,
}

impl Preprocess {
    /// Checks that the parameters can work: `size` in 1..=4096, `fraction` in (0, 1],
    /// `margin` finite and ≥ 0.
    ///
    /// # Errors
    /// [`Error::Config`] saying which parameter is out of range.
    pub fn validate(&self) -> Result<()> {
        if self.size == 0 || self.size > MAX_SIZE {
            return Err(Error::Config(format!(
                "preprocess size {} is outside 1..={MAX_SIZE}",
                self.size
            )));
        }
        match &self.crop {
            Crop::Center { fraction } if !(*fraction > 0.0 && *fraction <= 1.0) => Err(
                Error::Config(format!("centre crop fraction {fraction} is outside (0, 1]")),
            ),
            Crop::Landmarks { margin, .. } if !(margin.is_finite() && *margin >= 0.0) => {
                Err(Error::Config(format!(
                    "landmark crop margin {margin} must be finite and >= 0"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Reads, decodes, crops and resizes the image at `path` to `size × size` RGB8.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read, [`Error::Decode`] naming `path` if it is empty,
    /// truncated or not an image, and the errors of [`Preprocess::apply`].
    pub fn load(&self, path: &Path) -> Result<RgbImage> {
        let bytes = crate::files::read_capped(path, crate::files::MAX_IMAGE_FILE)?;
        let img = decode(&bytes, path)?;
        self.apply(&img, path)
    }

    /// Crops and resizes an already decoded image; `path` names it in errors and, for
    /// [`Crop::Landmarks`], locates its landmark file.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid parameters or an image outside `images_root`,
    /// [`Error::Io`] / [`Error::Parse`] for a missing or malformed landmark file, and
    /// [`Error::Decode`] for an empty image or a landmark box far outside the image.
    pub fn apply(&self, img: &DynamicImage, path: &Path) -> Result<RgbImage> {
        self.validate()?;
        let (width, height) = (img.width(), img.height());
        if width == 0 || height == 0 {
            return Err(decode_error(
                path,
                format!("image is {width}×{height} pixels"),
            ));
        }

        let square = match &self.crop {
            Crop::Center { fraction } => center_square(width, height, *fraction),
            Crop::Landmarks {
                images_root,
                fiducials_root,
                margin,
            } => {
                let landmarks = landmark_path(path, images_root, fiducials_root)?;
                let points = read_landmarks(&landmarks)?;
                landmark_square(&points, *margin, width, height, path)?
            }
        };

        let crop = cut_clamped(&img.to_rgb8(), square);
        Ok(image::imageops::resize(
            &crop,
            self.size,
            self.size,
            FilterType::Triangle,
        ))
    }
}

/// Decodes image bytes of any supported format (sniffed from the content) to a
/// [`DynamicImage`]; a truncated JPEG is rejected even though the decoder would pad it.
pub(crate) fn decode(bytes: &[u8], path: &Path) -> Result<DynamicImage> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_error(path, e.to_string()))?;
    if reader.format() == Some(ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        return Err(decode_error(
            path,
            "truncated JPEG: no end-of-image marker after the last scan".into(),
        ));
    }

    // The decoders return errors for bad input; the catch is a second line of defence so that a
    // decoder bug on one hostile file becomes a skipped image, not a crashed packing run.
    match catch_unwind(AssertUnwindSafe(|| reader.decode())) {
        Ok(Ok(img)) => Ok(img),
        Ok(Err(e)) => Err(decode_error(path, e.to_string())),
        Err(_) => Err(decode_error(path, "the image decoder panicked".into())),
    }
}

/// True when an end-of-image marker (FF D9) follows the start of the last scan (FF DA).
///
/// Entropy-coded data escapes every 0xFF byte, so inside a scan FF D9 only occurs as the real
/// marker; a file cut anywhere inside its last scan lacks it.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    if bytes.get(..2) != Some(&[0xFF, 0xD8][..]) {
        return false;
    }
    // Walk the marker segments from the start; the image is complete when an end-of-image
    // marker follows the scans (trailing bytes after it do not matter).
    let mut at = 2usize;
    loop {
        let Some(marker) = next_marker(bytes, &mut at) else {
            return false;
        };
        match marker {
            0xD9 => return true,
            0x01 | 0xD0..=0xD7 => {}
            _ => {
                let Some(len) = bytes
                    .get(at..at + 2)
                    .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                else {
                    return false;
                };
                if len < 2 {
                    return false;
                }
                at += len;
                if marker == 0xDA && !skip_entropy_data(bytes, &mut at) {
                    return false;
                }
            }
        }
    }
}

/// Reads `FF` (fill `FF`s) `marker` at `at`, leaving `at` after the marker byte.
fn next_marker(bytes: &[u8], at: &mut usize) -> Option<u8> {
    if bytes.get(*at) != Some(&0xFF) {
        return None;
    }
    while bytes.get(*at) == Some(&0xFF) {
        *at += 1;
    }
    let marker = *bytes.get(*at)?;
    *at += 1;
    Some(marker)
}

/// Skips entropy-coded bytes (with stuffed `FF 00` and restart markers) up to the next marker.
fn skip_entropy_data(bytes: &[u8], at: &mut usize) -> bool {
    loop {
        match (bytes.get(*at), bytes.get(*at + 1)) {
            (None, _) | (Some(0xFF), None) => return false,
            (Some(0xFF), Some(0x00 | 0xD0..=0xD7)) => *at += 2,
            (Some(0xFF), Some(_)) => return true,
            _ => *at += 1,
        }
    }
}

fn decode_error(path: &Path, reason: String) -> Error {
    Error::Decode {
        path: path.to_path_buf(),
        reason,
    }
}

/// Centre square of side `fraction × min(width, height)`, at least one pixel.
fn center_square(width: u32, height: u32, fraction: f32) -> Square {
    let short = width.min(height);
    let side = (f64::from(fraction) * f64::from(short))
        .round()
        .clamp(1.0, f64::from(short)) as u32;
    Square {
        x0: i64::from((width - side) / 2),
        y0: i64::from((height - side) / 2),
        side,
    }
}

/// `fiducials_root/<rel>.txt` for the image `images_root/<rel>.<ext>`.
fn landmark_path(image: &Path, images_root: &Path, fiducials_root: &Path) -> Result<PathBuf> {
    let rel = image.strip_prefix(images_root).map_err(|_| {
        Error::Config(format!(
            "{}: landmark crop needs images under {}",
            image.display(),
            images_root.display()
        ))
    })?;
    Ok(fiducials_root.join(rel).with_extension("txt"))
}

/// Reads a landmark file: one `x,y` pair per non-blank line, at least one point.
fn read_landmarks(path: &Path) -> Result<Vec<(f32, f32)>> {
    let text = crate::files::read_text_capped(path, crate::files::MAX_SMALL_TEXT)?;
    let parse_error = |line: usize, what: String| Error::Parse {
        path: path.to_path_buf(),
        line,
        what,
    };

    let mut points = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let point = parse_point(line).ok_or_else(|| {
            parse_error(
                i + 1,
                format!("expected a landmark `x,y` of two finite numbers, found `{line}`"),
            )
        })?;
        points.push(point);
    }
    if points.is_empty() {
        return Err(parse_error(1, "no landmark points in the file".into()));
    }
    Ok(points)
}

fn parse_point(line: &str) -> Option<(f32, f32)> {
    let (x, y) = line.split_once(',')?;
    let x: f32 = x.trim().parse().ok()?;
    let y: f32 = y.trim().parse().ok()?;
    (x.is_finite() && y.is_finite()).then_some((x, y))
}

/// Smallest landmark box side accepted, in pixels.
const MIN_LANDMARK_SIDE: f64 = 4.0;

/// The square of side `max(box w, box h) × (1 + 2·margin)` centred on the landmark box.
fn landmark_square(
    points: &[(f32, f32)],
    margin: f32,
    width: u32,
    height: u32,
    path: &Path,
) -> Result<Square> {
    let (mut x_min, mut y_min) = (f64::INFINITY, f64::INFINITY);
    let (mut x_max, mut y_max) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        (x_min, x_max) = (x_min.min(f64::from(x)), x_max.max(f64::from(x)));
        (y_min, y_max) = (y_min.min(f64::from(y)), y_max.max(f64::from(y)));
    }

    let side = (x_max - x_min).max(y_max - y_min) * (1.0 + 2.0 * f64::from(margin));
    let limit = (MAX_CROP_FACTOR * f64::from(width.max(height))).min(MAX_CROP_SIDE);
    if side.is_nan() || side > limit {
        let reason = format!("landmark crop side {side:.0} px exceeds {limit:.0} px");
        return Err(decode_error(path, reason));
    }

    if side < MIN_LANDMARK_SIDE {
        let reason =
            format!("landmark box of {side:.1} px is too small for a face (points coincide?)");
        return Err(decode_error(path, reason));
    }
    let side = side.round();
    let (cx, cy) = ((x_min + x_max) / 2.0, (y_min + y_max) / 2.0);
    let inside = (0.0..=f64::from(width)).contains(&cx) && (0.0..=f64::from(height)).contains(&cy);
    if !inside {
        let reason = format!(
            "landmark box centre ({cx:.0}, {cy:.0}) lies outside the {width}x{height} image"
        );
        return Err(decode_error(path, reason));
    }
    Ok(Square {
        x0: (cx - side / 2.0).round() as i64,
        y0: (cy - side / 2.0).round() as i64,
        side: side as u32,
    })
}

/// Cuts `square` out of `img`; coordinates outside the image are clamped to the nearest edge.
fn cut_clamped(img: &RgbImage, square: Square) -> RgbImage {
    let max_x = i64::from(img.width().saturating_sub(1));
    let max_y = i64::from(img.height().saturating_sub(1));
    RgbImage::from_fn(square.side, square.side, |i, j| {
        let x = (square.x0 + i64::from(i)).clamp(0, max_x) as u32;
        let y = (square.y0 + i64::from(j)).clamp(0, max_y) as u32;
        *img.get_pixel(x, y)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centre_square_is_centred_and_at_least_one_pixel() {
        let s = center_square(250, 200, 0.5);
        assert_eq!(
            s,
            Square {
                x0: 75,
                y0: 50,
                side: 100
            }
        );
        assert_eq!(center_square(3, 3, 0.01).side, 1);
    }

    #[test]
    fn landmark_square_follows_box_and_margin() {
        let points = [(10.0, 20.0), (30.0, 30.0)];
        let s = landmark_square(&points, 0.25, 100, 100, Path::new("x")).unwrap();
        assert_eq!(
            s,
            Square {
                x0: 5,
                y0: 10,
                side: 30
            }
        );
        let far = [(0.0, 0.0), (1.0e6, 0.0)];
        assert!(landmark_square(&far, 0.0, 100, 100, Path::new("x")).is_err());
    }

    #[test]
    fn jpeg_completeness_needs_eoi_after_the_scans() {
        let scan = [
            0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0x12, 0xFF, 0x00, 0xFF, 0xD0, 0x34,
        ];
        let complete = [&scan[..], &[0xFF, 0xD9]].concat();
        assert!(jpeg_is_complete(&complete));
        assert!(!jpeg_is_complete(&scan), "no end-of-image marker");
        // Trailing bytes after the end of the image (metadata, a motion-photo video) are fine,
        // even when they contain a scan marker.
        let trailing = [&complete[..], &[0xFF, 0xDA, 0x00, 0x08, 1, 2]].concat();
        assert!(jpeg_is_complete(&trailing));
        assert!(!jpeg_is_complete(&[0xFF, 0xD8]));
        assert!(!jpeg_is_complete(&[
            0xFF, 0xD8, 0xFF, 0xDA, 0x01, 0x02, 0xFF, 0xD9
        ]));
    }

    #[test]
    fn validate_rejects_bad_parameters() {
        let centre = |fraction, size| Preprocess {
            crop: Crop::Center { fraction },
            size,
        };
        assert!(centre(0.5, 112).validate().is_ok());
        assert!(centre(0.0, 112).validate().is_err());
        assert!(centre(f32::NAN, 112).validate().is_err());
        assert!(centre(1.5, 112).validate().is_err());
        assert!(centre(0.5, 0).validate().is_err());
    }
}
