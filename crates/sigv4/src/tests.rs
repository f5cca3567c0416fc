use super::*;

const KEY_ID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// 2015-08-30T12:36:00Z, the date of AWS's SigV4 test suite.
const SUITE_TIME: u64 = 1_440_938_160;
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn creds() -> Credentials {
    Credentials { access_key_id: KEY_ID.into(), secret_access_key: SECRET.into() }
}

fn secrets(id: &str) -> Option<String> {
    (id == KEY_ID).then(|| SECRET.to_owned())
}

/// Signs like AWS's test suite does: only the given headers (which include x-amz-date), the
/// payload hash not sent as a header. Returns the signature.
fn suite_signature(method: &str, path: &str, query: &str, headers: &[(&str, &str)], body: &[u8]) -> String {
    let mut names: Vec<String> = headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let hash = hex::encode(Sha256::digest(body));
    let canonical = canonical_request(method, path, query, headers, &names, &hash).unwrap();
    signature(SECRET, "20150830T123600Z", "20150830/us-east-1/service/aws4_request", "us-east-1", "service", &canonical)
}

/// Builds the Authorization header of AWS's test suite and checks that `verify` accepts it.
fn verify_suite(method: &str, path: &str, query: &str, headers: &[(&str, &str)], body: &[u8], expected: &str) {
    assert_eq!(suite_signature(method, path, query, headers, body), expected, "{method} {path}?{query}");
    let mut names: Vec<String> = headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders={}, Signature={expected}",
        names.join(";")
    );
    let mut all = headers.to_vec();
    all.push(("Authorization", &authorization));
    let parts = RequestParts { method, path, query, headers: &all, body };
    let verified = verify(&parts, secrets, at(SUITE_TIME + 60)).expect("suite request verifies");
    assert_eq!(
        verified,
        Verified { access_key_id: KEY_ID.into(), region: "us-east-1".into(), service: "service".into() }
    );
}

const HOST: (&str, &str) = ("Host", "example.amazonaws.com");
const DATE: (&str, &str) = ("X-Amz-Date", "20150830T123600Z");

