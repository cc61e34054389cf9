//! Deterministic "fuzz-lite": 200 000 pseudo-random inputs through every decoder.
//!
//! A third are plain random bytes; the rest mutate valid encodings of every message (bit
//! flips, byte overwrites, truncation, insertion, splices), which is what reaches the deep
//! paths. `veza_moq::fuzz::check` asserts the properties and panics on a violation.

use veza_moq::fuzz;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mutate(rng: &mut XorShift, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    input.clear();
    input.extend_from_slice(&seeds[rng.below(seeds.len())]);
    for _ in 0..1 + rng.below(3) {
        match rng.below(7) {
            // Flip a bit.
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            // Overwrite a byte, biased to interesting values.
            1 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] = [
                    0x00,
                    0x01,
                    0x02,
                    0x3F,
                    0x40,
                    0x80,
                    0xC0,
                    0xFF,
                    rng.next() as u8,
                ][rng.below(9)];
            }
            // Truncate.
            2 if !input.is_empty() => {
                let n = rng.below(input.len());
                input.truncate(n);
            }
            // Insert a random byte.
            3 => {
                let i = rng.below(input.len() + 1);
                input.insert(i, rng.next() as u8);
            }
            // Append another seed (a second message after the first).
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                input.extend_from_slice(other);
            }
            // Rewrite the first byte (length or type) to a small value.
            5 if !input.is_empty() => input[0] = rng.below(64) as u8,
            // Remove a byte.
            _ if !input.is_empty() => {
                let i = rng.below(input.len());
                input.remove(i);
            }
            _ => {}
        }
    }
}

#[test]
fn two_hundred_thousand_inputs() {
    let seeds = fuzz::seeds();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut input = Vec::new();
    let mut accepted = 0usize;
    let mut accepted_mutants = 0usize;

    for i in 0..200_000 {
        if i % 3 == 0 {
            input.clear();
            let len = rng.below(48);
            input.extend((0..len).map(|_| rng.next() as u8));
            accepted += fuzz::check(&input);
        } else {
            mutate(&mut rng, &seeds, &mut input);
            let n = fuzz::check(&input);
            accepted += n;
            accepted_mutants += usize::from(n > 0);
        }
    }

    // The seeds themselves all decode with their own decoder.
    for seed in &seeds {
        assert!(
            fuzz::check(seed) >= 1,
            "seed {seed:02x?} decodes with nothing"
        );
    }
    // Guard against a generator that never reaches a successful decode (which would make the
    // properties vacuous).
    assert!(accepted > 100_000, "only {accepted} decodes succeeded");
    assert!(
        accepted_mutants > 50_000,
        "only {accepted_mutants} mutants decoded"
    );
}
