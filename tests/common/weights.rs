//! The weight generator `scripts/official_fixtures.py` shares with the tests: whole official
//! models are too large to commit, so both sides make their weights from the checkpoint key
//! and shape alone (splitmix64 of FNV-1a(key) ^ i·φ, in f64, rounded to f32 once).

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3))
}

/// Value `i` of `key` in [0, 1).
fn uniform(seed: u64, i: u64) -> f64 {
    let mut z = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The tensor `key` of `shape`: He-uniform for weights of rank ≥ 2, 1 ± 0.25 for rank-1
/// weights (BN scales) but 0.5 ± 0.125 for a bottleneck's last BN (`bn3`), ±0.1 for biases,
/// ±1 for the input.
pub fn values(key: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let seed = fnv1a(key);
    (0..n as u64)
        .map(|i| {
            let u = 2.0 * uniform(seed, i) - 1.0;
            let v = if key == "input" {
                u
            } else if shape.len() >= 2 {
                u * (6.0 / shape[1..].iter().product::<usize>() as f64).sqrt()
            } else if key.ends_with("bn3.weight") {
                0.5 + 0.125 * u
            } else if key.ends_with(".weight") {
                1.0 + 0.25 * u
            } else {
                0.1 * u
            };
            v as f32
        })
        .collect()
}
