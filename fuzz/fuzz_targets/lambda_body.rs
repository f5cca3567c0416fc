//! Lambda's and CloudWatch Logs' JSON bodies: the first byte picks the
//! operation (see `ignis_frontend::fuzz::lambda_body`), the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((kind, body)) = data.split_first() {
        ignis_frontend::fuzz::lambda_body(*kind, body);
    }
});
