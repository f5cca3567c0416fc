//! The worker protocol's bodies: the first byte picks spec, invocation,
//! outcome or log batches; the rest is the body. What decodes must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((kind, body)) = data.split_first() {
        ignis_cluster::fuzz::wire_body(*kind, body);
    }
});
