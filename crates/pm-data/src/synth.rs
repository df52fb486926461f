//! Synthetic face identities: a deterministic generator of face-like RGB images for tests, the
//! `pm demo` pipeline and large-scale benchmarks, written in the LFW folder layout.
//!
//! # Identities
//!
//! An identity is a fixed set of layout parameters drawn from a seeded generator keyed by
//! `(seed, identity)` alone, so identity 10^9 costs as much as identity 0 and no identity
//! depends on the ones before it:
//!
//! - head: oval half-width and half-height, jaw taper, skin tone, ear size;
//! - hair: colour, hairline height, curvature and parting, volume of the cap, long hair behind
//!   the head, baldness;
//! - eyes: spacing, height, size, aspect, iris colour and size;
//! - eyebrows: lift above the eye, length, thickness, slant, arch;
//! - nose: length, width, depth of the side shadow;
//! - mouth: height on the face, width, lip thickness, resting smile, lip colour;
//! - extras, each with a small probability: beard (with sideburns, density), moustache, glasses
//!   (frame size, thickness, colour, lens tint), a mole on one cheek.
//!
//! # Images
//!
//! Image `image` of an identity is that identity rendered under nuisance variables keyed by
//! `(seed, identity, image)`, each scaled by a knob of [`SynthConfig`]:
//!
//! - pose (`pose`): yaw moves features sideways by their depth on the head and foreshortens
//!   them, pitch moves them vertically, roll rotates the whole head, plus scale and translation
//!   jitter; expression (smile, open mouth, gaze) varies with the same knob;
//! - lighting (`lighting`): a directional brightness gradient, global gain and contrast, a
//!   colour cast, and side shading of the face towards the light;
//! - background and clothes: a random two-colour gradient and a random shirt colour, always;
//! - occlusion (`occlusion`, a probability): a bar, a patch or a mask-like band over the face;
//! - noise (`noise`): independent Gaussian noise per pixel and channel, in [0, 255] units.
//!
//! # Rendering
//!
//! The image square spans [-1, 1]² with y pointing down. A pixel is mapped back through roll,
//! scale and translation into head coordinates; a feature at depth `z` on the head surface is
//! then mapped back through yaw and pitch to its frontal position. Every shape is a signed
//! distance, and its coverage ramps linearly over one pixel, so edges are anti-aliased without
//! supersampling. Shapes are painted back to front with alpha blending.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use geometry::to_byte;
use random::{Rng, STREAM_NOISE, STREAM_PAIRS};
use scene::Scene;

mod geometry;
mod identity;
mod nuisance;
mod random;
mod scene;

/// How synthetic faces are rendered: the seed that picks identities and the strength of each
/// nuisance variable. Missing fields take their [`Default`] values.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    /// Seed of the whole generator; different seeds give unrelated identity sets.
    pub seed: u64,
    /// Output square side in pixels.
    pub size: u32,
    /// Strength of pose and expression variation, 0 (frontal, neutral) to 1.
    pub pose: f32,
    /// Strength of lighting variation, 0 (flat, neutral) to 1.
    pub lighting: f32,
    /// Probability that an image carries an occluder, 0 to 1.
    pub occlusion: f32,
    /// Standard deviation of per-pixel noise in [0, 255] units.
    pub noise: f32,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 0,
            size: 64,
            pose: 1.0,
            lighting: 1.0,
            occlusion: 0.2,
            noise: 6.0,
        }
    }
}

impl SynthConfig {
    /// Checks that every knob lies in its documented range.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first value out of range: `size` outside 8..=4096, `pose`,
    /// `lighting` or `occlusion` outside [0, 1], `noise` outside [0, 255].
    pub fn validate(&self) -> Result<()> {
        if !(8..=4096).contains(&self.size) {
            return Err(Error::Config(format!(
                "synth size {} is outside 8..=4096",
                self.size
            )));
        }
        let knobs = [
            ("pose", self.pose, 1.0),
            ("lighting", self.lighting, 1.0),
            ("occlusion", self.occlusion, 1.0),
            ("noise", self.noise, 255.0),
        ];
        for (name, value, max) in knobs {
            if !(0.0..=max).contains(&value) {
                return Err(Error::Config(format!(
                    "synth {name} {value} is outside [0, {max}]"
                )));
            }
        }
        Ok(())
    }
}

