//! What deployment tools call besides functions' code and configuration: tags.

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
