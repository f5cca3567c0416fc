//! Resource-based policies (Lambda's AddPermission / RemovePermission / GetPolicy): what is stored of
//! them and the pure decision of whether one allows a request.
//!
//! A function has one policy per qualifier: the unqualified function's (stored under
//! [`UNQUALIFIED`], which is also what `$LATEST` is invoked under: Lambda takes no policy on `$LATEST`
//! itself), each published version's and each alias's. All of them live in `$LATEST`'s record
//! (`FunctionRecord::policies`), so they are written, reloaded and deleted with the function; publishing a
//! version copies none (a version starts without a policy, as on Lambda), and deleting a version or an alias
//! deletes its policy.
//!
//! [`allows`] is the decision, with no IO: a policy and the facts of one request ([`Request`]) in, allow or
//! deny out. A statement allows when its action covers the request's, its principal is the caller, and
//! every condition it carries holds; there are only `Allow` statements, so one such statement suffices, and
//! without one the answer is deny. A condition whose key the request does not carry never holds (as in IAM:
//! a statement with `SourceArn` allows nothing that comes from no resource; one with `FunctionUrlAuthType`
//! allows only calls through a function URL; Ignis has no organizations and no Alexa tokens, so statements
//! with `PrincipalOrgID` or `EventSourceToken` allow nobody).
//!
//! Lambda's wire shapes of these (the policy document GetPolicy returns) are the front end's.

use serde::{Deserialize, Serialize};

/// The key of the unqualified function's policy in `FunctionRecord::policies`.
pub const UNQUALIFIED: &str = "$LATEST";

/// Lambda's limit on a function's (or a version's, or an alias's) policy document, in bytes.
pub const MAX_POLICY_BYTES: usize = 20 * 1024;

/// The key of the policy that governs calls made with `qualifier` (none, `$LATEST`, a version or an alias):
/// the unqualified function's for none and `$LATEST`, else the qualifier's own.
pub fn key(qualifier: Option<&str>) -> &str {
    qualifier.unwrap_or(UNQUALIFIED)
}

/// One qualifier's policy: its statements in the order they were added, and the revision GetPolicy shows
/// and AddPermission / RemovePermission check (`RevisionId`), new at every change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub revision_id: String,
    pub statements: Vec<Statement>,
}

/// One AddPermission: each field as the request gave it (checked by the front end, the principal by
/// [`Principal::parse`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub sid: String,
    /// `lambda:InvokeFunction`, `lambda:*`, `*`, ...
    pub action: String,
    /// As given: an account id, an IAM ARN, a service's name, or `*`.
    pub principal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_source_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_org_id: Option<String>,
    /// `NONE` or `AWS_IAM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_url_auth_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoked_via_function_url: Option<bool>,
}

impl Statement {
    /// A statement that allows `action` to `principal`, without conditions.
    pub fn new(sid: impl Into<String>, action: impl Into<String>, principal: impl Into<String>) -> Statement {
        Statement {
            sid: sid.into(),
            action: action.into(),
            principal: principal.into(),
            source_arn: None,
            source_account: None,
            event_source_token: None,
            principal_org_id: None,
            function_url_auth_type: None,
            invoked_via_function_url: None,
        }
    }
}

/// A statement's principal, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// `*`: anyone.
    Anyone,
    /// An account, given as its id or as `arn:aws:iam::ID:root`.
    Account(String),
    /// An IAM role or user ARN (`arn:aws:iam::ID:role/NAME`): the function whose execution role it is,
    /// when it calls with its session credentials.
    Arn(String),
    /// An AWS service (`sqs.amazonaws.com`, `s3.amazonaws.com`, ...).
    Service(String),
}

