//! A function's tags: TagResource (`POST /2017-03-31/tags/{ARN}` `{"Tags": {...}}` → 204), UntagResource
//! (`DELETE /2017-03-31/tags/{ARN}?tagKeys=K&tagKeys=...` → 204) and ListTags (`GET /2017-03-31/tags/{ARN}` →
//! `{"Tags": {...}}`), and the checks `Tags` of CreateFunction shares.
//!
//! Tags belong to the function (`$LATEST`'s record, `FunctionRecord::tags`): a version or alias ARN is refused,
//! as Lambda refuses it, and the tags go with the function when it is deleted. The resource is named by its ARN
//! only (Lambda's `TaggableResource` pattern, else `ValidationException`); of the other resource types that
//! pattern allows (event source mappings, code signing configs, capacity providers) Ignis tags none:
//! `InvalidParameterValueException`. Another account's ARN is `AccessDeniedException`.
//!
//! Lambda's limits: at most [`MAX_TAGS`] tags on a resource, keys of 1 to 128 characters and values of 0 to 256,
//! both of letters, digits, spaces and `_ . : / = + - @` (`ValidationException`, listing each bad one); keys that
//! begin with `aws:` (in any case) are AWS's and can be neither set nor removed. A change is checked whole before
//! anything is stored: a refused request changes nothing. Tagging changes neither the revision nor `LastModified`.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::StatusCode;
use ignis_registry::{FunctionRef, RegistryError};
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::function::{self as f, Violations};
use crate::http::{Answer, empty_answer, json_answer, query_params};
use crate::{App, Caller};

/// Most tags one resource has (Lambda's limit).
pub const MAX_TAGS: usize = 50;
/// Longest tag key, in characters.
pub const MAX_KEY_CHARS: usize = 128;
/// Longest tag value, in characters.
pub const MAX_VALUE_CHARS: usize = 256;

const RESOURCE_PATTERN: &str = "Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*):lambda:[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1}:\\d{12}:(function:[a-zA-Z0-9-_]+(:(\\$LATEST|[a-zA-Z0-9-_]+))?|code-signing-config:csc-[a-z0-9]{17}|event-source-mapping:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|capacity-provider:[a-zA-Z0-9-_]+)";
const KEY_CONSTRAINT: &str = "Map keys must satisfy constraint: [Member must have length less than or equal to 128, Member must have length greater than or equal to 1, Member must satisfy regular expression pattern: ^[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*$]";
const VALUE_CONSTRAINT: &str = "Map value must satisfy constraint: [Member must have length less than or equal to 256, Member must have length greater than or equal to 0, Member must satisfy regular expression pattern: ^[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*$]";

/// TagResource's body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagResource {
    tags: Option<BTreeMap<String, String>>,
}

/// Whether `c` is allowed in a tag: `[\p{L}\p{Z}\p{N}_.:/=+\-@]`.
fn tag_char(c: char) -> bool {
    c.is_alphabetic() || c.is_numeric() || (c.is_whitespace() && !c.is_control()) || "_.:/=+-@".contains(c)
}

/// Whether `key` is one of AWS's own (`aws:` in any case).
fn reserved(key: &str) -> bool {
    key.get(..4).is_some_and(|prefix| prefix.eq_ignore_ascii_case("aws:"))
}

/// Checks tags to be set on a resource: the model's limits on each key and value (`ValidationException` listing
/// every bad one), then AWS's reserved prefix and the number of tags (`InvalidParameterValueException`).
pub fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    let mut v = Violations::default();
    for (key, value) in tags {
        let key_chars = key.chars().count();
        v.check((1..=MAX_KEY_CHARS).contains(&key_chars) && key.chars().all(tag_char), key, "tags", KEY_CONSTRAINT);
        v.check(value.chars().count() <= MAX_VALUE_CHARS && value.chars().all(tag_char), value, "tags", VALUE_CONSTRAINT);
    }
    v.into_result()?;
    refuse_reserved(tags.keys())?;
    check_count(tags.len())
}

