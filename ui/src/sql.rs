//! `POST /api/v1/sql`: a query as `{"sql": "..."}` or plain text; the answer as JSON
//! (`{"columns":[{"name","type"}],"rows":[[...]]}`), CSV with a header row (`Accept:
//! text/csv`) or an Arrow IPC stream (`Accept: application/vnd.apache.arrow.stream`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use callwatch_query::{QueryError, QueryOutput};
use serde_json::{Value, json};

use crate::AppState;

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

pub async fn sql(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = header_text(&headers, header::CONTENT_TYPE);
    let sql = if content_type.starts_with("application/json") {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(mut fields)) => match fields.remove("sql") {
                Some(Value::String(sql)) => sql,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "the JSON body needs a string field \"sql\"",
                    );
                }
            },
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "the body is not a JSON object such as {\"sql\": \"SELECT 1\"}",
                );
            }
        }
    } else {
        match String::from_utf8(body.to_vec()) {
            Ok(sql) => sql,
            Err(_) => return error(StatusCode::BAD_REQUEST, "the SQL is not UTF-8 text"),
        }
    };
    let output = match state.query.sql(&sql).await {
        Ok(output) => output,
        Err(query_error) => {
            let status = match query_error {
                QueryError::Refused(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_REQUEST,
            };
            return error(status, &query_error.to_string());
        }
    };
    let accept = header_text(&headers, header::ACCEPT);
    let encoded = if accept.contains(ARROW_STREAM) {
        arrow_stream(&output).map(|body| (ARROW_STREAM, body))
    } else if accept.contains("text/csv") {
        csv(&output).map(|body| ("text/csv; charset=utf-8", body))
    } else {
        json_rows(&output).map(|body| ("application/json", body))
    };
    match encoded {
        Ok((content_type, body)) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(message) => error(StatusCode::BAD_REQUEST, &message),
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

fn json_rows(output: &QueryOutput) -> Result<Vec<u8>, String> {
    let columns: Vec<Value> = output
        .schema
        .fields()
        .iter()
        .map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() }))
        .collect();
    let mut rows: Vec<Value> = Vec::new();
    for batch in &output.batches {
        // arrow's JSON writer gives one object per row; rows are listed by column order,
        // so rename columns to their positions first (names may repeat).
        let fields: Vec<arrow::datatypes::Field> = batch
            .schema()
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| f.as_ref().clone().with_name(i.to_string()))
            .collect();
        let renamed = arrow::record_batch::RecordBatch::try_new(
            std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
            batch.columns().to_vec(),
        )
        .map_err(|e| e.to_string())?;
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(Vec::new());
        writer.write(&renamed).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
        let objects: Vec<serde_json::Map<String, Value>> =
            serde_json::from_slice(&writer.into_inner()).map_err(|e| e.to_string())?;
        for mut object in objects {
            let row = (0..batch.num_columns())
                .map(|i| object.remove(&i.to_string()).unwrap_or(Value::Null))
                .collect();
            rows.push(Value::Array(row));
        }
    }
    Ok(json!({ "columns": columns, "rows": rows })
        .to_string()
        .into_bytes())
}

pub(crate) fn csv(output: &QueryOutput) -> Result<Vec<u8>, String> {
    let mut writer = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(Vec::new());
    for batch in &output.batches {
        writer.write(batch).map_err(|e| {
            format!("{e}: CSV holds flat columns; select scalar fields or ask for JSON")
        })?;
    }
    if output.batches.is_empty() {
        let header: Vec<&str> = output
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        return Ok(format!("{}\n", header.join(",")).into_bytes());
    }
    Ok(writer.into_inner())
}

fn arrow_stream(output: &QueryOutput) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut body, &output.schema)
        .map_err(|e| e.to_string())?;
    for batch in &output.batches {
        writer.write(batch).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    drop(writer);
    Ok(body)
}
