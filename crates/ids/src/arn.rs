//! Every ARN Ignis builds, and the reading of the ones it accepts back.
//! Partition `aws` always.

/// `arn:aws:lambda:{region}:{account}:function:{name}`
pub fn function(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:lambda:{region}:{account}:function:{name}")
}

/// `arn:aws:lambda:{region}:{account}:function:{name}:{qualifier}`
pub fn function_qualified(region: &str, account: &str, name: &str, qualifier: &str) -> String {
    format!("arn:aws:lambda:{region}:{account}:function:{name}:{qualifier}")
}

/// `arn:aws:lambda:{region}:{account}:event-source-mapping:{uuid}`
pub fn event_source_mapping(region: &str, account: &str, uuid: &str) -> String {
    format!("arn:aws:lambda:{region}:{account}:event-source-mapping:{uuid}")
}

/// `arn:aws:lambda:{region}:{account}:layer:{name}`
pub fn layer(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:lambda:{region}:{account}:layer:{name}")
}

/// `arn:aws:lambda:{region}:{account}:layer:{name}:{version}`
pub fn layer_version(region: &str, account: &str, name: &str, version: u32) -> String {
    format!("arn:aws:lambda:{region}:{account}:layer:{name}:{version}")
}

/// `arn:aws:sqs:{region}:{account}:{name}`
pub fn queue(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:sqs:{region}:{account}:{name}")
}

/// `arn:aws:logs:{region}:{account}:log-group:{group}:*`, as DescribeLogGroups shows it.
pub fn log_group(region: &str, account: &str, group: &str) -> String {
    format!("arn:aws:logs:{region}:{account}:log-group:{group}:*")
}

/// `arn:aws:iam::{account}:root`: the principal an access key acts as.
pub fn account_root(account: &str) -> String {
    format!("arn:aws:iam::{account}:root")
}

/// A queue ARN's account and name (`arn:<partition>:sqs:<region>:<account>:<name>`).
pub fn parse_queue(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_partition), Some("sqs"), Some(_region), Some(account), Some(name)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    Some((account, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "123456789012";

    #[test]
    fn builds() {
        assert_eq!(function("us-east-1", A, "f"), "arn:aws:lambda:us-east-1:123456789012:function:f");
        assert_eq!(function_qualified("us-east-1", A, "f", "$LATEST"), "arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST");
        assert_eq!(event_source_mapping("eu-west-1", A, "u"), "arn:aws:lambda:eu-west-1:123456789012:event-source-mapping:u");
        assert_eq!(queue("us-east-1", A, "q"), "arn:aws:sqs:us-east-1:123456789012:q");
        assert_eq!(log_group("us-east-1", A, "/aws/lambda/f"), "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/f:*");
        assert_eq!(account_root(A), "arn:aws:iam::123456789012:root");
    }

    #[test]
    fn reads_queue_arns() {
        assert_eq!(parse_queue(&queue("us-east-1", A, "jobs")), Some((A, "jobs")));
        for bad in ["", "arn:aws:lambda:us-east-1:123456789012:q", "arn:aws:sqs:us-east-1:123456789012"] {
            assert_eq!(parse_queue(bad), None, "{bad}");
        }
    }
}
