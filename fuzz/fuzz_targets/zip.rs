//! Code zips: every check `Store::put_code` makes, with every file
//! decompressed (small limits, so that a unit stays fast).
#![no_main]

use ignis_store::{CodeRules, check_zip};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rules = CodeRules { max_unzipped_bytes: 1 << 20, max_files: 256, require_bootstrap: data.len() % 2 == 0 };
    let _ = check_zip(data, &rules);
});
