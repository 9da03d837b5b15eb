//! The Postgres wire protocol in front of the query engine, so `psql` and Grafana's
//! PostgreSQL data source run the same read-only, bounded SQL as `POST /api/v1/sql`.
//!
//! `datafusion-postgres` speaks the protocol and answers the session statements clients
//! send on their own (`SET`, `SHOW`, `BEGIN`); every query goes through [`QueryEngine`]
//! with its guard and limits, and its batches are then encoded for the wire by `arrow-pg`.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{
    SCRAM_ITERATIONS, ScramAuth, gen_salted_password,
};
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::{FieldInfo, QueryResponse, Response};
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::data::DataRow;
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use datafusion_postgres::pgwire::tokio::{TlsAcceptor, process_socket};
use datafusion_postgres::pgwire::types::format::FormatOptions;
use datafusion_postgres::{DfSessionService, Parser, QueryHook};
use futures::Sink;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::{QueryEngine, QueryOutput};
use crate::error::QueryError;
use crate::guard;

/// The password of a user name, if it has one.
pub type PasswordOf = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Who may connect. Without passwords any user name is accepted, as a local Postgres with
/// `trust` authentication does; with them, SCRAM-SHA-256 proves the password without
/// sending it.
#[derive(Clone, Default)]
pub struct PgAuth {
    /// When set, only this user name may connect with `password`.
    pub user: Option<String>,
    /// When set, clients must prove it (SCRAM-SHA-256).
    pub password: Option<String>,
    /// Passwords of further user names (the tokens that may read); when set, every client
    /// must prove a password.
    pub passwords: Option<PasswordOf>,
    /// Called for each client that failed to log in.
    pub on_failure: Option<Arc<dyn Fn() + Send + Sync>>,
    /// When set, a client's `SSLRequest` is answered and the connection goes on over TLS
    /// with what this gives at the time (certificates may be rotated meanwhile).
    pub tls: Option<Arc<dyn Fn() -> TlsAcceptor + Send + Sync>>,
}

impl Debug for PgAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAuth")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("passwords", &self.passwords.is_some())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl PgAuth {
    fn asks_password(&self) -> bool {
        self.password.is_some() || self.passwords.is_some()
    }

    /// The password `user` must prove.
    fn password_of(&self, user: &str) -> Option<String> {
        if let Some(password) = self.passwords.as_ref().and_then(|of| of(user)) {
            return Some(password);
        }
        match &self.user {
            Some(only) if only != user => None,
            _ => self.password.clone(),
        }
    }
}

/// Accepts Postgres connections on `listener` until `cancel` fires.
pub async fn serve_postgres(
    listener: TcpListener,
    engine: QueryEngine,
    auth: PgAuth,
    cancel: CancellationToken,
) -> Result<(), QueryError> {
    let tls = auth.tls.clone();
    let queries = Handlers::queries(engine)?;
    let auth = Arc::new(auth);
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                tracing::warn!(%error, "postgres accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (socket, watcher) = match watched(socket) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%peer, %error, "postgres connection could not be watched");
                continue;
            }
        };
        // Per connection: the SCRAM exchange has state.
        let handlers = Arc::new(Handlers {
            queries: queries.clone(),
            startup: Arc::new(Startup::new(auth.clone())),
        });
        let cancel = cancel.clone();
        let tls = tls.as_ref().map(|acceptor| acceptor());
        connections.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                // Dropping the connection drops its running query, which then stops.
                () = closed_by_peer(&watcher) => {
                    tracing::debug!(%peer, "postgres client went away");
                }
                result = process_socket(socket, tls, handlers) => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "postgres connection ended");
                    }
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// The socket, and a second handle to it that watches for the client closing while a query
/// runs (the protocol reads nothing from the client until the answer is sent).
fn watched(socket: TcpStream) -> std::io::Result<(TcpStream, TcpStream)> {
    let socket = socket.into_std()?;
    let watcher = socket.try_clone()?;
    Ok((TcpStream::from_std(socket)?, TcpStream::from_std(watcher)?))
}

/// Returns once the peer has closed its side or reset the connection.
async fn closed_by_peer(watcher: &TcpStream) {
    let mut byte = [0u8; 1];
    loop {
        if watcher.readable().await.is_err() {
            return;
        }
        match watcher.peek(&mut byte).await {
            Ok(0) | Err(_) => return,
            // Bytes the protocol has not read yet: look again a little later.
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

struct Handlers {
    queries: Arc<Queries>,
    startup: Arc<Startup>,
}

impl Handlers {
    fn queries(engine: QueryEngine) -> Result<Arc<Queries>, QueryError> {
        // This session only plans prepared statements and answers session statements;
        // queries run in sessions of their own (see `QueryEngine`).
        let planning = Arc::new(engine.planning_context()?);
        let hooks: Vec<Arc<dyn QueryHook>> =
            vec![Arc::new(SetShowHook), Arc::new(TransactionStatementHook)];
        let session = Arc::new(DfSessionService::new_with_hooks(planning, hooks));
        Ok(Arc::new(Queries { engine, session }))
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.queries.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.queries.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }
}

/// Session statements go to `datafusion-postgres`; everything else is a query for the
/// engine, or refused.
struct Queries {
    engine: QueryEngine,
    session: Arc<DfSessionService>,
}

impl Queries {
    /// Runs a query on the read runtime once admitted, and encodes its answer there too.
    async fn answer(
        &self,
        query: impl Future<Output = Result<QueryOutput, QueryError>> + Send + 'static,
        format: Format,
        client: &impl ClientInfo,
    ) -> PgWireResult<Response> {
        let options = FormatOptions::from_client_metadata(client.metadata());
        let encoded = self
            .engine
            .reads()
            .run(crate::reads::Priority::Normal, async move {
                encode(query.await.map_err(pg_error)?, &format, options)
            })
            .await
            .map_err(pg_error)??;
        Ok(encoded.response())
    }
}

/// Statements about the connection rather than the data, which clients send on their own.
fn is_session_statement(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Set(_)
            | Statement::ShowVariable { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
    )
}

fn pg_error(error: QueryError) -> PgWireError {
    // SQLSTATE codes as Postgres uses them, so clients show the usual messages.
    let code = match &error {
        QueryError::Refused(_) => "42501",
        QueryError::Invalid(_) => "42601",
        QueryError::Timeout(_) | QueryError::StoppedOnCluster { .. } | QueryError::Cancelled => {
            "57014"
        }
        QueryError::Busy { .. } => "53300",
        QueryError::TooManyRows(_) => "54000",
        QueryError::OutOfMemory(_) => "53200",
        QueryError::Execution(_) => "XX000",
    };
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        error.to_string(),
    )))
}

