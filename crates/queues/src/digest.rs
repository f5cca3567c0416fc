//! A message's digests as SQS gives them: `MD5OfMessageBody` (also Lambda's
//! `md5OfBody`) and `MD5OfMessageAttributes` (`md5OfMessageAttributes`).
//! The SQS API answers with them, and event source mappings put them in
//! Lambda's SQS event records.

use ignis_queue::Attributes;
use md5::{Digest, Md5};

/// The hex MD5 of `bytes` (a message body's digest).
pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// SQS's `MD5OfMessageAttributes`: over the attributes sorted by name, each
/// as its name, data type, transport type (1 string, 2 binary) and value, the
/// variable parts prefixed with their 4-byte big-endian length.
pub fn md5_of_attributes(attributes: &Attributes) -> String {
    let mut bytes = Vec::new();
    for (name, a) in attributes {
        let transport: &[u8] = if a.data_type.starts_with("Binary") { &[2] } else { &[1] };
        for (part, prefixed) in [(name.as_bytes(), true), (a.data_type.as_bytes(), true), (transport, false), (&a.value, true)] {
            if prefixed {
                bytes.extend_from_slice(&(part.len() as u32).to_be_bytes());
            }
            bytes.extend_from_slice(part);
        }
    }
    md5_hex(&bytes)
}

#[cfg(test)]
mod tests {
    use ignis_queue::Attribute;

    use super::*;

    #[test]
    fn md5_of_message_attributes_matches_sqs() {
        // The example of the SQS developer guide's "Calculating the MD5
        // message digest for message attributes" is reproduced by boto3's
        // tests too; this one is computed independently in tests/sdk.
        let mut attributes = Attributes::new();
        attributes.insert("a".into(), Attribute { data_type: "String".into(), value: b"x".to_vec() });
        let mut expected = Vec::new();
        expected.extend_from_slice(&[0, 0, 0, 1, b'a', 0, 0, 0, 6]);
        expected.extend_from_slice(b"String");
        expected.extend_from_slice(&[1, 0, 0, 0, 1, b'x']);
        assert_eq!(md5_of_attributes(&attributes), md5_hex(&expected));
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
