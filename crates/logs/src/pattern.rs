//! CloudWatch Logs' filter patterns for unstructured events, as
//! `FilterLogEvents` takes them: pure parsing and matching, no IO.
//!
//! A pattern is terms separated by white space; an event matches when its
//! message contains every term and none of the excluded ones, each as a
//! case-sensitive substring:
//!
//! - `ERROR` — a plain term;
//! - `"two words"` — a quoted phrase, matched as a whole (`\"` and `\\`
//!   escape a quote and a backslash inside it);
//! - `-DEBUG`, `-"two words"` — an exclusion;
//! - an empty pattern (or only white space) matches every event, and so does `""`.
//!
//! CloudWatch's other pattern forms (`?` alternatives, `{ ... }` JSON
//! patterns, `[ ... ]` space-delimited patterns) are refused with
//! [`PatternError::Unsupported`] rather than matched as text; a malformed
//! pattern (an unterminated quote, a lone `-`, a quote inside a bare term) is
//! a [`PatternError`] too, which the front end answers with
//! `InvalidParameterException`, as CloudWatch does.

/// CloudWatch's longest `filterPattern`, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;

/// Why a filter pattern is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("Invalid character(s) in term '{0}'")]
    UnterminatedQuote(String),
    #[error("Invalid character(s) in term '{0}'")]
    QuoteInTerm(String),
    #[error("Invalid filter pattern: '-' without a term")]
    EmptyExclusion,
    #[error("Filter pattern is longer than {MAX_PATTERN_LEN} bytes")]
    TooLong,
    #[error("Unsupported filter pattern syntax: {0}")]
    Unsupported(&'static str),
}

/// A parsed filter pattern; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterPattern {
    /// Each must occur.
    include: Vec<String>,
    /// None may occur.
    exclude: Vec<String>,
}

impl FilterPattern {
    /// Parses `pattern`; see the module docs for the syntax.
    pub fn parse(pattern: &str) -> Result<FilterPattern, PatternError> {
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(PatternError::TooLong);
        }
        match pattern.trim_start().chars().next() {
            Some('{') => return Err(PatternError::Unsupported("JSON patterns ({ ... })")),
            Some('[') => return Err(PatternError::Unsupported("space-delimited patterns ([ ... ])")),
            _ => {}
        }
        let mut parsed = FilterPattern::default();
        let mut rest = pattern.trim_start();
        while !rest.is_empty() {
            let (excluded, body) = match rest.strip_prefix('-') {
                Some(body) => (true, body),
                None => (false, rest),
            };
            let (term, after) = match body.strip_prefix('"') {
                Some(quoted) => quoted_term(quoted, rest)?,
                None => bare_term(body)?,
            };
            if excluded && term.is_empty() && !body.starts_with('"') {
                return Err(PatternError::EmptyExclusion);
            }
            if !excluded && !body.starts_with('"') && term.starts_with('?') {
                return Err(PatternError::Unsupported("alternatives (?term)"));
            }
            if excluded { parsed.exclude.push(term) } else { parsed.include.push(term) }
            rest = after.trim_start();
        }
        Ok(parsed)
    }

    /// Whether `message` contains every term and no excluded one.
    pub fn matches(&self, message: &str) -> bool {
        self.include.iter().all(|t| message.contains(t.as_str()))
            && !self.exclude.iter().any(|t| message.contains(t.as_str()))
    }

    /// Whether it matches every message (no term, or only empty phrases).
    pub fn matches_all(&self) -> bool {
        self.exclude.is_empty() && self.include.iter().all(String::is_empty)
    }
}

/// The phrase at the start of `quoted` (just after its opening quote) and
/// what follows its closing quote, which must end the token.
fn quoted_term<'a>(quoted: &'a str, token: &str) -> Result<(String, &'a str), PatternError> {
    let unterminated = || PatternError::UnterminatedQuote(token.split_whitespace().next().unwrap_or("").to_string());
    let mut term = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let after = &quoted[i + 1..];
                if after.chars().next().is_some_and(|c| !c.is_whitespace()) {
                    return Err(PatternError::QuoteInTerm(token.split_whitespace().next().unwrap_or("").to_string()));
                }
                return Ok((term, after));
            }
            '\\' => match chars.next() {
                Some((_, escaped)) => term.push(escaped),
                None => return Err(unterminated()),
            },
            c => term.push(c),
        }
    }
    Err(unterminated())
}

