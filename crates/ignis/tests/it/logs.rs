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
