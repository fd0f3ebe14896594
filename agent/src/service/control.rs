//! The control socket: one JSON request per line, one JSON response per
//! line, over a unix socket only root can open (mode 0600, and the peer's
//! uid from SO_PEERCRED must be 0). The daemon answers requests from its
//! own loop, so handlers see consistent state without locks.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::accept::{accept_loop, AcceptError, Gate};

/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot reach the agent at {path}: {source} (is `vigil run` running, and are you root?)"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad answer from the agent: {0}")]
    Protocol(String),
    #[error("{0}")]
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Alerts {
        #[serde(default)]
        follow: bool,
    },
    Approvals,
    Incidents,
    Approve {
        id: String,
    },
    Deny {
        id: String,
    },
    Rollback {
        incident: String,
    },
    Reload,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

impl Response {
    pub fn ok(data: serde_json::Value) -> Response {
        Response {
            ok: true,
            data,
            error: String::new(),
        }
    }

    pub fn err(e: impl ToString) -> Response {
        Response {
            ok: false,
            data: serde_json::Value::Null,
            error: e.to_string(),
        }
    }

    fn line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default() + "\n"
    }
}

/// A request handed to the daemon's loop, with the caller's uid.
pub struct Call {
    pub request: Request,
    pub uid: u32,
    pub reply: oneshot::Sender<Response>,
}

/// Binds the socket (replacing a stale one) with mode 0600.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    // Created 0600 from the start: no window where others could connect.
    // SAFETY: umask only changes this process's file creation mask.
    let old = unsafe { libc::umask(0o177) };
    let l = tokio::net::UnixListener::bind(path);
    // SAFETY: as above; restores the previous mask.
    unsafe { libc::umask(old) };
    let l = l.map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(l)
}

/// Serves connections forever, at most `gate`'s cap at once (the excess is
/// told so and closed); each read and each write is bounded by its timeout,
/// so an idle or one-byte-a-second client is cut, while an `alerts
/// --follow` stream lives as long as its reader keeps up.
pub async fn serve(
    listener: tokio::net::UnixListener,
    calls: mpsc::Sender<Call>,
    alerts: broadcast::Sender<Arc<str>>,
    gate: Gate,
) {
    let busy = concat!(
        r#"{"ok":false,"error":"the agent is serving too many control connections (control.max_connections); try again"}"#,
        "\n"
    );
    let g = gate.clone();
    accept_loop(gate, listener, busy.as_bytes(), move |stream, slot| {
        let (calls, alerts, g) = (calls.clone(), alerts.clone(), g.clone());
        async move {
            let _slot = slot;
            if let Err(e) = connection(stream, calls, alerts, &g).await {
                tracing::debug!("control connection: {e}");
            }
        }
    })
    .await;
}

