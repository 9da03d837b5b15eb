//! The part of TraceQL that Grafana's Tempo search builder writes: one spanset filter,
//! `{ cond && cond || (cond) }`, where a condition compares a span field with a value:
//!
//! - fields: `.key` (span or resource attribute), `span.key`, `resource.key`, and the
//!   intrinsics `name`, `status`, `kind`, `duration`, `statusMessage`, plus `traceDuration`
//!   (the whole trace; only joined to the rest with `&&`);
//! - operators: `=`, `!=`, `>`, `>=`, `<`, `<=`, `=~`, `!~` (regular expressions match the
//!   whole value, as in Tempo);
//! - values: `"strings"`, numbers, durations (`250ms`), `true`/`false`, and the status and
//!   kind keywords (`error`, `ok`, `unset`, `server`, `client`, ...).
//!
//! Anything else (pipelines, structural operators, aggregates) is refused by name.

use callwatch_storage::schema::{
    ATTRIBUTES, DURATION_NS, RESOURCE_ATTRIBUTES, SERVICE_NAME, SPAN_KIND, SPAN_KINDS, SPAN_NAME,
    STATUS_CODE, STATUS_CODES, STATUS_MESSAGE,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions::regex::expr_fn::regexp_like;
use datafusion::logical_expr::{Expr, col, lit, try_cast};

use crate::params::parse_duration;
use crate::traces::attribute;

/// A parsed spanset filter.
#[derive(Debug, Default)]
pub(crate) struct SpanFilter {
    /// What a span must satisfy; `None` for every span (`{}`).
    pub(crate) condition: Option<Expr>,
    pub(crate) min_trace_duration_ns: Option<i64>,
    pub(crate) max_trace_duration_ns: Option<i64>,
    /// The fields the filter names, as Tempo shows them on matching spans.
    pub(crate) fields: Vec<String>,
}

pub(crate) fn parse(query: &str) -> Result<SpanFilter, String> {
    let tokens = tokenize(query)?;
    let mut parser = Parser {
        tokens,
        at: 0,
        filter: SpanFilter::default(),
    };
    parser.expect(&Token::Open)?;
    if parser.peek() != Some(&Token::Close) {
        let condition = parser.or(true)?;
        parser.filter.condition = condition;
    }
    parser.expect(&Token::Close)?;
    if let Some(token) = parser.peek() {
        return Err(format!(
            "{query}: only one spanset filter {{ ... }} is supported, not {token:?} after it"
        ));
    }
    Ok(parser.filter)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    LeftParen,
    RightParen,
    And,
    Or,
    Op(Op),
    Text(String),
    /// A field name, keyword, number or duration.
    Word(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    NotEq,
    Gt,
    GtEq,
    Lt,
    LtEq,
    Matches,
    NotMatches,
}

fn tokenize(query: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        let token = match c {
            c if c.is_whitespace() => continue,
            '{' => Token::Open,
            '}' => Token::Close,
            '(' => Token::LeftParen,
            ')' => Token::RightParen,
            '&' if chars.next_if_eq(&'&').is_some() => Token::And,
            '|' if chars.next_if_eq(&'|').is_some() => Token::Or,
            '=' if chars.next_if_eq(&'~').is_some() => Token::Op(Op::Matches),
            '=' => Token::Op(Op::Eq),
            '!' if chars.next_if_eq(&'=').is_some() => Token::Op(Op::NotEq),
            '!' if chars.next_if_eq(&'~').is_some() => Token::Op(Op::NotMatches),
            '>' if chars.next_if_eq(&'=').is_some() => Token::Op(Op::GtEq),
            '>' => Token::Op(Op::Gt),
            '<' if chars.next_if_eq(&'=').is_some() => Token::Op(Op::LtEq),
            '<' => Token::Op(Op::Lt),
            '"' | '`' => {
                let mut text = String::new();
                loop {
                    match chars.next() {
                        Some(end) if end == c => break,
                        Some('\\') if c == '"' => text.extend(chars.next()),
                        Some(other) => text.push(other),
                        None => return Err(format!("{query}: a string is not closed")),
                    }
                }
                Token::Text(text)
            }
            c if is_word(c) => {
                let mut word = String::from(c);
                while let Some(c) = chars.next_if(|&c| is_word(c)) {
                    word.push(c);
                }
                Token::Word(word)
            }
            other => {
                return Err(format!(
                    "{query}: {other:?} is not part of the TraceQL callwatch reads \
                     (one spanset filter of comparisons joined by && and ||)"
                ));
            }
        };
        tokens.push(token);
    }
    Ok(tokens)
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/' | '+')
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    filter: SpanFilter,
}

/// A comparison: on the span, or on the whole trace's duration.
enum Condition {
    Span(Expr),
    TraceDuration,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn expect(&mut self, wanted: &Token) -> Result<(), String> {
        match self.next() {
            Some(token) if &token == wanted => Ok(()),
            Some(token) => Err(format!("expected {wanted:?}, found {token:?}")),
            None => Err(format!("expected {wanted:?} at the end")),
        }
    }

    /// Conditions joined by `||`; `top` while no `||` or parenthesis encloses them, where
    /// `traceDuration` may appear. `None` is "every span".
    fn or(&mut self, top: bool) -> Result<Option<Expr>, String> {
        let mut alternatives = vec![self.and(top)?];
        while self.peek() == Some(&Token::Or) {
            self.next();
            alternatives.push(self.and(false)?);
        }
        if alternatives.len() > 1 && top && self.filter_has_trace_duration() {
            return Err("traceDuration can only be joined to the rest with &&".into());
        }
        let mut any = None;
        for alternative in alternatives {
            // An alternative that holds for every span makes the whole `||` hold.
            let Some(expr) = alternative else {
                return Ok(None);
            };
            any = Some(match any {
                None => expr,
                Some(before) => Expr::or(before, expr),
            });
        }
        Ok(any)
    }

    fn filter_has_trace_duration(&self) -> bool {
        self.filter.min_trace_duration_ns.is_some() || self.filter.max_trace_duration_ns.is_some()
    }

    fn and(&mut self, top: bool) -> Result<Option<Expr>, String> {
        let mut all: Option<Expr> = None;
        loop {
            let condition = match self.peek() {
                Some(Token::LeftParen) => {
                    self.next();
                    let inner = self.or(false)?;
                    self.expect(&Token::RightParen)?;
                    inner.map(Condition::Span)
                }
                _ => self.comparison(top)?,
            };
            if let Some(Condition::Span(expr)) = condition {
                all = Some(match all {
                    None => expr,
                    Some(before) => before.and(expr),
                });
            }
            if self.peek() != Some(&Token::And) {
                return Ok(all);
            }
            self.next();
        }
    }

    /// `field op value`, or `true`; `None` for a condition every span meets.
    fn comparison(&mut self, top: bool) -> Result<Option<Condition>, String> {
        let field = match self.next() {
            Some(Token::Word(word)) if word == "true" => return Ok(None),
            Some(Token::Word(word)) => word,
            Some(token) => return Err(format!("expected a field, found {token:?}")),
            None => return Err("expected a field at the end".into()),
        };
        let op = match self.next() {
            Some(Token::Op(op)) => op,
            Some(token) => {
                return Err(format!(
                    "expected an operator after {field}, found {token:?}"
                ));
            }
            None => return Err(format!("expected an operator after {field}")),
        };
        let value = match self.next() {
            Some(Token::Text(text)) => Value::Text(text),
            Some(Token::Word(word)) => Value::Word(word),
            Some(token) => return Err(format!("expected a value after {field}, found {token:?}")),
            None => return Err(format!("expected a value after {field}")),
        };
        if matches!(field.as_str(), "traceDuration" | "trace:duration") {
            if !top {
                return Err("traceDuration can only be joined to the rest with &&".into());
            }
            let ns = value.duration(&field)?;
            match op {
                Op::Gt | Op::GtEq => {
                    self.filter.min_trace_duration_ns = Some(ns + i64::from(op == Op::Gt))
                }
                Op::Lt | Op::LtEq => {
                    self.filter.max_trace_duration_ns = Some(ns - i64::from(op == Op::Lt))
                }
                _ => return Err(format!("{field}: compare it with >, >=, < or <=")),
            }
            return Ok(Some(Condition::TraceDuration));
        }
        let (expr, shown) = compare(&field, op, &value)?;
        if !self.filter.fields.contains(&shown) {
            self.filter.fields.push(shown);
        }
        Ok(Some(Condition::Span(expr)))
    }
}

enum Value {
    Text(String),
    Word(String),
}

impl Value {
    fn text(&self) -> &str {
        match self {
            Value::Text(text) | Value::Word(text) => text,
        }
    }

    fn duration(&self, field: &str) -> Result<i64, String> {
        match self {
            Value::Word(word) => parse_duration(field, word),
            Value::Text(text) => Err(format!("{field}: {text:?} is not a duration such as 250ms")),
        }
    }
}

/// The condition and the name Tempo shows the field by.
fn compare(field: &str, op: Op, value: &Value) -> Result<(Expr, String), String> {
    let field = field.strip_prefix("span:").unwrap_or(field);
    let keyword = |names: &[&str]| -> Result<Expr, String> {
        let word = value.text().to_ascii_uppercase();
        let name = names.iter().find(|&&n| n == word).ok_or_else(|| {
            let lower: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
            format!("{field}: use one of {}", lower.join(", "))
        })?;
        Ok(lit(*name))
    };
    let (left, right, shown) = match field {
        "name" => (col(SPAN_NAME), text_value(value), "name".to_string()),
        "statusMessage" => (col(STATUS_MESSAGE), text_value(value), field.to_string()),
        "status" => (col(STATUS_CODE), keyword(&STATUS_CODES)?, field.to_string()),
        "kind" => (col(SPAN_KIND), keyword(&SPAN_KINDS)?, field.to_string()),
        "duration" => (
            col(DURATION_NS),
            lit(value.duration(field)?),
            field.to_string(),
        ),
        "resource.service.name" | ".service.name" => {
            (col(SERVICE_NAME), text_value(value), "service.name".into())
        }
        _ => {
            let (attribute, key) = if let Some(key) = field.strip_prefix("resource.") {
                (get_field(col(RESOURCE_ATTRIBUTES), key), key)
            } else if let Some(key) = field.strip_prefix("span.") {
                (get_field(col(ATTRIBUTES), key), key)
            } else if let Some(key) = field.strip_prefix('.') {
                (attribute(key), key)
            } else {
                return Err(format!(
                    "{field}: name an attribute as .key, span.key or resource.key, or use \
                     name, status, kind, duration, statusMessage or traceDuration"
                ));
            };
            if key.is_empty() {
                return Err(format!("{field}: the attribute name is empty"));
            }
            // Attributes are stored as text: numbers compare as numbers.
            let number = match value {
                Value::Word(word) => word.parse::<f64>().ok(),
                Value::Text(_) => None,
            };
            match number {
                Some(number) => (
                    try_cast(attribute, DataType::Float64),
                    lit(number),
                    key.to_string(),
                ),
                None => (attribute, text_value(value), key.to_string()),
            }
        }
    };
    let expr = match op {
        Op::Eq => left.eq(right),
        Op::NotEq => left.not_eq(right),
        Op::Gt => left.gt(right),
        Op::GtEq => left.gt_eq(right),
        Op::Lt => left.lt(right),
        Op::LtEq => left.lt_eq(right),
        Op::Matches | Op::NotMatches => {
            let Value::Text(pattern) = value else {
                return Err(format!("{field}: a regular expression is a \"string\""));
            };
            regex::Regex::new(pattern).map_err(|e| format!("{field}: {e}"))?;
            let matched = regexp_like(left, lit(format!("^(?:{pattern})$")), None);
            if op == Op::Matches { matched } else { !matched }
        }
    };
    Ok((expr, shown))
}

fn text_value(value: &Value) -> Expr {
    lit(value.text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grafana_s_search_builder_queries_parse() {
        let filter = parse(
            r#"{resource.service.name="order-service" && name="POST /v1/orders" && duration>100ms && status=error && traceDuration>=1s}"#,
        )
        .unwrap();
        assert!(filter.condition.is_some());
        assert_eq!(filter.min_trace_duration_ns, Some(1_000_000_000));
        assert_eq!(
            filter.fields,
            ["service.name", "name", "duration", "status"]
        );

        let filter = parse("{}").unwrap();
        assert!(filter.condition.is_none());
        assert!(parse("{ true }").unwrap().condition.is_none());
        let filter =
            parse(r#"{ .http.response.status_code >= 500 || (span.x =~ "a.*" && kind = server) }"#)
                .unwrap();
        assert!(filter.condition.is_some());
        assert_eq!(filter.fields, ["http.response.status_code", "x", "kind"]);
    }

    #[test]
    fn what_is_not_read_is_refused_by_name() {
        for (query, says) in [
            ("{ status = error } | count() > 2", "'|'"),
            ("{ a } >> { b }", "expected an operator"),
            ("{ status = broken }", "use one of"),
            ("{ .a = 1 || traceDuration > 1s }", "traceDuration"),
            ("{ http.route = \"x\" }", "name an attribute"),
            ("{ .a =~ \"(\" }", "regex"),
            ("{ .a = \"open }", "not closed"),
            ("{ duration > fast }", "duration"),
            ("{ .a = 1 } { .b = 2 }", "only one spanset"),
            ("{ .a = ", "expected a value"),
        ] {
            let error = parse(query).unwrap_err();
            assert!(error.contains(says), "{query}: {error}");
        }
    }
}
