//! The nuisance model of the synthetic face generator: pose, expression, lighting, backdrop
//! and occluder of one image, drawn from the stream of `(seed, identity, image)` and scaled by
//! the knobs of [`SynthConfig`].

use super::geometry::{Colour, V2, mix};
use super::random::{Rng, STREAM_IMAGE};
use super::{SynthConfig, unit_knob};

/// Largest share of a random colour in backgrounds and shirts (the rest is grey).
const BACKDROP_SATURATION: f32 = 0.6;

/// Head pose: angles in radians, scale and shift in image units.
pub(super) struct Pose {
    /// Turn about the vertical axis.
    pub(super) yaw: f32,
    /// Nod about the horizontal axis.
    pub(super) pitch: f32,
    /// In-plane rotation.
    pub(super) roll: f32,
    /// Size relative to the mean head.
    pub(super) scale: f32,
    /// Translation of the head centre.
    pub(super) shift: V2,
}

/// Expression changes of one image.
pub(super) struct Expression {
    /// Added to the resting smile of the mouth.
    pub(super) smile: f32,
    /// Opening of the mouth in lip half-heights.
    pub(super) open: f32,
    /// Iris offset in eye half-sizes.
    pub(super) gaze: V2,
}

/// Lighting of one image.
pub(super) struct Lighting {
    /// Unit direction in the image plane towards the light.
    pub(super) dir: V2,
    /// Brightness slope along `dir`.
    pub(super) strength: f32,
    /// Global brightness factor.
    pub(super) gain: f32,
    /// Contrast factor about mid-grey.
    pub(super) contrast: f32,
    /// Per-channel colour factors.
    pub(super) cast: Colour,
}

/// Background gradient and shirt colour of one image.
pub(super) struct Backdrop {
    /// Colour at the far end of `-dir`.
    pub(super) near: Colour,
    /// Colour at the far end of `dir`.
    pub(super) far: Colour,
    /// Unit direction of the gradient.
    pub(super) dir: V2,
    /// Shirt colour.
    pub(super) shirt: Colour,
}

/// A rotated, rounded box in image coordinates.
pub(super) struct Occluder {
    /// Centre.
    pub(super) centre: V2,
    /// Half sizes before rotation.
    pub(super) half: V2,
    /// Corner radius.
    pub(super) round: f32,
    /// Cosine of the rotation.
    pub(super) cos: f32,
    /// Sine of the rotation.
    pub(super) sin: f32,
    /// Fill colour.
    pub(super) colour: Colour,
}

/// Everything that changes from one image of an identity to the next.
pub(super) struct Nuisance {
    /// Pose and position.
    pub(super) pose: Pose,
    /// Smile, mouth opening, gaze.
    pub(super) expression: Expression,
    /// Light gradient, gain, contrast, cast.
    pub(super) lighting: Lighting,
    /// Background and shirt.
    pub(super) backdrop: Backdrop,
    /// An occluder, with probability `occlusion`.
    pub(super) occluder: Option<Occluder>,
}

impl Nuisance {
    pub(super) fn sample(config: &SynthConfig, identity: u64, image: u64) -> Self {
        let mut rng = Rng::new(&[config.seed, STREAM_IMAGE, identity, image]);
        let pose = unit_knob(config.pose);
        Nuisance {
            pose: sample_pose(&mut rng, pose),
            expression: sample_expression(&mut rng, pose),
            lighting: sample_lighting(&mut rng, unit_knob(config.lighting)),
            backdrop: sample_backdrop(&mut rng),
            occluder: rng
                .chance(unit_knob(config.occlusion))
                .then(|| sample_occluder(&mut rng)),
        }
    }
}

fn sample_pose(rng: &mut Rng, strength: f32) -> Pose {
    Pose {
        yaw: rng.symmetric(0.6) * strength,
        pitch: rng.symmetric(0.3) * strength,
        roll: (rng.normal() * 0.15).clamp(-0.4, 0.4) * strength,
        scale: 1.0 + rng.symmetric(0.12) * strength,
        shift: [
            rng.symmetric(0.08) * strength,
            rng.symmetric(0.08) * strength,
        ],
    }
}

fn sample_expression(rng: &mut Rng, strength: f32) -> Expression {
    let open = if rng.chance(0.2) {
        rng.range(0.5, 1.5)
    } else {
        0.0
    };
    Expression {
        smile: rng.symmetric(0.25) * strength,
        open: open * strength,
        gaze: [
            rng.symmetric(0.35) * strength,
            rng.symmetric(0.15) * strength,
        ],
    }
}

fn sample_lighting(rng: &mut Rng, strength: f32) -> Lighting {
    Lighting {
        dir: rng.direction(),
        strength: rng.range(0.0, 0.5) * strength,
        gain: (rng.normal() * 0.22 * strength).exp(),
        contrast: (rng.normal() * 0.2 * strength).exp(),
        cast: [0; 3].map(|_| (rng.normal() * 0.07 * strength).exp()),
    }
}

fn sample_backdrop(rng: &mut Rng) -> Backdrop {
    let near = rng.muted_colour(BACKDROP_SATURATION);
    let other = rng.muted_colour(BACKDROP_SATURATION);
    Backdrop {
        near,
        far: mix(near, other, rng.unit()),
        dir: rng.direction(),
        shirt: rng.muted_colour(BACKDROP_SATURATION),
    }
}

fn sample_occluder(rng: &mut Rng) -> Occluder {
    let (centre, half, angle) = match rng.below(3) {
        0 => (
            [rng.symmetric(0.4), rng.symmetric(0.4)],
            [1.2, rng.range(0.06, 0.14)],
            rng.symmetric(1.6),
        ),
        1 => (
            [rng.symmetric(0.5), rng.symmetric(0.5)],
            [rng.range(0.15, 0.4), rng.range(0.15, 0.4)],
            rng.symmetric(0.5),
        ),
        _ => (
            [rng.symmetric(0.1), rng.range(0.25, 0.5)],
            [rng.range(0.35, 0.5), rng.range(0.15, 0.25)],
            rng.symmetric(0.2),
        ),
    };
    Occluder {
        centre,
        half,
        round: rng.range(0.0, 0.6) * half[0].min(half[1]),
        cos: angle.cos(),
        sin: angle.sin(),
        colour: rng.colour(),
    }
}
