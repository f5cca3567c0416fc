//! AWS event-stream framing (`application/vnd.amazon.eventstream`), the encoding side only: what
//! `InvokeWithResponseStream` answers with.
//!
//! A message is a prelude (total length, headers' length, both `u32` big-endian, and the CRC32 of those 8 bytes),
//! the headers (each: name length `u8`, name, value type `u8`, then for a string (type 7) its length `u16` and
//! bytes), the payload, and the CRC32 of everything before it. Every header here is a string. Pure: no IO.

use bytes::{BufMut, Bytes, BytesMut};

/// Header value type 7: a UTF-8 string with a 16-bit length.
const STRING: u8 = 7;
/// Prelude (12 bytes) and message CRC (4).
const FRAMING: usize = 16;
/// Largest payload put in one message: decoders refuse messages over 16 MiB, so a larger response goes as several.
pub const MAX_PAYLOAD: usize = 1024 * 1024;

/// One message of `headers` (names of at most 255 bytes, values of at most 65,535: both are this module's own
/// constants or short) and `payload` (at most [`MAX_PAYLOAD`]).
pub fn message(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let headers_len: usize = headers.iter().map(|(name, value)| 1 + name.len() + 1 + 2 + value.len()).sum();
    let total = FRAMING + headers_len + payload.len();
    let mut out = BytesMut::with_capacity(total);
    out.put_u32(total as u32);
    out.put_u32(headers_len as u32);
    out.put_u32(crc32fast::hash(&out[..8]));
    for (name, value) in headers {
        out.put_u8(name.len() as u8);
        out.put_slice(name.as_bytes());
        out.put_u8(STRING);
        out.put_u16(value.len() as u16);
        out.put_slice(value.as_bytes());
    }
    out.put_slice(payload);
    let crc = crc32fast::hash(&out);
    out.put_u32(crc);
    out.freeze()
}

/// An event of type `event_type` whose payload is `content_type`.
fn event(event_type: &str, content_type: &str, payload: &[u8]) -> Bytes {
    message(&[(":event-type", event_type), (":content-type", content_type), (":message-type", "event")], payload)
}

/// `PayloadChunk` events carrying `chunk` (several when it is over [`MAX_PAYLOAD`]; none when it is empty).
pub fn payload_chunks(chunk: &[u8]) -> impl Iterator<Item = Bytes> + '_ {
    chunk.chunks(MAX_PAYLOAD).map(|piece| event("PayloadChunk", "application/octet-stream", piece))
}

/// The `InvokeComplete` event, its payload the JSON `complete` (`ErrorCode`, `ErrorDetails`, `LogResult`).
pub fn invoke_complete(complete: &serde_json::Value) -> Bytes {
    event("InvokeComplete", "application/json", complete.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(headers: &[(&str, &str)], payload: &[u8], expected: &[u8]) {
        assert_eq!(&message(headers, payload)[..], expected, "{headers:?} {payload:?}");
    }

    /// The test vectors of the AWS SDKs' event-stream decoders (botocore's `test_eventstream.py`, aws-c-event-stream).
    #[test]
    fn known_vectors() {
        check(&[], b"", b"\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2\x48\xeb\x7d\x98\xc8\xff");
        check(&[], b"{'foo':'bar'}", b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfd\x52\x8c\x5a{'foo':'bar'}\xc3\x65\x39\x36");
        check(
            &[("content-type", "application/json")],
            b"{'foo':'bar'}",
            b"\x00\x00\x00\x3d\x00\x00\x00\x20\x07\xfd\x83\x96\x0ccontent-type\x07\x00\x10application/json{'foo':'bar'}\
              \x8d\x9c\x08\xb1",
        );
    }

    #[test]
    fn events() {
        let chunk = payload_chunks(b"hello").next().unwrap();
        let total = u32::from_be_bytes(chunk[0..4].try_into().unwrap()) as usize;
        let headers = u32::from_be_bytes(chunk[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, chunk.len());
        assert_eq!(&chunk[12 + headers..total - 4], b"hello");
        let head = &chunk[12..12 + headers];
        assert!(head.starts_with(b"\x0b:event-type\x07\x00\x0cPayloadChunk"));
        assert!(head.ends_with(b"\x0d:message-type\x07\x00\x05event"));
        assert_eq!(payload_chunks(b"").count(), 0);
        let big = vec![7u8; 2 * MAX_PAYLOAD + 1];
        let sizes: Vec<usize> = payload_chunks(&big).map(|m| m.len()).collect();
        assert_eq!(sizes.len(), 3);
        assert_eq!(sizes[2], sizes[0] - MAX_PAYLOAD + 1);
        let complete = invoke_complete(&serde_json::json!({ "ErrorCode": "Unhandled" }));
        let contains = |needle: &[u8]| complete.windows(needle.len()).any(|w| w == needle);
        assert!(contains(b"InvokeComplete"));
        assert!(complete[..complete.len() - 4].ends_with(br#"{"ErrorCode":"Unhandled"}"#));
    }
}
