//! Request routing: `METHOD\nPATH\nQUERY\nX-AMZ-TARGET`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(4, '\n');
    let mut next = || lines.next().unwrap_or("");
    let (method, path, query, target) = (next(), next(), next(), next());
    ignis_frontend::fuzz::route(method, path, query, target);
});
