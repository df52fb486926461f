//! The identity model of the synthetic face generator: face layout parameters drawn from the
//! stream of `(seed, identity)`, in frontal head coordinates (the head oval centred at the
//! origin, y down, the image half-side being 1).

use super::geometry::{Colour, V2, mix, tint};
use super::random::{Rng, STREAM_IDENTITY};

const DARK_SKIN: Colour = [0.30, 0.19, 0.13];
const LIGHT_SKIN: Colour = [0.97, 0.82, 0.71];
/// Hair colours; dark shades appear more than once to be drawn more often.
const HAIR_COLOURS: [Colour; 11] = [
    [0.06, 0.05, 0.05],
    [0.06, 0.05, 0.05],
    [0.10, 0.07, 0.05],
    [0.10, 0.07, 0.05],
    [0.22, 0.13, 0.07],
    [0.22, 0.13, 0.07],
    [0.38, 0.24, 0.12],
    [0.80, 0.64, 0.38],
    [0.55, 0.22, 0.08],
    [0.55, 0.54, 0.52],
    [0.85, 0.84, 0.82],
];
const IRIS_COLOURS: [Colour; 6] = [
    [0.18, 0.10, 0.05],
    [0.35, 0.20, 0.08],
    [0.45, 0.38, 0.15],
    [0.25, 0.45, 0.25],
    [0.25, 0.45, 0.75],
    [0.45, 0.50, 0.55],
];
const FRAME_COLOURS: [Colour; 4] = [
    [0.05, 0.05, 0.05],
    [0.35, 0.18, 0.08],
    [0.70, 0.70, 0.72],
    [0.55, 0.08, 0.10],
];

/// Head oval and skin.
pub(super) struct Head {
    /// Half-width of the face oval.
    pub(super) half_w: f32,
    /// Half-height of the face oval.
    pub(super) half_h: f32,
    /// How much the oval narrows towards the chin, 0 (none) to 0.45.
    pub(super) jaw: f32,
    /// Skin colour.
    pub(super) skin: Colour,
    /// Ear half-height.
    pub(super) ear: f32,
}

/// Hair cap above a hairline, and optional long hair behind the head.
pub(super) struct Hair {
    /// Hair colour (also of eyebrows and beard).
    pub(super) colour: Colour,
    /// No cap and no long hair.
    pub(super) bald: bool,
    /// Height of the hairline at the centre of the forehead.
    pub(super) hairline: f32,
    /// Quadratic drop of the hairline towards the sides.
    pub(super) curve: f32,
    /// Quartic drop of the hairline at the temples.
    pub(super) temples: f32,
    /// Linear tilt of the hairline (a side parting).
    pub(super) part: f32,
    /// Radii of the ellipse that bounds the cap.
    pub(super) cap: V2,
    /// Height of the cap centre.
    pub(super) cap_y: f32,
    /// Bottom and half-width of hair falling behind the head.
    pub(super) long: Option<(f32, f32)>,
}

/// Both eyes, mirrored about the nose.
pub(super) struct Eyes {
    /// Horizontal distance of each eye centre from the midline.
    pub(super) spacing: f32,
    /// Height of the eye centres.
    pub(super) y: f32,
    /// Half-width of the eye opening.
    pub(super) half_w: f32,
    /// Half-height of the eye opening.
    pub(super) half_h: f32,
    /// Iris colour.
    pub(super) iris: Colour,
    /// Iris radius.
    pub(super) iris_r: f32,
}

/// Both eyebrows, mirrored about the nose.
pub(super) struct Brows {
    /// Height of the brow above the eye centre.
    pub(super) lift: f32,
    /// Half-length.
    pub(super) half_len: f32,
    /// Half-thickness at the inner end.
    pub(super) thickness: f32,
    /// Rise of the outer end per unit of length.
    pub(super) slant: f32,
    /// Extra rise in the middle.
    pub(super) arch: f32,
    /// Brow colour.
    pub(super) colour: Colour,
}

/// Nose tip, nostrils and side shadow.
pub(super) struct Nose {
    /// Height of the nose tip.
    pub(super) tip_y: f32,
    /// Half-width at the nostrils.
    pub(super) half_w: f32,
    /// Opacity of the side shadow.
    pub(super) shadow: f32,
}

/// Lips and the line between them.
pub(super) struct Mouth {
    /// Height of the mouth centre.
    pub(super) y: f32,
    /// Half-width.
    pub(super) half_w: f32,
    /// Half-height of the closed lips.
    pub(super) half_h: f32,
    /// Resting curvature; positive lifts the corners.
    pub(super) smile: f32,
    /// Lip colour.
    pub(super) lip: Colour,
}

/// Beard below a line under the mouth, rising into sideburns.
pub(super) struct Beard {
    /// Distance of the beard line above the mouth centre.
    pub(super) top: f32,
    /// Rise of the beard line at the sides of the face.
    pub(super) sideburn: f32,
    /// Opacity.
    pub(super) density: f32,
    /// Whether a moustache covers the upper lip.
    pub(super) moustache: bool,
}

/// Round frames around both eyes with a bridge.
pub(super) struct Glasses {
    /// Horizontal radius of a rim.
    pub(super) radius: f32,
    /// Half-thickness of the frame.
    pub(super) thickness: f32,
    /// Frame colour.
    pub(super) frame: Colour,
    /// Opacity of the lens tint.
    pub(super) lens: f32,
}

/// Optional traits of an identity.
pub(super) struct Extras {
    /// A beard, drawn on the skin.
    pub(super) beard: Option<Beard>,
    /// Glasses, drawn over everything on the face.
    pub(super) glasses: Option<Glasses>,
    /// Centre (frontal head coordinates) and radius of a mole.
    pub(super) mole: Option<(V2, f32)>,
}