#[test]
fn aws_suite_get_vanilla() {
    verify_suite("GET", "/", "", &[HOST, DATE], b"", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    // get-vanilla-empty-query-key's sibling get-slash / get-relative: the path normalizes to "/".
    verify_suite("GET", "//", "", &[HOST, DATE], b"", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    verify_suite("GET", "/example/..", "", &[HOST, DATE], b"", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    verify_suite("GET", "", "", &[HOST, DATE], b"", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
}

#[test]
fn aws_suite_query_order_key_case() {
    verify_suite(
        "GET",
        "/",
        "Param2=value2&Param1=value1",
        &[HOST, DATE],
        b"",
        "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
    );
}

#[test]
fn aws_suite_utf8_query() {
    // get-vanilla-utf8-query: `?ሴ=bar`, sent percent-encoded.
    verify_suite("GET", "/", "%E1%88%B4=bar", &[HOST, DATE], b"", "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04");
}

#[test]
fn aws_suite_unreserved() {
    verify_suite(
        "GET",
        "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        "",
        &[HOST, DATE],
        b"",
        "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
    );
}

#[test]
fn aws_suite_post_vanilla_and_form() {
    verify_suite("POST", "/", "", &[HOST, DATE], b"", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b");
    verify_suite(
        "POST",
        "/",
        "",
        &[("Content-Type", "application/x-www-form-urlencoded"), HOST, DATE],
        b"Param1=value1",
        "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
    );
}

#[test]
fn aws_suite_header_value_trim() {
    verify_suite(
        "GET",
        "/",
        "",
        &[HOST, ("My-Header1", " value1"), ("My-Header2", " \"a   b   c\""), DATE],
        b"",
        "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
    );
}

#[test]
fn canonical_forms() {
    // Non-S3 paths are encoded again: an escaped ':' becomes %253A.
    assert_eq!(canonical_uri("/functions/arn%3Aaws%3Alambda/x y"), "/functions/arn%253Aaws%253Alambda/x%20y");
    assert_eq!(canonical_uri(""), "/");
    assert_eq!(canonical_uri("/a/./b/../c/"), "/a/c/");
    // Keys without '=' get an empty value; values are sorted too; encoding is strict.
    assert_eq!(canonical_query("b=2&a&a=1&c=x+y%20z%2f"), "a=&a=1&b=2&c=x%2By%20z%2F");
    assert_eq!(canonical_query("%7e=~&e=%zz"), "e=%25zz&~=~");
    assert_eq!(canonical_query(""), "");
    assert_eq!(trim_all("  a \t b   c  "), "a b c");
}

#[test]
fn timestamps() {
    assert_eq!(format_timestamp(at(SUITE_TIME)), "20150830T123600Z");
    assert_eq!(parse_timestamp("20150830T123600Z"), Some(at(SUITE_TIME)));
    assert_eq!(parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT"), Some(at(SUITE_TIME)));
    assert_eq!(parse_timestamp("20150230T123600Z"), None);
    assert_eq!(parse_timestamp("2015-08-30T12:36:00Z"), None);
    assert_eq!(format_timestamp(at(951_782_400)), "20000229T000000Z");
    for days in [0i64, 59, 60, 365, 10_957, 11_016, 20_000, 2_932_896] {
        let (y, m, d) = civil_from_days(days);
        assert_eq!(days_from_civil(y, m, d), days);
    }
}

/// A request the client side of Ignis would send.
struct Req {
    method: &'static str,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn new() -> Req {
        Req {
            method: "POST",
            path: "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Ahello/invocations"
                .into(),
            query: "Qualifier=%24LATEST".into(),
            headers: vec![
                ("Host".into(), "127.0.0.1:9000".into()),
                ("Content-Type".into(), "application/json".into()),
                ("User-Agent".into(), "ignis/0.1".into()),
            ],
            body: br#"{"hello": "world"}"#.to_vec(),
        }
    }

    fn with_parts<T>(&self, f: impl FnOnce(&RequestParts<'_>) -> T) -> T {
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        f(&RequestParts { method: self.method, path: &self.path, query: &self.query, headers: &headers, body: &self.body })
    }

    fn signed_at(mut self, now: SystemTime) -> Req {
        let added = self.with_parts(|p| sign(p, &creds(), "us-east-1", "lambda", now));
        self.headers.extend(added);
        self
    }

    fn verify_at(&self, now: SystemTime) -> Result<Verified, AuthError> {
        self.with_parts(|p| verify(p, secrets, now))
    }

    fn header_mut(&mut self, name: &str) -> &mut String {
        &mut self.headers.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)).unwrap().1
    }
}

#[test]
fn sign_then_verify() {
    let req = Req::new().signed_at(at(SUITE_TIME));
    let names: Vec<&str> = req.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"authorization") && names.contains(&"x-amz-date") && names.contains(&"x-amz-content-sha256"));
    let auth = &req.headers.iter().find(|(n, _)| n == "authorization").unwrap().1;
    assert!(
        auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/lambda/aws4_request, \
             SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date, Signature="
        ),
        "{auth}"
    );
    let verified = req.verify_at(at(SUITE_TIME + 10)).unwrap();
    assert_eq!(
        verified,
        Verified { access_key_id: KEY_ID.into(), region: "us-east-1".into(), service: "lambda".into() }
    );
    // Header names in any case, values with extra spaces, unsigned headers changed: still fine.
    let mut req = req;
    for (name, _) in &mut req.headers {
        *name = name.to_ascii_uppercase();
    }
    *req.header_mut("content-type") = "  application/json ".into();
    *req.header_mut("user-agent") = "something else".into();
    req.headers.push(("X-Unsigned".into(), "anything".into()));
    req.verify_at(at(SUITE_TIME + 10)).unwrap();
}

#[test]
fn sign_with_empty_body_and_get() {
    let mut req = Req::new();
    req.method = "GET";
    req.path = "/2015-03-31/functions/".into();
    req.query = "MaxItems=50&Marker=a%20b%2Bc".into();
    req.body.clear();
    let req = req.signed_at(at(SUITE_TIME));
    assert!(req.headers.iter().any(|(n, v)| n == "x-amz-content-sha256" && v == EMPTY_SHA256));
    req.verify_at(at(SUITE_TIME)).unwrap();
}

#[test]
fn tampering_is_detected() {
    let now = at(SUITE_TIME + 30);
    let base = || Req::new().signed_at(at(SUITE_TIME));

    let mut req = base();
    req.body = br#"{"hello": "world!"}"#.to_vec();
    assert_eq!(req.verify_at(now), Err(AuthError::ContentMismatch));
    // The head alone is fine: the body is what is wrong.
    let head = req.with_parts(|p| verify_head(&p.head(), secrets, now)).unwrap();
    assert!(head.signature_verified());
    // Without the declared hash, the body change shows as a signature mismatch.
    req.headers.retain(|(n, _)| n != "x-amz-content-sha256");
    let err = req.verify_at(now).unwrap_err();
    assert!(matches!(err, AuthError::Malformed(_)), "x-amz-content-sha256 was signed: {err:?}");
    // A declared hash that is not the one signed: refused from the head alone.
    let mut req = base();
    *req.header_mut("x-amz-content-sha256") = hex::encode(Sha256::digest(b"other"));
    assert_eq!(req.with_parts(|p| verify_head(&p.head(), secrets, now)).unwrap_err(), AuthError::SignatureMismatch);

    let mut req = base();
    req.path = req.path.replace("hello", "hellp");
    assert_eq!(req.verify_at(now), Err(AuthError::SignatureMismatch));

    let mut req = base();
    req.query = "Qualifier=1".into();
    assert_eq!(req.verify_at(now), Err(AuthError::SignatureMismatch));

    let mut req = base();
    req.query.clear();
    assert_eq!(req.verify_at(now), Err(AuthError::SignatureMismatch));

    let mut req = base();
    *req.header_mut("content-type") = "text/plain".into();
    assert_eq!(req.verify_at(now), Err(AuthError::SignatureMismatch));

    let mut req = base();
    req.method = "PUT";
    assert_eq!(req.verify_at(now), Err(AuthError::SignatureMismatch));

    let mut req = base();
    // A second value for a signed header changes its canonical form.
    req.headers.push(("content-type".into(), "text/plain".into()));
    assert_eq!(req.verify_at(now), Err(AuthError::SignatureMismatch));

    let mut req = base();
    let auth = req.header_mut("authorization");
    let last = auth.pop().unwrap();
    auth.push(if last == '0' { '1' } else { '0' });
    assert_eq!(req.verify_at(now), Err(AuthError::SignatureMismatch));
}

#[test]
fn body_change_without_declared_hash_is_a_mismatch() {
    // A request signed like the AWS SDKs do for Lambda: no x-amz-content-sha256 header.
    let mut req = Req::new();
    let added = req.with_parts(|p| sign(p, &creds(), "us-east-1", "lambda", at(SUITE_TIME)));
    let date = added[1].1.clone();
    // Rebuild the authorization without x-amz-content-sha256 among the signed headers.
    let headers: Vec<(&str, &str)> = vec![("host", "127.0.0.1:9000"), ("x-amz-date", &date)];
    let names = ["host", "x-amz-date"];
    let hash = hex::encode(Sha256::digest(&req.body));
    let canonical = canonical_request("POST", &req.path, &req.query, &headers, &names, &hash).unwrap();
    let sig = signature(SECRET, &date, "20150830/us-east-1/lambda/aws4_request", "us-east-1", "lambda", &canonical);
    req.headers = vec![
        ("host".into(), "127.0.0.1:9000".into()),
        ("x-amz-date".into(), date.clone()),
        (
            "authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}"
            ),
        ),
    ];
    req.verify_at(at(SUITE_TIME)).unwrap();
    // The head alone cannot prove the signature; it proves the rest.
    let head = req.with_parts(|p| verify_head(&p.head(), secrets, at(SUITE_TIME))).unwrap();
    assert!(!head.signature_verified());
    assert_eq!(head.claimed().access_key_id, KEY_ID);
    req.body.push(b' ');
    assert_eq!(req.verify_at(at(SUITE_TIME)), Err(AuthError::SignatureMismatch));
    // An unknown key, a stale date or a missing signed header is refused from the head alone.
    let unknown = req.with_parts(|p| verify_head(&p.head(), |_| None, at(SUITE_TIME)));
    assert!(matches!(unknown, Err(AuthError::UnknownKey(_))));
    let stale = req.with_parts(|p| verify_head(&p.head(), secrets, at(SUITE_TIME + 3600)));
    assert!(matches!(stale, Err(AuthError::Expired(_))));
    req.headers.retain(|(n, _)| n != "x-amz-date");
    req.headers.push(("date".into(), "Sun, 30 Aug 2015 12:36:00 GMT".into()));
    let missing = req.with_parts(|p| verify_head(&p.head(), secrets, at(SUITE_TIME)));
    assert!(matches!(missing, Err(AuthError::Malformed(m)) if m.contains("'x-amz-date'")));
}

