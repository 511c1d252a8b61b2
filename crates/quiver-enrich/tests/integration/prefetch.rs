//! The prefetch pool drops jobs when full, raises the pressure signal, and clears it when
//! jobs succeed again.

use quiver_enrich::{PrefetchConfig, PrefetchPool};
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, watch};

#[tokio::test]
async fn a_full_queue_drops_and_raises_pressure_and_success_clears_it() {
    let (seen_tx, mut seen) = watch::channel(Vec::<bool>::new());
    let seen_tx = Arc::new(Mutex::new(seen_tx));
    let signal = {
        let seen_tx = seen_tx.clone();
        Arc::new(move |raised: bool| {
            seen_tx.lock().unwrap().send_modify(|v| v.push(raised));
        })
    };
    let pool = PrefetchPool::new(
        PrefetchConfig {
            workers: 1,
            queue: 1,
        },
        signal,
    );

    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let job = |gate: Arc<Semaphore>| -> quiver_enrich::Job {
        Box::pin(async move {
            gate.acquire().await.unwrap().forget();
            Ok(())
        })
    };
    // The worker takes the first job and blocks in it; the second fills the queue.
    let first_gate = gate.clone();
    assert!(pool.submit(Box::pin(async move {
        let _ = started_tx.send(());
        first_gate.acquire().await.unwrap().forget();
        Ok(())
    })));
    started_rx.await.unwrap();
    assert!(pool.submit(job(gate.clone())));
    assert!(
        !pool.submit(job(gate.clone())),
        "a full queue drops the job"
    );
    assert!(!pool.submit(job(gate.clone())));
    assert!(pool.pressure_raised());
    assert_eq!(pool.stats().dropped, 2);
    assert_eq!(*seen.borrow(), [true], "raised once per episode");

    gate.add_permits(2);
    seen.wait_for(|v| v.len() == 2).await.unwrap();
    assert_eq!(
        *seen.borrow(),
        [true, false],
        "cleared when jobs succeed again"
    );
    assert!(!pool.pressure_raised());
    let s = pool.stats();
    assert_eq!((s.submitted, s.dropped), (4, 2));
}