/// Everything that stays fixed across the images of one identity.
pub(super) struct Identity {
    /// Face oval, skin, ears.
    pub(super) head: Head,
    /// Hair.
    pub(super) hair: Hair,
    /// Eyes.
    pub(super) eyes: Eyes,
    /// Eyebrows.
    pub(super) brows: Brows,
    /// Nose.
    pub(super) nose: Nose,
    /// Mouth.
    pub(super) mouth: Mouth,
    /// Beard, glasses, mole.
    pub(super) extras: Extras,
}

impl Identity {
    pub(super) fn sample(seed: u64, identity: u64) -> Self {
        let mut rng = Rng::new(&[seed, STREAM_IDENTITY, identity]);
        let head = sample_head(&mut rng);
        let hair = sample_hair(&mut rng, &head);
        let eyes = sample_eyes(&mut rng, &head);
        let brows = sample_brows(&mut rng, &eyes, &hair);
        let nose = sample_nose(&mut rng, &head, &eyes);
        let mouth = sample_mouth(&mut rng, &head, &nose);
        let extras = sample_extras(&mut rng, &head, &eyes);
        Identity {
            head,
            hair,
            eyes,
            brows,
            nose,
            mouth,
            extras,
        }
    }
}

fn sample_head(rng: &mut Rng) -> Head {
    let half_h = rng.range(0.50, 0.60);
    let half_w = half_h / rng.range(1.18, 1.50);
    let tone = mix(DARK_SKIN, LIGHT_SKIN, rng.unit());
    Head {
        half_w,
        half_h,
        jaw: rng.range(0.0, 0.45),
        skin: rng.jitter(tone, 0.08),
        ear: rng.range(0.07, 0.11),
    }
}

fn sample_hair(rng: &mut Rng, head: &Head) -> Hair {
    let colour = rng.pick_jittered(&HAIR_COLOURS, 0.15);
    let fringe = rng.chance(0.2);
    let hairline = if fringe {
        rng.range(0.25, 0.45)
    } else {
        rng.range(0.45, 0.8)
    };
    let long = rng.chance(0.35).then(|| {
        (
            head.half_h * rng.range(0.4, 1.4),
            head.half_w * rng.range(1.1, 1.35),
        )
    });
    Hair {
        colour,
        bald: rng.chance(0.08),
        hairline: -head.half_h * hairline,
        curve: head.half_h * rng.range(-0.1, 0.25),
        temples: head.half_h * rng.range(0.1, 0.8),
        part: head.half_h * rng.symmetric(0.15),
        cap: [
            head.half_w * rng.range(1.04, 1.25),
            head.half_h * rng.range(0.98, 1.12),
        ],
        cap_y: -head.half_h * rng.range(0.04, 0.14),
        long,
    }
}

fn sample_eyes(rng: &mut Rng, head: &Head) -> Eyes {
    let half_w = head.half_w * rng.range(0.15, 0.22);
    let half_h = half_w * rng.range(0.38, 0.62);
    Eyes {
        spacing: head.half_w * rng.range(0.36, 0.5),
        y: -head.half_h * rng.range(0.02, 0.2),
        half_w,
        half_h,
        iris: rng.pick_jittered(&IRIS_COLOURS, 0.1),
        iris_r: half_h * rng.range(0.85, 1.05),
    }
}

fn sample_brows(rng: &mut Rng, eyes: &Eyes, hair: &Hair) -> Brows {
    Brows {
        lift: eyes.half_h + rng.range(0.035, 0.09),
        half_len: eyes.half_w * rng.range(1.0, 1.4),
        thickness: rng.range(0.012, 0.035),
        slant: rng.symmetric(0.3),
        arch: rng.range(0.0, 0.06),
        colour: tint(hair.colour, 0.75),
    }
}

fn sample_nose(rng: &mut Rng, head: &Head, eyes: &Eyes) -> Nose {
    Nose {
        tip_y: eyes.y + head.half_h * rng.range(0.32, 0.5),
        half_w: head.half_w * rng.range(0.15, 0.26),
        shadow: rng.range(0.15, 0.35),
    }
}

fn sample_mouth(rng: &mut Rng, head: &Head, nose: &Nose) -> Mouth {
    let lip_red = [0.70, 0.28, 0.28];
    Mouth {
        y: nose.tip_y + (head.half_h - nose.tip_y) * rng.range(0.3, 0.5),
        half_w: head.half_w * rng.range(0.28, 0.45),
        half_h: rng.range(0.018, 0.045),
        smile: rng.symmetric(0.25),
        lip: mix(tint(head.skin, 0.8), lip_red, rng.range(0.2, 0.6)),
    }
}

fn sample_extras(rng: &mut Rng, head: &Head, eyes: &Eyes) -> Extras {
    let beard = rng.chance(0.18).then(|| Beard {
        top: rng.range(0.02, 0.12),
        sideburn: head.half_h * rng.range(0.0, 0.5),
        density: rng.range(0.6, 1.0),
        moustache: rng.chance(0.6),
    });
    let glasses = rng.chance(0.14).then(|| Glasses {
        radius: eyes.half_w * rng.range(1.25, 1.6),
        thickness: rng.range(0.01, 0.025),
        frame: rng.pick(&FRAME_COLOURS),
        lens: rng.range(0.0, 0.25),
    });
    let mole = rng.chance(0.2).then(|| {
        let side = if rng.chance(0.5) { -1.0 } else { 1.0 };
        let x = side * head.half_w * rng.range(0.2, 0.6);
        let y = eyes.y + head.half_h * rng.range(0.1, 0.4);
        ([x, y], rng.range(0.012, 0.022))
    });
    Extras {
        beard,
        glasses,
        mole,
    }
}