impl Principal {
    /// Parses a principal as AddPermission takes it; `None` for one Lambda refuses ("The provided principal
    /// was invalid").
    pub fn parse(text: &str) -> Option<Principal> {
        if text == "*" {
            return Some(Principal::Anyone);
        }
        if is_account_id(text) {
            return Some(Principal::Account(text.to_string()));
        }
        if let Some(service) = text.strip_suffix(".amazonaws.com") {
            let ok = !service.is_empty() && service.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
            return ok.then(|| Principal::Service(text.to_string()));
        }
        let parts: Vec<&str> = text.splitn(6, ':').collect();
        match parts.as_slice() {
            ["arn", partition, "iam", "", account, resource] if partition.starts_with("aws") && is_account_id(account) => {
                if *resource == "root" {
                    return Some(Principal::Account(account.to_string()));
                }
                let named = |prefix: &str| resource.strip_prefix(prefix).is_some_and(|n| !n.is_empty() && !n.contains(char::is_whitespace));
                (named("role/") || named("user/")).then(|| Principal::Arn(text.to_string()))
            }
            _ => None,
        }
    }

    /// The `Principal` of Lambda's statement: `"*"`, `{"AWS": arn}` or `{"Service": name}`, as the kind and
    /// the value (`None` for anyone).
    pub fn shown(&self) -> Option<(&'static str, String)> {
        match self {
            Principal::Anyone => None,
            Principal::Account(id) => Some(("AWS", format!("arn:aws:iam::{id}:root"))),
            Principal::Arn(arn) => Some(("AWS", arn.clone())),
            Principal::Service(name) => Some(("Service", name.clone())),
        }
    }
}

fn is_account_id(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit())
}

/// Who asks for what, as far as a policy can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The IAM action, e.g. `lambda:InvokeFunction`.
    pub action: &'a str,
    /// Who calls: an account (its key, or one of its functions' session), or a service.
    pub caller: Caller<'a>,
    /// `aws:SourceAccount`: the account the call comes from (the caller's, for a call an account makes).
    pub source_account: Option<&'a str>,
    /// `aws:SourceArn`: the resource the call comes from, when a resource makes it.
    pub source_arn: Option<&'a str>,
    /// `lambda:FunctionUrlAuthType`, for a call through a function URL.
    pub function_url_auth_type: Option<&'a str>,
}

impl<'a> Request<'a> {
    /// `lambda:InvokeFunction` by `account`, from itself (`aws:SourceAccount` is the account; no source ARN),
    /// acting as `role` when one of its functions calls (with its session credentials, or delivering an
    /// asynchronous invocation's record to a destination).
    pub fn invoke_by(account: &'a str, role: Option<&'a str>) -> Request<'a> {
        Request {
            action: "lambda:InvokeFunction",
            caller: Caller::Account { id: account, role },
            source_account: Some(account),
            source_arn: None,
            function_url_auth_type: None,
        }
    }
}

/// The calling principal of a [`Request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller<'a> {
    /// An account; `role`: the execution role it acts as, when one of its functions calls with its
    /// session credentials.
    Account { id: &'a str, role: Option<&'a str> },
    /// An AWS service by its principal name.
    Service(&'a str),
    /// No identity: an unauthenticated call (a function URL of auth type `NONE`).
    Anonymous,
}

/// Whether `policy` allows `request`: some statement of it covers the action, names the caller, and every
/// condition it carries holds (see the module docs). No policy allows nothing.
pub fn allows(policy: Option<&Policy>, request: &Request) -> bool {
    policy.is_some_and(|p| p.statements.iter().any(|s| statement_allows(s, request)))
}

fn statement_allows(statement: &Statement, request: &Request) -> bool {
    action_covers(&statement.action, request.action)
        && principal_matches(&statement.principal, &request.caller)
        && equals(statement.source_account.as_deref(), request.source_account)
        && statement.source_arn.as_deref().is_none_or(|pattern| request.source_arn.is_some_and(|arn| arn_like(pattern, arn)))
        && equals(statement.function_url_auth_type.as_deref(), request.function_url_auth_type)
        && statement.invoked_via_function_url.is_none_or(|via| via == request.function_url_auth_type.is_some())
        && statement.principal_org_id.is_none()
        && statement.event_source_token.is_none()
}