/// Refuses more than [`MAX_TAGS`] tags on one resource.
fn check_count(count: usize) -> Result<(), ApiError> {
    if count > MAX_TAGS {
        return Err(ApiError::InvalidParameterValue(format!(
            "Number of tags exceeds resource tag limit: a resource has at most {MAX_TAGS} tags (this request would leave {count})."
        )));
    }
    Ok(())
}

/// Refuses keys of AWS's reserved prefix: they can be neither set nor removed.
fn refuse_reserved<'a>(keys: impl IntoIterator<Item = &'a String>) -> Result<(), ApiError> {
    match keys.into_iter().find(|key| reserved(key)) {
        Some(key) => Err(ApiError::InvalidParameterValue(format!(
            "Tag key {key} is not valid: keys beginning with 'aws:' are reserved for AWS's use and cannot be set or removed."
        ))),
        None => Ok(()),
    }
}

/// `current` with `added` set over it, or the refusal of a result over [`MAX_TAGS`].
pub fn merged(current: &BTreeMap<String, String>, added: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut tags = current.clone();
    tags.extend(added.iter().map(|(k, v)| (k.clone(), v.clone())));
    check_count(tags.len())?;
    Ok(tags)
}

/// The function an ARN in a tags call names (without a qualifier), or Lambda's refusal.
fn function_named(app: &App, caller: &Caller, action: &str, arn: &str) -> Result<String, ApiError> {
    let mut v = Violations::default();
    v.check(!arn.is_empty() && arn.len() <= 256, arn, "resource", "Member must have length less than or equal to 256");
    v.into_result()?;
    let fields: Vec<&str> = arn.splitn(7, ':').collect();
    let invalid = || {
        let mut v = Violations::default();
        v.check(false, arn, "resource", RESOURCE_PATTERN);
        v.into_result().err().unwrap_or_else(|| ApiError::Validation(arn.to_string()))
    };
    let ["arn", partition, "lambda", region, account, kind, _] = fields.as_slice() else {
        return Err(invalid());
    };
    let twelve_digits = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    if !partition.starts_with("aws") || region.is_empty() || !twelve_digits {
        return Err(invalid());
    }
    match *kind {
        "function" => {}
        "event-source-mapping" | "code-signing-config" | "capacity-provider" => {
            return Err(ApiError::InvalidParameterValue(format!(
                "Ignis supports tags on functions only, not on the resource {arn}."
            )));
        }
        _ => return Err(invalid()),
    }
    let reference: FunctionRef = f::parse_function_ref(arn, "resource").map_err(|_| invalid())?;
    if reference.qualifier.is_some() {
        return Err(ApiError::InvalidParameterValue(format!(
            "Tags are not supported on a function's versions or aliases: name the function by its unqualified ARN, not {arn}."
        )));
    }
    app.registry.resolve(&caller.account, &app.config.region, action, &reference)?;
    Ok(reference.name)
}

/// Replaces the tags of `caller`'s function `name` with what `change` makes of them (it may refuse).
async fn change_tags(
    app: &Arc<App>,
    caller: &Caller,
    name: &str,
    change: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ApiError> + Send,
) -> Result<(), ApiError> {
    app.registry
        .update(&caller.account, name, |current| -> Result<_, ApiError> {
            let current = current.ok_or_else(|| RegistryError::FunctionNotFound { function: name.to_string() })?;
            let mut record = current.clone();
            record.tags = change(&current.tags)?;
            Ok(record)
        })
        .await?;
    Ok(())
}

pub async fn tag_resource(app: &Arc<App>, caller: &Caller, arn: &str, body: &[u8]) -> Result<Answer, ApiError> {
    let request: TagResource = f::parse_body(body)?;
    let Some(tags) = request.tags else {
        let mut v = Violations::default();
        v.check(false, "null", "tags", "Member must not be null");
        return v.into_result().map(|()| empty_answer(StatusCode::NO_CONTENT));
    };
    check_tags(&tags)?;
    let name = function_named(app, caller, "TagResource", arn)?;
    change_tags(app, caller, &name, |current| merged(current, &tags)).await?;
    Ok(empty_answer(StatusCode::NO_CONTENT))
}

