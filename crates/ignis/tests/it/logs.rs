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
fn logging_config_sends_a_function_s_logs_to_its_own_group_and_refuses_what_does_not_fit() {
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
        (json!({ "LogFormat": "Text", "ApplicationLogLevel": "DEBUG" }), "InvalidParameterValueException"),
        (json!({ "SystemLogLevel": "WARN" }), "InvalidParameterValueException"),
        (json!({ "LogFormat": "JSON", "SystemLogLevel": "ERROR" }), "ValidationException"),
        (json!({ "LogFormat": "XML" }), "ValidationException"),
        (json!({ "LogGroup": "has spaces" }), "ValidationException"),
    ] {
        let body = json!({ "LoggingConfig": config }).to_string();
        let refused = server.lambda("PUT", "/2015-03-31/functions/custom/configuration", body.as_bytes());
        assert_eq!(refused.error_type(), error, "{config}: {}", refused.text());
    }
}

/// The records of Lambda's JSON format in `log`, by type (each a JSON object a line with `time`, `type`, `record`).
fn platform_records(log: &str) -> Vec<Value> {
    let records: Vec<Value> = log.lines().filter(|l| l.starts_with(r#"{"time":"#)).map(|l| serde_json::from_str(l).unwrap()).collect();
    for record in &records {
        let time = record["time"].as_str().unwrap();
        // RFC 3339 in UTC, to the millisecond: 2024-01-02T03:04:05.678Z.
        assert!(time.len() == 24 && time.ends_with('Z') && &time[10..11] == "T" && &time[19..20] == ".", "{record}");
    }
    records
}

fn types(records: &[Value]) -> Vec<&str> {
    records.iter().map(|r| r["type"].as_str().unwrap()).collect()
}

#[test]
fn logging_config_json_writes_lambdas_records_tells_the_runtime_and_filters_by_level() {
    let server = Server::start();
    let group = "/aws/lambda/structured";
    let handler = r#"echo "format=$AWS_LAMBDA_LOG_FORMAT level=${AWS_LAMBDA_LOG_LEVEL:-unset}"
  echo '{"level":"DEBUG","message":"a-debug-line"}'
  echo '{"level":"INFO","message":"an-info-line"}'
  echo '{"level":"ERROR","message":"an-error-line"}'"#;
    let created = server.create("structured", &sh_runtime(handler), json!({ "LoggingConfig": { "LogFormat": "JSON" } }));
    assert_eq!(created.status, 201, "{}", created.text());
    let defaults = json!({ "LogFormat": "JSON", "ApplicationLogLevel": "INFO", "SystemLogLevel": "INFO", "LogGroup": group });
    assert_eq!(created.json()["LoggingConfig"], defaults);

    let reply = server.invoke("structured", "{}");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let tail = reply.log_tail();
    assert!(tail.contains("format=JSON level=INFO\n"), "{tail}");
    assert!(tail.contains("an-info-line") && tail.contains("an-error-line") && !tail.contains("a-debug-line"), "{tail}");
    assert!(!tail.contains("START RequestId") && !tail.contains("REPORT RequestId"), "{tail}");
    let records = platform_records(&tail);
    assert_eq!(types(&records), ["platform.start", "platform.report"], "{tail}");
    let request_id = records[0]["record"]["requestId"].as_str().unwrap();
    assert_eq!(records[0]["record"], json!({ "requestId": request_id, "version": "$LATEST" }));
    let report = &records[1]["record"];
    assert_eq!((report["requestId"].as_str(), report["status"].as_str()), (Some(request_id), Some("success")), "{report}");
    let metrics = &report["metrics"];
    assert_eq!(metrics["memorySizeMB"], 128, "{report}");
    assert!(metrics["durationMs"].as_f64().unwrap() >= 0.0 && metrics["billedDurationMs"].as_u64().unwrap() >= 1, "{report}");
    assert!(metrics["maxMemoryUsedMB"].as_u64().is_some() && metrics["initDurationMs"].as_f64().is_some(), "cold: {report}");

    // The same lines in CloudWatch Logs, through GetLogEvents.
    let stored = || {
        let streams = server.logs("DescribeLogStreams", &json!({ "logGroupName": group })).json();
        let Some(stream) = streams["logStreams"][0]["logStreamName"].as_str() else { return Vec::new() };
        let body = json!({ "logGroupName": group, "logStreamName": stream, "startFromHead": true });
        messages(&server.logs("GetLogEvents", &body).json())
    };
    assert!(eventually(Duration::from_secs(30), || stored().iter().any(|m| m.contains("platform.report"))));
    let stored = stored().concat();
    assert_eq!(types(&platform_records(&stored)), ["platform.start", "platform.report"], "{stored}");
    assert!(stored.contains("an-info-line") && !stored.contains("a-debug-line"), "{stored}");

    // A version keeps its LoggingConfig.
    let published = server.lambda("POST", "/2015-03-31/functions/structured/versions", b"{}");
    assert_eq!((published.status, published.json()["LoggingConfig"].clone()), (201, defaults.clone()), "{}", published.text());

    // Levels of its own: the runtime's lines below WARN go, the platform's DEBUG record comes.
    let levels = json!({ "LoggingConfig": { "ApplicationLogLevel": "WARN", "SystemLogLevel": "DEBUG" } }).to_string();
    let updated = server.lambda("PUT", "/2015-03-31/functions/structured/configuration", levels.as_bytes());
    assert_eq!(updated.json()["LoggingConfig"]["ApplicationLogLevel"], "WARN", "{}", updated.text());
    let tail = server.invoke("structured", "{}").log_tail();
    assert!(tail.contains("format=JSON level=WARN\n") && tail.contains("an-error-line") && !tail.contains("an-info-line"), "{tail}");
    assert_eq!(types(&platform_records(&tail)), ["platform.start", "platform.runtimeDone", "platform.report"], "{tail}");

    // SystemLogLevel WARN: none of the platform's records.
    let quiet = json!({ "LoggingConfig": { "SystemLogLevel": "WARN" } }).to_string();
    assert_eq!(server.lambda("PUT", "/2015-03-31/functions/structured/configuration", quiet.as_bytes()).status, 200);
    let tail = server.invoke("structured", "{}").log_tail();
    assert!(platform_records(&tail).is_empty() && tail.contains("an-error-line"), "{tail}");

    // Back to Text: Lambda's lines, no levels; the version still has its own.
    let text = json!({ "LoggingConfig": { "LogFormat": "Text" } }).to_string();
    let updated = server.lambda("PUT", "/2015-03-31/functions/structured/configuration", text.as_bytes());
    assert_eq!(updated.json()["LoggingConfig"], json!({ "LogFormat": "Text", "LogGroup": group }), "{}", updated.text());
    let tail = server.invoke("structured", "{}").log_tail();
    assert!(tail.contains("format=Text level=unset\n") && tail.contains("a-debug-line") && tail.contains("REPORT RequestId"), "{tail}");
    let version = server.lambda("GET", "/2015-03-31/functions/structured/configuration?Qualifier=1", b"");
    assert_eq!(version.json()["LoggingConfig"], defaults, "{}", version.text());
}