/// A `StringEquals` condition: absent, or equal to the request's value (which must be there).
fn equals(condition: Option<&str>, value: Option<&str>) -> bool {
    condition.is_none_or(|wanted| value == Some(wanted))
}

/// IAM action names are case-insensitive; `lambda:*` and `*` cover every Lambda action.
fn action_covers(granted: &str, asked: &str) -> bool {
    granted == "*" || granted.eq_ignore_ascii_case("lambda:*") || granted.eq_ignore_ascii_case(asked)
}

fn principal_matches(principal: &str, caller: &Caller) -> bool {
    match (Principal::parse(principal), caller) {
        (Some(Principal::Anyone), _) => true,
        (Some(Principal::Account(id)), Caller::Account { id: caller, .. }) => id == *caller,
        (Some(Principal::Arn(arn)), Caller::Account { role: Some(role), .. }) => arn == *role,
        (Some(Principal::Service(name)), Caller::Service(caller)) => name == *caller,
        _ => false,
    }
}

/// IAM's `ArnLike`: both split into their six `:`-separated parts, each part of the pattern matched as a
/// glob (`*` any run of characters, `?` one) against the same part of the ARN.
pub fn arn_like(pattern: &str, arn: &str) -> bool {
    let patterns: Vec<&str> = pattern.splitn(6, ':').collect();
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    patterns.len() == parts.len() && patterns.iter().zip(&parts).all(|(p, a)| glob(p.as_bytes(), a.as_bytes()))
}

