//! The control API of a standalone `hush-sfu` node, for a signaling server
//! that drives the SFU remotely. Plain HTTP/1.1, JSON bodies.
//!
//! | method and path | body | reply |
//! |---|---|---|
//! | `POST /v1/rooms/{room}/participants/{participant}` | none | `201` |
//! | `DELETE /v1/rooms/{room}/participants/{participant}` | none | `204` |
//! | `POST .../{participant}/offer` | `{"sdp": "..."}` | `200 {"sdp": answer}`, `409` on glare |
//! | `POST .../{participant}/answer` | `{"sdp": "..."}` | `204` |
//! | `POST .../{participant}/candidates` | `{"candidate", "sdp_mid", "sdp_m_line_index"}` | `204` |
//! | `GET .../{participant}/events` | none | `200 [SfuEvent...]`, waits up to 20 s for one (long poll); `410` once closed |
//! | `GET /metrics` | none | Prometheus text |
//! | `GET /healthz` | none | `200 ok` |
//!
//! Every request but `GET /healthz` carries `Authorization: Bearer TOKEN`,
//! a [`hush_proto::ControlToken`] minted under the secret the node shares
//! with the signaling servers that drive it (`hush-sfu token`); without a
//! valid one the reply is `401` and nothing happens.
//!
//! `{room}` is a protocol room id (`hush_proto::RoomId`: 1 to 64 ASCII
//! letters, digits, `-`, `_`, `.`) and `{participant}` the signaling
//! server's participant id in decimal (`7`, or `p7` as in logs); see
//! [`hush_proto::ids`]. Bodies and events use the protocol's types
//! ([`hush_proto::IceCandidate`]).
//!
//! Errors are `{"error": "..."}` with `404` (unknown participant), `409`
//! (already joined, glare, no offer outstanding), `400` (an invalid room or
//! participant id in the path, rejected SDP or candidate) or `500`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use hush_proto::{ControlToken, IceCandidate, ParticipantId, RoomId, ServerSecret};

use crate::error::Error;
use crate::sfu::{ParticipantEvents, Sfu, SfuEvent};

/// An SDP body or reply.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sdp {
    /// The session description.
    pub sdp: String,
}

type Key = (RoomId, ParticipantId);

#[derive(Clone)]
struct AppState {
    sfu: Sfu,
    events: Arc<Mutex<HashMap<Key, Arc<Mutex<ParticipantEvents>>>>>,
}

/// The control API's routes for `sfu`; every one but `GET /healthz`
/// needs a control token minted under `secret`.
pub fn control_router(sfu: Sfu, secret: ServerSecret) -> Router {
    let state = AppState {
        sfu,
        events: Arc::new(Mutex::new(HashMap::new())),
    };
    let api = Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/v1/rooms/{room}/participants/{participant}",
            post(create).delete(remove),
        )
        .route(
            "/v1/rooms/{room}/participants/{participant}/offer",
            post(offer),
        )
        .route(
            "/v1/rooms/{room}/participants/{participant}/answer",
            post(answer),
        )
        .route(
            "/v1/rooms/{room}/participants/{participant}/candidates",
            post(candidate),
        )
        .route(
            "/v1/rooms/{room}/participants/{participant}/events",
            get(events),
        )
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(secret),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(api)
}

/// Serves the control API of `sfu` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sfu: Sfu,
    secret: ServerSecret,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, control_router(sfu, secret))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Lets a request through only with a valid control token.
