//! [`to_the_end`]: a future that runs to its end even when its caller stops waiting for it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;

use futures::FutureExt;

/// Runs `work` in the caller's task, and, if the caller stops waiting for it (its future is dropped), on in a task
/// of its own until it ends: as `tokio::spawn(work).await` would, without handing it to another task while the
/// caller waits (two tasks that wake each other cost a worker thread's wake-up on a small machine). A panic
/// in `work` is answered as `panicked` makes it.
pub async fn to_the_end<T, F>(work: F, panicked: impl FnOnce(String) -> T) -> T
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut running = Running(Some(Box::pin(AssertUnwindSafe(work).catch_unwind())));
    let ended = std::future::poll_fn(|cx| match running.0.as_mut() {
        Some(work) => work.as_mut().poll(cx),
        None => std::task::Poll::Pending,
    })
    .await;
    running.0 = None;
    ended.unwrap_or_else(|panic| {
        let message = panic.downcast_ref::<&str>().map(|s| s.to_string());
        panicked(message.or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_else(|| "the invocation panicked".into()))
    })
}

type Work<T> = Pin<Box<dyn Future<Output = std::thread::Result<T>> + Send>>;

/// The work of [`to_the_end`] until it ended; dropped before then, it goes on in a task of its own.
struct Running<T: 'static>(Option<Work<T>>);

impl<T: 'static> Drop for Running<T> {
    fn drop(&mut self) {
        if let (Some(work), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                let _ = work.await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_ends_in_the_callers_task_or_on_its_own_once_the_caller_is_gone() {
        assert_eq!(to_the_end(async { 7 }, |_| 0).await, 7);
        assert_eq!(to_the_end(async { panic!("no") }, |message| message).await, "no");

        // The caller gives up while the work waits: the work still ends.
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (ended, done) = tokio::sync::oneshot::channel();
        let caller = to_the_end(
            async move {
                let _ = wait.await;
                let _ = ended.send(());
            },
            |_| (),
        );
        let mut caller = Box::pin(caller);
        let waiting = std::future::poll_fn(|cx| std::task::Poll::Ready(caller.as_mut().poll(cx).is_pending())).await;
        assert!(waiting, "the work waits for `go`");
        drop(caller);
        go.send(()).expect("the work still waits");
        done.await.expect("the work ended after its caller was gone");
    }
}
