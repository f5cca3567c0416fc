//! Where an asynchronous invocation's record can go: a function (of the same
//! account, or of another whose resource-based policy lets the source's
//! account invoke it, `ignis_registry::policy::Request::invoke_by`) or a queue of the same
//! account, by ARN. The front end checks destinations with this when they are
//! configured; the pollers parse them again, and check the policy again, when
//! they deliver.

use ignis_ids::AccountId;

/// Where an asynchronous invocation's record can go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A function of `account` (the source's own, or another), with its qualifier if any.
    Function { account: AccountId, name: String, qualifier: Option<String> },
    /// A queue, by ARN.
    Queue { arn: String },
}

/// A function name or qualifier Lambda accepts.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What a destination ARN names, if Ignis can deliver to that kind at all
/// (a function of any account, or one of `account`'s queues).
pub fn parse_destination(account: &str, arn: &str) -> Option<Destination> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "lambda", _, owner, rest] if partition.starts_with("aws") && rest.starts_with("function:") => {
            // A function ARN as Lambda's model takes it: at most 170 characters,
            // `function:NAME` or `function:NAME:QUALIFIER`.
            let owner = AccountId::parse(owner)?;
            if arn.len() > 170 {
                return None;
            }
            let (name, qualifier) = match rest.split(':').collect::<Vec<_>>().as_slice() {
                ["function", name] => (name.to_string(), None),
                ["function", name, qualifier] => (name.to_string(), Some(qualifier.to_string())),
                _ => return None,
            };
            let qualifier_ok = qualifier.as_deref().is_none_or(|q| q == "$LATEST" || valid_name(q));
            (valid_name(&name) && qualifier_ok).then_some(Destination::Function { account: owner, name, qualifier })
        }
        ["arn", partition, "sqs", _, owner, name] if partition.starts_with("aws") && *owner == account && !name.is_empty() => {
            Some(Destination::Queue { arn: arn.to_string() })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_by_kind() {
        let account = "123456789012";
        assert_eq!(
            parse_destination(account, "arn:aws:lambda:us-east-1:123456789012:function:dest"),
            Some(Destination::Function { account: AccountId::new(account), name: "dest".into(), qualifier: None })
        );
        assert_eq!(
            parse_destination(account, "arn:aws:lambda:us-east-1:123456789012:function:dest:live"),
            Some(Destination::Function { account: AccountId::new(account), name: "dest".into(), qualifier: Some("live".into()) })
        );
        assert_eq!(
            parse_destination(account, "arn:aws:lambda:us-east-1:123456789012:function:dest:$LATEST"),
            Some(Destination::Function { account: AccountId::new(account), name: "dest".into(), qualifier: Some("$LATEST".into()) })
        );
        // Another account's function: a destination when its policy allows it.
        assert_eq!(
            parse_destination(account, "arn:aws:lambda:us-east-1:210987654321:function:dest"),
            Some(Destination::Function { account: AccountId::new("210987654321"), name: "dest".into(), qualifier: None })
        );
        assert_eq!(
            parse_destination(account, "arn:aws:sqs:us-east-1:123456789012:jobs"),
            Some(Destination::Queue { arn: "arn:aws:sqs:us-east-1:123456789012:jobs".into() })
        );
        let long = format!("arn:aws:lambda:us-east-1:123456789012:function:{}:{}", "f".repeat(64), "q".repeat(64));
        for other in [
            "arn:aws:lambda:us-east-1:2109876543:function:dest",
            "arn:aws:sqs:us-east-1:210987654321:jobs",
            "arn:aws:sns:us-east-1:123456789012:topic",
            "arn:aws:lambda:us-east-1:123456789012:function:a b",
            "arn:aws:lambda:us-east-1:123456789012:function:a:b:c",
            "arn:aws:lambda:us-east-1:123456789012:function:",
            "arn:aws:lambda:us-east-1:123456789012:function:a:$NOPE",
            "arn:aws:sqs:us-east-1:123456789012:",
            "dest",
            &long,
        ] {
            assert_eq!(parse_destination(account, other), None, "{other}");
        }
    }
}
