//! Fault injection for the RTSP side: a hostile RTSP server ([`HostileRtsp`]). camsim's own
//! faults (`--corrupt`, `--scale`) are started with [`crate::Camsim::start_logged`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a [`HostileRtsp`] server misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hostility {
    /// Closes every connection right after accepting it.
    CloseOnAccept,
    /// Answers OPTIONS properly, then closes halfway through its answer to DESCRIBE.
    CloseMidHandshake,
    /// Answers the first request with garbage bytes.
    Garbage,
    /// Answers DESCRIBE with a well-formed RTSP response whose SDP is nonsense.
    NonsenseSdp,
}

/// The body of a [`Hostility::NonsenseSdp`] answer.
pub const NONSENSE_SDP: &str = "this is not a session description\r\nm=video banana RTP/AVP 96\r\n";

/// Longest a hostile server keeps one connection open.
const CONNECTION_LIMIT: Duration = Duration::from_secs(10);
/// Largest request it reads.
const REQUEST_LIMIT: usize = 64 * 1024;

/// A misbehaving RTSP server on `127.0.0.1:<free port>`, running on its own thread until
/// dropped. Every connection is closed within [`CONNECTION_LIMIT`].
pub struct HostileRtsp {
    pub port: u16,
    pub mode: Hostility,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostileRtsp {
    pub fn start(mode: Hostility) -> Result<HostileRtsp> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (count, log) = (connections.clone(), requests.clone());
        let thread = std::thread::Builder::new().name(format!("hostile-rtsp-{port}")).spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            count.fetch_add(1, Ordering::SeqCst);
                            let log = log.clone();
                            tokio::spawn(async move {
                                let _ = tokio::time::timeout(CONNECTION_LIMIT, serve(stream, mode, log)).await;
                            });
                        }
                    }
                }
            });
            // dropping the runtime here cancels the connections still open
        })?;
        Ok(HostileRtsp { port, mode, connections, requests, stop: Some(stop), thread: Some(thread) })
    }

    /// `rtsp://127.0.0.1:PORT/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{path}", self.port)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The request lines received so far (e.g. `DESCRIBE rtsp://… RTSP/1.0`).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for HostileRtsp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Plays `mode` on one connection.
async fn serve(mut stream: TcpStream, mode: Hostility, log: Arc<Mutex<Vec<String>>>) -> std::io::Result<()> {
    if mode == Hostility::CloseOnAccept {
        return Ok(());
    }
    let mut buf = Vec::new();
    while let Some((line, cseq)) = read_request(&mut stream, &mut buf).await? {
        log.lock().unwrap().push(line.clone());
        let method = line.split_whitespace().next().unwrap_or_default().to_owned();
        let url = line.split_whitespace().nth(1).unwrap_or("rtsp://127.0.0.1/").to_owned();
        match (mode, method.as_str()) {
            (Hostility::Garbage, _) => {
                stream.write_all(&garbage(4096)).await?;
                stream.flush().await?;
                // leave it to the client to give up (bounded by CONNECTION_LIMIT)
                let mut sink = [0u8; 1024];
                while stream.read(&mut sink).await? > 0 {}
                return Ok(());
            }
            (_, "OPTIONS") => {
                let answer = format!(
                    "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n\r\n"
                );
                stream.write_all(answer.as_bytes()).await?;
            }
            (Hostility::CloseMidHandshake, "DESCRIBE") => {
                // promises 400 bytes of SDP, sends a few, hangs up
                let partial = format!(
                    "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Base: {url}/\r\nContent-Type: application/sdp\r\n\
                     Content-Length: 400\r\n\r\nv=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=half\r\n"
                );
                stream.write_all(partial.as_bytes()).await?;
                stream.flush().await?;
                return Ok(());
            }
            (Hostility::NonsenseSdp, "DESCRIBE") => {
                let answer = format!(
                    "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Base: {url}/\r\nContent-Type: application/sdp\r\n\
                     Content-Length: {}\r\n\r\n{NONSENSE_SDP}",
                    NONSENSE_SDP.len()
                );
                stream.write_all(answer.as_bytes()).await?;
            }
            _ => {
                let answer = format!("RTSP/1.0 455 Method Not Valid in This State\r\nCSeq: {cseq}\r\n\r\n");
                stream.write_all(answer.as_bytes()).await?;
            }
        }
    }
    Ok(())
}

/// Reads one request (head and body); returns its request line and CSeq, or `None` at EOF.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<(String, String)>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let header = |name: &str| {
                head.lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_owned())
            };
            let body = header("Content-Length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
            if buf.len() >= end + 4 + body {
                let cseq = header("CSeq").unwrap_or_else(|| "0".into());
                let line = head.lines().next().unwrap_or_default().to_owned();
                buf.drain(..end + 4 + body);
                return Ok(Some((line, cseq)));
            }
        }
        if buf.len() > REQUEST_LIMIT {
            return Ok(None);
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Deterministic bytes that are neither RTSP nor interleaved data (`$`).
fn garbage(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    out[0] = 0xff;
    out
}
