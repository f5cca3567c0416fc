//! Tenant accounts: made by the administrator (API and CLI), isolated from each
//! other at the API (functions, invocations, logs), kept across restarts, with
//! secrets never stored in plain text.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use ignis_sigv4::Credentials;
use serde_json::{Value, json};

use crate::harness::{KEY_ID, SECRET, Server, eventually, sh_runtime};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn admin() -> Credentials {
    Credentials { access_key_id: KEY_ID.into(), secret_access_key: SECRET.into() }
}

fn is_account_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())
}

fn function_names(reply: &crate::harness::Reply) -> Vec<(String, String)> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["Functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["FunctionName"].as_str().unwrap().to_string(), f["FunctionArn"].as_str().unwrap().to_string()))
        .collect()
}

/// Messages of a function's log group as `credentials` sees them (empty if it sees no such group).
fn log_messages(server: &Server, credentials: &Credentials, function: &str) -> Vec<String> {
    let reply = server.logs_as(credentials, "FilterLogEvents", &json!({ "logGroupName": format!("/aws/lambda/{function}") }));
    if reply.status != 200 {
        assert_eq!(reply.error_type(), "ResourceNotFoundException", "{}", reply.text());
        return Vec::new();
    }
    reply.json()["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_string()).collect()
}

#[test]
fn accounts_are_isolated_from_each_other() {
    let server = Server::start();

    // The administrator makes one account through the API and one through the CLI.
    let (a_id, a) = server.create_account("alpha");
    let made = server.cli_as(&admin(), &["account", "create", "beta"]);
    assert!(made.status.success(), "{}", stderr(&made));
    let made: Value = serde_json::from_str(&stdout(&made)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&made)));
    assert_eq!(made["Name"], "beta");
    let b_id = made["AccountId"].as_str().unwrap().to_string();
    let b = Credentials {
        access_key_id: made["AccessKeyId"].as_str().unwrap().to_string(),
        secret_access_key: made["SecretAccessKey"].as_str().unwrap().to_string(),
    };
    assert!(is_account_id(&a_id) && is_account_id(&b_id) && a_id != b_id, "{a_id} {b_id}");

    // Listing: every account, no secrets; the administrator's own account is one of them.
    let listed = server.ignis_as(&admin(), "GET", "/ignis/accounts", b"");
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert!(!listed.text().contains(&a.secret_access_key) && !listed.text().contains(&b.secret_access_key));
    let accounts = listed.json()["Accounts"].as_array().unwrap().clone();
    let find = |name: &str| accounts.iter().find(|x| x["Name"] == name).unwrap_or_else(|| panic!("{name} not listed: {accounts:?}")).clone();
    assert_eq!(find("alpha")["AccountId"], a_id.as_str());
    assert_eq!(find("beta")["AccountId"], b_id.as_str());
    assert_eq!(find("alpha")["Administrator"], false);
    let admin_account = accounts.iter().find(|x| x["Administrator"] == true).expect("an administrator account")["AccountId"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(is_account_id(&admin_account) && admin_account != a_id && admin_account != b_id);
    let ls = server.cli_as(&admin(), &["account", "ls"]);
    assert!(ls.status.success(), "{}", stderr(&ls));
    let ls = stdout(&ls);
    assert!(ls.lines().any(|l| l.starts_with(&a_id) && l.contains("alpha")), "{ls}");
    assert!(ls.lines().any(|l| l.starts_with(&b_id) && l.contains("beta")), "{ls}");

    // Each account makes a function `f` of its own, with its own code.
    let created_a = server.create_as(&a, "f", &sh_runtime("echo 'log of alpha'; echo '\"from alpha\"' > /tmp/response"));
    assert_eq!(created_a.status, 201, "{}", created_a.text());
    let created_b = server.create_as(&b, "f", &sh_runtime("echo 'log of beta'; echo '\"from beta\"' > /tmp/response"));
    assert_eq!(created_b.status, 201, "{}", created_b.text());
    let arn_a = format!("arn:aws:lambda:us-east-1:{a_id}:function:f");
    let arn_b = format!("arn:aws:lambda:us-east-1:{b_id}:function:f");
    assert_eq!(created_a.json()["FunctionArn"], arn_a.as_str());
    assert_eq!(created_b.json()["FunctionArn"], arn_b.as_str());
    assert_ne!(created_a.json()["CodeSha256"], created_b.json()["CodeSha256"]);
    assert_eq!(server.create_as(&a, "only-a", &sh_runtime("")).status, 201);

    // Each sees only its own functions; the administrator sees neither.
    let list = |who: &Credentials| function_names(&server.lambda_as(who, "GET", "/2015-03-31/functions/", b""));
    assert_eq!(list(&a), vec![("f".to_string(), arn_a.clone()), ("only-a".to_string(), format!("arn:aws:lambda:us-east-1:{a_id}:function:only-a"))]);
    assert_eq!(list(&b), vec![("f".to_string(), arn_b.clone())]);
    assert_eq!(list(&admin()), vec![]);

    let got_a = server.lambda_as(&a, "GET", "/2015-03-31/functions/f", b"");
    assert_eq!(got_a.json()["Configuration"]["FunctionArn"], arn_a.as_str());
    assert_eq!(got_a.json()["Configuration"]["CodeSha256"], created_a.json()["CodeSha256"]);
    let got_b = server.lambda_as(&b, "GET", "/2015-03-31/functions/f", b"");
    assert_eq!(got_b.json()["Configuration"]["FunctionArn"], arn_b.as_str());
    // By its own ARN, each gets its own.
    let own = server.lambda_as(&b, "GET", &format!("/2015-03-31/functions/{}", arn_b.replace(':', "%3A")), b"");
    assert_eq!(own.status, 200, "{}", own.text());

    // Same name, different functions, different answers.
    let answer_a = server.invoke_as(&a, "f", "{}");
    assert_eq!((answer_a.status, answer_a.text().trim()), (200, "\"from alpha\""));
    let answer_b = server.invoke_as(&b, "f", "{}");
    assert_eq!((answer_b.status, answer_b.text().trim()), (200, "\"from beta\""));
    let by_arn = server.invoke_as(&a, &arn_a, "{}");
    assert_eq!(by_arn.text().trim(), "\"from alpha\"");

    // Logs: each reads only its own group; the administrator has none of theirs.
    assert!(eventually(Duration::from_secs(10), || log_messages(&server, &a, "f").iter().any(|m| m.starts_with("REPORT"))));
    assert!(eventually(Duration::from_secs(10), || log_messages(&server, &b, "f").iter().any(|m| m.starts_with("REPORT"))));
    let logs_a = log_messages(&server, &a, "f");
    let logs_b = log_messages(&server, &b, "f");
    assert!(logs_a.contains(&"log of alpha\n".to_string()) && !logs_a.contains(&"log of beta\n".to_string()), "{logs_a:?}");
    assert!(logs_b.contains(&"log of beta\n".to_string()) && !logs_b.contains(&"log of alpha\n".to_string()), "{logs_b:?}");
    assert!(log_messages(&server, &admin(), "f").is_empty());
    let groups = |who: &Credentials| {
        let reply = server.logs_as(who, "DescribeLogGroups", &json!({}));
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["logGroups"].as_array().unwrap().iter().map(|g| g["arn"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(groups(&b), vec![format!("arn:aws:logs:us-east-1:{b_id}:log-group:/aws/lambda/f:*")]);
    assert!(groups(&admin()).is_empty());
    let a_group = format!("arn:aws:logs:us-east-1:{a_id}:log-group:/aws/lambda/f");
    let denied = server.logs_as(&b, "FilterLogEvents", &json!({ "logGroupIdentifier": a_group }));
    assert_eq!((denied.status, denied.error_type()), (403, "AccessDeniedException"), "{}", denied.text());

    // B naming A's function by A's ARN (full or partial) is denied, for every operation.
    let enc = |arn: &str| arn.replace(':', "%3A");
    let partial = format!("{a_id}:function:f");
    let attempts = [
        ("GetFunction", server.lambda_as(&b, "GET", &format!("/2015-03-31/functions/{}", enc(&arn_a)), b"")),
        ("GetFunctionConfiguration", server.lambda_as(&b, "GET", &format!("/2015-03-31/functions/{}/configuration", enc(&partial)), b"")),
        ("InvokeFunction", server.invoke_as(&b, &arn_a, "{}")),
        ("DeleteFunction", server.lambda_as(&b, "DELETE", &format!("/2015-03-31/functions/{}", enc(&arn_a)), b"")),
        (
            "UpdateFunctionConfiguration",
            server.lambda_as(&b, "PUT", &format!("/2015-03-31/functions/{}/configuration", enc(&arn_a)), br#"{"Timeout": 9}"#),
        ),
    ];
    for (action, reply) in attempts {
        assert_eq!((reply.status, reply.error_type()), (403, "AccessDeniedException"), "{action}: {}", reply.text());
        let message = reply.json()["message"].as_str().unwrap().to_string();
        assert!(message.starts_with(&format!("User: arn:aws:iam::{b_id}:root is not authorized to perform: lambda:{action} on resource: arn:aws:lambda:us-east-1:{a_id}:function:f")), "{message}");
        assert!(message.ends_with(&format!("because no resource-based policy allows the lambda:{action} action")), "{message}");
    }
    // Creating a function in another account's namespace is denied too.
    let mut body = json!({ "FunctionName": arn_a, "Runtime": "provided.al2023", "Role": "r", "Handler": "x" });
    use base64::Engine;
    body["Code"] = json!({ "ZipFile": base64::engine::general_purpose::STANDARD.encode(sh_runtime("")) });
    let create_there = server.lambda_as(&b, "POST", "/2015-03-31/functions", body.to_string().as_bytes());
    assert_eq!((create_there.status, create_there.error_type()), (403, "AccessDeniedException"), "{}", create_there.text());

    // By name, a function only A has does not exist for B.
    for reply in [
        server.lambda_as(&b, "GET", "/2015-03-31/functions/only-a", b""),
        server.invoke_as(&b, "only-a", "{}"),
        server.lambda_as(&b, "DELETE", "/2015-03-31/functions/only-a", b""),
        server.lambda_as(&b, "PUT", "/2015-03-31/functions/only-a/configuration", br#"{"Timeout": 9}"#),
    ] {
        assert_eq!((reply.status, reply.error_type()), (404, "ResourceNotFoundException"), "{}", reply.text());
        assert!(reply.text().contains(&format!(":{b_id}:function:only-a")), "{}", reply.text());
    }
    // Nothing B tried changed A's functions.
    let still = server.lambda_as(&a, "GET", "/2015-03-31/functions/f/configuration", b"").json();
    assert_eq!(still["Timeout"], 3);
    assert_eq!(server.invoke_as(&a, "only-a", "{}").status, 200);

    // Only the administrator manages accounts.
    for who in [&a, &b] {
        let reply = server.ignis_as(who, "POST", "/ignis/accounts", br#"{"Name": "gamma"}"#);
        assert_eq!((reply.status, reply.error_type()), (403, "AccessDeniedException"), "{}", reply.text());
        let reply = server.ignis_as(who, "GET", "/ignis/accounts", b"");
        assert_eq!((reply.status, reply.error_type()), (403, "AccessDeniedException"), "{}", reply.text());
    }
    let refused = server.cli_as(&a, &["account", "create", "gamma"]);
    assert!(!refused.status.success());
    assert_eq!(stderr(&refused).lines().count(), 1, "{}", stderr(&refused));
    assert!(stderr(&refused).contains("AccessDeniedException"), "{}", stderr(&refused));

    // Names are unique and well-formed.
    let duplicate = server.ignis_as(&admin(), "POST", "/ignis/accounts", br#"{"Name": "alpha"}"#);
    assert_eq!((duplicate.status, duplicate.error_type()), (409, "ResourceConflictException"), "{}", duplicate.text());
    let duplicate = server.cli_as(&admin(), &["account", "create", "beta"]);
    assert!(!duplicate.status.success());
    assert_eq!(stderr(&duplicate).lines().count(), 1, "{}", stderr(&duplicate));
    assert!(stderr(&duplicate).contains("ResourceConflictException"), "{}", stderr(&duplicate));
    for bad in [json!({}), json!({ "Name": "" }), json!({ "Name": "a b" }), json!({ "Name": "x".repeat(65) })] {
        let reply = server.ignis_as(&admin(), "POST", "/ignis/accounts", bad.to_string().as_bytes());
        assert_eq!((reply.status, reply.error_type()), (400, "ValidationException"), "{bad}: {}", reply.text());
    }
    // The account API must be signed for the service `ignis`.
    let wrong_service = server.signed("lambda", "GET", "/ignis/accounts", "", &[], b"");
    assert_eq!((wrong_service.status, wrong_service.error_type()), (403, "InvalidSignatureException"));

    // A's key deletes A's function; B's is untouched.
    assert_eq!(server.lambda_as(&a, "DELETE", "/2015-03-31/functions/f", b"").status, 204);
    assert_eq!(server.invoke_as(&b, "f", "{}").text().trim(), "\"from beta\"");
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            files_under(&entry.path(), out);
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
}

fn assert_no_plain_secret(data: &Path, secret: &str) {
    let mut files = Vec::new();
    files_under(data, &mut files);
    assert!(files.iter().any(|f| f.ends_with("ignis.redb")), "{files:?}");
    for file in files {
        let Ok(bytes) = std::fs::read(&file) else { continue };
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{} holds an account secret in plain text", file.display());
    }
}

#[test]
fn accounts_and_keys_survive_a_restart_with_secrets_sealed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (id, key, arn) = {
        let mut server = Server::start_in(&data, &[]);
        let (id, key) = server.create_account("keeper");
        let created = server.create_as(&key, "kept", &sh_runtime("echo '\"still here\"' > /tmp/response"));
        assert_eq!(created.status, 201, "{}", created.text());
        let arn = created.json()["FunctionArn"].as_str().unwrap().to_string();
        assert_eq!(arn, format!("arn:aws:lambda:us-east-1:{id}:function:kept"));
        assert_eq!(server.invoke_as(&key, "kept", "{}").text().trim(), "\"still here\"");
        assert_no_plain_secret(&data, &key.secret_access_key);
        server.stop();
        (id, key, arn)
    };
    assert_no_plain_secret(&data, &key.secret_access_key);
    let master = std::fs::metadata(data.join("master.key")).expect("a master key beside the database");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(master.permissions().mode() & 0o777, 0o600);
    assert_eq!(master.len(), 32);

    let server = Server::start_in(&data, &[]);
    // The key still authenticates as its account, which still has its function.
    let listed = function_names(&server.lambda_as(&key, "GET", "/2015-03-31/functions/", b""));
    assert_eq!(listed, vec![("kept".to_string(), arn)]);
    assert_eq!(server.invoke_as(&key, "kept", "{}").text().trim(), "\"still here\"");
    let accounts = server.ignis_as(&admin(), "GET", "/ignis/accounts", b"").json();
    assert!(accounts["Accounts"].as_array().unwrap().iter().any(|a| a["AccountId"] == id.as_str() && a["Name"] == "keeper"), "{accounts}");
    // The name is still taken.
    let again = server.ignis_as(&admin(), "POST", "/ignis/accounts", br#"{"Name": "keeper"}"#);
    assert_eq!(again.status, 409);
    // A key pair that is not the current one is still refused.
    let forged = Credentials { access_key_id: key.access_key_id.clone(), secret_access_key: "not-the-secret".into() };
    let refused = server.lambda_as(&forged, "GET", "/2015-03-31/functions/", b"");
    assert_eq!((refused.status, refused.error_type()), (403, "InvalidSignatureException"));
}
