//! Entry points for the fuzz targets in `fuzz/` (feature `fuzz`, never on in
//! a server or worker): the worker protocol's decoders. None may panic, and
//! whatever a decoder accepts must come back the same through its encoder.

use std::time::Duration;

use crate::wire;

/// Decodes `body` as the body `kind` picks; what decodes must round-trip.
pub fn wire_body(kind: u8, body: &[u8]) {
    match kind % 4 {
        0 => {
            if let Ok((spec, sha, owner)) = wire::decode_start(body) {
                // A sandbox adds its timeout to the clock's milliseconds.
                assert!(spec.timeout <= Duration::from_millis(wire::MAX_TIMEOUT_MS), "a timeout over Lambda's longest");
                let (again, sha_again, owner_again) = wire::decode_start(&wire::encode_start(&spec, &sha, owner.as_ref())).expect("an encoded spec decodes");
                assert_eq!((sha, owner), (sha_again, owner_again));
                assert_eq!((&spec.opt_dir, spec.log_format), (&again.opt_dir, again.log_format));
                assert_eq!(
                    (spec.memory_mb, spec.tmp_mb, spec.timeout, &spec.env, &spec.version, &spec.log_account, &spec.log_group),
                    (again.memory_mb, again.tmp_mb, again.timeout, &again.env, &again.version, &again.log_account, &again.log_group)
                );
            }
        }
        1 => {
            if let Ok((invocation, _)) = wire::decode_invocation(body) {
                let encoded = wire::encode_invocation(&invocation);
                let (again, _) = wire::decode_invocation(&encoded).expect("an encoded invocation decodes");
                assert_eq!(invocation.response_stream.is_some(), again.response_stream.is_some());
                assert_eq!(
                    (&invocation.request_id, &invocation.payload, &invocation.invoked_function_arn, &invocation.trace_id),
                    (&again.request_id, &again.payload, &again.invoked_function_arn, &again.trace_id)
                );
                assert_eq!((&invocation.client_context, &invocation.cognito_identity), (&again.client_context, &again.cognito_identity));
            }
        }
        2 => {
            if let Ok(outcome) = wire::decode_outcome(body) {
                let again = wire::decode_outcome(&wire::encode_outcome(outcome.as_ref())).expect("an encoded outcome decodes");
                match (outcome, again) {
                    (None, None) => {}
                    (Some(a), Some(b)) => assert_eq!((a.completion, a.log, a.reusable), (b.completion, b.log, b.reusable)),
                    _ => panic!("an outcome changed between taken and untaken"),
                }
            }
        }
        _ => {
            if let Ok(batches) = wire::decode_log_batches(body) {
                let encoded = wire::encode_log_batches(&batches);
                assert!(encoded.len() <= batches.iter().map(wire::batch_size).sum::<usize>() + 16, "batch_size underestimates");
                let again = wire::decode_log_batches(&encoded).expect("encoded batches decode");
                assert_eq!(batches.len(), again.len());
                for (a, b) in batches.iter().zip(&again) {
                    assert_eq!((&a.account, &a.group, &a.stream, &a.lines), (&b.account, &b.group, &b.stream, &b.lines));
                }
            }
        }
    }
}
