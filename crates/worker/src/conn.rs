//! Time limits for every HTTP connection Ignis serves: the API server,
//! worker hosts and each sandbox's Runtime API (HTTP/1.1), and cache nodes
//! (HTTP/1.1 or HTTP/2 on the same port, [`Protocols`]).
//!
//! A connection is in one of three states, and each has its limit
//! ([`Limits`]):
//!
//! - **idle**: nothing in flight and no byte of the next request yet. It is
//!   closed once [`Limits::idle`] passes with neither a byte read nor a byte of
//!   the last response written (so a client that stops reading a response is
//!   closed as well).
//! - **reading headers**: the first byte of a request came; its headers must
//!   be complete within [`Limits::headers`] of it.
//! - **in flight**: the handler has the request (from its headers until its
//!   answer's body ended: a body streamed after the handler returned, as an
//!   `InvokeWithResponseStream`'s, is still in flight). No connection limit
//!   applies: computing the answer may take as long as it takes (an
//!   invocation, a Runtime API `GET /runtime/invocation/next` parked while its
//!   sandbox is idle); a streamed body is bounded by its producer. The
//!   body is read through [`TimedBody`], which fails once the handler has
//!   waited [`Limits::body`] for its next piece; the handler then answers, and
//!   the connection, whose request was not read to its end, is closed.
//!
//! Under HTTP/2 the states are the connection's as well: it is in flight while
//! any of its streams is (each request counts, as it does under HTTP/1.1), and
//! idle when none is. Any byte read while idle starts the headers limit, a
//! control frame (PING, SETTINGS) included: a connection that only sends those
//! is closed once it passes. A body that stops fails its own stream only.
//!
//! [`deadline`] is the decision, pure; [`serve_connection`] is the IO: the
//! socket wrapped to note reads and writes, the handler wrapped to count what
//! is in flight, and a watchdog beside the connection that drops it (closing
//! the socket) when the deadline passes. The connection's task polls itself
//! again when it wakes itself ([`Repolled`]) rather than wake another worker
//! thread for that.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// How long a client may take, per connection state (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From a request's first byte until its headers are complete.
    pub headers: Duration,
    /// Between two pieces of a request's body, while the handler waits for it.
    pub body: Duration,
    /// A kept-alive connection with nothing in flight: no byte read or written.
    pub idle: Duration,
}

impl Default for Limits {
    /// 30 s for headers and for each stretch of a body, 75 s idle (nginx's
    /// `client_header_timeout`/`client_body_timeout` are 60 s, its
    /// `keepalive_timeout` 75 s; hyper's header timeout is 30 s).
    fn default() -> Self {
        Limits { headers: Duration::from_secs(30), body: Duration::from_secs(30), idle: Duration::from_secs(75) }
    }
}

/// The shortest idle limit: Ignis's own clients use a kept connection again
/// only within 1 s of its last answer, so that the other side never closes it
/// while a request is on its way.
pub const MIN_IDLE: Duration = Duration::from_secs(2);

impl Limits {
    /// Limits of these many seconds each; refuses 0, and an idle limit under [`MIN_IDLE`].
    pub fn from_secs(headers: u64, body: u64, idle: u64) -> Result<Limits, String> {
        for (name, value) in [("header", headers), ("body", body)] {
            if value == 0 {
                return Err(format!("the {name} timeout must be at least 1 second"));
            }
        }
        if idle < MIN_IDLE.as_secs() {
            return Err(format!("the idle timeout must be at least {} seconds", MIN_IDLE.as_secs()));
        }
        Ok(Limits { headers: Duration::from_secs(headers), body: Duration::from_secs(body), idle: Duration::from_secs(idle) })
    }
}

/// What a connection has done lately, as the watchdog sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// Requests handed to the handler whose answer is not ready yet.
    pub in_flight: usize,
    /// When the connection was accepted or `in_flight` last became 0.
    pub idle_since: Instant,
    /// The first byte read since `idle_since` while nothing was in flight.
    pub first_byte: Option<Instant>,
    /// The last write that made progress (a response going out).
    pub last_write: Option<Instant>,
}

