//! Function versions and aliases: publishing, invoking by qualifier, routing
//! weights, alias CRUD, and their survival across a restart.

use serde_json::{Value, json};

use crate::harness::{Server, sh_runtime};

/// A runtime answering `"<tag> <AWS_LAMBDA_FUNCTION_VERSION> <GREETING>"`.
fn tagged(tag: &str) -> Vec<u8> {
    sh_runtime(&format!("echo \"\\\"{tag} $AWS_LAMBDA_FUNCTION_VERSION $GREETING\\\"\" > /tmp/response"))
}

fn update_code(server: &Server, name: &str, zip: &[u8], extra: Value) -> crate::harness::Reply {
    use base64::Engine;
    let mut body = json!({ "ZipFile": base64::engine::general_purpose::STANDARD.encode(zip) });
    if let Value::Object(fields) = extra {
        for (k, v) in fields {
            body[k] = v;
        }
    }
    server.lambda("PUT", &format!("/2015-03-31/functions/{name}/code"), body.to_string().as_bytes())
}

fn publish(server: &Server, name: &str, body: Value) -> crate::harness::Reply {
    server.lambda("POST", &format!("/2015-03-31/functions/{name}/versions"), body.to_string().as_bytes())
}

fn answer(reply: &crate::harness::Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json().as_str().unwrap_or_else(|| panic!("not a string: {}", reply.text())).to_string()
}

#[test]
fn published_versions_are_immutable_and_invoked_by_qualifier() {
    let server = Server::start();
    let created = server.create("vf", &tagged("one"), json!({ "Environment": { "Variables": { "GREETING": "a" } } }));
    assert_eq!(created.status, 201, "{}", created.text());
    let function_arn = created.json()["FunctionArn"].as_str().unwrap().to_string();

    let v1 = publish(&server, "vf", json!({ "Description": "first" }));
    assert_eq!(v1.status, 201, "{}", v1.text());
    let v1 = v1.json();
    assert_eq!((v1["Version"].as_str(), v1["Description"].as_str()), (Some("1"), Some("first")));
    assert_eq!(v1["FunctionArn"], format!("{function_arn}:1"));
    // Nothing changed: the last version again.
    let again = publish(&server, "vf", json!({}));
    assert_eq!((again.status, again.json()["Version"].as_str()), (201, Some("1")));
    // Preconditions.
    let stale = publish(&server, "vf", json!({ "RevisionId": "not-the-revision" }));
    assert_eq!((stale.status, stale.error_type()), (412, "PreconditionFailedException"));
    let wrong_sha = publish(&server, "vf", json!({ "CodeSha256": "bm90IGl0" }));
    assert_eq!((wrong_sha.status, wrong_sha.error_type()), (400, "InvalidParameterValueException"));

    // UpdateFunctionCode with Publish publishes version 2.
    let v2 = update_code(&server, "vf", &tagged("two"), json!({ "Publish": true }));
    assert_eq!(v2.status, 200, "{}", v2.text());
    assert_eq!(v2.json()["Version"], "2");
    // $LATEST's configuration changes; the versions' do not.
    let changed = server.lambda(
        "PUT",
        "/2015-03-31/functions/vf/configuration",
        json!({ "Environment": { "Variables": { "GREETING": "b" } } }).to_string().as_bytes(),
    );
    assert_eq!(changed.status, 200, "{}", changed.text());

    for (qualified, expected, version) in [("vf:1", "one 1 a", "1"), ("vf:2", "two 2 a", "2"), ("vf", "two $LATEST b", "$LATEST"), ("vf:$LATEST", "two $LATEST b", "$LATEST")] {
        let reply = server.invoke(qualified, "{}");
        assert_eq!(answer(&reply), expected, "{qualified}");
        assert_eq!(reply.header("x-amz-executed-version"), Some(version), "{qualified}");
        assert!(reply.log_tail().contains(&format!("Version: {version}")), "{qualified}: {}", reply.log_tail());
    }
    // ?Qualifier= and a qualified ARN.
    let by_param = server.signed("lambda", "POST", "/2015-03-31/functions/vf/invocations", "Qualifier=1", &[], b"{}");
    assert_eq!(answer(&by_param), "one 1 a");
    let by_arn = server.invoke(&format!("{function_arn}:2").replace(':', "%3A"), "{}");
    assert_eq!(answer(&by_arn), "two 2 a");
    assert_eq!(by_arn.header("x-amz-executed-version"), Some("2"));

    let config = server.lambda("GET", "/2015-03-31/functions/vf/configuration?Qualifier=1", b"");
    assert_eq!(config.status, 200, "{}", config.text());
    assert_eq!(config.json()["Environment"]["Variables"]["GREETING"], "a");
    assert_eq!(config.json()["Version"], "1");
    let got = server.lambda("GET", "/2015-03-31/functions/vf%3A2", b"");
    assert_eq!(got.json()["Configuration"]["Version"], "2");

    let listed = server.lambda("GET", "/2015-03-31/functions/vf/versions", b"").json();
    let versions: Vec<&str> = listed["Versions"].as_array().unwrap().iter().map(|v| v["Version"].as_str().unwrap()).collect();
    assert_eq!(versions, ["$LATEST", "1", "2"]);
    let first = server.lambda("GET", "/2015-03-31/functions/vf/versions?MaxItems=2", b"").json();
    assert_eq!(first["Versions"].as_array().unwrap().len(), 2);
    let marker = first["NextMarker"].as_str().unwrap().to_string();
    let rest = server.lambda("GET", &format!("/2015-03-31/functions/vf/versions?MaxItems=2&Marker={}", marker.replace('$', "%24")), b"").json();
    assert_eq!(rest["Versions"][0]["Version"], "2");
    assert!(rest.get("NextMarker").is_none());

    for missing in ["vf:9", "vf:nope"] {
        let reply = server.invoke(missing, "{}");
        assert_eq!((reply.status, reply.error_type()), (404, "ResourceNotFoundException"), "{missing}");
    }
    let missing = server.lambda("GET", "/2015-03-31/functions/vf?Qualifier=7", b"");
    assert_eq!(missing.status, 404);

    // Deleting a version; $LATEST cannot be deleted alone.
    let latest = server.lambda("DELETE", "/2015-03-31/functions/vf?Qualifier=%24LATEST", b"");
    assert_eq!(latest.status, 400);
    assert_eq!(server.lambda("DELETE", "/2015-03-31/functions/vf?Qualifier=1", b"").status, 204);
    assert_eq!(server.invoke("vf:1", "{}").status, 404);
    assert_eq!(answer(&server.invoke("vf:2", "{}")), "two 2 a");
    // Numbers are not reused.
    update_code(&server, "vf", &tagged("three"), json!({}));
    assert_eq!(publish(&server, "vf", json!({})).json()["Version"], "3");

    // CreateFunction with Publish answers version 1.
    let published = server.create("vf-pub", &tagged("p"), json!({ "Publish": true }));
    assert_eq!(published.status, 201, "{}", published.text());
    assert_eq!(published.json()["Version"], "1");
    assert_eq!(answer(&server.invoke("vf-pub:1", "{}")), "p 1 ");

    assert_eq!(server.lambda("DELETE", "/2015-03-31/functions/vf", b"").status, 204);
    assert_eq!(server.invoke("vf:2", "{}").status, 404);
}

