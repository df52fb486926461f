//! The rasteriser of the synthetic face generator: maps a pixel back through the pose into
//! head coordinates and paints the identity's shapes back to front, then applies lighting.
//!
//! Shape coverage comes from signed distances ramped over one pixel (see [`super::geometry`]).

use super::SynthConfig;
use super::geometry::{
    Colour, V2, box_sdf, cover, dot, ellipse_sdf, length, mix, over, rotate, segment_distance, tint,
};
use super::identity::Identity;
use super::nuisance::{Nuisance, Pose};

const SCLERA: Colour = [0.92, 0.90, 0.87];
const PUPIL: Colour = [0.03, 0.03, 0.03];
const LASH: Colour = [0.08, 0.06, 0.05];
const MOUTH_GAP: Colour = [0.18, 0.06, 0.06];
const HEAD_CENTRE: V2 = [0.0, 0.06];
const HEAD_SCALE: f32 = 1.1;
const HAIR_DEPTH: f32 = 0.1;
const EYE_DEPTH: f32 = 0.42;
const BROW_DEPTH: f32 = 0.44;
const NOSE_DEPTH: f32 = 0.55;
const MOUTH_DEPTH: f32 = 0.42;
const BEARD_DEPTH: f32 = 0.32;
const GLASSES_DEPTH: f32 = 0.5;

/// Image-to-head mapping of one pose.
struct View {
    roll_cos: f32,
    roll_sin: f32,
    inv_scale: f32,
    shift: V2,
    yaw_sin: f32,
    yaw_cos: f32,
    pitch_sin: f32,
    pitch_cos: f32,
}

impl View {
    fn new(pose: &Pose) -> Self {
        View {
            roll_cos: pose.roll.cos(),
            roll_sin: pose.roll.sin(),
            inv_scale: 1.0 / (HEAD_SCALE * pose.scale),
            shift: [
                HEAD_CENTRE[0] + pose.shift[0],
                HEAD_CENTRE[1] + pose.shift[1],
            ],
            yaw_sin: pose.yaw.sin(),
            yaw_cos: pose.yaw.cos(),
            pitch_sin: pose.pitch.sin(),
            pitch_cos: pose.pitch.cos(),
        }
    }

    /// Image point to head coordinates (undoes translation, scale and roll).
    fn to_head(&self, uv: V2) -> V2 {
        let d = [
            (uv[0] - self.shift[0]) * self.inv_scale,
            (uv[1] - self.shift[1]) * self.inv_scale,
        ];
        rotate(d, self.roll_cos, -self.roll_sin)
    }

    /// Head point to the frontal position of a surface point at `depth` (undoes yaw and pitch).
    fn to_surface(&self, p: V2, depth: f32) -> V2 {
        [
            (p[0] - depth * self.yaw_sin) / self.yaw_cos,
            (p[1] - depth * self.pitch_sin) / self.pitch_cos,
        ]
    }
}

/// One identity under one draw of nuisance variables, ready to shade pixels.
pub(super) struct Scene {
    id: Identity,
    nu: Nuisance,
    view: View,
    /// Pixel width in head coordinates.
    aa: f32,
    /// Pixel width in image coordinates.
    aa_image: f32,
}

impl Scene {
    pub(super) fn new(config: &SynthConfig, identity: u64, image: u64) -> Self {
        let id = Identity::sample(config.seed, identity);
        let nu = Nuisance::sample(config, identity, image);
        let view = View::new(&nu.pose);
        let aa_image = 2.0 / config.size.max(1) as f32;
        Scene {
            aa: aa_image * view.inv_scale,
            aa_image,
            id,
            nu,
            view,
        }
    }

