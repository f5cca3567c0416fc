//! Container-image functions on the control plane: an image pushed with skopeo
//! to Ignis's registry becomes a function's code (`PackageType: Image`), its tag
//! resolved to a digest once; Lambda's refusals (another account's repository,
//! an unknown tag, `Runtime` with an image, zip code for an image function and
//! the reverse) and its shapes (GetFunction's `Code`, `ImageConfigResponse`).

use base64::Engine as _;
use serde_json::{Value, json};

use crate::harness::{Server, sh_runtime};
use crate::oci::{make_layout, make_layout_of, push};

const FUNCTIONS: &str = "/2015-03-31/functions";

pub fn create_image(server: &Server, credentials: &ignis_sigv4::Credentials, name: &str, extra: Value) -> crate::harness::Reply {
    let mut body = json!({ "FunctionName": name, "Role": "arn:aws:iam::123456789012:role/r", "PackageType": "Image" });
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    server.lambda_as(credentials, "POST", FUNCTIONS, body.to_string().as_bytes())
}

pub fn refused(reply: &crate::harness::Reply, error_type: &str, message: &str) {
    assert_eq!((reply.status, reply.error_type()), (400, error_type), "{}", reply.text());
    let body = reply.json();
    let got = body["message"].as_str().or(body["Message"].as_str()).unwrap_or_default().to_string();
    assert!(got.contains(message), "{got:?} does not contain {message:?}");
}

