//! What deployment tools call besides functions' code and configuration: tags, the code's download link, and the
//! answer to an operation Ignis does not serve.

use serde_json::json;

use crate::harness::{Server, sh_runtime};

#[test]
fn tags_belong_to_the_function() {
    let server = Server::start();
    let created = server.create("tagged", &sh_runtime(""), json!({ "Tags": { "team": "blue" } }));
    assert_eq!(created.status, 201, "{}", created.text());
    let arn = created.json()["FunctionArn"].as_str().unwrap().to_string();
    let path = format!("/2017-03-31/tags/{}", arn.replace(':', "%3A"));

    let tagged = server.lambda("POST", &path, json!({ "Tags": { "stage": "prod", "team": "red" } }).to_string().as_bytes());
    assert_eq!(tagged.status, 204, "{}", tagged.text());
    assert_eq!(server.lambda("GET", &path, b"").json(), json!({ "Tags": { "stage": "prod", "team": "red" } }));
    let untagged = server.lambda("DELETE", &format!("{path}?tagKeys=team&tagKeys=absent"), b"");
    assert_eq!(untagged.status, 204, "{}", untagged.text());
    assert_eq!(server.lambda("GET", "/2015-03-31/functions/tagged", b"").json()["Tags"], json!({ "stage": "prod" }));

    // Refusals change nothing.
    let missing_keys = server.lambda("DELETE", &path, b"");
    assert_eq!((missing_keys.status, missing_keys.error_type()), (400, "ValidationException"));
    let missing_tags = server.lambda("POST", &path, b"{}");
    assert_eq!((missing_tags.status, missing_tags.error_type()), (400, "ValidationException"));
    let version = server.lambda("GET", &format!("{path}%3A1"), b"");
    assert_eq!((version.status, version.error_type()), (400, "InvalidParameterValueException"), "{}", version.text());
    assert_eq!(server.lambda("GET", &path, b"").json(), json!({ "Tags": { "stage": "prod" } }));

    // The tags are stored with the function: a restart keeps them; they go when it is deleted.
    let mut server = server;
    server.stop();
    let restarted = Server::start_in(&server.data, &[]);
    assert_eq!(restarted.lambda("GET", &path, b"").json(), json!({ "Tags": { "stage": "prod" } }));
    assert_eq!(restarted.lambda("DELETE", "/2015-03-31/functions/tagged", b"").status, 204);
    let gone = restarted.lambda("GET", &path, b"");
    assert_eq!((gone.status, gone.error_type()), (404, "ResourceNotFoundException"));
}

/// GetFunction's `Code.Location` downloads the code as deployed (modes as stored: 0755 if executable, else
/// 0644), unsigned; a changed link is refused.
#[test]
fn code_location_downloads_the_deployed_code() {
    let server = Server::start();
    let data = b"payload\n".repeat(10_000);
    let zip = crate::harness::zip_of(&[("bootstrap", b"#!/bin/sh\n", 0o755), ("lib/data", &data, 0o640)]);
    assert_eq!(server.create("located", &zip, json!({})).status, 201);
    let got = server.lambda("GET", "/2015-03-31/functions/located", b"").json();
    assert_eq!(got["Code"]["RepositoryType"], "S3");
    let location = got["Code"]["Location"].as_str().unwrap().to_string();
    let prefix = format!("http://{}/ignis/code-download/", server.address);
    let (path, query) = location.strip_prefix(&format!("http://{}", server.address)).unwrap().split_once('?').unwrap();
    assert!(location.starts_with(&prefix), "{location}");

    let reply = server.raw("GET", path, query, &[], b"");
    assert_eq!((reply.status, reply.header("content-type")), (200, Some("application/zip")));
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(reply.body)).unwrap();
    let mut files = Vec::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        if file.is_dir() {
            continue;
        }
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut content).unwrap();
        files.push((file.name().unwrap().to_string(), content, file.unix_mode().map(|m| m & 0o777)));
    }
    files.sort();
    assert_eq!(files, [("bootstrap".to_string(), b"#!/bin/sh\n".to_vec(), Some(0o755)), ("lib/data".to_string(), data, Some(0o644))]);

    let other_account = path.replace("/code-download/", "/code-download/9");
    for (path, query) in [
        (path, query.replace("X-Ignis-Expires=", "X-Ignis-Expires=1")),
        (path, query.replace("X-Ignis-Signature=", "X-Ignis-Signature=00")),
        (path, String::new()),
        (other_account.as_str(), query.to_string()),
    ] {
        let refused = server.raw("GET", path, &query, &[], b"");
        assert_eq!((refused.status, refused.error_type()), (403, "AccessDeniedException"), "{path}?{query}: {}", refused.text());
    }
}

/// A Lambda operation Ignis does not serve is `UnknownOperationException` naming it; a request that is no
/// operation names its method and path.
#[test]
fn unknown_operations_are_named() {
    let server = Server::start();
    let reply = server.lambda("POST", "/2020-04-22/code-signing-configs/", b"{}");
    assert_eq!((reply.status, reply.error_type()), (404, "UnknownOperationException"));
    assert_eq!(
        reply.json()["message"],
        "Ignis does not implement the Lambda operation CreateCodeSigningConfig (POST /2020-04-22/code-signing-configs)."
    );
    let reply = server.raw("PATCH", "/2015-03-31/functions/f", "", &[], b"");
    assert_eq!((reply.status, reply.error_type()), (404, "UnknownOperationException"));
    assert!(reply.json()["message"].as_str().unwrap().starts_with("Unknown operation PATCH /2015-03-31/functions/f: "), "{}", reply.text());
}