    /// Colour in [0, 1] (before noise) of image point `uv`.
    pub(super) fn shade(&self, uv: V2) -> Colour {
        let mut c = self.backdrop(uv);
        let p = self.view.to_head(uv);
        self.paint_body(p, &mut c);
        let face = self.paint_face(p, &mut c);
        let hair = self.paint_hair(p, &mut c);
        let skin = face * (1.0 - hair);
        if skin > 0.0 {
            self.paint_beard(p, skin, &mut c);
            self.paint_nose(p, skin, &mut c);
            self.paint_mouth(p, skin, &mut c);
            self.paint_mole(p, skin, &mut c);
            self.paint_eyes(p, skin, &mut c);
            self.paint_brows(p, skin, &mut c);
        }
        self.paint_glasses(p, &mut c);
        self.paint_occluder(uv, &mut c);
        self.light(uv, c)
    }

    fn backdrop(&self, uv: V2) -> Colour {
        let b = &self.nu.backdrop;
        mix(b.near, b.far, (0.5 + 0.5 * dot(b.dir, uv)).clamp(0.0, 1.0))
    }

    fn light(&self, uv: V2, c: Colour) -> Colour {
        let l = &self.nu.lighting;
        let gain = l.gain * (1.0 + l.strength * dot(l.dir, uv)).max(0.05);
        [0, 1, 2].map(|i| (c[i] * gain * l.cast[i] - 0.5) * l.contrast + 0.5)
    }

    /// Shirt, long hair behind the head, neck and ears.
    fn paint_body(&self, p: V2, c: &mut Colour) {
        let (head, aa) = (&self.id.head, self.aa);
        let shirt = ellipse_sdf([p[0], p[1] - head.half_h - 0.55], [head.half_w * 2.2, 0.45]);
        over(c, self.nu.backdrop.shirt, cover(shirt, aa));

        let hair = &self.id.hair;
        if let Some((bottom, half_w)) = hair.long.filter(|_| !hair.bald) {
            let half_h = 0.5 * (bottom - hair.cap_y + hair.cap[1]);
            let centre_y = bottom - half_h;
            let d = box_sdf([p[0], p[1] - centre_y], [half_w, half_h], 0.6 * half_w);
            over(c, tint(hair.colour, 0.85), cover(d, aa));
        }

        let neck = box_sdf(
            [p[0], p[1] - head.half_h],
            [head.half_w * 0.5, head.half_h * 0.6],
            0.02,
        );
        over(c, tint(head.skin, 0.8), cover(neck, aa));

        if hair.long.is_none() || hair.bald {
            let ear_y = self.id.eyes.y + head.ear * 0.8;
            let ear = ellipse_sdf(
                [p[0].abs() - head.half_w, p[1] - ear_y],
                [head.ear * 0.6, head.ear],
            );
            over(c, tint(head.skin, 0.9), cover(ear, aa));
        }
    }

    /// Face oval with jaw taper and shading; returns its coverage.
    fn paint_face(&self, p: V2, c: &mut Colour) -> f32 {
        let head = &self.id.head;
        let t = (p[1] / head.half_h).max(0.0);
        let x = p[0] / (1.0 - head.jaw * t * t);
        let alpha = cover(ellipse_sdf([x, p[1]], [head.half_w, head.half_h]), self.aa);
        if alpha <= 0.0 {
            return 0.0;
        }
        let normal = [x / head.half_w, p[1] / head.half_h];
        let r2 = dot(normal, normal).min(1.0);
        let l = &self.nu.lighting;
        let shade = 1.0 - 0.22 * r2 * r2 + 0.6 * l.strength * dot(normal, l.dir);
        over(c, tint(head.skin, shade), alpha);
        alpha
    }

    /// Hair cap above the hairline; returns its coverage.
    fn paint_hair(&self, p: V2, c: &mut Colour) -> f32 {
        let hair = &self.id.hair;
        if hair.bald {
            return 0.0;
        }
        let q = self.view.to_surface(p, HAIR_DEPTH);
        let cap = ellipse_sdf([q[0], q[1] - hair.cap_y], hair.cap);
        let xn = q[0] / self.id.head.half_w;
        let x2 = xn * xn;
        let line = hair.hairline + hair.curve * x2 + hair.temples * x2 * x2 + hair.part * xn;
        let alpha = cover(cap, self.aa) * cover(q[1] - line, self.aa);
        if alpha <= 0.0 {
            return 0.0;
        }
        let r = [q[0] / hair.cap[0], (q[1] - hair.cap_y) / hair.cap[1]];
        let strands = 0.04 * (r[0].atan2(-r[1] + 0.3) * 45.0).sin();
        let shade = 1.08 - 0.3 * dot(r, r) + strands;
        over(c, tint(hair.colour, shade), alpha);
        alpha
    }