/// Puts a finished answer on the wire in the formats the client asked for.
/// A finished answer as Postgres rows, in the formats the client asked for.
struct Encoded {
    fields: Arc<Vec<FieldInfo>>,
    rows: Vec<PgWireResult<DataRow>>,
}

fn encode(output: QueryOutput, format: &Format, options: FormatOptions) -> PgWireResult<Encoded> {
    let fields = Arc::new(arrow_schema_to_pg_fields(
        &output.schema,
        format,
        Some(Arc::new(options)),
    )?);
    let rows = output
        .batches
        .into_iter()
        .flat_map(|batch| encode_recordbatch(fields.clone(), batch))
        .collect();
    Ok(Encoded { fields, rows })
}

impl Encoded {
    fn response(self) -> Response {
        Response::Query(QueryResponse::new(
            self.fields,
            futures::stream::iter(self.rows),
        ))
    }
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = PostgresCompatibilityParser::new()
            .parse(query)
            .map_err(|e| pg_error(QueryError::Invalid(e.to_string())))?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        for statement in statements {
            let sql = statement.to_string();
            if is_session_statement(&statement) {
                responses.extend(SimpleQueryHandler::do_query(&*self.session, client, &sql).await?);
                continue;
            }
            guard::check_sql_statement(&statement).map_err(pg_error)?;
            let engine = self.engine.clone();
            let answer = self
                .answer(
                    async move { engine.sql(&sql).await },
                    Format::UnifiedText,
                    client,
                )
                .await?;
            responses.push(answer);
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.session.query_parser()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (_, Some((statement, plan))) = &portal.statement.statement else {
            return Ok(Response::EmptyQuery);
        };
        if is_session_statement(statement) {
            return ExtendedQueryHandler::do_query(&*self.session, client, portal, max_rows).await;
        }
        guard::check_sql_statement(statement).map_err(pg_error)?;
        let types = plan.get_parameter_types().map_err(|e| pg_error(e.into()))?;
        let mut types: Vec<(usize, Option<DataType>)> = types
            .into_iter()
            .map(|(id, data_type)| {
                let position = id.trim_start_matches('$').parse().unwrap_or(usize::MAX);
                (position, data_type)
            })
            .collect();
        types.sort_by_key(|(position, _)| *position);
        let types: Vec<Option<&DataType>> = types.iter().map(|(_, t)| t.as_ref()).collect();
        let params = deserialize_parameters(portal, &types)?;
        let plan = plan
            .clone()
            .replace_params_with_values(&params)
            .map_err(|e| pg_error(e.into()))?;
        let engine = self.engine.clone();
        let format = portal.result_column_format.clone();
        self.answer(async move { engine.run_plan(plan).await }, format, client)
            .await
    }
}

/// No authentication, or SCRAM-SHA-256: one per connection.
struct Startup {
    scram: Option<SASLAuthStartupHandler<DefaultServerParameterProvider>>,
    auth: Arc<PgAuth>,
}

impl Startup {
    fn new(auth: Arc<PgAuth>) -> Self {
        let scram = auth.asks_password().then(|| {
            let mut scram = ScramAuth::new(Arc::new(Credentials(auth.clone())));
            scram.set_iterations(SCRAM_ITERATIONS);
            SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default()))
                .with_scram(scram)
        });
        Self { scram, auth }
    }
}

/// Accepts everyone (or only the configured user) when no password is configured.
struct Trust;

impl NoopStartupHandler for Trust {}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(scram) = &self.scram {
            let result = scram.on_startup(client, message).await;
            if result.is_err()
                && let Some(count) = &self.auth.on_failure
            {
                count();
            }
            return result;
        }
        if let (Some(expected), PgWireFrontendMessage::Startup(startup)) =
            (&self.auth.user, &message)
        {
            let user = startup.parameters.get("user");
            if user != Some(expected) {
                return Err(PgWireError::InvalidPassword(
                    user.cloned().unwrap_or_default(),
                ));
            }
        }
        Trust.on_startup(client, message).await
    }
}

/// The salted passwords SCRAM checks proofs against.
#[derive(Debug)]
struct Credentials(Arc<PgAuth>);

#[async_trait]
impl AuthSource for Credentials {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let salt: [u8; 16] = rand::random();
        // A user without a password is asked for a proof all the same, which then fails:
        // whether a user name exists is not told.
        let password = login
            .user()
            .and_then(|user| self.0.password_of(user))
            .unwrap_or_else(|| format!("{:x}", rand::random::<u128>()));
        let salted = gen_salted_password(&password, &salt, SCRAM_ITERATIONS);
        Ok(Password::new(Some(salt.to_vec()), salted))
    }
}