fn alias_call(server: &Server, method: &str, path: &str, body: Value) -> crate::harness::Reply {
    server.lambda(method, path, body.to_string().as_bytes())
}

#[test]
fn aliases_route_and_can_be_changed() {
    let server = Server::start();
    assert_eq!(server.create("af", &tagged("one"), json!({})).status, 201);
    assert_eq!(publish(&server, "af", json!({})).status, 201);
    update_code(&server, "af", &tagged("two"), json!({}));
    assert_eq!(publish(&server, "af", json!({})).json()["Version"], "2");

    let aliases = "/2015-03-31/functions/af/aliases";
    let created = alias_call(
        &server,
        "POST",
        aliases,
        json!({ "Name": "live", "FunctionVersion": "1", "Description": "canary", "RoutingConfig": { "AdditionalVersionWeights": { "2": 0.5 } } }),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    assert!(created["AliasArn"].as_str().unwrap().ends_with(":function:af:live"), "{created}");
    assert_eq!(created["FunctionVersion"], "1");
    assert_eq!(created["Description"], "canary");
    assert_eq!(created["RoutingConfig"]["AdditionalVersionWeights"]["2"], 0.5);

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let reply = server.invoke("af:live", "{}");
        let text = answer(&reply);
        let version = reply.header("x-amz-executed-version").unwrap().to_string();
        assert!(text == format!("one {version} ") || text == format!("two {version} "), "{text} from {version}");
        seen.insert(version);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["1", "2"]);

    // Read, list, refuse, update, delete.
    let got = server.lambda("GET", &format!("{aliases}/live"), b"");
    assert_eq!(got.json(), created);
    let duplicate = alias_call(&server, "POST", aliases, json!({ "Name": "live", "FunctionVersion": "2" }));
    assert_eq!((duplicate.status, duplicate.error_type()), (409, "ResourceConflictException"));
    let digits = alias_call(&server, "POST", aliases, json!({ "Name": "123", "FunctionVersion": "2" }));
    assert_eq!((digits.status, digits.error_type()), (400, "ValidationException"));
    let no_version = alias_call(&server, "POST", aliases, json!({ "Name": "x", "FunctionVersion": "9" }));
    assert_eq!((no_version.status, no_version.error_type()), (404, "ResourceNotFoundException"));
    let heavy = alias_call(&server, "POST", aliases, json!({ "Name": "x", "FunctionVersion": "1", "RoutingConfig": { "AdditionalVersionWeights": { "2": 1.5 } } }));
    assert_eq!((heavy.status, heavy.error_type()), (400, "ValidationException"));
    assert_eq!(alias_call(&server, "POST", aliases, json!({ "Name": "edge", "FunctionVersion": "$LATEST" })).status, 201);
    assert_eq!(answer(&server.invoke("af:edge", "{}")), "two $LATEST ");

    let listed = server.lambda("GET", aliases, b"").json();
    let names: Vec<&str> = listed["Aliases"].as_array().unwrap().iter().map(|a| a["Name"].as_str().unwrap()).collect();
    assert_eq!(names, ["edge", "live"]);
    let filtered = server.lambda("GET", &format!("{aliases}?FunctionVersion=1"), b"").json();
    assert_eq!(filtered["Aliases"].as_array().unwrap().len(), 1);

    let in_use = server.lambda("DELETE", "/2015-03-31/functions/af?Qualifier=2", b"");
    assert_eq!((in_use.status, in_use.error_type()), (409, "ResourceConflictException"));

    let stale = alias_call(&server, "PUT", &format!("{aliases}/live"), json!({ "FunctionVersion": "2", "RevisionId": "old" }));
    assert_eq!((stale.status, stale.error_type()), (412, "PreconditionFailedException"));
    let updated = alias_call(
        &server,
        "PUT",
        &format!("{aliases}/live"),
        json!({ "FunctionVersion": "2", "RoutingConfig": {}, "RevisionId": created["RevisionId"] }),
    );
    assert_eq!(updated.status, 200, "{}", updated.text());
    assert_eq!(updated.json()["FunctionVersion"], "2");
    assert!(updated.json().get("RoutingConfig").is_none());
    assert_ne!(updated.json()["RevisionId"], created["RevisionId"]);
    for _ in 0..5 {
        assert_eq!(answer(&server.invoke("af:live", "{}")), "two 2 ");
    }
    // Version 1 is free now.
    assert_eq!(server.lambda("DELETE", "/2015-03-31/functions/af?Qualifier=1", b"").status, 204);

    assert_eq!(server.lambda("DELETE", &format!("{aliases}/live"), b"").status, 204);
    let gone = server.lambda("GET", &format!("{aliases}/live"), b"");
    assert_eq!((gone.status, gone.error_type()), (404, "ResourceNotFoundException"));
    let unknown = server.invoke("af:live", "{}");
    assert_eq!((unknown.status, unknown.error_type()), (404, "ResourceNotFoundException"));
}