    fn paint_eyes(&self, p: V2, skin: f32, c: &mut Colour) {
        let eyes = &self.id.eyes;
        let q = self.view.to_surface(p, EYE_DEPTH);
        if (q[1] - eyes.y).abs() > eyes.half_h + 4.0 * self.aa {
            return;
        }
        for side in [-1.0, 1.0] {
            let local = [(q[0] - side * eyes.spacing) * side, q[1] - eyes.y];
            self.paint_eye(local, side, skin, c);
        }
    }

    /// One eye in mirrored local coordinates (+x points away from the nose).
    fn paint_eye(&self, local: V2, side: f32, skin: f32, c: &mut Colour) {
        let (eyes, aa) = (&self.id.eyes, self.aa);
        let d = ellipse_sdf(local, [eyes.half_w, eyes.half_h]);
        let lid = cover(d.abs() - 0.35 * aa, aa) * skin * cover(local[1] - 0.3 * eyes.half_h, aa);
        let white = cover(d, aa) * skin;
        if white > 0.0 {
            over(c, SCLERA, white);
            let gaze = self.nu.expression.gaze;
            let g = [
                local[0] - gaze[0] * side * eyes.half_w,
                local[1] - gaze[1] * eyes.half_h,
            ];
            over(c, eyes.iris, cover(length(g) - eyes.iris_r, aa) * white);
            over(c, PUPIL, cover(length(g) - 0.45 * eyes.iris_r, aa) * white);
        }
        over(c, LASH, lid);
    }

    fn paint_brows(&self, p: V2, skin: f32, c: &mut Colour) {
        let (brows, eyes) = (&self.id.brows, &self.id.eyes);
        let q = self.view.to_surface(p, BROW_DEPTH);
        for side in [-1.0, 1.0] {
            let x = (q[0] - side * eyes.spacing) * side;
            let t = (x / brows.half_len).clamp(-1.0, 1.0);
            let centre = eyes.y - brows.lift - brows.slant * x - brows.arch * (1.0 - t * t);
            let ends = [-brows.half_len, 0.0];
            let d = segment_distance([x, q[1] - centre], ends, [brows.half_len, 0.0]);
            let width = brows.thickness * (1.0 - 0.2 * (t + 1.0));
            over(c, brows.colour, cover(d - width, self.aa) * skin);
        }
    }

    fn paint_nose(&self, p: V2, skin: f32, c: &mut Colour) {
        let (nose, aa) = (&self.id.nose, self.aa);
        let q = self.view.to_surface(p, NOSE_DEPTH);
        let tone = self.id.head.skin;
        let light = &self.nu.lighting;
        for side in [-1.0f32, 1.0] {
            let away = (0.5 - 2.0 * side * light.dir[0] * light.strength).clamp(0.0, 1.0);
            let top = [side * nose.half_w * 0.3, self.id.eyes.y + 0.04];
            let bottom = [side * nose.half_w * 0.9, nose.tip_y - 0.02];
            let ridge = segment_distance(q, top, bottom) - 0.015;
            let alpha = cover(ridge, 3.0 * aa) * skin * nose.shadow * away;
            over(c, tint(tone, 0.7), alpha);
        }

        let x = q[0].abs() - nose.half_w * 0.5;
        let wing = ellipse_sdf(
            [x, q[1] - nose.tip_y],
            [nose.half_w * 0.5, nose.half_w * 0.32],
        );
        over(c, tint(tone, 0.85), cover(wing, aa) * skin * 0.6);
        let hole = [
            x + nose.half_w * 0.05,
            q[1] - nose.tip_y - nose.half_w * 0.14,
        ];
        let nostril = ellipse_sdf(hole, [nose.half_w * 0.26, nose.half_w * 0.13]);
        over(c, tint(tone, 0.4), cover(nostril, aa) * skin);
    }

