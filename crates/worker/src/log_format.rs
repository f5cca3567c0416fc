//! A function's log format (`LoggingConfig`): what the platform writes around
//! each invocation, and which of the runtime's lines are kept. Pure: the time
//! is passed in, nothing here does IO.
//!
//! - `Text` (Lambda's default): `START`, `END` and `REPORT` lines, and the
//!   platform's own lines for a timeout or a runtime failure; every line of the
//!   runtime is kept.
//! - `JSON`: Lambda's system log records, one JSON object a line,
//!   `{"time":"<RFC 3339, ms>","type":"platform.<event>","record":{..}}`, each
//!   kept only at or above the function's `SystemLogLevel`:
//!
//!   | event                  | level | record                                                  |
//!   |------------------------|-------|---------------------------------------------------------|
//!   | `platform.start`       | INFO  | `requestId`, `version`                                  |
//!   | `platform.runtimeDone` | DEBUG | `requestId`, `status`, `errorType` (on failure)         |
//!   | `platform.report`      | INFO  | `requestId`, `metrics`, `status`, `errorType` (failure) |
//!
//!   `metrics` holds `durationMs`, `billedDurationMs`, `memorySizeMB`,
//!   `maxMemoryUsedMB` and, after a cold start, `initDurationMs`. A timeout or
//!   a runtime failure has no line of its own: the report's `status`
//!   (`timeout`, `error`) and `errorType` say it. A runtime line that is a JSON
//!   object is dropped when its `"level"` is below the `ApplicationLogLevel`
//!   (no level, or one Lambda does not know, counts as INFO); other lines are
//!   kept as they are.

use std::time::{Duration, SystemTime};

use serde_json::Value;

/// Lambda's log levels, most detailed first. `ApplicationLogLevel` may be any; `SystemLogLevel` is DEBUG, INFO or
/// WARN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl LogLevel {
    /// A level by its name, in any case; also the names runtimes' loggers use for two of them (`WARNING`,
    /// `CRITICAL`).
    pub fn parse(name: &str) -> Option<LogLevel> {
        let level = match name.to_ascii_uppercase().as_str() {
            "TRACE" => LogLevel::Trace,
            "DEBUG" => LogLevel::Debug,
            "INFO" => LogLevel::Info,
            "WARN" | "WARNING" => LogLevel::Warn,
            "ERROR" => LogLevel::Error,
            "FATAL" | "CRITICAL" => LogLevel::Fatal,
            _ => return None,
        };
        Some(level)
    }

    /// Lambda's name of it (`INFO`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARN",
            LogLevel::Error => "ERROR",
            LogLevel::Fatal => "FATAL",
        }
    }
}

/// A function's log format, with the levels of the JSON format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json {
        /// `ApplicationLogLevel`: the runtime's JSON lines below it are dropped.
        application: LogLevel,
        /// `SystemLogLevel`: the platform's records below it are not written.
        system: LogLevel,
    },
}

/// How an invocation ended, as the report says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<'a> {
    Success,
    /// The function failed (the runtime posted an error, or exited, or answered too much), of this error type.
    Error(Option<&'a str>),
    Timeout,
}

/// What an invocation's report says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report<'a> {
    pub request_id: &'a str,
    pub duration: Duration,
    pub memory_size_mb: u32,
    pub max_memory_used_mb: u64,
    /// The init's duration, after a cold start.
    pub init_duration: Option<Duration>,
    pub status: Status<'a>,
}

