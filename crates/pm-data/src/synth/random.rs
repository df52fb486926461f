//! The seeded draws of the synthetic face generator, on top of the crate's SplitMix64.
//!
//! Every stream starts from a hash of a key tuple `(seed, stream tag, identity, image)`, so
//! any identity or image can be drawn without drawing the ones before it.

use super::geometry::{Colour, V2, mix};
use crate::rng::SplitMix64;

/// Stream tag of identity parameters, keyed by `(seed, identity)`.
pub(super) const STREAM_IDENTITY: u64 = 1;
/// Stream tag of nuisance variables, keyed by `(seed, identity, image)`.
pub(super) const STREAM_IMAGE: u64 = 2;
/// Stream tag of pixel noise, keyed by `(seed, identity, image)`.
pub(super) const STREAM_NOISE: u64 = 3;
/// Stream tag of verification pairs, keyed by `(seed, fold)`.
pub(super) const STREAM_PAIRS: u64 = 4;

/// The crate's SplitMix64 with the draws the generator needs; streams start from a hash of a
/// key tuple (seed, stream tag, indices).
pub(super) struct Rng(SplitMix64);

impl Rng {
    pub(super) fn new(keys: &[u64]) -> Self {
        Rng(SplitMix64::from_keys(keys))
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1).
    pub(super) fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    pub(super) fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    pub(super) fn symmetric(&mut self, half: f32) -> f32 {
        self.range(-half, half)
    }

    pub(super) fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }

    /// Uniform in `0..n`; `n` must be positive.
    pub(super) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    pub(super) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// Standard normal by Box–Muller.
    pub(super) fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }

    /// Zero mean, unit variance, bell-shaped: a scaled sum of four uniforms (for pixel noise).
    pub(super) fn approx_normal(&mut self) -> f32 {
        let bits = self.next_u64();
        let sum: u64 = (0..4).map(|k| (bits >> (16 * k)) & 0xFFFF).sum();
        (sum as f32 / 65536.0 - 2.0) * 3f32.sqrt()
    }

    pub(super) fn colour(&mut self) -> Colour {
        [self.unit(), self.unit(), self.unit()]
    }

    /// `base` with each channel multiplied by `1 ± spread`.
    pub(super) fn jitter(&mut self, base: Colour, spread: f32) -> Colour {
        base.map(|c| c * (1.0 + self.symmetric(spread)))
    }

    /// One of `palette`, jittered by `spread`.
    pub(super) fn pick_jittered(&mut self, palette: &[Colour], spread: f32) -> Colour {
        let base = self.pick(palette);
        self.jitter(base, spread)
    }

    /// A grey of random lightness mixed with up to `saturation` of a random colour.
    pub(super) fn muted_colour(&mut self, saturation: f32) -> Colour {
        let grey = [self.range(0.15, 0.9); 3];
        let colour = self.colour();
        mix(grey, colour, self.range(0.0, saturation))
    }

    pub(super) fn direction(&mut self) -> V2 {
        let angle = self.range(0.0, std::f32::consts::TAU);
        [angle.cos(), angle.sin()]
    }
}