async fn connection(
    stream: tokio::net::UnixStream,
    calls: mpsc::Sender<Call>,
    alerts: broadcast::Sender<Arc<str>>,
    gate: &Gate,
) -> Result<(), AcceptError> {
    let uid = stream.peer_cred()?.uid();
    let (r, mut w) = stream.into_split();
    if uid != 0 {
        tracing::warn!("control socket: refused a request from uid {uid} (root only)");
        let resp = Response::err("the vigil control socket is root-only");
        return gate.io(w.write_all(resp.line().as_bytes())).await;
    }
    let mut reader = tokio::io::BufReader::new(r.take(MAX_REQUEST as u64));
    let mut line = String::new();
    gate.io(reader.read_line(&mut line)).await?;
    let request: Request = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => {
            let resp = Response::err(format!("bad request: {e}"));
            return gate.io(w.write_all(resp.line().as_bytes())).await;
        }
    };
    let follow = matches!(request, Request::Alerts { follow: true });
    // Subscribe before asking, so nothing falls between the answer and the stream.
    let mut sub = follow.then(|| alerts.subscribe());
    let (tx, rx) = oneshot::channel();
    let call = Call {
        request,
        uid,
        reply: tx,
    };
    if calls.send(call).await.is_err() {
        let resp = Response::err("agent is shutting down");
        return gate.io(w.write_all(resp.line().as_bytes())).await;
    }
    let resp = rx
        .await
        .unwrap_or_else(|_| Response::err("agent dropped the request"));
    gate.io(w.write_all(resp.line().as_bytes())).await?;
    if let Some(sub) = sub.as_mut() {
        loop {
            // Each write has its own timeout, not the stream as a whole.
            match sub.recv().await {
                Ok(alert) => {
                    let line = format!("{alert}\n");
                    gate.io(w.write_all(line.as_bytes())).await?;
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let note = serde_json::json!({"kind": "lagged", "missed_alerts": n});
                    gate.io(w.write_all(format!("{note}\n").as_bytes())).await?;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }
    Ok(())
}

fn connect(path: &Path) -> Result<std::os::unix::net::UnixStream, ControlError> {
    std::os::unix::net::UnixStream::connect(path).map_err(|source| ControlError::Connect {
        path: path.to_path_buf(),
        source,
    })
}

/// Sends one request and returns the response's data, or its error. The
/// agent may answer a refused peer and close before reading the request, so
/// the answer is read even when the write failed: it says why.
pub fn request(path: &Path, req: &Request) -> Result<serde_json::Value, ControlError> {
    let mut s = connect(path)?;
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut line = serde_json::to_string(req).map_err(|e| ControlError::Protocol(e.to_string()))?;
    line.push('\n');
    let sent = s.write_all(line.as_bytes());
    let mut answer = String::new();
    let read = BufReader::new(&s).read_line(&mut answer);
    match (sent, read) {
        (_, Ok(n)) if n > 0 => parse_response(&answer),
        (Err(e), _) => Err(io(e)),
        (Ok(()), Err(e)) => Err(io(e)),
        (Ok(()), Ok(_)) => parse_response(&answer),
    }
}

fn parse_response(line: &str) -> Result<serde_json::Value, ControlError> {
    let r: Response = serde_json::from_str(line.trim())
        .map_err(|e| ControlError::Protocol(format!("{e}: {line:?}")))?;
    if r.ok {
        Ok(r.data)
    } else {
        Err(ControlError::Refused(r.error))
    }
}

/// `alerts --follow`: the recent alerts, then each new one as it comes.
pub fn follow(path: &Path, mut each: impl FnMut(&serde_json::Value)) -> Result<(), ControlError> {
    let mut s = connect(path)?;
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    // The agent may answer a refused peer and close before reading the
    // request: its answer, not the broken pipe, is what to report.
    let sent = s.write_all(b"{\"cmd\":\"alerts\",\"follow\":true}\n");
    let mut lines = BufReader::new(s).lines();
    let first = match (lines.next(), sent) {
        (Some(Ok(l)), _) => l,
        (_, Err(e)) => return Err(io(e)),
        (Some(Err(e)), Ok(())) => return Err(io(e)),
        (None, Ok(())) => return Err(ControlError::Protocol("connection closed".into())),
    };
    for a in parse_response(&first)?.as_array().into_iter().flatten() {
        each(a);
    }
    for line in lines {
        let line = line.map_err(io)?;
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            each(&v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_json_lines() {
        let r = Request::Approve { id: "apr-1".into() };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"cmd":"approve","id":"apr-1"}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        let a: Request = serde_json::from_str(r#"{"cmd":"alerts"}"#).unwrap();
        assert_eq!(a, Request::Alerts { follow: false });
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"format_disk"}"#).is_err());
    }

    #[test]
    fn error_responses_become_errors() {
        let e = parse_response(r#"{"ok":false,"error":"no pending approval x"}"#).unwrap_err();
        assert_eq!(e.to_string(), "no pending approval x");
        assert_eq!(
            parse_response(r#"{"ok":true,"data":[1]}"#).unwrap(),
            serde_json::json!([1])
        );
    }
}