impl LogFormat {
    /// `AWS_LAMBDA_LOG_FORMAT`'s value: `JSON` or `Text`.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "Text",
            LogFormat::Json { .. } => "JSON",
        }
    }

    /// The line that starts an invocation's log (`START`, `platform.start`), if the format writes one.
    pub fn start(self, request_id: &str, version: &str, time: SystemTime) -> Option<String> {
        match self {
            LogFormat::Text => Some(format!("START RequestId: {request_id} Version: {version}\n")),
            LogFormat::Json { .. } => {
                let record = format!(r#"{{"requestId":{},"version":{}}}"#, quoted(request_id), quoted(version));
                self.record(LogLevel::Info, "platform.start", &record, time)
            }
        }
    }

    /// The platform's line of a failure the report does not tell in the Text format (a timeout's, a runtime's
    /// exit), given as its Text line; the JSON format writes none.
    pub fn failure(self, text: String) -> Option<String> {
        match self {
            LogFormat::Text => Some(text),
            LogFormat::Json { .. } => None,
        }
    }

    /// The lines that end an invocation's log: `END` and `REPORT`, or the records the system level keeps of
    /// `platform.runtimeDone` and `platform.report`.
    pub fn end(self, report: &Report, time: SystemTime) -> Vec<String> {
        let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
        let billed = report.duration.as_nanos().div_ceil(1_000_000).max(1);
        let request_id = report.request_id;
        match self {
            LogFormat::Text => {
                let mut line = format!(
                    "REPORT RequestId: {request_id}\tDuration: {} ms\tBilled Duration: {billed} ms\t\
                     Memory Size: {} MB\tMax Memory Used: {} MB",
                    ms(report.duration),
                    report.memory_size_mb,
                    report.max_memory_used_mb
                );
                if let Some(init) = report.init_duration {
                    line.push_str(&format!("\tInit Duration: {} ms", ms(init)));
                }
                line.push('\n');
                vec![format!("END RequestId: {request_id}\n"), line]
            }
            LogFormat::Json { .. } => {
                let status = match report.status {
                    Status::Success => r#""status":"success""#.to_string(),
                    Status::Error(None) => r#""status":"error""#.to_string(),
                    Status::Error(Some(error_type)) => {
                        format!(r#""status":"error","errorType":{}"#, quoted(error_type))
                    }
                    Status::Timeout => r#""status":"timeout","errorType":"Sandbox.Timedout""#.to_string(),
                };
                let mut metrics = format!(
                    r#"{{"durationMs":{},"billedDurationMs":{billed},"memorySizeMB":{},"maxMemoryUsedMB":{}"#,
                    ms(report.duration),
                    report.memory_size_mb,
                    report.max_memory_used_mb
                );
                if let Some(init) = report.init_duration {
                    metrics.push_str(&format!(r#","initDurationMs":{}"#, ms(init)));
                }
                metrics.push('}');
                let done = format!(r#"{{"requestId":{},{status}}}"#, quoted(request_id));
                let report = format!(r#"{{"requestId":{},"metrics":{metrics},{status}}}"#, quoted(request_id));
                [
                    self.record(LogLevel::Debug, "platform.runtimeDone", &done, time),
                    self.record(LogLevel::Info, "platform.report", &report, time),
                ]
                .into_iter()
                .flatten()
                .collect()
            }
        }
    }

    /// Whether a line the runtime wrote is kept.
    pub fn keeps(self, line: &str) -> bool {
        match self {
            LogFormat::Text | LogFormat::Json { application: LogLevel::Trace, .. } => true,
            LogFormat::Json { application, .. } => application_level(line).is_none_or(|level| level >= application),
        }
    }

    /// A system log record of `level`, if the system level keeps it.
    fn record(self, level: LogLevel, kind: &str, record: &str, time: SystemTime) -> Option<String> {
        let LogFormat::Json { system, .. } = self else { return None };
        let time = humantime::format_rfc3339_millis(time);
        (level >= system).then(|| format!("{{\"time\":\"{time}\",\"type\":\"{kind}\",\"record\":{record}}}\n"))
    }
}

/// The level of a runtime's line that is a JSON object: its `"level"`, or INFO without a level Lambda knows;
/// `None` for any other line.
fn application_level(line: &str) -> Option<LogLevel> {
    if !line.trim_start().starts_with('{') {
        return None;
    }
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(line) else { return None };
    Some(fields.get("level").and_then(Value::as_str).and_then(LogLevel::parse).unwrap_or(LogLevel::Info))
}

/// `text` as a JSON string.
fn quoted(text: &str) -> String {
    Value::from(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIME: Duration = Duration::from_millis(1_700_000_000_123);

    fn json(application: LogLevel, system: LogLevel) -> LogFormat {
        LogFormat::Json { application, system }
    }

    fn report(status: Status<'_>, init: Option<Duration>) -> Report<'_> {
        Report {
            request_id: "abc",
            duration: Duration::from_micros(12_340),
            memory_size_mb: 128,
            max_memory_used_mb: 20,
            init_duration: init,
            status,
        }
    }

    fn end(format: LogFormat, status: Status<'_>, init: Option<Duration>) -> Vec<String> {
        format.end(&report(status, init), SystemTime::UNIX_EPOCH + TIME)
    }

    #[test]
    fn text_lines_are_lambdas() {
        let time = SystemTime::UNIX_EPOCH + TIME;
        assert_eq!(LogFormat::Text.start("abc", "$LATEST", time).unwrap(), "START RequestId: abc Version: $LATEST\n");
        assert_eq!(
            end(LogFormat::Text, Status::Success, None),
            [
                "END RequestId: abc\n",
                "REPORT RequestId: abc\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\t\
                 Max Memory Used: 20 MB\n",
            ]
        );
        let cold = end(LogFormat::Text, Status::Timeout, Some(Duration::from_micros(45_670)));
        assert!(cold[1].ends_with("\tMax Memory Used: 20 MB\tInit Duration: 45.67 ms\n"), "{cold:?}");
        assert_eq!(LogFormat::Text.failure("timed out\n".into()).as_deref(), Some("timed out\n"));
    }

    #[test]
    fn billed_duration_rounds_up_and_is_at_least_one() {
        for (micros, billed) in [(0, 1), (1, 1), (999, 1), (1000, 1), (1001, 2), (2_500_000, 2500)] {
            let r = Report { duration: Duration::from_micros(micros), ..report(Status::Success, None) };
            let lines = LogFormat::Text.end(&r, SystemTime::UNIX_EPOCH);
            assert!(lines[1].contains(&format!("Billed Duration: {billed} ms\t")), "{micros}: {lines:?}");
            let lines = json(LogLevel::Info, LogLevel::Info).end(&r, SystemTime::UNIX_EPOCH);
            assert!(lines[0].contains(&format!(r#""billedDurationMs":{billed},"#)), "{micros}: {lines:?}");
        }
    }

    #[test]
    fn json_records_are_lambdas_system_log_records() {
        let format = json(LogLevel::Info, LogLevel::Info);
        let start = format.start("abc", "$LATEST", SystemTime::UNIX_EPOCH + TIME).unwrap();
        assert_eq!(
            start,
            "{\"time\":\"2023-11-14T22:13:20.123Z\",\"type\":\"platform.start\",\"record\":{\"requestId\":\"abc\",\
             \"version\":\"$LATEST\"}}\n"
        );
        let lines = end(format, Status::Success, Some(Duration::from_micros(45_670)));
        assert_eq!(lines.len(), 1, "runtimeDone is DEBUG: {lines:?}");
        let report: Value = serde_json::from_str(&lines[0]).unwrap();
        let expected = serde_json::json!({
            "time": "2023-11-14T22:13:20.123Z",
            "type": "platform.report",
            "record": {
                "requestId": "abc",
                "metrics": {
                    "durationMs": 12.34, "billedDurationMs": 13, "memorySizeMB": 128, "maxMemoryUsedMB": 20,
                    "initDurationMs": 45.67
                },
                "status": "success"
            }
        });
        assert_eq!(report, expected);
        assert!(lines[0].starts_with(r#"{"time":"#) && lines[0].ends_with("}\n"), "{lines:?}");
        assert_eq!(format.failure("timed out\n".into()), None);
    }

    #[test]
    fn the_status_and_error_type_say_how_it_ended() {
        let cases = [
            (Status::Success, serde_json::json!({ "status": "success" })),
            (Status::Error(None), serde_json::json!({ "status": "error" })),
            (
                Status::Error(Some("Runtime.ExitError\"")),
                serde_json::json!({ "status": "error", "errorType": "Runtime.ExitError\"" }),
            ),
            (Status::Timeout, serde_json::json!({ "status": "timeout", "errorType": "Sandbox.Timedout" })),
        ];
        for (status, expected) in cases {
            let lines = end(json(LogLevel::Info, LogLevel::Debug), status, None);
            let done: Value = serde_json::from_str(&lines[0]).unwrap();
            let report: Value = serde_json::from_str(&lines[1]).unwrap();
            assert_eq!(done["type"], "platform.runtimeDone");
            let mut done_expected = expected.clone();
            done_expected["requestId"] = "abc".into();
            assert_eq!(done["record"], done_expected, "{status:?}");
            for (key, value) in expected.as_object().unwrap() {
                assert_eq!(&report["record"][key], value, "{status:?}");
            }
            assert!(report["record"]["metrics"].get("initDurationMs").is_none());
        }
    }

    #[test]
    fn the_system_level_chooses_the_records() {
        let time = SystemTime::UNIX_EPOCH;
        let types = |system| {
            let format = json(LogLevel::Info, system);
            let mut lines: Vec<String> = format.start("r", "1", time).into_iter().collect();
            lines.extend(format.end(&report(Status::Success, None), time));
            let kind = |line: &String| serde_json::from_str::<Value>(line).unwrap()["type"].as_str().unwrap().to_string();
            lines.iter().map(kind).collect::<Vec<_>>()
        };
        assert_eq!(types(LogLevel::Debug), ["platform.start", "platform.runtimeDone", "platform.report"]);
        assert_eq!(types(LogLevel::Info), ["platform.start", "platform.report"]);
        assert!(types(LogLevel::Warn).is_empty());
    }

    #[test]
    fn the_application_level_drops_json_lines_below_it() {
        let warn = json(LogLevel::Warn, LogLevel::Info);
        let cases = [
            ("plain text\n", true),
            ("{not json\n", true),
            ("[1, 2]\n", true),
            ("{\"level\":\"DEBUG\",\"message\":\"m\"}\n", false),
            ("{\"level\":\"info\"}\n", false),
            ("{\"message\":\"no level\"}\n", false),
            ("{\"level\":\"LOUD\"}\n", false),
            ("{\"level\":7}\n", false),
            ("{\"level\":\"WARN\"}\n", true),
            ("  {\"level\":\"warning\"}\n", true),
            ("{\"level\":\"ERROR\"}\n", true),
            ("{\"level\":\"CRITICAL\"}\n", true),
        ];
        for (line, kept) in cases {
            assert_eq!(warn.keeps(line), kept, "{line:?}");
            assert!(LogFormat::Text.keeps(line), "{line:?}");
            assert!(json(LogLevel::Trace, LogLevel::Info).keeps(line), "{line:?}");
        }
        let info = json(LogLevel::Info, LogLevel::Info);
        assert!(info.keeps("{\"message\":\"no level\"}\n"));
        assert!(!info.keeps("{\"level\":\"TRACE\"}\n"));
    }

    #[test]
    fn levels_have_lambdas_names_and_order() {
        let all = [LogLevel::Trace, LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error, LogLevel::Fatal];
        for (i, level) in all.iter().enumerate() {
            assert_eq!(LogLevel::parse(level.as_str()), Some(*level));
            assert_eq!(LogLevel::parse(&level.as_str().to_lowercase()), Some(*level));
            assert!(all[..i].iter().all(|lower| lower < level));
        }
        assert_eq!(LogLevel::parse("verbose"), None);
        assert_eq!((LogFormat::Text.name(), json(LogLevel::Info, LogLevel::Info).name()), ("Text", "JSON"));
    }
}