/// When the connection is to be closed, if nothing changes meanwhile; `None`
/// while a request is in flight.
pub fn deadline(activity: &Activity, limits: &Limits) -> Option<Instant> {
    if activity.in_flight > 0 {
        return None;
    }
    let quiet_since = activity.last_write.map_or(activity.idle_since, |w| w.max(activity.idle_since));
    let idle = quiet_since + limits.idle;
    Some(match activity.first_byte {
        // Headers started: their own limit, unless a response is still going out.
        Some(first) => (first + limits.headers).max(activity.last_write.map_or(first, |w| w + limits.idle)),
        None => idle,
    })
}

/// The connection's shared record, written by the socket wrapper and the
/// handler wrapper, read by the watchdog. One mutex, short sections, never
/// held across an await.
struct Watch {
    activity: Mutex<Activity>,
    /// Woken when the deadline may have moved earlier or appeared.
    changed: Notify,
}

impl Watch {
    fn update(&self, change: impl FnOnce(&mut Activity) -> bool) {
        let wake = change(&mut self.activity.lock().unwrap_or_else(|e| e.into_inner()));
        if wake {
            self.changed.notify_one();
        }
    }
}

/// The socket, noting reads and writes that made progress.
struct Watched<S> {
    inner: S,
    watch: Arc<Watch>,
    /// The socket, acknowledged at once before every read (`TCP_QUICKACK`, which Linux does not keep on its own):
    /// a client that writes a body in small pieces (a runtime streaming its response, with Nagle's algorithm on, as
    /// hyper's client has it) would otherwise hold each piece until our delayed ACK, 40 ms later.
    quickack: Option<std::os::fd::RawFd>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if let Some(fd) = self.quickack {
            let on: libc::c_int = 1;
            // SAFETY: `fd` is the socket `inner` owns, open while `self` lives; the option's value is a c_int that
            // outlives the call. A failure only leaves delayed ACKs on.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_QUICKACK,
                    (&raw const on).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.watch.update(|a| {
                if a.in_flight == 0 && a.first_byte.is_none() {
                    a.first_byte = Some(Instant::now());
                    return true;
                }
                false
            });
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.note_write();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.note_write();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> Watched<S> {
    fn note_write(&self) {
        self.watch.update(|a| {
            a.last_write = Some(Instant::now());
            false
        });
    }
}

/// Counts a request as in flight while it lives.
struct InFlight(Arc<Watch>);

impl InFlight {
    fn new(watch: Arc<Watch>) -> InFlight {
        watch.update(|a| {
            a.in_flight += 1;
            false
        });
        InFlight(watch)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.update(|a| {
            a.in_flight -= 1;
            if a.in_flight == 0 {
                a.idle_since = Instant::now();
                a.first_byte = None;
                return true;
            }
            false
        });
    }
}

/// A response body that keeps its request counted in flight until it ended (or hyper dropped it).
struct Counted<B> {
    inner: B,
    in_flight: Option<InFlight>,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.in_flight = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body whose pieces come through a bounded channel as they are made: the sender waits while the
/// connection's reader does not keep up. It ends when the sender is dropped.
pub struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl ChannelBody {
    pub fn new(pieces: tokio::sync::mpsc::Receiver<Bytes>) -> ChannelBody {
        ChannelBody(pieces)
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|piece| piece.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// The body stopped for longer than [`Limits::body`].
#[derive(Debug)]
pub struct BodyTimeout(Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no part of the request body arrived for {} s", self.0.as_secs())
    }
}

impl std::error::Error for BodyTimeout {}

/// Whether a body error (possibly boxed by `Limited`) is a [`BodyTimeout`].
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    error.is::<BodyTimeout>()
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body that fails with [`BodyTimeout`] when its reader has waited
/// `limit` for the next frame.
pub struct TimedBody {
    inner: Incoming,
    limit: Duration,
    waiting: Option<Pin<Box<Sleep>>>,
}

impl TimedBody {
    /// The same body, failing once its reader has waited `limit` (not the connection's) for the next frame: for a
    /// body that may pause longer, whose producer is bounded otherwise (a streamed response, by its function's
    /// timeout).
    pub fn with_limit(self, limit: Duration) -> TimedBody {
        TimedBody { limit, waiting: None, ..self }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = None;
                Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
            }
            Poll::Pending => {
                let limit = this.limit;
                let sleep = this.waiting.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(limit))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Which protocols a connection may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/1.1, or HTTP/2 with prior knowledge (cleartext h2c, no upgrade): the first bytes decide.
    Http1AndHttp2,
}

/// The largest HTTP/2 frame a connection takes (`SETTINGS_MAX_FRAME_SIZE`): a cache node's stripe in one frame
/// or a few, not in 16 KiB ones (hyper's default).
const MAX_FRAME: u32 = 1 << 20;

/// Serves one keep-alive connection with `handle` under `limits`, in one of
/// `protocols`, until the client closes it or a limit closes it. Answers are
/// whole bodies (`Full`) or streamed ones; a request counts as in flight until
/// its answer's body ended.
pub async fn serve_connection<H, F, B>(stream: tokio::net::TcpStream, limits: Limits, protocols: Protocols, handle: H)
where
    H: Fn(Request<TimedBody>) -> F + Send + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let _ = stream.set_nodelay(true);
    let quickack = Some(std::os::fd::AsRawFd::as_raw_fd(&stream));
    let watch = Arc::new(Watch {
        activity: Mutex::new(Activity { in_flight: 0, idle_since: Instant::now(), first_byte: None, last_write: None }),
        changed: Notify::new(),
    });
    let io = TokioIo::new(Watched { inner: stream, watch: watch.clone(), quickack });
    let counting = watch.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let in_flight = InFlight::new(counting.clone());
        let request = request.map(|inner| TimedBody { inner, limit: limits.body, waiting: None });
        let answer = handle(request);
        async move {
            let answer = answer.await;
            Ok::<_, Infallible>(answer.map(|inner| Counted { inner, in_flight: Some(in_flight) }))
        }
    });
    // hyper's own header timeout would run from the start of an idle period: the watchdog has both.
    let connection: Pin<Box<dyn Future<Output = ()> + Send>> = match protocols {
        Protocols::Http1 => Box::pin(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.keep_alive(true).header_read_timeout(None);
            let _ = builder.serve_connection(io, service).await;
        }),
        Protocols::Http1AndHttp2 => Box::pin(async move {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().keep_alive(true).header_read_timeout(None);
            builder.http2().max_frame_size(MAX_FRAME);
            let _ = builder.serve_connection(io, service).await;
        }),
    };
    let served = async {
        tokio::select! {
            () = connection => {}
            () = watchdog(&watch, &limits) => {}
        }
    };
    Repolled::new(served).await;
}