pub async fn untag_resource(app: &Arc<App>, caller: &Caller, arn: &str, query: &str) -> Result<Answer, ApiError> {
    let keys: Vec<String> = query_params(query).into_iter().filter(|(k, _)| k == "tagKeys").map(|(_, v)| v).collect();
    let mut v = Violations::default();
    v.check(!keys.is_empty(), "null", "tagKeys", "Member must not be null");
    for key in &keys {
        let chars = key.chars().count();
        v.check(chars >= 1, key, "tagKeys", "Member must have length greater than or equal to 1");
        v.check(chars <= MAX_KEY_CHARS, key, "tagKeys", "Member must have length less than or equal to 128");
    }
    v.into_result()?;
    refuse_reserved(&keys)?;
    let name = function_named(app, caller, "UntagResource", arn)?;
    change_tags(app, caller, &name, |current| {
        let mut tags = current.clone();
        for key in &keys {
            tags.remove(key);
        }
        Ok(tags)
    })
    .await?;
    Ok(empty_answer(StatusCode::NO_CONTENT))
}

pub fn list_tags(app: &App, caller: &Caller, arn: &str) -> Result<Answer, ApiError> {
    let name = function_named(app, caller, "ListTags", arn)?;
    let tags = app.registry.get(&caller.account, &name).map(|record| record.tags.clone()).unwrap_or_default();
    Ok(json_answer(StatusCode::OK, json!({ "Tags": tags })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn check(pairs: &[(&str, &str)], expected: Result<(), &str>) {
        let got = check_tags(&tags(pairs)).map_err(|e| e.error_type().to_string());
        assert_eq!(got, expected.map_err(str::to_string), "{pairs:?}");
    }

    #[test]
    fn limits_of_keys_and_values() {
        let key128 = "k".repeat(128);
        let value256 = "v".repeat(256);
        let accented = "é".repeat(128);
        check(&[("team", "blue"), ("Cost Center", ""), ("a.b:c/d=e+f-g@h_i", "x y"), (&key128, &value256)], Ok(()));
        check(&[(&accented, "ñ"), ("数字", "１２３")], Ok(()));
        check(&[("", "v")], Err("ValidationException"));
        check(&[(&"k".repeat(129), "v")], Err("ValidationException"));
        check(&[("k", &"v".repeat(257))], Err("ValidationException"));
        check(&[("k!", "v")], Err("ValidationException"));
        check(&[("k", "v\n")], Err("ValidationException"));
        check(&[("k", "a,b")], Err("ValidationException"));
        check(&[("aws:cloudformation", "v")], Err("InvalidParameterValueException"));
        check(&[("AWS:x", "v")], Err("InvalidParameterValueException"));
        check(&[("awsx", "v"), ("aws", "v")], Ok(()));
        let err = check_tags(&tags(&[("", "v"), ("k", &"v".repeat(257))])).unwrap_err();
        assert!(err.message().starts_with("2 validation errors detected: Value '' at 'tags'"), "{}", err.message());
    }

    #[test]
    fn at_most_fifty_tags_after_the_change() {
        let fifty: BTreeMap<String, String> = (0..50).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(merged(&BTreeMap::new(), &fifty).unwrap().len(), 50);
        // Setting a key again replaces its value and adds nothing.
        let again = merged(&fifty, &tags(&[("k0", "new")])).unwrap();
        assert_eq!((again.len(), again["k0"].as_str()), (50, "new"));
        let over = merged(&fifty, &tags(&[("k50", "")])).unwrap_err();
        assert_eq!(over.error_type(), "InvalidParameterValueException");
        assert!(over.message().starts_with("Number of tags exceeds resource tag limit"), "{}", over.message());
        let mut fifty_one = fifty.clone();
        fifty_one.insert("k50".into(), String::new());
        assert!(check_tags(&fifty).is_ok());
        assert_eq!(check_tags(&fifty_one).unwrap_err().error_type(), "InvalidParameterValueException");
    }
}
