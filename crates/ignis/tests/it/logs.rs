//! CloudWatch Logs' reading calls over a function's real log: FilterLogEvents
//! with filter patterns and paging, GetLogEvents in both directions, and the
//! errors CloudWatch gives for malformed requests.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Server, eventually, sh_runtime};

const GROUP: &str = "/aws/lambda/lines";

fn messages(page: &Value) -> Vec<String> {
    page["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_string()).collect()
}

/// The events FilterLogEvents finds with `pattern`, `limit` a page.
fn filtered(server: &Server, pattern: &str, limit: u64) -> Vec<String> {
    let mut found = Vec::new();
    let mut body = json!({ "logGroupName": GROUP, "filterPattern": pattern, "limit": limit });
    loop {
        let reply = server.logs("FilterLogEvents", &body);
        assert_eq!(reply.status, 200, "{}", reply.text());
        let page = reply.json();
        assert!(page["events"].as_array().unwrap().len() as u64 <= limit);
        found.extend(messages(&page));
        match page["nextToken"].as_str() {
            Some(token) => body["nextToken"] = json!(token),
            None => return found,
        }
    }
}

#[test]
fn filter_patterns_paging_and_get_log_events() {
    let server = Server::start();
    let handler = "echo 'alpha ERROR one'; echo 'beta ERROR two words'; echo 'gamma DEBUG two words'";
    server.create("lines", &sh_runtime(handler), json!({}));
    assert_eq!(server.invoke("lines", "{}").status, 200);
    assert!(eventually(Duration::from_secs(10), || !filtered(&server, "REPORT", 10_000).is_empty()));

    assert_eq!(filtered(&server, "ERROR", 1), ["alpha ERROR one\n", "beta ERROR two words\n"]);
    assert_eq!(filtered(&server, "ERROR -\"two words\"", 1), ["alpha ERROR one\n"]);
    assert_eq!(filtered(&server, "\"two words\" -ERROR", 2), ["gamma DEBUG two words\n"]);
    assert_eq!(filtered(&server, "error", 5), Vec::<String>::new());
    assert_eq!(filtered(&server, "RequestId", 1).len(), 3, "START, END and REPORT, a page each");
    for (body, error) in [
        (json!({ "logGroupName": GROUP, "filterPattern": "\"unterminated" }), "InvalidParameterException"),
        (json!({ "logGroupName": GROUP, "limit": 0 }), "InvalidParameterException"),
        (json!({ "logGroupName": GROUP, "limit": 10_001 }), "InvalidParameterException"),
        (json!({ "logGroupName": GROUP, "logStreamNames": ["a"], "logStreamNamePrefix": "a" }), "InvalidParameterException"),
        (json!({ "logGroupName": GROUP, "nextToken": "garbage" }), "InvalidParameterException"),
        (json!({ "logGroupName": "/aws/lambda/none" }), "ResourceNotFoundException"),
    ] {
        let reply = server.logs("FilterLogEvents", &body);
        assert_eq!((reply.status, reply.error_type()), (400, error), "{body}: {}", reply.text());
    }

    // GetLogEvents over the function's one stream: from the head forward, from the newest page back.
    let streams = server.logs("DescribeLogStreams", &json!({ "logGroupName": GROUP })).json();
    let stream = streams["logStreams"][0]["logStreamName"].as_str().unwrap().to_string();
    let all = filtered(&server, "", 10_000);
    for (start_from_head, token) in [(true, "nextForwardToken"), (false, "nextBackwardToken")] {
        let mut body = json!({ "logGroupName": GROUP, "logStreamName": stream, "limit": 2, "startFromHead": start_from_head });
        let mut pages: Vec<Vec<String>> = Vec::new();
        loop {
            let page = server.logs("GetLogEvents", &body).json();
            let next = page[token].clone();
            if page["events"].as_array().unwrap().is_empty() {
                assert_eq!(next, body["nextToken"], "the end gives the same token back");
                break;
            }
            assert!(page["events"][0]["ingestionTime"].as_i64().unwrap() > 0);
            pages.push(messages(&page));
            body["nextToken"] = next;
        }
        if !start_from_head {
            pages.reverse();
        }
        assert_eq!(pages.concat(), all, "startFromHead {start_from_head}");
    }
    let missing = server.logs("GetLogEvents", &json!({ "logGroupName": GROUP, "logStreamName": "nope" }));
    assert_eq!((missing.status, missing.error_type()), (400, "ResourceNotFoundException"));
}

#[test]
fn describe_groups_and_streams_with_prefixes_orders_and_pages() {
    let server = Server::start();
    for name in ["grp-a", "grp-b", "other"] {
        server.create(name, &sh_runtime("echo hi"), json!({}));
        assert_eq!(server.invoke(name, "{}").status, 200);
    }
    assert!(eventually(Duration::from_secs(10), || {
        let groups = server.logs("DescribeLogGroups", &json!({})).json();
        groups["logGroups"].as_array().unwrap().len() == 3
    }));
    let mut body = json!({ "logGroupNamePrefix": "/aws/lambda/grp-", "limit": 1 });
    let mut names = Vec::new();
    loop {
        let page = server.logs("DescribeLogGroups", &body).json();
        names.extend(page["logGroups"].as_array().unwrap().iter().map(|g| g["logGroupName"].as_str().unwrap().to_string()));
        match page["nextToken"].as_str() {
            Some(token) => body["nextToken"] = json!(token),
            None => break,
        }
    }
    assert_eq!(names, ["/aws/lambda/grp-a", "/aws/lambda/grp-b"]);

    let group = "/aws/lambda/grp-a";
    for order in [json!({}), json!({ "orderBy": "LastEventTime", "descending": true })] {
        let mut body = json!({ "logGroupName": group });
        body.as_object_mut().unwrap().extend(order.as_object().unwrap().clone());
        let page = server.logs("DescribeLogStreams", &body).json();
        let stream = &page["logStreams"][0];
        assert!(stream["logStreamName"].as_str().unwrap().contains("[$LATEST]"), "{page}");
        assert!(stream["arn"].as_str().unwrap().contains(":log-group:/aws/lambda/grp-a:log-stream:"), "{page}");
    }
    for (action, body) in [
        ("DescribeLogStreams", json!({ "logGroupName": group, "orderBy": "LastEventTime", "logStreamNamePrefix": "2" })),
        ("DescribeLogStreams", json!({ "logGroupName": group, "orderBy": "Size" })),
        ("DescribeLogStreams", json!({ "logGroupName": group, "limit": 51 })),
        ("DescribeLogGroups", json!({ "limit": 0 })),
        ("DescribeLogGroups", json!({ "nextToken": "garbage" })),
    ] {
        let reply = server.logs(action, &body);
        assert_eq!((reply.status, reply.error_type()), (400, "InvalidParameterException"), "{body}: {}", reply.text());
    }
    let missing = server.logs("DescribeLogStreams", &json!({ "logGroupName": "/aws/lambda/none" }));
    assert_eq!((missing.status, missing.error_type()), (400, "ResourceNotFoundException"));
}

#[test]
fn retention_policies_and_deleting_a_log_group() {
    let server = Server::start();
    server.create("kept", &sh_runtime("echo hi"), json!({}));
    assert_eq!(server.invoke("kept", "{}").status, 200);
    let group = "/aws/lambda/kept";
    let described = || server.logs("DescribeLogGroups", &json!({ "logGroupNamePrefix": group })).json()["logGroups"][0].clone();
    assert!(eventually(Duration::from_secs(10), || described()["logGroupName"] == group));
    assert!(described().get("retentionInDays").is_none());

    let put = server.logs("PutRetentionPolicy", &json!({ "logGroupName": group, "retentionInDays": 7 }));
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(described()["retentionInDays"], 7);
    assert!(!server.log_events("kept").is_empty(), "today's events are kept");
    for (action, body, error) in [
        ("PutRetentionPolicy", json!({ "logGroupName": group, "retentionInDays": 2 }), "InvalidParameterException"),
        ("PutRetentionPolicy", json!({ "logGroupName": group, "retentionInDays": -1 }), "InvalidParameterException"),
        ("PutRetentionPolicy", json!({ "logGroupName": group }), "InvalidParameterException"),
        ("PutRetentionPolicy", json!({ "logGroupName": "/none", "retentionInDays": 1 }), "ResourceNotFoundException"),
        ("DeleteRetentionPolicy", json!({ "logGroupName": "/none" }), "ResourceNotFoundException"),
        ("DeleteLogGroup", json!({ "logGroupName": "/none" }), "ResourceNotFoundException"),
    ] {
        let reply = server.logs(action, &body);
        assert_eq!((reply.status, reply.error_type()), (400, error), "{action} {body}: {}", reply.text());
    }
    assert_eq!(server.logs("DeleteRetentionPolicy", &json!({ "logGroupName": group })).status, 200);
    assert!(described().get("retentionInDays").is_none());

    assert_eq!(server.logs("DeleteLogGroup", &json!({ "logGroupName": group })).status, 200);
    assert!(server.log_events("kept").is_empty());
    assert!(server.logs("DescribeLogGroups", &json!({ "logGroupNamePrefix": group })).json()["logGroups"].as_array().unwrap().is_empty());
}

#[test]
fn logging_config_sends_a_function_s_logs_to_its_own_group_and_refuses_what_is_not_honoured() {
    let server = Server::start();
    let logging = json!({ "LoggingConfig": { "LogFormat": "Text", "LogGroup": "/custom/app" } });
    let created = server.create("custom", &sh_runtime("echo to-the-custom-group >&2"), logging);
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["LoggingConfig"], json!({ "LogFormat": "Text", "LogGroup": "/custom/app" }));
    assert_eq!(server.invoke("custom", "{}").status, 200);
    let found = eventually(Duration::from_secs(30), || {
        let reply = server.logs("FilterLogEvents", &json!({ "logGroupName": "/custom/app", "filterPattern": "to-the-custom-group" }));
        reply.status == 200 && !messages(&reply.json()).is_empty()
    });
    assert!(found, "the function's lines are in /custom/app");
    let default = server.logs("FilterLogEvents", &json!({ "logGroupName": "/aws/lambda/custom" }));
    assert!(default.status != 200 || messages(&default.json()).is_empty(), "nothing in Lambda's group: {}", default.text());

    // Lambda's own group is the default again.
    let back = json!({ "LoggingConfig": { "LogGroup": "/aws/lambda/custom" } }).to_string();
    let updated = server.lambda("PUT", "/2015-03-31/functions/custom/configuration", back.as_bytes());
    assert_eq!(updated.json()["LoggingConfig"]["LogGroup"], "/aws/lambda/custom", "{}", updated.text());

    for (config, error) in [
        (json!({ "LogFormat": "JSON" }), "InvalidParameterValueException"),
        (json!({ "LogFormat": "Text", "ApplicationLogLevel": "DEBUG" }), "InvalidParameterValueException"),
        (json!({ "LogFormat": "XML" }), "ValidationException"),
        (json!({ "LogGroup": "has spaces" }), "ValidationException"),
    ] {
        let body = json!({ "LoggingConfig": config }).to_string();
        let refused = server.lambda("PUT", "/2015-03-31/functions/custom/configuration", body.as_bytes());
        assert_eq!(refused.error_type(), error, "{config}: {}", refused.text());
    }
}