/// Name of synthetic identity `identity`: `synth_` and the number with at least 7 digits.
pub fn synth_identity_name(identity: u64) -> String {
    format!("synth_{identity:07}")
}

/// Renders image `image` of identity `identity` as a `size`×`size` RGB image.
///
/// A pure function of `(config, identity, image)`. Knobs outside their range are clamped
/// (see [`SynthConfig::validate`]); a `size` of 0 gives an empty image.
pub fn render_face(config: &SynthConfig, identity: u64, image: u64) -> RgbImage {
    let size = config.size;
    let scene = Scene::new(config, identity, image);
    let sigma = finite_or_zero(config.noise).clamp(0.0, 255.0) / 255.0;
    let mut noise = Rng::new(&[config.seed, STREAM_NOISE, identity, image]);
    let step = 2.0 / size.max(1) as f32;

    let mut out = RgbImage::new(size, size);
    for (x, y, px) in out.enumerate_pixels_mut() {
        let uv = [(x as f32 + 0.5) * step - 1.0, (y as f32 + 0.5) * step - 1.0];
        let c = scene.shade(uv);
        *px = Rgb(c.map(|v| to_byte(v + sigma * noise.approx_normal())));
    }
    out
}

/// Writes identities `identities`, `images_per_identity` images each, as
/// `root/<name>/<name>_NNNN.jpg` (NNNN 1-based, at least 4 digits, JPEG quality 95): the LFW
/// layout. Images are rendered and encoded in parallel. Creates `root`.
///
/// Returns the number of images written.
///
/// # Errors
///
/// [`Error::Config`] for an invalid config or a count that overflows `usize`; [`Error::Io`]
/// when a folder or file cannot be created or written.
pub fn write_synth_folder(
    config: &SynthConfig,
    root: &Path,
    identities: Range<u64>,
    images_per_identity: usize,
) -> Result<usize> {
    config.validate()?;
    let n_identities = usize::try_from(identities.end.saturating_sub(identities.start));
    let total = n_identities
        .ok()
        .and_then(|n| n.checked_mul(images_per_identity))
        .ok_or_else(|| Error::Config("synth image count overflows usize".into()))?;
    fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    tracing::info!(
        root = %root.display(),
        first = identities.start,
        end = identities.end,
        images_per_identity,
        size = config.size,
        "writing synthetic faces"
    );

    identities.into_par_iter().try_for_each(|identity| {
        let name = synth_identity_name(identity);
        let folder = root.join(&name);
        fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
        (0..images_per_identity)
            .into_par_iter()
            .try_for_each(|image| {
                let path = folder.join(format!("{name}_{:04}.jpg", image + 1));
                write_jpeg(&path, &render_face(config, identity, image as u64))
            })
    })?;
    Ok(total)
}

/// Writes an LFW-format `pairs.txt` over identities `identities`, each with
/// `images_per_identity` images as written by [`write_synth_folder`].
///
/// The first line is `<folds>\t<pairs_per_class>`; then each fold has `pairs_per_class`
/// same-identity lines `name\ti\tj` (i ≠ j, 1-based) followed by `pairs_per_class`
/// different-identity lines `name1\ti\tname2\tj`. As in LFW, folds use disjoint identities:
/// fold `k` draws from the `k`-th of `folds` equal slices of the range. Deterministic in `seed`.
///
/// # Errors
///
/// [`Error::Config`] when `folds` is 0, a fold would have fewer than 2 identities, or there are
/// fewer than 2 images per identity; [`Error::Io`] when the file cannot be written.
pub fn write_synth_pairs(
    path: &Path,
    identities: Range<u64>,
    images_per_identity: usize,
    folds: usize,
    pairs_per_class: usize,
    seed: u64,
) -> Result<()> {
    check_pairs_args(&identities, images_per_identity, folds)?;
    let mut text = format!("{folds}\t{pairs_per_class}\n");
    for fold in 0..folds {
        let slice = fold_slice(&identities, fold, folds);
        let mut rng = Rng::new(&[seed, STREAM_PAIRS, fold as u64]);
        for _ in 0..pairs_per_class {
            text.push_str(&same_pair_line(&mut rng, &slice, images_per_identity));
        }
        for _ in 0..pairs_per_class {
            text.push_str(&different_pair_line(&mut rng, &slice, images_per_identity));
        }
    }
    fs::write(path, text).map_err(|e| Error::io(path, e))
}