async fn require_token(
    State(secret): State<Arc<ServerSecret>>,
    request: Request,
    next: Next,
) -> Response {
    let token = (request.headers().get(header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let refusal = match token {
        Some(token) => match ControlToken::verify(&secret, token.trim(), now) {
            Ok(()) => return next.run(request).await,
            Err(e) => format!("control token refused: {e}"),
        },
        None => "no control token: send `Authorization: Bearer TOKEN` (hush-sfu token)".to_owned(),
    };
    tracing::info!(path = %request.uri().path(), %refusal, "control request refused");
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({ "error": refusal })),
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Why a control request failed.
enum ApiError {
    /// The SFU refused or failed.
    Sfu(Error),
    /// The path's room id is not a protocol room id.
    InvalidRoom(hush_proto::Error),
    /// The path's participant id is not a number.
    InvalidParticipant,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::Sfu(e) => {
                let status = match &e {
                    Error::UnknownParticipant { .. } => StatusCode::NOT_FOUND,
                    Error::AlreadyJoined { .. } | Error::Glare | Error::NoOfferOutstanding => {
                        StatusCode::CONFLICT
                    }
                    Error::Rejected { .. } | Error::Routing(_) => StatusCode::BAD_REQUEST,
                    Error::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                (status, e.to_string())
            }
            Self::InvalidRoom(e) => (StatusCode::BAD_REQUEST, e.to_string()),
            Self::InvalidParticipant => (
                StatusCode::BAD_REQUEST,
                "invalid participant id: a decimal number, e.g. 7 or p7".to_owned(),
            ),
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self::Sfu(e)
    }
}

/// The ids a request's path names, validated as the protocol defines them.
fn key(room: &str, participant: &str) -> Result<Key, ApiError> {
    let room = room.parse().map_err(ApiError::InvalidRoom)?;
    let participant = ParticipantId::parse(participant).ok_or(ApiError::InvalidParticipant)?;
    Ok((room, participant))
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.sfu.metrics().render() + &crate::metrics::process_metrics(),
    )
}

async fn create(
    State(s): State<AppState>,
    Path((room, participant)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let k = key(&room, &participant)?;
    let events = s.sfu.add_participant(&k.0, &k.1).await?;
    s.events
        .lock()
        .await
        .insert(k, Arc::new(Mutex::new(events)));
    Ok(StatusCode::CREATED)
}

async fn remove(
    State(s): State<AppState>,
    Path((room, participant)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let k = key(&room, &participant)?;
    s.events.lock().await.remove(&k);
    s.sfu.remove_participant(&k.0, &k.1).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn offer(
    State(s): State<AppState>,
    Path((room, participant)): Path<(String, String)>,
    Json(body): Json<Sdp>,
) -> Result<Json<Sdp>, ApiError> {
    let k = key(&room, &participant)?;
    let sdp = s.sfu.handle_offer(&k.0, &k.1, body.sdp).await?;
    Ok(Json(Sdp { sdp }))
}

async fn answer(
    State(s): State<AppState>,
    Path((room, participant)): Path<(String, String)>,
    Json(body): Json<Sdp>,
) -> Result<StatusCode, ApiError> {
    let k = key(&room, &participant)?;
    s.sfu.handle_answer(&k.0, &k.1, body.sdp).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn candidate(
    State(s): State<AppState>,
    Path((room, participant)): Path<(String, String)>,
    Json(body): Json<IceCandidate>,
) -> Result<StatusCode, ApiError> {
    let k = key(&room, &participant)?;
    s.sfu.add_ice_candidate(&k.0, &k.1, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn events(
    State(s): State<AppState>,
    Path((room, participant)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let k = key(&room, &participant)?;
    let stream = s.events.lock().await.get(&k).cloned();
    let Some(stream) = stream else {
        return Err(Error::UnknownParticipant {
            room: k.0,
            participant: k.1,
        }
        .into());
    };
    let mut stream = stream.lock().await;
    let mut out: Vec<SfuEvent> = Vec::new();
    match tokio::time::timeout(Duration::from_secs(20), stream.recv()).await {
        Ok(Some(first)) => out.push(first),
        Ok(None) => {
            drop(stream);
            s.events.lock().await.remove(&k);
            return Ok(StatusCode::GONE.into_response());
        }
        Err(_) => {}
    }
    while out.len() < 256 {
        match stream.try_recv() {
            Some(e) => out.push(e),
            None => break,
        }
    }
    Ok(Json(out).into_response())
}