#[test]
fn wrong_or_unknown_key() {
    let req = Req::new().signed_at(at(SUITE_TIME));
    let wrong = req.with_parts(|p| verify(p, |_| Some("not the secret".into()), at(SUITE_TIME)));
    assert_eq!(wrong, Err(AuthError::SignatureMismatch));
    let unknown = req.with_parts(|p| verify(p, |_| None, at(SUITE_TIME)));
    assert_eq!(unknown, Err(AuthError::UnknownKey(KEY_ID.into())));
    assert_eq!(unknown.unwrap_err().aws_error_type(), "UnrecognizedClientException");
}

#[test]
fn expired_and_future() {
    let req = Req::new().signed_at(at(SUITE_TIME));
    req.verify_at(at(SUITE_TIME + 15 * 60)).unwrap();
    req.verify_at(at(SUITE_TIME - 15 * 60)).unwrap();
    let err = req.verify_at(at(SUITE_TIME + 15 * 60 + 1)).unwrap_err();
    assert_eq!(
        err,
        AuthError::Expired(
            "Signature expired: 20150830T123600Z is now earlier than 20150830T123601Z (20150830T125101Z - 15 min.)"
                .into()
        )
    );
    assert_eq!(err.aws_error_type(), "InvalidSignatureException");
    let err = req.verify_at(at(SUITE_TIME - 16 * 60)).unwrap_err();
    assert!(matches!(&err, AuthError::Expired(m) if m.starts_with("Signature not yet current: 20150830T123600Z")), "{err}");
}

