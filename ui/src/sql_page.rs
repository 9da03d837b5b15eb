//! The SQL page: an editor, the answer as a table, and the same answer as CSV.

use askama::Template;
use axum::extract::{OriginalUri, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::AppState;
use crate::dashboard::{Frame, encode, error_page, html, param};
use crate::sql::csv;

/// Rows the page shows; the CSV has them all.
const SHOWN_ROWS: usize = 1000;

const EXAMPLE: &str = "SELECT client, server, count(*) AS calls,\n       avg(CAST(failed AS INT)) AS error_rate\nFROM calls\nWHERE start_time > now() - INTERVAL '15 minutes'\nGROUP BY 1, 2\nORDER BY calls DESC";

#[derive(Template)]
#[template(path = "sql.html")]
struct SqlPage {
    frame: Frame,
    sql: String,
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
    total_rows: usize,
    shown_rows: usize,
    csv_href: String,
    message: String,
    ran: bool,
}

pub async fn sql_page(
    State(state): State<AppState>,
    uri: OriginalUri,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let frame = match Frame::new("SQL", uri.path(), &params, "off")
        .map(|frame| frame.with_logout(&state.auth))
    {
        Ok(frame) => frame,
        Err(message) => return error_page(StatusCode::BAD_REQUEST, uri.path(), &message),
    };
    let sql = param(&params, "q").unwrap_or_default().to_string();
    let mut page = SqlPage {
        csv_href: format!("/sql.csv?q={}", encode(&sql)),
        sql: if sql.is_empty() {
            EXAMPLE.into()
        } else {
            sql.clone()
        },
        frame,
        columns: Vec::new(),
        rows: Vec::new(),
        total_rows: 0,
        shown_rows: 0,
        message: String::new(),
        ran: !sql.trim().is_empty(),
    };
    if page.ran {
        match state.query.sql(&sql).await {
            Err(e) => page.message = e.to_string(),
            Ok(output) => {
                page.columns = output
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                let options = FormatOptions::default().with_null("NULL");
                'batches: for batch in &output.batches {
                    page.total_rows += batch.num_rows();
                    let formatters: Result<Vec<_>, _> = batch
                        .columns()
                        .iter()
                        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                        .collect();
                    let formatters = match formatters {
                        Ok(formatters) => formatters,
                        Err(e) => {
                            page.message = e.to_string();
                            break 'batches;
                        }
                    };
                    for row in 0..batch.num_rows() {
                        if page.rows.len() >= SHOWN_ROWS {
                            continue;
                        }
                        page.rows.push(
                            formatters
                                .iter()
                                .map(|f| f.value(row).to_string())
                                .collect(),
                        );
                    }
                }
                page.shown_rows = page.rows.len();
            }
        }
    }
    let status = if page.message.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let mut response = html(&page);
    *response.status_mut() = status;
    response
}

/// `GET /sql.csv?q=…`: the answer as a CSV download.
pub async fn sql_csv(
    State(state): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let Some(sql) = param(&params, "q").filter(|q| !q.trim().is_empty()) else {
        return (StatusCode::BAD_REQUEST, "q is required: the SQL to run\n").into_response();
    };
    let output = match state.query.sql(sql).await {
        Ok(output) => output,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    match csv(&output) {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"callwatch.csv\"",
                ),
            ],
            body,
        )
            .into_response(),
        Err(message) => (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    }
}
