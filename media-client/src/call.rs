//! The async driver of a [`Session`]: owns the signaling connection, feeds
//! the session its messages and deadlines, and sends what it returns.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hush_e2ee::{Config, Identity, Millis};
use hush_signaling::ClientMessage;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Error;
use crate::session::{CallEvent, Session};
use crate::signal::Signaling;

/// Where and how to join.
#[derive(Debug, Clone)]
pub struct JoinSpec {
    /// Signaling server URL, e.g. `ws://127.0.0.1:7880`.
    pub server: String,
    /// Room id.
    pub room: String,
    /// Display name (must match the token).
    pub name: String,
    /// Join token.
    pub token: String,
}

enum Command {
    Send(ClientMessage),
    Leave,
}

/// A running call: the session, shared with the driver task.
pub struct Call {
    session: Arc<Mutex<Session>>,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<Result<(), Error>>,
}

impl core::fmt::Debug for Call {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Call")
    }
}

/// The current time for the e2ee layer.
pub fn now() -> Millis {
    Millis::now_unix()
}

impl Call {
    /// Connects, sends the join, and starts the driver. Events other than
    /// outgoing messages (frames, members, warnings) arrive on the returned
    /// channel.
    pub async fn start(
        spec: &JoinSpec,
        identity: Identity,
        config: Config,
    ) -> Result<(Self, mpsc::UnboundedReceiver<CallEvent>), Error> {
        let mut sig = Signaling::connect(&spec.server).await?;
        let (session, join) =
            Session::new(identity, &spec.room, &spec.name, &spec.token, now(), config)?;
        sig.send(&join).await?;
        let session = Arc::new(Mutex::new(session));
        let (commands, command_rx) = mpsc::channel(64);
        let (events_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(sig, Arc::clone(&session), command_rx, events_tx));
        Ok((
            Self {
                session,
                commands,
                task,
            },
            events,
        ))
    }

    /// The session, for sealing and opening frames and reading state.
    pub fn session(&self) -> MutexGuard<'_, Session> {
        // A panic while holding the lock is a bug in this crate; recover the state anyway.
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A shared handle to the session (for media tasks).
    pub fn session_handle(&self) -> Arc<Mutex<Session>> {
        Arc::clone(&self.session)
    }

    /// Sends a message to the server (SDP, ICE).
    pub async fn send(&self, msg: ClientMessage) -> Result<(), Error> {
        self.commands
            .send(Command::Send(msg))
            .await
            .map_err(|_| Error::Signaling("call ended".into()))
    }

    /// Leaves the room and waits for the driver to finish.
    pub async fn leave(self) -> Result<(), Error> {
        let _ = self.commands.send(Command::Leave).await;
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(Error::Signaling(format!("driver task failed: {e}"))),
        }
    }

    /// Drops the connection without a `leave` (an abrupt departure).
    pub fn abort(self) {
        self.task.abort();
    }
}

async fn drive(
    mut sig: Signaling,
    session: Arc<Mutex<Session>>,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<CallEvent>,
) -> Result<(), Error> {
    let lock = |s: &Arc<Mutex<Session>>| -> Vec<CallEvent> {
        let mut g = s.lock().unwrap_or_else(|p| p.into_inner());
        g.handle_timeout(now())
    };
    loop {
        let wait = {
            let g = session.lock().unwrap_or_else(|p| p.into_inner());
            g.next_timeout()
                .map(|t| Duration::from_millis(t.0.saturating_sub(now().0)))
                .unwrap_or(Duration::from_secs(3600))
        };
        let out: Vec<CallEvent> = tokio::select! {
            msg = sig.recv() => match msg {
                Some(Ok(m)) => {
                    let mut g = session.lock().unwrap_or_else(|p| p.into_inner());
                    g.handle_server(m, now())
                }
                Some(Err(e)) => vec![CallEvent::Warning(e.to_string())],
                None => {
                    let _ = events.send(CallEvent::ServerError("connection closed".into()));
                    return Ok(());
                }
            },
            cmd = commands.recv() => match cmd {
                Some(Command::Send(m)) => vec![CallEvent::Send(m)],
                Some(Command::Leave) | None => {
                    let _ = sig.send(&ClientMessage::Leave).await;
                    sig.close().await;
                    return Ok(());
                }
            },
            () = tokio::time::sleep(wait) => lock(&session),
        };
        for e in out {
            match e {
                CallEvent::Send(m) => sig.send(&m).await?,
                other => {
                    // The application may have stopped listening; the call goes on.
                    let _ = events.send(other);
                }
            }
        }
    }
}