/// `*` matches any run of bytes, `?` one byte, anything else itself (iterative, with one backtrack point:
/// linear in practice, never recursive).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "111111111111";
    const B: &str = "222222222222";
    const ROLE: &str = "arn:aws:iam::222222222222:role/worker";

    fn policy(statements: Vec<Statement>) -> Policy {
        Policy { revision_id: "r".into(), statements }
    }

    fn invoke(caller: Caller<'_>) -> Request<'_> {
        match caller {
            Caller::Account { id, role } => Request::invoke_by(id, role),
            _ => Request { caller, source_account: None, ..Request::invoke_by(A, None) },
        }
    }

    fn check(statement: Statement, request: Request, expected: bool) {
        assert_eq!(allows(Some(&policy(vec![statement.clone()])), &request), expected, "{statement:?} {request:?}");
    }

    #[test]
    fn principals_parse_as_lambda_takes_them() {
        assert_eq!(Principal::parse("*"), Some(Principal::Anyone));
        assert_eq!(Principal::parse(B), Some(Principal::Account(B.into())));
        assert_eq!(Principal::parse("arn:aws:iam::222222222222:root"), Some(Principal::Account(B.into())));
        assert_eq!(Principal::parse(ROLE), Some(Principal::Arn(ROLE.into())));
        assert_eq!(Principal::parse("arn:aws:iam::222222222222:user/bob"), Some(Principal::Arn("arn:aws:iam::222222222222:user/bob".into())));
        assert_eq!(Principal::parse("sqs.amazonaws.com"), Some(Principal::Service("sqs.amazonaws.com".into())));
        assert_eq!(Principal::parse("s3.amazonaws.com"), Some(Principal::Service("s3.amazonaws.com".into())));
        for bad in [
            "",
            "**",
            "22222222222",
            "2222222222222",
            "22222222222a",
            "amazonaws.com",
            ".amazonaws.com",
            "s3..amazonaws.com",
            "s 3.amazonaws.com",
            "arn:aws:iam::222222222222:group/g",
            "arn:aws:iam::222222222222:role/",
            "arn:aws:iam::2222:root",
            "arn:aws:iam:us-east-1:222222222222:root",
            "arn:aws:sts::222222222222:root",
            "bob",
        ] {
            assert_eq!(Principal::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Principal::parse(B).unwrap().shown(), Some(("AWS", "arn:aws:iam::222222222222:root".into())));
        assert_eq!(Principal::parse(ROLE).unwrap().shown(), Some(("AWS", ROLE.into())));
        assert_eq!(Principal::parse("sqs.amazonaws.com").unwrap().shown(), Some(("Service", "sqs.amazonaws.com".into())));
        assert_eq!(Principal::Anyone.shown(), None);
    }

    #[test]
    fn no_policy_and_no_statement_deny() {
        let request = invoke(Caller::Account { id: B, role: None });
        assert!(!allows(None, &request));
        assert!(!allows(Some(&policy(Vec::new())), &request));
    }

    #[test]
    fn every_principal_against_every_caller() {
        let callers = [
            Caller::Account { id: B, role: None },
            Caller::Account { id: B, role: Some(ROLE) },
            Caller::Account { id: A, role: None },
            Caller::Service("sqs.amazonaws.com"),
            Caller::Anonymous,
        ];
        // For each principal, which of the callers above it allows.
        let table: [(&str, [bool; 5]); 7] = [
            ("*", [true, true, true, true, true]),
            (B, [true, true, false, false, false]),
            ("arn:aws:iam::222222222222:root", [true, true, false, false, false]),
            (ROLE, [false, true, false, false, false]),
            ("arn:aws:iam::222222222222:role/other", [false, false, false, false, false]),
            ("sqs.amazonaws.com", [false, false, false, true, false]),
            ("s3.amazonaws.com", [false, false, false, false, false]),
        ];
        for (principal, expected) in table {
            for (caller, expected) in callers.iter().zip(expected) {
                check(Statement::new("s", "lambda:InvokeFunction", principal), invoke(*caller), expected);
            }
        }
    }

    #[test]
    fn actions_cover_their_own_and_wildcards() {
        let request = invoke(Caller::Account { id: B, role: None });
        for (action, expected) in [
            ("lambda:InvokeFunction", true),
            ("lambda:invokefunction", true),
            ("lambda:*", true),
            ("*", true),
            ("lambda:GetFunction", false),
            ("lambda:InvokeFunctionUrl", false),
            ("lambda:Invoke", false),
            ("s3:*", false),
        ] {
            check(Statement::new("s", action, B), request, expected);
        }
        let url = Request { action: "lambda:InvokeFunctionUrl", ..request };
        check(Statement::new("s", "lambda:InvokeFunctionUrl", B), url, true);
        check(Statement::new("s", "lambda:InvokeFunction", B), url, false);
    }

    #[test]
    fn conditions_hold_only_when_the_request_carries_them() {
        let direct = invoke(Caller::Account { id: B, role: None });
        let from = |account: Option<&'static str>, arn: Option<&'static str>| Request {
            action: "lambda:InvokeFunction",
            caller: Caller::Service("sqs.amazonaws.com"),
            source_account: account,
            source_arn: arn,
            function_url_auth_type: None,
        };
        let with = |f: fn(&mut Statement)| {
            let mut s = Statement::new("s", "lambda:InvokeFunction", "*");
            f(&mut s);
            s
        };
        // SourceAccount: equal to the account the call comes from.
        let mut source_b = with(|s| s.source_account = Some(B.into()));
        check(source_b.clone(), direct, true);
        check(source_b.clone(), invoke(Caller::Account { id: A, role: None }), false);
        check(source_b.clone(), from(None, None), false);
        check(source_b.clone(), from(Some(B), None), true);
        // SourceArn: ArnLike the resource the call comes from; a direct call comes from none.
        let queue = "arn:aws:sqs:us-east-1:222222222222:jobs";
        let by_arn = with(|s| s.source_arn = Some("arn:aws:sqs:us-east-1:222222222222:jobs".into()));
        check(by_arn.clone(), direct, false);
        check(by_arn.clone(), from(Some(B), Some(queue)), true);
        check(by_arn.clone(), from(Some(B), Some("arn:aws:sqs:us-east-1:222222222222:other")), false);
        let by_glob = with(|s| s.source_arn = Some("arn:aws:sqs:*:222222222222:job?".into()));
        check(by_glob.clone(), from(None, Some(queue)), true);
        check(by_glob, from(None, Some("arn:aws:sqs:us-east-1:111111111111:jobs")), false);
        // Both: each must hold.
        source_b.source_arn = Some(queue.into());
        check(source_b.clone(), from(Some(B), Some(queue)), true);
        check(source_b.clone(), from(Some(A), Some(queue)), false);
        check(source_b, from(Some(B), None), false);
        // Function URL conditions: only calls through a URL of that auth type.
        let public = with(|s| s.function_url_auth_type = Some("NONE".into()));
        let by_url = |auth: &'static str| Request { action: "lambda:InvokeFunctionUrl", caller: Caller::Anonymous, source_account: None, source_arn: None, function_url_auth_type: Some(auth) };
        let public = Statement { action: "lambda:InvokeFunctionUrl".into(), ..public };
        check(public.clone(), by_url("NONE"), true);
        check(public.clone(), by_url("AWS_IAM"), false);
        check(public, Request { action: "lambda:InvokeFunctionUrl", ..direct }, false);
        let via = with(|s| s.invoked_via_function_url = Some(true));
        check(via.clone(), direct, false);
        check(via, Request { function_url_auth_type: Some("AWS_IAM"), ..direct }, true);
        // Organizations and Alexa tokens: Ignis has neither, so such statements allow nobody.
        check(with(|s| s.principal_org_id = Some("o-abcdefghij".into())), direct, false);
        check(with(|s| s.event_source_token = Some("token".into())), direct, false);
    }

    #[test]
    fn one_allowing_statement_among_others_suffices() {
        let request = invoke(Caller::Account { id: B, role: None });
        let others = vec![Statement::new("a", "lambda:GetFunction", B), Statement::new("b", "lambda:InvokeFunction", A)];
        assert!(!allows(Some(&policy(others.clone())), &request));
        let mut with_one = others;
        with_one.push(Statement::new("c", "lambda:InvokeFunction", B));
        assert!(allows(Some(&policy(with_one)), &request));
    }

    #[test]
    fn keys_of_qualifiers() {
        assert_eq!(key(None), UNQUALIFIED);
        assert_eq!(key(Some("$LATEST")), UNQUALIFIED);
        assert_eq!(key(Some("3")), "3");
        assert_eq!(key(Some("live")), "live");
    }

    #[test]
    fn arn_patterns() {
        for (pattern, arn, expected) in [
            ("arn:aws:s3:::bucket", "arn:aws:s3:::bucket", true),
            ("arn:aws:s3:::bucket", "arn:aws:s3:::bucket2", false),
            ("arn:aws:s3:::bucket*", "arn:aws:s3:::bucket2", true),
            ("arn:aws:s3:::*", "arn:aws:s3:::a/b/c", true),
            ("arn:aws:sqs:*:*:*", "arn:aws:sqs:us-east-1:222222222222:q", true),
            ("arn:aws:sqs:*", "arn:aws:sqs:us-east-1:222222222222:q", false),
            ("arn:aws:sqs:us-east-?:*:q", "arn:aws:sqs:us-east-1:222222222222:q", true),
            ("arn:aws:sqs:us-east-?:*:q", "arn:aws:sqs:us-east-10:222222222222:q", false),
            ("arn:aws:execute-api:us-east-1:222222222222:api/*/GET/x", "arn:aws:execute-api:us-east-1:222222222222:api/prod/GET/x", true),
            ("arn:aws:sns:*:*:t*t", "arn:aws:sns:us-east-1:222222222222:test", true),
            ("arn:aws:sns:*:*:t*t", "arn:aws:sns:us-east-1:222222222222:tests", false),
            ("", "", true),
        ] {
            assert_eq!(arn_like(pattern, arn), expected, "{pattern} ~ {arn}");
        }
    }
}