/// A future polled again at once when it wakes itself while being polled, up to [`REPOLLS`] times in a
/// row. A tokio task woken from within its own poll is put at the back of its worker's queue, and another worker
/// thread is woken to take it: a connection's task wakes itself once or twice a request (hyper's request body
/// asks for the body it then reads, the watchdog hears of the request it polls beside), and on a small machine
/// the thread woken for nothing costs more than the request's own work.
struct Repolled<F> {
    inner: Pin<Box<F>>,
    waker: Arc<Rewake>,
}

/// The waker a [`Repolled`] future's inner future gets: a wake while it is polled is noted, any other goes to the
/// task's own waker.
struct Rewake {
    state: AtomicU8,
    task: Mutex<Option<std::task::Waker>>,
}

/// [`Rewake::state`]s.
const IDLE: u8 = 0;
const POLLING: u8 = 1;
const WOKEN: u8 = 2;

/// At most this many polls of a [`Repolled`] future in a row; then its task is woken and yields, as any other would.
const REPOLLS: usize = 8;

impl<F: Future> Repolled<F> {
    fn new(inner: F) -> Repolled<F> {
        let waker = Arc::new(Rewake { state: AtomicU8::new(IDLE), task: Mutex::new(None) });
        Repolled { inner: Box::pin(inner), waker }
    }
}

impl<F: Future> Future for Repolled<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        {
            let mut task = self.waker.task.lock().unwrap_or_else(|e| e.into_inner());
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        let waker = std::task::Waker::from(self.waker.clone());
        let mut inner_cx = Context::from_waker(&waker);
        for _ in 0..REPOLLS {
            self.waker.state.store(POLLING, Release);
            if let Poll::Ready(out) = self.inner.as_mut().poll(&mut inner_cx) {
                self.waker.state.store(IDLE, Release);
                return Poll::Ready(out);
            }
            // Not woken meanwhile: wait for the next wake. Woken: poll again.
            if self.waker.state.compare_exchange(POLLING, IDLE, AcqRel, Acquire).is_ok() {
                return Poll::Pending;
            }
        }
        self.waker.state.store(IDLE, Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl std::task::Wake for Rewake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self.state.compare_exchange(POLLING, WOKEN, AcqRel, Acquire) {
            // The poll in progress sees it and polls again.
            Ok(_) | Err(WOKEN) => {}
            Err(_) => {
                if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                    task.wake_by_ref();
                }
            }
        }
    }
}

