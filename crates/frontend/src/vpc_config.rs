//! A function's `VpcConfig` (CreateFunction, UpdateFunctionConfiguration): which networks of its account
//! (`ignis_registry::networks`) it is attached to. A network is a subnet and its own security group in one, so:
//!
//! - `SubnetIds` names the networks the function attaches to, each one of the caller's account; another account's
//!   network is as unknown as one that does not exist (Lambda's `InvalidSubnetID.NotFound` message);
//! - `SecurityGroupIds` must each name one of those networks (Lambda's `InvalidGroup.NotFound` message otherwise);
//!   the ranges the function may reach are those of the networks in `SubnetIds`;
//! - the two lists go together: one empty and the other not is Lambda's "SubnetIds and SecurityIds must coexist or
//!   be both empty list."; both empty detaches the function (as in Lambda);
//! - `Ipv6AllowedForDualStack: true` is refused: networks are IPv4 only;
//! - `VpcConfig` absent keeps what the function has (UpdateFunctionConfiguration) or attaches nothing.
//!
//! On the wire an attached function's configuration has `VpcConfig` with its lists, `VpcId` `"ignis"` (the host's
//! networks form one VPC: their names are unique on it) and `Ipv6AllowedForDualStack` false; a function without
//! networks has no `VpcConfig`.

use ignis_registry::VpcRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::function::Violations;
use crate::{App, Caller};

/// Lambda's limits on the lists' lengths.
const MAX_SUBNETS: usize = 16;
const MAX_SECURITY_GROUPS: usize = 5;
/// Lambda's limit on one id's length.
const MAX_ID: usize = 1024;

/// Lambda's refusal of one list without the other.
const COEXIST: &str = "SubnetIds and SecurityIds must coexist or be both empty list.";

/// The `VpcId` every attached function shows.
pub const VPC_ID: &str = "ignis";

/// Lambda's `VpcConfig` in a request.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VpcConfigIn {
    pub subnet_ids: Option<Vec<String>>,
    pub security_group_ids: Option<Vec<String>>,
    pub ipv6_allowed_for_dual_stack: Option<bool>,
}

impl VpcConfigIn {
    /// Model checks (list and id lengths), added to `v`.
    pub fn check_model(&self, v: &mut Violations) {
        let lists = [
            (&self.subnet_ids, "vpcConfig.subnetIds", MAX_SUBNETS),
            (&self.security_group_ids, "vpcConfig.securityGroupIds", MAX_SECURITY_GROUPS),
        ];
        for (list, field, max) in lists {
            let Some(list) = list else { continue };
            let shown = format!("[{}]", list.join(", "));
            v.check(list.len() <= max, &shown, field, &format!("Member must have length less than or equal to {max}"));
            v.check(
                list.iter().all(|id| id.len() <= MAX_ID),
                &shown,
                field,
                &format!("Member must satisfy constraint: [Member must have length less than or equal to {MAX_ID}]"),
            );
        }
    }
}

/// What `config` attaches a function of `caller`'s account to: `None` detaches it. Run after the model checks.
pub fn attach(app: &App, caller: &Caller, config: &VpcConfigIn) -> Result<Option<VpcRecord>, ApiError> {
    decide(config, |name| app.networks.of_account(&caller.account, name).is_some())
}

/// Checks again, inside the registry's write that stores it, that every network `vpc` attaches to is still the
/// caller's: a network deleted since [`attach`] checked it is refused as [`attach`] refuses one that never was
/// (`networks_api`'s delete relies on it, see there).
pub fn still_there(app: &App, caller: &Caller, vpc: Option<&VpcRecord>) -> Result<(), ApiError> {
    match vpc.and_then(|vpc| vpc.subnets.iter().find(|name| app.networks.of_account(&caller.account, name).is_none())) {
        Some(gone) => Err(no_subnet(gone)),
        None => Ok(()),
    }
}

/// Lambda's refusal of a subnet that does not exist.
fn no_subnet(name: &str) -> ApiError {
    ApiError::InvalidParameterValue(format!(
        "Error occurred while DescribeSubnets. EC2 Error Code: InvalidSubnetID.NotFound. EC2 Error Message: The \
         subnet ID '{name}' does not exist"
    ))
}

/// [`attach`]'s decision, with `ours` saying whether a name is a network of the caller's account (see the module
/// docs for the rules, checked in this order).
pub fn decide(config: &VpcConfigIn, ours: impl Fn(&str) -> bool) -> Result<Option<VpcRecord>, ApiError> {
    if config.ipv6_allowed_for_dual_stack == Some(true) {
        return Err(ApiError::InvalidParameterValue(
            "Ipv6AllowedForDualStack is not supported: Ignis networks are IPv4 only.".into(),
        ));
    }
    let subnets = once_each(config.subnet_ids.as_deref().unwrap_or_default());
    let security_groups = once_each(config.security_group_ids.as_deref().unwrap_or_default());
    match (subnets.is_empty(), security_groups.is_empty()) {
        (true, true) => return Ok(None),
        (false, false) => {}
        _ => return Err(ApiError::InvalidParameterValue(COEXIST.into())),
    }
    if let Some(unknown) = subnets.iter().find(|s| !ours(s)) {
        return Err(no_subnet(unknown));
    }
    if let Some(unknown) = security_groups.iter().find(|g| !subnets.contains(g)) {
        return Err(ApiError::InvalidParameterValue(format!(
            "Error occurred while DescribeSecurityGroups. EC2 Error Code: InvalidGroup.NotFound. EC2 Error Message: \
             The security group '{unknown}' does not exist"
        )));
    }
    Ok(Some(VpcRecord { subnets, security_groups }))
}

