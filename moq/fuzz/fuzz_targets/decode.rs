//! Feeds arbitrary bytes to every veza-moq decoder (and the catalog/legacy parsers) and checks
//! that nothing panics and that whatever decodes re-encodes to the bytes it consumed.
//!
//! Run: `cd moq/fuzz && cargo +nightly fuzz run decode -- -max_total_time=60`

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    veza_moq::fuzz::check(data);
});