fn finite_or_zero(v: f32) -> f32 {
    if v.is_finite() { v } else { 0.0 }
}

/// `v` clamped to [0, 1], with NaN and infinities read as 0.
fn unit_knob(v: f32) -> f32 {
    finite_or_zero(v).clamp(0.0, 1.0)
}

fn write_jpeg(path: &Path, image: &RgbImage) -> Result<()> {
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut writer = BufWriter::new(file);
    JpegEncoder::new_with_quality(&mut writer, 95)
        .encode_image(image)
        .map_err(|e| Error::io(path, std::io::Error::other(e)))?;
    writer.flush().map_err(|e| Error::io(path, e))
}

fn check_pairs_args(
    identities: &Range<u64>,
    images_per_identity: usize,
    folds: usize,
) -> Result<()> {
    let n_identities = identities.end.saturating_sub(identities.start);
    if n_identities < 2 {
        return Err(Error::Config(format!(
            "synth pairs need at least 2 identities, got {n_identities}"
        )));
    }
    if images_per_identity < 2 {
        return Err(Error::Config(format!(
            "synth pairs need at least 2 images per identity, got {images_per_identity}"
        )));
    }
    if folds == 0 || n_identities / (folds as u64) < 2 {
        return Err(Error::Config(format!(
            "synth pairs: {n_identities} identities cannot fill {folds} folds of at least 2"
        )));
    }
    Ok(())
}

/// The `fold`-th of `folds` near-equal slices of `identities`.
fn fold_slice(identities: &Range<u64>, fold: usize, folds: usize) -> Range<u64> {
    let n = u128::from(identities.end - identities.start);
    let at = |k: usize| identities.start + (n * k as u128 / folds as u128) as u64;
    at(fold)..at(fold + 1)
}

fn same_pair_line(rng: &mut Rng, slice: &Range<u64>, images: usize) -> String {
    let identity = slice.start + rng.below(slice.end - slice.start);
    let (i, j) = two_distinct(rng, images as u64);
    format!("{}\t{}\t{}\n", synth_identity_name(identity), i + 1, j + 1)
}

fn different_pair_line(rng: &mut Rng, slice: &Range<u64>, images: usize) -> String {
    let (a, b) = two_distinct(rng, slice.end - slice.start);
    let i = rng.below(images as u64) + 1;
    let j = rng.below(images as u64) + 1;
    let (a, b) = (
        synth_identity_name(slice.start + a),
        synth_identity_name(slice.start + b),
    );
    format!("{a}\t{i}\t{b}\t{j}\n")
}