/// `names` in order, each once.
fn once_each(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        if !out.contains(name) {
            out.push(name.clone());
        }
    }
    out
}

/// Lambda's `VpcConfig` of an attached function.
pub fn wire(vpc: &VpcRecord) -> Value {
    json!({
        "SubnetIds": vpc.subnets,
        "SecurityGroupIds": vpc.security_groups,
        "VpcId": VPC_ID,
        "Ipv6AllowedForDualStack": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// The networks of the caller's account in these tests.
    fn ours(name: &str) -> bool {
        ["db", "cache"].contains(&name)
    }

    fn config(subnets: Option<&[&str]>, groups: Option<&[&str]>, ipv6: Option<bool>) -> VpcConfigIn {
        VpcConfigIn {
            subnet_ids: subnets.map(strings),
            security_group_ids: groups.map(strings),
            ipv6_allowed_for_dual_stack: ipv6,
        }
    }

    fn vpc(subnets: &[&str], groups: &[&str]) -> Option<VpcRecord> {
        Some(VpcRecord { subnets: strings(subnets), security_groups: strings(groups) })
    }

    fn no_subnet(name: &str) -> String {
        format!(
            "Error occurred while DescribeSubnets. EC2 Error Code: InvalidSubnetID.NotFound. EC2 Error Message: The \
             subnet ID '{name}' does not exist"
        )
    }

    fn no_group(name: &str) -> String {
        format!(
            "Error occurred while DescribeSecurityGroups. EC2 Error Code: InvalidGroup.NotFound. EC2 Error Message: \
             The security group '{name}' does not exist"
        )
    }

    #[test]
    fn every_combination_of_lists_and_flag() {
        let lists: [Option<&[&str]>; 7] = [
            None,
            Some(&[]),
            Some(&["db"]),
            Some(&["db", "cache", "db"]),
            Some(&["theirs"]),
            Some(&["db", "theirs"]),
            Some(&["cache"]),
        ];
        for subnets in lists {
            for groups in lists {
                for ipv6 in [None, Some(false), Some(true)] {
                    let s: Vec<&str> = subnets.unwrap_or_default().to_vec();
                    let g: Vec<&str> = groups.unwrap_or_default().to_vec();
                    let got = decide(&config(subnets, groups, ipv6), ours);
                    // The expected answer, rule by rule, in the module docs' order.
                    let expected = if ipv6 == Some(true) {
                        Err(ApiError::InvalidParameterValue(
                            "Ipv6AllowedForDualStack is not supported: Ignis networks are IPv4 only.".into(),
                        ))
                    } else if s.is_empty() && g.is_empty() {
                        Ok(None)
                    } else if s.is_empty() || g.is_empty() {
                        Err(ApiError::InvalidParameterValue(COEXIST.into()))
                    } else if let Some(bad) = s.iter().find(|n| !ours(n)) {
                        Err(ApiError::InvalidParameterValue(no_subnet(bad)))
                    } else if let Some(bad) = g.iter().find(|n| !s.contains(n)) {
                        Err(ApiError::InvalidParameterValue(no_group(bad)))
                    } else {
                        let (subnets, security_groups) = (once_each(&strings(&s)), once_each(&strings(&g)));
                        Ok(Some(VpcRecord { subnets, security_groups }))
                    };
                    assert_eq!(got, expected, "{subnets:?} {groups:?} {ipv6:?}");
                }
            }
        }
    }

    #[test]
    fn attached_lists_keep_their_order_each_name_once() {
        let got = decide(&config(Some(&["db", "cache", "db"]), Some(&["cache", "cache"]), Some(false)), ours);
        assert_eq!(got, Ok(vpc(&["db", "cache"], &["cache"])));
        // A security group that is a network of the account but not among the subnets is not found.
        let got = decide(&config(Some(&["db"]), Some(&["cache"]), None), ours);
        assert_eq!(got, Err(ApiError::InvalidParameterValue(no_group("cache"))));
    }

    #[test]
    fn model_limits() {
        let check = |c: &VpcConfigIn| {
            let mut v = Violations::default();
            c.check_model(&mut v);
            v.into_result()
        };
        let many = |n: usize| (0..n).map(|i| format!("n{i}")).collect::<Vec<_>>();
        let ok = VpcConfigIn { subnet_ids: Some(many(16)), security_group_ids: Some(many(5)), ..Default::default() };
        assert_eq!(check(&ok), Ok(()));
        let subnets = VpcConfigIn { subnet_ids: Some(many(17)), ..VpcConfigIn::default() };
        assert!(check(&subnets).unwrap_err().message().contains("'vpcConfig.subnetIds'"));
        let groups = VpcConfigIn { security_group_ids: Some(many(6)), ..VpcConfigIn::default() };
        assert!(check(&groups).unwrap_err().message().contains("'vpcConfig.securityGroupIds'"));
        let long = VpcConfigIn { subnet_ids: Some(vec!["x".repeat(1025)]), ..VpcConfigIn::default() };
        assert_eq!(check(&long).unwrap_err().error_type(), "ValidationException");
    }

    #[test]
    fn wire_shape() {
        let vpc = VpcRecord { subnets: strings(&["db"]), security_groups: strings(&["db"]) };
        assert_eq!(
            wire(&vpc),
            json!({
                "SubnetIds": ["db"],
                "SecurityGroupIds": ["db"],
                "VpcId": "ignis",
                "Ipv6AllowedForDualStack": false,
            })
        );
    }
}