#[test]
fn image_functions_resolve_their_tag_once_and_refuse_what_lambda_refuses() {
    let server = Server::start();
    let (_, alice) = server.create_account("alice");
    let (_, bob) = server.create_account("bob");
    let tmp = tempfile::tempdir().unwrap();
    let first = make_layout(&tmp.path().join("first"), "v1");
    push(&server, &tmp.path().join("first"), "v1", "team/app:v1", &alice);
    let host = &server.address;
    let uri = format!("{host}/team/app:v1");

    // Created from the tag, with an override of the image's CMD.
    let created = create_image(&server, &alice, "img", json!({ "Code": { "ImageUri": uri }, "ImageConfig": { "Command": ["serve"] } }));
    assert_eq!(created.status, 201, "{}", created.text());
    let config = created.json();
    assert_eq!(config["PackageType"], "Image");
    assert_eq!((config["CodeSha256"].clone(), config["CodeSize"].clone()), (json!(&first[7..]), json!(0)));
    assert!(config.get("Runtime").is_none() && config.get("Handler").is_none(), "{config}");
    assert_eq!(config["ImageConfigResponse"], json!({ "ImageConfig": { "Command": ["serve"] } }));

    let get = server.lambda_as(&alice, "GET", &format!("{FUNCTIONS}/img"), b"");
    assert_eq!(get.status, 200, "{}", get.text());
    let resolved = format!("{host}/team/app@{first}");
    assert_eq!(get.json()["Code"], json!({ "RepositoryType": "ECR", "ImageUri": uri, "ResolvedImageUri": resolved }));
    assert_eq!(get.json()["Configuration"]["PackageType"], "Image");
    let listed = server.lambda_as(&alice, "GET", &format!("{FUNCTIONS}/"), b"").json();
    assert_eq!(listed["Functions"][0]["PackageType"], "Image");

    // Another image pushed to the same tag does not change the function...
    let second = make_layout_of(&tmp.path().join("second"), "v1", "amd64", json!({ "Entrypoint": ["/hello", "again"] }));
    assert_ne!(second, first);
    push(&server, &tmp.path().join("second"), "v1", "team/app:v1", &alice);
    let get = server.lambda_as(&alice, "GET", &format!("{FUNCTIONS}/img"), b"");
    assert_eq!(get.json()["Code"]["ResolvedImageUri"], resolved.as_str());

    // ...until UpdateFunctionCode names the image again; the override stays.
    let body = json!({ "ImageUri": uri }).to_string();
    let updated = server.lambda_as(&alice, "PUT", &format!("{FUNCTIONS}/img/code"), body.as_bytes());
    assert_eq!(updated.status, 200, "{}", updated.text());
    assert_eq!(updated.json()["CodeSha256"], &second[7..]);
    assert_eq!(updated.json()["ImageConfigResponse"]["ImageConfig"]["Command"], json!(["serve"]));
    let get = server.lambda_as(&alice, "GET", &format!("{FUNCTIONS}/img"), b"");
    assert_eq!(get.json()["Code"]["ResolvedImageUri"], format!("{host}/team/app@{second}"));

    // A version keeps its image; the configuration call changes ImageConfig.
    let published = server.lambda_as(&alice, "POST", &format!("{FUNCTIONS}/img/versions"), b"{}");
    assert_eq!((published.status, published.json()["Version"].clone()), (201, json!("1")), "{}", published.text());
    let body = json!({ "ImageConfig": { "EntryPoint": ["/bin/sh"], "WorkingDirectory": "/srv" } }).to_string();
    let changed = server.lambda_as(&alice, "PUT", &format!("{FUNCTIONS}/img/configuration"), body.as_bytes());
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert_eq!(changed.json()["ImageConfigResponse"], json!({ "ImageConfig": { "EntryPoint": ["/bin/sh"], "WorkingDirectory": "/srv" } }));
    let version = server.lambda_as(&alice, "GET", &format!("{FUNCTIONS}/img?Qualifier=1"), b"").json();
    assert_eq!(version["Code"]["ResolvedImageUri"], format!("{host}/team/app@{second}"));
    assert_eq!(version["Configuration"]["ImageConfigResponse"]["ImageConfig"], json!({ "Command": ["serve"] }));

    // Zip code for an image function, and Runtime on it.
    let zip = base64::engine::general_purpose::STANDARD.encode(sh_runtime("echo hi"));
    let body = json!({ "ZipFile": zip }).to_string();
    let reply = server.lambda_as(&alice, "PUT", &format!("{FUNCTIONS}/img/code"), body.as_bytes());
    refused(&reply, "InvalidParameterValueException", "Please provide ImageUri when updating a function with packageType Image.");
    let reply = server.lambda_as(&alice, "PUT", &format!("{FUNCTIONS}/img/configuration"), br#"{"Runtime":"provided.al2023"}"#);
    refused(&reply, "InvalidParameterValueException", "Please don't provide Handler or Runtime or Layer");

    // Refused at creation: Runtime with an image, no ImageUri, no tag, an unknown tag, another
    // account's repository (as one that does not exist), an arm64 image.
    let reply = create_image(&server, &alice, "bad", json!({ "Code": { "ImageUri": uri }, "Runtime": "provided.al2023" }));
    refused(&reply, "InvalidParameterValueException", "Please don't provide Handler or Runtime or Layer when the intended function PackageType is Image.");
    let reply = create_image(&server, &alice, "bad", json!({ "Code": {} }));
    refused(&reply, "InvalidParameterValueException", "Please provide ImageUri");
    let untagged = format!("{host}/team/app");
    let reply = create_image(&server, &alice, "bad", json!({ "Code": { "ImageUri": untagged } }));
    refused(&reply, "InvalidParameterValueException", &format!("Source image {untagged} is not valid."));
    let unknown = format!("{host}/team/app:nope");
    let reply = create_image(&server, &alice, "bad", json!({ "Code": { "ImageUri": unknown } }));
    refused(&reply, "InvalidParameterValueException", &format!("Source image {unknown} does not exist."));
    let reply = create_image(&server, &bob, "bad", json!({ "Code": { "ImageUri": uri } }));
    refused(&reply, "InvalidParameterValueException", &format!("Source image {uri} does not exist."));
    make_layout_of(&tmp.path().join("arm"), "arm", "arm64", json!({ "Entrypoint": ["/hello"] }));
    push(&server, &tmp.path().join("arm"), "arm", "team/app:arm", &alice);
    let reply = create_image(&server, &alice, "bad", json!({ "Code": { "ImageUri": format!("{host}/team/app:arm") } }));
    refused(&reply, "InvalidParameterValueException", "linux/arm64");
    assert_eq!(server.lambda_as(&alice, "GET", &format!("{FUNCTIONS}/bad"), b"").status, 404);

    // A zip function takes no ImageUri and no ImageConfig.
    assert_eq!(server.create_as(&alice, "zip", &sh_runtime("echo hi")).status, 201);
    let body = json!({ "ImageUri": uri }).to_string();
    let reply = server.lambda_as(&alice, "PUT", &format!("{FUNCTIONS}/zip/code"), body.as_bytes());
    refused(&reply, "InvalidParameterValueException", "Please don't provide ImageUri when updating a function with packageType Zip.");
    let reply = server.lambda_as(&alice, "PUT", &format!("{FUNCTIONS}/zip/configuration"), br#"{"ImageConfig":{"Command":["x"]}}"#);
    refused(&reply, "InvalidParameterValueException", "ImageConfig");
}