/// The bare term at the start of `body` (up to white space) and what follows.
fn bare_term(body: &str) -> Result<(String, &str), PatternError> {
    let end = body.find(char::is_whitespace).unwrap_or(body.len());
    let term = &body[..end];
    if term.contains('"') {
        return Err(PatternError::QuoteInTerm(term.to_string()));
    }
    Ok((term.to_string(), &body[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(p: &str) -> (Vec<String>, Vec<String>) {
        let parsed = FilterPattern::parse(p).unwrap();
        (parsed.include, parsed.exclude)
    }

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_terms_phrases_and_exclusions() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("", &[], &[]),
            ("   \t ", &[], &[]),
            ("ERROR", &["ERROR"], &[]),
            ("  ERROR   timeout ", &["ERROR", "timeout"], &[]),
            ("\"two words\"", &["two words"], &[]),
            ("\"\"", &[""], &[]),
            ("-DEBUG", &[], &["DEBUG"]),
            ("ERROR -DEBUG -\"not me\"", &["ERROR"], &["DEBUG", "not me"]),
            ("-\"\"", &[], &[""]),
            ("\"a \\\"quoted\\\" b\" x", &["a \"quoted\" b", "x"], &[]),
            ("\"back\\\\slash\"", &["back\\slash"], &[]),
            ("a-b", &["a-b"], &[]),
            ("--x", &[], &["-x"]),
            ("what?", &["what?"], &[]),
            ("\"?q\"", &["?q"], &[]),
            ("-?q", &[], &["?q"]),
            ("Ünïcode \"ß x\"", &["Ünïcode", "ß x"], &[]),
            ("a\u{3000}b", &["a", "b"], &[]),
        ];
        for (pattern, include, exclude) in cases {
            assert_eq!(parts(pattern), (strings(include), strings(exclude)), "{pattern:?}");
        }
    }

    #[test]
    fn refuses_malformed_and_unsupported_patterns() {
        let cases: &[(&str, PatternError)] = &[
            ("\"open", PatternError::UnterminatedQuote("\"open".into())),
            ("a \"open phrase", PatternError::UnterminatedQuote("\"open".into())),
            ("-\"open", PatternError::UnterminatedQuote("-\"open".into())),
            ("\"ends in escape\\", PatternError::UnterminatedQuote("\"ends".into())),
            ("\"ab\"cd", PatternError::QuoteInTerm("\"ab\"cd".into())),
            ("ab\"cd\"", PatternError::QuoteInTerm("ab\"cd\"".into())),
            ("-", PatternError::EmptyExclusion),
            ("a - b", PatternError::EmptyExclusion),
            ("?ERROR ?WARN", PatternError::Unsupported("alternatives (?term)")),
            ("{ $.level = \"x\" }", PatternError::Unsupported("JSON patterns ({ ... })")),
            ("  [ip, user]", PatternError::Unsupported("space-delimited patterns ([ ... ])")),
        ];
        for (pattern, error) in cases {
            assert_eq!(FilterPattern::parse(pattern).as_ref(), Err(error), "{pattern:?}");
        }
        assert_eq!(FilterPattern::parse(&"a".repeat(MAX_PATTERN_LEN + 1)), Err(PatternError::TooLong));
        assert!(FilterPattern::parse(&"a".repeat(MAX_PATTERN_LEN)).is_ok());
    }

    #[test]
    fn matching() {
        let cases: &[(&str, &str, bool)] = &[
            ("", "anything", true),
            ("", "", true),
            ("\"\"", "x", true),
            ("ERROR", "an ERROR here", true),
            ("ERROR", "an error here", false),
            ("ERROR timeout", "timeout then ERROR", true),
            ("ERROR timeout", "ERROR only", false),
            ("\"two words\"", "say two words now", true),
            ("\"two words\"", "two  words", false),
            ("\"two words\"", "words two", false),
            ("ERROR -DEBUG", "ERROR in DEBUG", false),
            ("ERROR -DEBUG", "ERROR in prod", true),
            ("-DEBUG", "", true),
            ("-\"not me\"", "it is not me", false),
            ("-\"not me\"", "not-me", true),
            ("-\"\"", "x", false),
            ("ERR", "ERROR", true),
        ];
        for (pattern, message, expected) in cases {
            assert_eq!(FilterPattern::parse(pattern).unwrap().matches(message), *expected, "{pattern:?} on {message:?}");
        }
        assert!(FilterPattern::parse(" \"\" ").unwrap().matches_all());
        assert!(!FilterPattern::parse("x").unwrap().matches_all());
        assert!(!FilterPattern::parse("-\"\"").unwrap().matches_all());
    }

    #[test]
    fn no_input_panics() {
        for pattern in ["\"", "-", "\\", "\"\\", "-\"", "\"\"\"", "\" \" \"", "é\"", "-é", "\u{0}", "\"\u{0}\""] {
            let _ = FilterPattern::parse(pattern);
        }
    }
}