/// Two distinct uniform draws from `0..n`; `n` must be at least 2.
fn two_distinct(rng: &mut Rng, n: u64) -> (u64, u64) {
    let a = rng.below(n);
    let b = (a + 1 + rng.below(n - 1)) % n;
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> SynthConfig {
        SynthConfig {
            seed,
            size: 32,
            ..SynthConfig::default()
        }
    }

    fn pixels(config: &SynthConfig, identity: u64, image: u64) -> Vec<f32> {
        render_face(config, identity, image)
            .into_raw()
            .into_iter()
            .map(f32::from)
            .collect()
    }

    fn mean_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
    }

    /// Cosine of mean-centred pixel vectors.
    fn centred_cosine(a: &[f32], b: &[f32]) -> f32 {
        let centre = |v: &[f32]| {
            let mean = v.iter().sum::<f32>() / v.len() as f32;
            v.iter().map(|x| x - mean).collect::<Vec<_>>()
        };
        let (a, b) = (centre(a), centre(b));
        let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (norm(&a) * norm(&b)).max(1e-12)
    }

    /// Best accuracy over all thresholds, labelling `score >= threshold` as same.
    fn best_threshold_accuracy(same: &[f32], different: &[f32]) -> f32 {
        let mut scored: Vec<(f32, bool)> = same.iter().map(|&s| (s, true)).collect();
        scored.extend(different.iter().map(|&s| (s, false)));
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Threshold below everything: all same.
        let mut correct = same.len();
        let mut best = correct;
        for &(_, is_same) in &scored {
            if is_same {
                correct -= 1
            } else {
                correct += 1
            }
            best = best.max(correct);
        }
        best as f32 / scored.len() as f32
    }

    #[test]
    fn rendering_is_deterministic_and_varies_with_every_key() {
        let config = small(7);
        let base = render_face(&config, 3, 0);
        assert_eq!(base.as_raw(), render_face(&config, 3, 0).as_raw());
        assert_eq!((base.width(), base.height()), (32, 32));
        assert_ne!(base.as_raw(), render_face(&config, 3, 1).as_raw());
        assert_ne!(base.as_raw(), render_face(&config, 4, 0).as_raw());
        assert_ne!(base.as_raw(), render_face(&small(8), 3, 0).as_raw());
    }

    #[test]
    fn identities_differ_more_than_images_of_one_identity() {
        let config = small(1);
        let (n_identities, n_images) = (40u64, 4u64);
        let images: Vec<Vec<Vec<f32>>> = (0..n_identities)
            .into_par_iter()
            .map(|id| (0..n_images).map(|im| pixels(&config, id, im)).collect())
            .collect();
        let (mut within, mut between) = (Vec::new(), Vec::new());
        for id in 0..images.len() {
            let other = (id + 1) % images.len();
            for im in 1..images[id].len() {
                within.push(mean_abs_diff(&images[id][0], &images[id][im]));
                between.push(mean_abs_diff(&images[id][0], &images[other][im]));
            }
        }
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        let (within, between) = (mean(&within), mean(&between));
        eprintln!("mean |pixel difference|: within identity {within:.2}, between {between:.2}");
        assert!(
            within < 0.92 * between,
            "within {within} vs between {between}"
        );
    }

    #[test]
    fn without_nuisance_images_of_one_identity_agree_on_the_face() {
        let config = SynthConfig {
            pose: 0.0,
            lighting: 0.0,
            occlusion: 0.0,
            noise: 0.0,
            ..small(2)
        };
        let centre = |img: &RgbImage| -> Vec<f32> {
            let (lo, hi) = (12, 20);
            let mut v = Vec::new();
            for y in lo..hi {
                for x in lo..hi {
                    v.extend(img.get_pixel(x, y).0.map(f32::from));
                }
            }
            v
        };
        for id in 0..10 {
            let a = centre(&render_face(&config, id, 0));
            let b = centre(&render_face(&config, id, 1));
            let other = centre(&render_face(&config, id + 100, 1));
            assert!(mean_abs_diff(&a, &b) < 1.0, "identity {id}");
            assert!(mean_abs_diff(&a, &other) > 3.0, "identity {id}");
        }
    }

    #[test]
    fn raw_pixel_verification_is_hard_but_not_hopeless() {
        let config = small(11);
        let n_pairs = 200u64;
        let score = |(a, i): (u64, u64), (b, j): (u64, u64)| {
            centred_cosine(&pixels(&config, a, i), &pixels(&config, b, j))
        };
        let same: Vec<f32> = (0..n_pairs)
            .into_par_iter()
            .map(|k| score((k, 0), (k, 1)))
            .collect();
        let different: Vec<f32> = (0..n_pairs)
            .into_par_iter()
            .map(|k| score((k, 2), (k + n_pairs, 3)))
            .collect();
        let accuracy = best_threshold_accuracy(&same, &different);
        eprintln!("raw-pixel verification accuracy (200 + 200 pairs, 32 px): {accuracy:.3}");
        assert!(
            (0.56..0.85).contains(&accuracy),
            "raw-pixel accuracy {accuracy}"
        );
    }

    #[test]
    fn large_identity_numbers_render_and_are_named() {
        let config = small(0);
        let image = render_face(&config, 999_999_999, 3);
        assert_eq!((image.width(), image.height()), (32, 32));
        assert_ne!(
            image.as_raw(),
            render_face(&config, (1 << 40) - 1, 3).as_raw()
        );
        assert_eq!(synth_identity_name(999_999_999), "synth_999999999");
        assert_eq!(synth_identity_name(42), "synth_0000042");
    }

    #[test]
    fn folder_has_lfw_layout_and_decodable_jpegs() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let root = dir.path().join("faces");
        let written = write_synth_folder(&small(5), &root, 5..8, 3)?;
        assert_eq!(written, 9);
        for id in 5..8u64 {
            let name = synth_identity_name(id);
            for k in 1..=3 {
                let path = root.join(&name).join(format!("{name}_{k:04}.jpg"));
                let image = image::open(&path).map_err(|e| Error::Config(format!("{e}")))?;
                assert_eq!((image.width(), image.height()), (32, 32));
            }
            let entries = fs::read_dir(root.join(&name)).map_err(|e| Error::io(&root, e))?;
            assert_eq!(entries.count(), 3);
        }
        Ok(())
    }

    #[test]
    fn invalid_config_is_rejected() {
        let dir = std::env::temp_dir().join("pm-data-synth-never-created");
        for config in [
            SynthConfig {
                size: 0,
                ..SynthConfig::default()
            },
            SynthConfig {
                pose: 1.5,
                ..SynthConfig::default()
            },
            SynthConfig {
                noise: f32::NAN,
                ..SynthConfig::default()
            },
        ] {
            let result = write_synth_folder(&config, &dir, 0..2, 2);
            assert!(matches!(result, Err(Error::Config(_))), "{config:?}");
        }
        assert!(!dir.exists());
    }

    #[test]
    fn pairs_file_parses_back_with_the_right_counts() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("pairs.txt");
        let (identities, images, folds, per_class) = (100..130u64, 4usize, 3usize, 20usize);
        write_synth_pairs(&path, identities.clone(), images, folds, per_class, 9)?;
        let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
        assert_eq!(lines[0], ["3", "20"]);
        assert_eq!(lines.len(), 1 + folds * 2 * per_class);

        let names: Vec<String> = identities.map(synth_identity_name).collect();
        let image_ok = |s: &str| s.parse::<usize>().is_ok_and(|i| (1..=images).contains(&i));
        for (k, fields) in lines[1..].iter().enumerate() {
            let same = k % (2 * per_class) < per_class;
            if same {
                assert_eq!(fields.len(), 3, "line {k}");
                assert!(names.iter().any(|n| n == fields[0]));
                assert!(image_ok(fields[1]) && image_ok(fields[2]) && fields[1] != fields[2]);
            } else {
                assert_eq!(fields.len(), 4, "line {k}");
                assert!(
                    names.iter().any(|n| n == fields[0]) && names.iter().any(|n| n == fields[2])
                );
                assert!(image_ok(fields[1]) && image_ok(fields[3]) && fields[0] != fields[2]);
            }
        }
        Ok(())
    }

    #[test]
    fn pairs_folds_use_disjoint_identities_and_bad_inputs_fail() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("pairs.txt");
        write_synth_pairs(&path, 0..20, 3, 2, 30, 1)?;
        let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let lines: Vec<&str> = text.lines().skip(1).collect();
        let ids = |chunk: &[&str]| -> Vec<String> {
            chunk
                .iter()
                .map(|l| l.split('\t').next().unwrap_or("").to_owned())
                .collect()
        };
        let (first, second) = (ids(&lines[..60]), ids(&lines[60..]));
        assert!(first.iter().all(|n| !second.contains(n)));

        for (ids, images) in [(0..1, 3), (0..20, 1), (5..5, 3)] {
            let result = write_synth_pairs(&path, ids, images, 2, 10, 1);
            assert!(matches!(result, Err(Error::Config(_))));
        }
        let too_many_folds = write_synth_pairs(&path, 0..5, 3, 3, 10, 1);
        assert!(matches!(too_many_folds, Err(Error::Config(_))));
        Ok(())
    }
}