#[test]
fn date_header_instead_of_x_amz_date() {
    let headers = [HOST, ("Date", "Sun, 30 Aug 2015 12:36:00 GMT")];
    let sig = suite_signature("GET", "/", "", &headers, b"");
    // The canonical form of the date header is its value as sent; the string to sign uses the
    // ISO 8601 basic timestamp.
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=date;host, Signature={sig}"
    );
    let all = [headers[0], headers[1], ("Authorization", authorization.as_str())];
    let parts = RequestParts { method: "GET", path: "/", query: "", headers: &all, body: b"" };
    verify(&parts, secrets, at(SUITE_TIME)).unwrap();
}

#[test]
fn scope_date_must_match() {
    let mut req = Req::new().signed_at(at(SUITE_TIME));
    let auth = req.header_mut("authorization");
    *auth = auth.replace("/20150830/", "/20150831/");
    assert!(matches!(req.verify_at(at(SUITE_TIME)), Err(AuthError::Malformed(m)) if m.contains("valid date")));
}

#[test]
fn malformed_authorization() {
    let now = at(SUITE_TIME);
    let check = |authorization: Option<&str>, date: Option<&str>| -> AuthError {
        let mut headers = vec![HOST];
        if let Some(d) = date {
            headers.push(("X-Amz-Date", d));
        }
        if let Some(a) = authorization {
            headers.push(("Authorization", a));
        }
        let parts = RequestParts { method: "GET", path: "/", query: "", headers: &headers, body: b"" };
        verify(&parts, secrets, now).unwrap_err()
    };
    let good_sig = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
    let date = Some("20150830T123600Z");
    assert_eq!(check(None, date), AuthError::Missing);
    assert_eq!(AuthError::Missing.aws_error_type(), "MissingAuthenticationTokenException");

    let cases: Vec<(String, &str)> = vec![
        ("Bearer abc".into(), "algorithm"),
        ("AWS4-HMAC-SHA256".into(), "algorithm"),
        (format!("AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Signature={good_sig}"), "'Credential'"),
        ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request".into(), "'SignedHeaders', 'Signature'"),
        (format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service, SignedHeaders=host;x-amz-date, Signature={good_sig}"), "form"),
        (format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws5_request, SignedHeaders=host;x-amz-date, Signature={good_sig}"), "terminator"),
        (format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/2015083/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={good_sig}"), "yyyymmdd"),
        (format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=x-amz-date, Signature={good_sig}"), "'host'"),
        ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=xyz".into(), "hexadecimal"),
        (format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date;x-missing, Signature={good_sig}"), "x-missing"),
        (format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, Garbage, Signature={good_sig}"), "key=value"),
    ];
    for (authorization, expected) in cases {
        match check(Some(&authorization), date) {
            AuthError::Malformed(m) => assert!(m.contains(expected), "{authorization}: {m}"),
            other => panic!("{authorization}: {other:?}"),
        }
    }
    let valid = format!(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request,SignedHeaders=host;x-amz-date,Signature={good_sig}"
    );
    // Without spaces after the commas it is the get-vanilla request again.
    let parts_headers = [HOST, DATE, ("Authorization", valid.as_str())];
    let parts = RequestParts { method: "GET", path: "/", query: "", headers: &parts_headers, body: b"" };
    verify(&parts, secrets, now).unwrap();
    assert!(matches!(check(Some(&valid), None), AuthError::Malformed(m) if m.contains("Date")));
    assert!(matches!(check(Some(&valid), Some("yesterday")), AuthError::Malformed(m) if m.contains("not a valid date")));
}

#[test]
fn unsigned_payload_is_refused() {
    let mut req = Req::new().signed_at(at(SUITE_TIME));
    *req.header_mut("x-amz-content-sha256") = "UNSIGNED-PAYLOAD".into();
    assert!(matches!(req.verify_at(at(SUITE_TIME)), Err(AuthError::Malformed(m)) if m.contains("must be signed")));
}

#[test]
fn constant_time_eq_works() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
}

/// Signs two Lambda requests with botocore itself (the AWS SDK for Python) and verifies them.
#[test]
fn botocore_signed_requests_verify() {
    const SCRIPT: &str = r#"
import datetime, sys
from unittest import mock
try:
    import botocore.session
    from botocore.awsrequest import AWSResponse
except ImportError:
    sys.exit(3)
captured = []
def before_send(request, **kw):
    captured.append(request)
    class Raw:
        def stream(self, *a, **k): return iter([b'{}'])
    return AWSResponse(request.url, 200, {}, Raw())
s = botocore.session.get_session()
c = s.create_client('lambda', region_name='us-east-1', endpoint_url='http://127.0.0.1:9000',
    aws_access_key_id='AKIDEXAMPLE', aws_secret_access_key='wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY')
c.meta.events.register('before-send', before_send)
with mock.patch('botocore.auth.get_current_datetime', return_value=datetime.datetime(2015, 8, 30, 12, 36, 0)):
    c.invoke(FunctionName='arn:aws:lambda:us-east-1:000000000000:function:hello', Qualifier='$LATEST',
             Payload=b'{"k": "v  w"}', LogType='Tail')
    c.list_functions(MaxItems=50, Marker='a b+c/d=~')
for r in captured:
    print(r.method)
    print(r.url)
    for k, v in r.headers.items():
        print(k + ': ' + (v if isinstance(v, str) else v.decode()))
    print()
    print((r.body or b'').hex())
"#;
    let output = match std::process::Command::new("python3").arg("-c").arg(SCRIPT).output() {
        Ok(output) => output,
        Err(e) => {
            eprintln!("note: skipping the botocore test: cannot run python3: {e}");
            return;
        }
    };
    if output.status.code() == Some(3) {
        eprintln!("note: skipping the botocore test: botocore is not installed");
        return;
    }
    assert!(output.status.success(), "python3 failed: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut lines = stdout.lines();
    let mut seen = 0;
    while let Some(method) = lines.next() {
        let url = lines.next().unwrap();
        let target = url.strip_prefix("http://127.0.0.1:9000").unwrap();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        // The HTTP layer adds Host; botocore signs the value it will have.
        let mut headers: Vec<(String, String)> = vec![("Host".into(), "127.0.0.1:9000".into())];
        for line in lines.by_ref() {
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(": ").unwrap();
            headers.push((name.into(), value.into()));
        }
        let body = hex::decode(lines.next().unwrap()).unwrap();
        let borrowed: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let parts = RequestParts { method, path, query, headers: &borrowed, body: &body };
        let verified = verify(&parts, secrets, at(SUITE_TIME + 120)).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        assert_eq!(verified.service, "lambda");
        assert_eq!(verified.region, "us-east-1");
        // And tampering with what botocore sent is caught.
        let tampered_path = path.replace("hello", "hellO");
        let tampered = RequestParts { path: &tampered_path, query: "MaxItems=51", ..parts };
        assert!(verify(&tampered, secrets, at(SUITE_TIME + 120)).is_err());
        seen += 1;
    }
    assert_eq!(seen, 2, "botocore output: {stdout}");
}
