//! SQS's JSON bodies (queue and message attributes, batches): the first byte
//! picks the action (see `ignis_frontend::fuzz::sqs_body`), the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((kind, body)) = data.split_first() {
        ignis_frontend::fuzz::sqs_body(*kind, body);
    }
});
