//! Small 2-D geometry and colour helpers of the synthetic face renderer: signed distances of
//! ellipses, rounded boxes and segments, one-pixel coverage, and alpha blending of RGB in [0, 1].

/// A point or vector in image or head coordinates.
pub(super) type V2 = [f32; 2];

/// RGB as stored in the image (no gamma handling), each channel nominally in [0, 1].
pub(super) type Colour = [f32; 3];

/// Dot product.
pub(super) fn dot(a: V2, b: V2) -> f32 {
    a[0] * b[0] + a[1] * b[1]
}

/// Euclidean length.
pub(super) fn length(p: V2) -> f32 {
    dot(p, p).sqrt()
}

/// `p` rotated by the angle whose cosine and sine are given.
pub(super) fn rotate(p: V2, cos: f32, sin: f32) -> V2 {
    [cos * p[0] - sin * p[1], sin * p[0] + cos * p[1]]
}

/// Approximate signed distance to an axis-aligned ellipse with radii `r` centred at 0.
pub(super) fn ellipse_sdf(p: V2, r: V2) -> f32 {
    let k0 = length([p[0] / r[0], p[1] / r[1]]);
    let k1 = length([p[0] / (r[0] * r[0]), p[1] / (r[1] * r[1])]);
    if k1 == 0.0 {
        return -r[0].min(r[1]);
    }
    k0 * (k0 - 1.0) / k1
}

/// Signed distance to an axis-aligned box with half sizes `half` and rounded corners.
pub(super) fn box_sdf(p: V2, half: V2, round: f32) -> f32 {
    let q = [p[0].abs() - half[0] + round, p[1].abs() - half[1] + round];
    length([q[0].max(0.0), q[1].max(0.0)]) + q[0].max(q[1]).min(0.0) - round
}

/// Distance to the segment from `a` to `b`.
pub(super) fn segment_distance(p: V2, a: V2, b: V2) -> f32 {
    let pa = [p[0] - a[0], p[1] - a[1]];
    let ba = [b[0] - a[0], b[1] - a[1]];
    let h = (dot(pa, ba) / dot(ba, ba).max(1e-12)).clamp(0.0, 1.0);
    length([pa[0] - ba[0] * h, pa[1] - ba[1] * h])
}

/// Coverage of a shape with signed distance `d`, ramping over one pixel of width `aa`.
pub(super) fn cover(d: f32, aa: f32) -> f32 {
    (0.5 - d / aa).clamp(0.0, 1.0)
}

/// Blends `src` over `c` with opacity `alpha`.
pub(super) fn over(c: &mut Colour, src: Colour, alpha: f32) {
    for (dst, s) in c.iter_mut().zip(src) {
        *dst += (s - *dst) * alpha;
    }
}

/// Linear interpolation from `a` (t = 0) to `b` (t = 1).
pub(super) fn mix(a: Colour, b: Colour, t: f32) -> Colour {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

/// `c` scaled by `k` (darker below 1).
pub(super) fn tint(c: Colour, k: f32) -> Colour {
    c.map(|v| v * k)
}

/// A channel in [0, 1] to a byte, rounded and clamped.
pub(super) fn to_byte(v: f32) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-5 + 1e-4 * b.abs()
    }

    #[test]
    fn distances_are_exact_on_circles_boxes_and_segments() {
        assert!(close(ellipse_sdf([3.0, 4.0], [2.0, 2.0]), 3.0));
        assert!(close(ellipse_sdf([0.0, 0.5], [2.0, 2.0]), -1.5));
        assert!(close(ellipse_sdf([0.0, 3.0], [1.0, 2.0]), 1.0));
        assert!(close(box_sdf([3.0, 0.0], [1.0, 2.0], 0.0), 2.0));
        assert!(close(box_sdf([0.0, 0.0], [1.0, 2.0], 0.0), -1.0));
        assert!(close(
            box_sdf([2.0, 3.0], [1.0, 2.0], 0.5),
            2f32.sqrt() * 1.5 - 0.5
        ));
        assert!(close(
            segment_distance([0.5, 2.0], [0.0, 0.0], [1.0, 0.0]),
            2.0
        ));
        assert!(close(
            segment_distance([4.0, 4.0], [0.0, 0.0], [1.0, 0.0]),
            5.0
        ));
    }

    #[test]
    fn coverage_ramps_over_one_pixel_and_blending_interpolates() {
        assert_eq!(cover(-1.0, 1.0), 1.0);
        assert_eq!(cover(1.0, 1.0), 0.0);
        assert!(close(cover(0.0, 0.1), 0.5));
        let mut c = [0.0, 0.5, 1.0];
        over(&mut c, [1.0, 1.0, 1.0], 0.5);
        assert_eq!(c, [0.5, 0.75, 1.0]);
        assert_eq!(to_byte(1.2), 255);
        assert_eq!(to_byte(-0.1), 0);
    }
}
