//! RTSP ingest with `retina`: DESCRIBE/SETUP/PLAY of the first H.264 or H.265 video stream,
//! access units in Annex B form with parameter sets in-band (ready for a GStreamer parser).

use std::time::Duration;

use futures::StreamExt;
use retina::client::{
    Credentials, Demuxed, PlayOptions, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
    UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use url::Url;

use crate::config::RtspTransport;
use crate::decode::Codec;

#[derive(Debug, thiserror::Error)]
pub enum RtspError {
    #[error("{url}: cannot connect: {detail}")]
    Connect { url: String, detail: String },
    #[error("{url}: no H.264/H.265 video stream (streams: {found})")]
    NoVideo { url: String, found: String },
    #[error("{url}: no frame for {secs:.1} s")]
    Silence { url: String, secs: f64 },
    #[error("{url}: stream ended")]
    Ended { url: String },
    #[error("{url}: {detail}")]
    Stream { url: String, detail: String },
}

/// An RTSP URL with any password removed, for logs and errors.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    u.to_string()
}

/// The user name and password of `rtsp://user:pass@host/…`, percent-decoded (a password with
/// `@`, `:` or `/` is written `%40`, `%3A`, `%2F` in the URL).
fn credentials(url: &Url) -> Option<Credentials> {
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    (!url.username().is_empty())
        .then(|| Credentials { username: decode(url.username()), password: decode(url.password().unwrap_or_default()) })
}

/// A playing RTSP video stream.
pub struct RtspStream {
    pub url: String,
    pub demuxed: Demuxed,
    pub stream: usize,
    pub codec: Codec,
}

/// What `edge-agent probe` reports.
#[derive(Debug, Default)]
pub struct StreamInfo {
    pub codec: String,
    pub rfc6381: Option<String>,
    pub resolution: Option<(u32, u32)>,
    pub fps: Option<f64>,
}

/// Connects and starts playing the first H.264/H.265 video stream.
pub async fn connect(url: &Url, transport: RtspTransport, timeout: Duration) -> Result<RtspStream, RtspError> {
    let shown = redact(url);
    let connect_err = |detail: String| RtspError::Connect { url: shown.clone(), detail };
    let mut bare = url.clone();
    let creds = credentials(url);
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    let options =
        SessionOptions::default().creds(creds).user_agent(format!("sightline-edge/{}", env!("CARGO_PKG_VERSION")));
    let work = async {
        let mut session =
            retina::client::Session::describe(bare, options).await.map_err(|e| connect_err(e.to_string()))?;
        let found: Vec<String> =
            session.streams().iter().map(|s| format!("{}/{}", s.media(), s.encoding_name())).collect();
        let (stream, codec) = session
            .streams()
            .iter()
            .enumerate()
            .find_map(|(i, s)| match (s.media(), s.encoding_name()) {
                ("video", "h264") => Some((i, Codec::H264)),
                ("video", "h265") => Some((i, Codec::H265)),
                _ => None,
            })
            .ok_or_else(|| RtspError::NoVideo { url: shown.clone(), found: found.join(", ") })?;
        let transport = match transport {
            RtspTransport::Tcp => Transport::Tcp(TcpTransportOptions::default()),
            RtspTransport::Udp => Transport::Udp(UdpTransportOptions::default()),
        };
        session
            .setup(stream, SetupOptions::default().transport(transport).frame_format(FrameFormat::SIMPLE))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let demuxed = session
            .play(PlayOptions::default())
            .await
            .map_err(|e| connect_err(e.to_string()))?
            .demuxed()
            .map_err(|e| connect_err(e.to_string()))?;
        Ok(RtspStream { url: shown.clone(), demuxed, stream, codec })
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| connect_err(format!("no answer within {timeout:?}")))?
}

impl RtspStream {
    /// The next video access unit of our stream: `(pts in ns, Annex B data, new parameters?)`.
    pub async fn next_frame(&mut self, silence: Duration) -> Result<(u64, Vec<u8>), RtspError> {
        loop {
            let item = tokio::time::timeout(silence, self.demuxed.next())
                .await
                .map_err(|_| RtspError::Silence { url: self.url.clone(), secs: silence.as_secs_f64() })?;
            match item {
                None => return Err(RtspError::Ended { url: self.url.clone() }),
                Some(Err(e)) => return Err(RtspError::Stream { url: self.url.clone(), detail: e.to_string() }),
                Some(Ok(CodecItem::VideoFrame(f))) if f.stream_id() == self.stream => {
                    let ts = f.timestamp();
                    let pts = (ts.elapsed().max(0) as i128 * 1_000_000_000 / ts.clock_rate().get() as i128) as u64;
                    return Ok((pts, f.into_data()));
                }
                Some(Ok(_)) => {}
            }
        }
    }

    pub fn info(&self) -> StreamInfo {
        let mut info = StreamInfo { codec: self.codec.name().to_owned(), ..Default::default() };
        if let Some(ParametersRef::Video(v)) = self.demuxed.streams()[self.stream].parameters() {
            info.rfc6381 = Some(v.rfc6381_codec().to_owned());
            info.resolution = Some(v.pixel_dimensions());
            info.fps = v.frame_rate().map(|(num, den)| den as f64 / num as f64);
        }
        info
    }
}

/// `edge-agent probe`: codec, resolution and frame rate of an RTSP URL (measured over a few
/// seconds when the stream does not declare its rate).
pub async fn probe(url: &Url, transport: RtspTransport, timeout: Duration) -> Result<StreamInfo, RtspError> {
    let mut s = connect(url, transport, timeout).await?;
    let (first, _) = s.next_frame(timeout).await?;
    let mut last = first;
    let mut n = 0u32;
    let window = Duration::from_secs(2);
    let start = tokio::time::Instant::now();
    while start.elapsed() < window && n < 60 {
        let (pts, _) = s.next_frame(timeout).await?;
        last = pts;
        n += 1;
    }
    let mut info = s.info();
    if info.fps.is_none() && n > 0 && last > first {
        info.fps = Some(n as f64 * 1e9 / (last - first) as f64);
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_percent_decoded() {
        let url: Url = "rtsp://adm%40n:p%40ss%3Aw%2Fd@cam.local/stream".parse().unwrap();
        let c = credentials(&url).unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("adm@n", "p@ss:w/d"));
        assert!(credentials(&"rtsp://cam.local/stream".parse().unwrap()).is_none());
    }
}
