//! A future polled again at once when it wakes itself while being polled.
//!
//! The session task is woken while it runs: a stream on another worker
//! queues a frame during the session's poll (and, with the `yamux` crate
//! before ADR 33, its `SelectAll` woke it as a fairness yield). Under
//! tokio's multi-threaded scheduler a task woken during its own poll is put at the
//! back of the run queue and another worker is woken to take it: a futex
//! call and a thread switch for every frame exchange on a quiet tunnel
//! (about 1.5 per forwarded request on the relay at one request in
//! flight). [`Repoll`] polls such a future again in place, a bounded
//! number of times, and only then lets the wake reach the scheduler.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// Polls in place for each wake during a poll, at most this many times in
/// a row, before yielding to the scheduler (fairness stays bounded).
const MAX_REPOLLS: usize = 16;

/// See the module documentation.
pub struct Repoll<F> {
    inner: Pin<Box<F>>,
    wake: Arc<Flag>,
    waker: Waker,
}

/// The waker the inner future sees.
struct Flag {
    /// The inner future is being polled: a wake only sets `woken`.
    polling: AtomicBool,
    /// Woken while being polled.
    woken: AtomicBool,
    /// The task's own waker, for wakes from outside a poll.
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.polling.load(Ordering::SeqCst) {
            self.woken.store(true, Ordering::SeqCst);
        } else {
            self.task.wake();
        }
    }
}

impl<F: Future> Repoll<F> {
    /// Wraps `inner`.
    pub fn new(inner: F) -> Self {
        let wake =
            Arc::new(Flag { polling: AtomicBool::new(false), woken: AtomicBool::new(false), task: AtomicWaker::new() });
        let waker = Waker::from(wake.clone());
        Repoll { inner: Box::pin(inner), wake, waker }
    }
}

impl<F: Future> Future for Repoll<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let me = &mut *self;
        me.wake.task.register(cx.waker());
        let mut inner_cx = Context::from_waker(&me.waker);
        for _ in 0..MAX_REPOLLS {
            me.wake.polling.store(true, Ordering::SeqCst);
            let polled = me.inner.as_mut().poll(&mut inner_cx);
            // A wake after this store goes to the task; one before it is
            // seen by the swap below: none is lost.
            me.wake.polling.store(false, Ordering::SeqCst);
            let woken = me.wake.woken.swap(false, Ordering::SeqCst);
            match polled {
                Poll::Ready(out) => return Poll::Ready(out),
                Poll::Pending if woken => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
        // Still waking itself: let the scheduler run something else first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Ready after waking itself `n` times.
    struct SelfWaking {
        left: usize,
        polls: Arc<AtomicUsize>,
    }

    impl Future for SelfWaking {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.left == 0 {
                return Poll::Ready(());
            }
            self.left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// Counts the wakes the task itself gets.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn self_wakes_are_polled_in_place_up_to_a_bound() {
        let task = Arc::new(Count::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        let polls = Arc::new(AtomicUsize::new(0));
        let mut f = std::pin::pin!(Repoll::new(SelfWaking { left: 3, polls: polls.clone() }));
        assert!(f.as_mut().poll(&mut cx).is_ready(), "three self-wakes, one poll from the task");
        assert_eq!((polls.load(Ordering::SeqCst), task.0.load(Ordering::SeqCst)), (4, 0));

        let polls = Arc::new(AtomicUsize::new(0));
        let mut f = std::pin::pin!(Repoll::new(SelfWaking { left: MAX_REPOLLS + 1, polls: polls.clone() }));
        assert!(f.as_mut().poll(&mut cx).is_pending());
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "past the bound the task is woken to yield");
        assert!(f.as_mut().poll(&mut cx).is_ready());
    }

    #[tokio::test]
    async fn a_wake_from_elsewhere_reaches_the_task() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let waiting = tokio::spawn(Repoll::new(rx));
        tokio::task::yield_now().await;
        std::thread::spawn(move || tx.send(7)).join().unwrap().unwrap();
        assert_eq!(tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap(), Ok(7));
    }
}