/// Completes when the connection's deadline passes.
async fn watchdog(watch: &Watch, limits: &Limits) {
    loop {
        let next = deadline(&watch.activity.lock().unwrap_or_else(|e| e.into_inner()), limits);
        match next {
            None => watch.changed.notified().await,
            Some(at) if at <= Instant::now() => return,
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = watch.changed.notified() => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits =
        Limits { headers: Duration::from_secs(30), body: Duration::from_secs(30), idle: Duration::from_secs(75) };

    fn check(in_flight: usize, first_byte: Option<u64>, last_write: Option<u64>, expected: Option<u64>) {
        let base = Instant::now();
        let at = |s: u64| base + Duration::from_secs(s);
        let activity = Activity { in_flight, idle_since: at(100), first_byte: first_byte.map(at), last_write: last_write.map(at) };
        assert_eq!(deadline(&activity, &LIMITS), expected.map(at), "{activity:?}");
    }

    #[test]
    fn deadlines() {
        // In flight: none, whatever else happened.
        for first in [None, Some(100), Some(150)] {
            for write in [None, Some(90), Some(120)] {
                check(1, first, write, None);
                check(3, first, write, None);
            }
        }
        // Idle: from the later of going idle and the last write.
        check(0, None, None, Some(175));
        check(0, None, Some(90), Some(175));
        check(0, None, Some(110), Some(185));
        // Headers started: their own limit from the first byte...
        check(0, Some(101), None, Some(131));
        check(0, Some(140), Some(90), Some(170));
        // ...unless a response still goes out.
        check(0, Some(101), Some(120), Some(195));
    }

    #[test]
    fn limits_refuse_zero() {
        assert!(Limits::from_secs(0, 1, 1).is_err());
        assert!(Limits::from_secs(1, 0, 1).is_err());
        assert!(Limits::from_secs(1, 1, 0).is_err());
        assert!(Limits::from_secs(1, 1, 1).is_err());
        assert_eq!(
            Limits::from_secs(1, 2, 3),
            Ok(Limits { headers: Duration::from_secs(1), body: Duration::from_secs(2), idle: Duration::from_secs(3) })
        );
    }

    /// Counts the wakes of the task polling a [`Repolled`].
    struct Counting(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_future_that_wakes_itself_is_polled_again_at_once_and_other_wakes_reach_the_task() {
        let task = Arc::new(Counting(std::sync::atomic::AtomicUsize::new(0)));
        let waker = std::task::Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        let woken = || task.0.load(std::sync::atomic::Ordering::SeqCst);
        for wakes in 0..=REPOLLS + 2 {
            // Wakes itself `wakes` times, then waits for a wake from elsewhere, then ends.
            let (mut polls, elsewhere) = (0, Arc::new(Mutex::new(None::<std::task::Waker>)));
            let kept = elsewhere.clone();
            let mut repolled = Box::pin(Repolled::new(std::future::poll_fn(move |cx| {
                polls += 1;
                if polls <= wakes {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                if polls == wakes + 1 {
                    *kept.lock().expect("lock") = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Poll::Ready(polls)
            })));
            let before = woken();
            let mut outer_polls = 1;
            while repolled.as_mut().poll(&mut cx).is_pending() && elsewhere.lock().expect("lock").is_none() {
                // Only after REPOLLS polls in a row does it yield, waking its task.
                assert_eq!(woken(), before + outer_polls, "{wakes} wakes");
                outer_polls += 1;
            }
            assert_eq!(outer_polls, 1 + wakes / REPOLLS, "{wakes} wakes");
            let woken_by_itself = woken();
            // A wake from elsewhere, while it is not polled, reaches the task; then it ends.
            elsewhere.lock().expect("lock").take().expect("waiting").wake();
            assert_eq!(woken(), woken_by_itself + 1);
            assert_eq!(repolled.as_mut().poll(&mut cx), Poll::Ready(wakes + 2));
        }
    }
}
