//! SigV4 verification of a request given as text: `METHOD\nPATH\nQUERY\n`,
//! then `name: value` header lines, an empty line and the body. Verification
//! must never panic; and the same request, signed by `sign`, must verify.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use ignis_sigv4::{Credentials, RequestParts, sign, verify};
use libfuzzer_sys::fuzz_target;

/// 2015-08-30T12:36:00Z, the date of AWS's SigV4 examples (and of the seeds).
const NOW: u64 = 1_440_938_160;
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut rest: &str = &text;
    let mut line = || {
        let (line, after) = rest.split_once('\n').unwrap_or((rest, ""));
        rest = after;
        line
    };
    let (method, path, query) = (line(), line(), line());
    let mut headers: Vec<(&str, &str)> = Vec::new();
    loop {
        let l = line();
        if l.is_empty() {
            break;
        }
        headers.push(l.split_once(':').map_or((l, ""), |(n, v)| (n, v.trim_start())));
    }
    let body = rest;
    let now = UNIX_EPOCH + Duration::from_secs(NOW);

    let parts = RequestParts { method, path, query, headers: &headers, body: body.as_bytes() };
    let _ = verify(&parts, |key| (key == "AKIDEXAMPLE").then(|| SECRET.to_string()), now);

    // Round trip, for what an HTTP client could send: valid header names and
    // values, none of the ones `sign` sets itself.
    let valid = headers.iter().all(|(n, v)| {
        http::HeaderName::from_bytes(n.as_bytes()).is_ok()
            && http::HeaderValue::from_str(v).is_ok()
            && !["authorization", "x-amz-date", "x-amz-content-sha256"].contains(&n.to_ascii_lowercase().as_str())
    });
    if !valid || method.is_empty() || http::Method::from_bytes(method.as_bytes()).is_err() {
        return;
    }
    let mut unsigned = headers.clone();
    if !unsigned.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        unsigned.push(("host", "localhost"));
    }
    let creds = Credentials { access_key_id: "AKIDEXAMPLE".into(), secret_access_key: SECRET.into() };
    let parts = RequestParts { headers: &unsigned, ..parts };
    let added = sign(&parts, &creds, "us-east-1", "lambda", now);
    let mut signed = unsigned.clone();
    signed.extend(added.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let parts = RequestParts { headers: &signed, ..parts };
    let later = now + Duration::from_secs(60);
    let verified = verify(&parts, |key| (key == "AKIDEXAMPLE").then(|| SECRET.to_string()), later);
    assert!(verified.is_ok(), "a signed request does not verify: {verified:?}");
});