#[test]
fn versions_and_aliases_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start_in(&data, &[]);
    assert_eq!(server.create("kept", &tagged("old"), json!({ "Publish": true })).status, 201);
    update_code(&server, "kept", &tagged("new"), json!({}));
    let alias = alias_call(&server, "POST", "/2015-03-31/functions/kept/aliases", json!({ "Name": "prod", "FunctionVersion": "1" }));
    assert_eq!(alias.status, 201, "{}", alias.text());
    server.stop();

    let server = Server::start_in(&data, &[]);
    assert_eq!(answer(&server.invoke("kept:prod", "{}")), "old 1 ");
    assert_eq!(answer(&server.invoke("kept:1", "{}")), "old 1 ");
    assert_eq!(answer(&server.invoke("kept", "{}")), "new $LATEST ");
    let listed = server.lambda("GET", "/2015-03-31/functions/kept/versions", b"").json();
    assert_eq!(listed["Versions"].as_array().unwrap().len(), 2);
    assert_eq!(server.lambda("GET", "/2015-03-31/functions/kept/aliases/prod", b"").json()["FunctionVersion"], "1");
    // The next number continues.
    assert_eq!(publish(&server, "kept", json!({})).json()["Version"], "2");
}

#[test]
fn list_functions_with_every_version() {
    let server = Server::start();
    for name in ["la", "lb"] {
        assert_eq!(server.create(name, &tagged(name), json!({})).status, 201);
        assert_eq!(publish(&server, name, json!({})).status, 201);
    }
    assert_eq!(update_code(&server, "la", &tagged("la2"), json!({ "Publish": true })).status, 200);
    let list = |query: &str| server.signed("lambda", "GET", "/2015-03-31/functions/", query, &[], b"");
    let names = |body: &Value| -> Vec<String> {
        body["Functions"].as_array().unwrap().iter().map(|f| format!("{}:{}", f["FunctionName"].as_str().unwrap(), f["Version"].as_str().unwrap())).collect()
    };
    assert_eq!(names(&list("").json()), ["la:$LATEST", "lb:$LATEST"]);
    assert_eq!(names(&list("FunctionVersion=ALL").json()), ["la:$LATEST", "la:1", "la:2", "lb:$LATEST", "lb:1"]);
    // One at a time, by marker.
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    for _ in 0..10 {
        let query = match &marker {
            Some(m) => format!("FunctionVersion=ALL&MaxItems=1&Marker={}", m.replace('$', "%24").replace(':', "%3A")),
            None => "FunctionVersion=ALL&MaxItems=1".to_string(),
        };
        let body = list(&query).json();
        seen.extend(names(&body));
        match body["NextMarker"].as_str() {
            Some(m) => marker = Some(m.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["la:$LATEST", "la:1", "la:2", "lb:$LATEST", "lb:1"]);
    let bad = list("FunctionVersion=SOME");
    assert_eq!((bad.status, bad.error_type()), (400, "ValidationException"));
}
