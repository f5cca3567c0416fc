//! Time enters Ignis's services through one [`Clock`]: wall time for what is
//! stored and shown, monotonic time for deadlines, and sleeping. The server
//! runs on [`SystemClock`]; tests hand a service a [`ManualClock`] and move
//! time with [`ManualClock::advance`], so retries, visibility timeouts,
//! keep-alive, event age and heartbeats are tested without waiting.
//!
//! Invariants of [`ManualClock`]: time moves only when `advance` is called;
//! `now` and `instant` move together, by exactly the amount advanced; a sleep
//! ends when (and only when) the time it waits for has been reached.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A boxed sleep, so that [`Clock`] is object safe.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A source of time.
pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time.
    fn now(&self) -> SystemTime;
    /// Monotonic time, for deadlines and intervals.
    fn instant(&self) -> Instant;
    /// Ends once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> Sleep;

    /// Wall-clock milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64 {
        self.now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }

    /// Ends at `deadline` (at once if it has passed).
    fn sleep_until(&self, deadline: Instant) -> Sleep {
        self.sleep(deadline.saturating_duration_since(self.instant()))
    }
}

/// How services hold their clock.
pub type SharedClock = Arc<dyn Clock>;

/// `future`, or `Err(Elapsed)` once `duration` passes on `clock` first.
pub async fn timeout<F: Future>(clock: &dyn Clock, duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    let sleep = clock.sleep(duration);
    tokio::select! {
        biased;
        out = future => Ok(out),
        () = sleep => Err(Elapsed),
    }
}

/// A [`timeout`] ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// The machine's clocks and tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that moves only when told to.
pub struct ManualClock {
    wall: SystemTime,
    start: Instant,
    /// How far time has moved since the clock was made; sleepers watch it.
    elapsed: tokio::sync::watch::Sender<Duration>,
    /// Serialises `advance` so that elapsed time only grows.
    advancing: Mutex<()>,
}

impl ManualClock {
    /// A clock standing at `wall` (wall time) and at the moment of creation (monotonic).
    pub fn new(wall: SystemTime) -> Arc<ManualClock> {
        let (elapsed, _) = tokio::sync::watch::channel(Duration::ZERO);
        Arc::new(ManualClock { wall, start: Instant::now(), elapsed, advancing: Mutex::new(()) })
    }

    /// A clock at a fixed, arbitrary date (2026-01-01T00:00:00Z).
    pub fn at_epoch_2026() -> Arc<ManualClock> {
        ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_767_225_600))
    }

    /// Moves time forward by `by`, ending every sleep whose time has come.
    pub fn advance(&self, by: Duration) {
        let _one = self.advancing.lock().unwrap_or_else(|e| e.into_inner());
        self.elapsed.send_modify(|elapsed| *elapsed += by);
    }

    /// How many sleeps are waiting on this clock now.
    pub fn sleepers(&self) -> usize {
        self.elapsed.receiver_count()
    }

    /// Waits (yielding to other tasks) until at least `n` sleeps wait on
    /// this clock: the way a test knows a task has reached its sleep before
    /// it advances time. Gives up after `tries` yields and answers whether
    /// the sleepers arrived.
    pub async fn until_sleepers(&self, n: usize, tries: usize) -> bool {
        for _ in 0..tries {
            if self.sleepers() >= n {
                return true;
            }
            tokio::task::yield_now().await;
        }
        self.sleepers() >= n
    }

    fn elapsed(&self) -> Duration {
        *self.elapsed.borrow()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.wall + self.elapsed()
    }

    fn instant(&self) -> Instant {
        self.start + self.elapsed()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let mut watch = self.elapsed.subscribe();
        let until = *watch.borrow() + duration;
        Box::pin(async move {
            while *watch.borrow_and_update() < until {
                if watch.changed().await.is_err() {
                    // The clock is gone: time will never come.
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_time_moves_only_when_advanced() {
        let clock = ManualClock::at_epoch_2026();
        let (wall, mono) = (clock.now(), clock.instant());
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now().duration_since(wall).unwrap(), Duration::from_millis(1500));
        assert_eq!(clock.instant() - mono, Duration::from_millis(1500));
        assert_eq!(clock.now_ms(), 1_767_225_601_500);
    }

    #[tokio::test]
    async fn a_sleep_ends_exactly_when_its_time_comes() {
        let clock = ManualClock::at_epoch_2026();
        let c = clock.clone();
        let (done_tx, mut done) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            c.sleep(Duration::from_secs(10)).await;
            let _ = done_tx.send(());
        });
        assert!(clock.until_sleepers(1, 1000).await);
        clock.advance(Duration::from_secs(9));
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(done.try_recv().is_err(), "woke a second early");
        clock.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(60), done).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn zero_sleeps_and_timeouts() {
        let clock = ManualClock::at_epoch_2026();
        clock.sleep(Duration::ZERO).await;
        clock.sleep_until(clock.instant()).await;
        assert_eq!(timeout(&*clock, Duration::from_secs(1), async { 7 }).await, Ok(7));
        let c = clock.clone();
        let waiting = tokio::spawn(async move { timeout(&*c, Duration::from_secs(1), std::future::pending::<()>()).await });
        assert!(clock.until_sleepers(1, 1000).await);
        clock.advance(Duration::from_secs(1));
        assert_eq!(waiting.await.unwrap(), Err(Elapsed));
    }

    #[tokio::test]
    async fn system_clock_sleeps() {
        let clock = SystemClock::shared();
        let before = clock.instant();
        clock.sleep(Duration::from_millis(1)).await;
        assert!(clock.instant() > before);
    }
}
