//! Read-only: only queries run. Everything else is refused before it is planned.

use std::ops::ControlFlow;

use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Statement, visit_relations};

use crate::error::QueryError;

/// Accepts one SELECT, WITH, EXPLAIN, SHOW or DESCRIBE statement that reads tables by name.
pub fn check(sql: &str) -> Result<(), QueryError> {
    let statements =
        DFParser::parse_sql(sql).map_err(|error| QueryError::Invalid(error.to_string()))?;
    match statements.len() {
        0 => Err(QueryError::Invalid("no SQL statement given".into())),
        1 => check_statement(&statements[0]),
        n => Err(QueryError::Invalid(format!(
            "send one statement at a time, not {n}"
        ))),
    }
}

fn refuse(what: &str) -> Result<(), QueryError> {
    Err(QueryError::Refused(format!(
        "{what} is not allowed: callwatch's SQL is read-only (SELECT, WITH, EXPLAIN, SHOW, DESCRIBE)"
    )))
}

fn check_statement(statement: &DfStatement) -> Result<(), QueryError> {
    match statement {
        DfStatement::Statement(statement) => check_sql_statement(statement),
        DfStatement::Explain(explain) => check_statement(&explain.statement),
        DfStatement::CreateExternalTable(_) => refuse("CREATE EXTERNAL TABLE"),
        DfStatement::CopyTo(_) => refuse("COPY"),
        DfStatement::Reset(_) => refuse("RESET"),
    }
}

/// The same check for a statement parsed elsewhere (the Postgres wire's parser).
pub fn check_sql_statement(statement: &Statement) -> Result<(), QueryError> {
    match statement {
        Statement::Query(_)
        | Statement::Explain { .. }
        | Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. } => check_relations(statement),
        other => refuse(&kind(other)),
    }
}

/// The statement's name as SQL would say it, e.g. `INSERT` for `Statement::Insert`.
fn kind(statement: &Statement) -> String {
    let debug = format!("{statement:?}");
    let name: String = debug
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let mut words = String::new();
    for (i, c) in name.chars().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            words.push(' ');
        }
        words.push(c.to_ascii_uppercase());
    }
    words
}

/// Whether `sql` (one statement that parses) reads the table `table`.
pub fn reads_table(sql: &str, table: &str) -> bool {
    let Ok(statements) = DFParser::parse_sql(sql) else {
        return false;
    };
    statements.iter().any(|statement| {
        let DfStatement::Statement(statement) = statement else {
            return false;
        };
        visit_relations(statement.as_ref(), |name| {
            let last = name.0.last().map(|part| part.to_string());
            if last.is_some_and(|part| part.trim_matches('"').eq_ignore_ascii_case(table)) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .is_break()
    })
}

/// Tables are named, never read by path or URL (DataFusion's dynamic file catalog).
fn check_relations(statement: &Statement) -> Result<(), QueryError> {
    let found = visit_relations(statement, |name| {
        let text = name.to_string();
        let looks_like_path = text.contains('/')
            || text.contains(':')
            || text.contains('\\')
            || [".parquet", ".csv", ".json", ".arrow", ".avro", ".ndjson"]
                .iter()
                .any(|ext| text.to_ascii_lowercase().contains(ext));
        if looks_like_path {
            ControlFlow::Break(text)
        } else {
            ControlFlow::Continue(())
        }
    });
    match found {
        ControlFlow::Break(path) => Err(QueryError::Refused(format!(
            "reading files or URLs by path ({path}) is not allowed: query the tables spans and calls"
        ))),
        ControlFlow::Continue(()) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_pass_and_everything_else_is_refused() {
        for sql in [
            "SELECT count(*) FROM spans",
            "WITH s AS (SELECT * FROM spans) SELECT span_name FROM s",
            "EXPLAIN SELECT 1",
            "SHOW TABLES",
            "DESCRIBE spans",
            "SELECT * FROM information_schema.tables",
        ] {
            assert!(check(sql).is_ok(), "{sql}");
        }
        for (sql, says) in [
            ("CREATE TABLE t (a INT)", "CREATE TABLE"),
            ("INSERT INTO spans (span_id) VALUES ('x')", "INSERT"),
            ("DELETE FROM spans", "DELETE"),
            ("UPDATE spans SET span_name = 'x'", "UPDATE"),
            ("DROP TABLE spans", "DROP"),
            ("COPY (SELECT 1) TO '/tmp/out.parquet'", "COPY"),
            (
                "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc'",
                "CREATE EXTERNAL TABLE",
            ),
            ("SELECT * FROM '/etc/passwd'", "by path"),
            ("SELECT * FROM 'data.parquet'", "by path"),
            ("SELECT * FROM \"s3://bucket/x\"", "by path"),
            ("EXPLAIN COPY (SELECT 1) TO 'x.csv'", "COPY"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
        ] {
            match check(sql) {
                Err(QueryError::Refused(message)) => {
                    assert!(message.contains(says), "{sql}: {message}");
                }
                other => panic!("{sql} was not refused: {other:?}"),
            }
        }
        assert!(matches!(
            check("SELECT 1; SELECT 2"),
            Err(QueryError::Invalid(_))
        ));
        assert!(matches!(check("SELEC 1"), Err(QueryError::Invalid(_))));
    }
}

/// Property tests: any text gets a verdict, never a panic, and a statement that writes is
/// refused whatever follows it. `PROPTEST_CASES` sets how many cases run.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    fn sql_words() -> impl Strategy<Value = String> {
        let word = prop_oneof![
            "(SELECT|WITH|EXPLAIN|SHOW|DESCRIBE|INSERT|UPDATE|DELETE|CREATE|DROP|COPY|SET|RESET|ALTER|TRUNCATE|VALUES|FROM|WHERE|AS|INTO|TABLE|VIEW|EXTERNAL|LOCATION|TO|UNION|JOIN|ON|GROUP BY|ORDER BY|LIMIT)",
            "(spans|calls|breaker_transitions|information_schema\\.tables|read_parquet|'/etc/passwd')",
            "[a-z_]{1,8}",
            "[0-9]{1,6}",
            "('[^']{0,6}'|\"[^\"]{0,6}\")",
            "[(),;*=<>+-]",
        ];
        proptest::collection::vec(word, 0..14).prop_map(|words| words.join(" "))
    }

    proptest! {
        #[test]
        fn any_text_gets_a_verdict(sql in prop_oneof![sql_words(), any::<String>()]) {
            let _ = super::check(&sql);
        }

        #[test]
        fn statements_that_write_are_refused(
            verb in "(INSERT INTO|UPDATE|DELETE FROM|CREATE TABLE|CREATE EXTERNAL TABLE|DROP TABLE|COPY|ALTER TABLE|TRUNCATE)",
            rest in sql_words(),
        ) {
            let sql = format!("{verb} spans {rest}");
            prop_assert!(super::check(&sql).is_err(), "{}", sql);
        }
    }
}