    fn paint_mouth(&self, p: V2, skin: f32, c: &mut Colour) {
        let (mouth, aa) = (&self.id.mouth, self.aa);
        let q = self.view.to_surface(p, MOUTH_DEPTH);
        let t = (q[0] / mouth.half_w).clamp(-1.0, 1.0);
        let smile = mouth.smile + self.nu.expression.smile;
        let y = q[1] - mouth.y + smile * mouth.half_w * 0.3 * t * t;
        let gap = self.nu.expression.open * mouth.half_h;
        let lips = cover(
            ellipse_sdf([q[0], y], [mouth.half_w, mouth.half_h + gap]),
            aa,
        ) * skin;
        if lips <= 0.0 {
            return;
        }
        let lip = if y < 0.0 {
            tint(mouth.lip, 0.85)
        } else {
            mouth.lip
        };
        over(c, lip, lips);
        let line = ellipse_sdf([q[0], y], [mouth.half_w * 0.95, gap + 0.3 * aa]);
        over(c, MOUTH_GAP, cover(line, aa) * lips);
    }

    fn paint_beard(&self, p: V2, skin: f32, c: &mut Colour) {
        let Some(beard) = &self.id.extras.beard else {
            return;
        };
        let (mouth, hair) = (&self.id.mouth, &self.id.hair);
        let q = self.view.to_surface(p, BEARD_DEPTH);
        let xn = (q[0] / self.id.head.half_w).abs();
        let top = mouth.y - beard.top - beard.sideburn * xn * xn * xn;
        over(
            c,
            hair.colour,
            cover(top - q[1], 2.0 * self.aa) * skin * beard.density,
        );
        if beard.moustache {
            let centre = [q[0], q[1] - mouth.y + mouth.half_h + 0.02];
            let d = ellipse_sdf(centre, [mouth.half_w * 1.05, 0.028]);
            over(c, hair.colour, cover(d, self.aa) * skin * beard.density);
        }
    }

    fn paint_mole(&self, p: V2, skin: f32, c: &mut Colour) {
        if let Some((centre, radius)) = self.id.extras.mole {
            let q = self.view.to_surface(p, EYE_DEPTH);
            let d = length([q[0] - centre[0], q[1] - centre[1]]) - radius;
            over(c, tint(self.id.head.skin, 0.45), cover(d, self.aa) * skin);
        }
    }

    fn paint_glasses(&self, p: V2, c: &mut Colour) {
        let Some(glasses) = &self.id.extras.glasses else {
            return;
        };
        let (eyes, aa) = (&self.id.eyes, self.aa);
        let q = self.view.to_surface(p, GLASSES_DEPTH);
        let radii = [glasses.radius, glasses.radius * 0.78];
        for side in [-1.0, 1.0] {
            let d = ellipse_sdf([q[0] - side * eyes.spacing, q[1] - eyes.y], radii);
            over(c, glasses.frame, cover(d, aa) * glasses.lens);
            over(c, glasses.frame, cover(d.abs() - glasses.thickness, aa));
        }
        let inner = (eyes.spacing - glasses.radius).max(0.0);
        let bridge = segment_distance(q, [-inner, eyes.y], [inner, eyes.y]) - glasses.thickness;
        over(c, glasses.frame, cover(bridge, aa));
    }

    fn paint_occluder(&self, uv: V2, c: &mut Colour) {
        if let Some(o) = &self.nu.occluder {
            let local = rotate([uv[0] - o.centre[0], uv[1] - o.centre[1]], o.cos, -o.sin);
            let d = box_sdf(local, o.half, o.round);
            over(c, o.colour, cover(d, self.aa_image));
        }
    }
}
