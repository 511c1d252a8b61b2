//! The connection flood: what admitted clients see while connections arrive at ten
//! times the cap and stay silent.

use super::*;

/// The warm feed at `rate` (open loop) on a server whose connection cap is just above
/// the generator's connections, first alone, then while connections arrive at ten times
/// the cap, held silent (refused past the cap, closed by the server when idle): what
/// admitted clients' latency does under a connection flood, measured in one run.
pub(crate) fn connection_flood(
    wrk: &Path,
    bin: &Path,
    db: &str,
    redis: &str,
    f: &Fixture,
    ph: &Phases,
    rate: f64,
) -> Result<Value> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let cap = ph.concurrency + 16;
    let server = Server::start(
        bin,
        db,
        redis,
        &["--max-connections".into(), cap.to_string()],
        true,
    )?;
    let dir = std::env::temp_dir();
    let t = Target::new(wrk, server.api, &f.tokens, &dir);
    let streams = f.feeds();
    load::phase(
        &t,
        "flood",
        &streams,
        ph.warmup,
        Load::Concurrency(ph.concurrency),
    )?;
    let at_rate = Load::Rate(rate, ph.concurrency);
    let quiet = load::phase(&t, "flood", &streams, ph.rate, at_rate)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (refused, opened) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let flooder = {
        let (stop, refused, opened, api) =
            (stop.clone(), refused.clone(), opened.clone(), server.api);
        std::thread::spawn(move || {
            // After the generator's connections are made (they are admitted).
            std::thread::sleep(Duration::from_millis(500));
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // Ten times the cap at once, then again each time they are gone.
                for _ in 0..cap * 10 {
                    let Ok(s) =
                        std::net::TcpStream::connect_timeout(&api, Duration::from_millis(200))
                    else {
                        continue;
                    };
                    opened.fetch_add(1, Ordering::Relaxed);
                    let _ = s.set_read_timeout(Some(Duration::from_millis(5)));
                    let mut head = [0u8; 12];
                    match std::io::Read::read(&mut &s, &mut head) {
                        Ok(12) if &head == b"HTTP/1.1 503" => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => held.push(s),
                    }
                }
                held.clear();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let flooded = load::phase(&t, "flood", &streams, ph.rate, at_rate)?;
    stop.store(true, Ordering::Relaxed);
    let _ = flooder.join();
    let side = |v: &Value| {
        json!({"p50_ms": v["p50_ms"], "p99_ms": v["p99_ms"], "rps": v["rps"],
               "unexpected": v["unexpected"]})
    };
    Ok(json!({
        "cap": cap,
        "rate": rate,
        "quiet": side(&quiet),
        "flooded": side(&flooded),
        "connections_opened": opened.load(Ordering::Relaxed),
        "connections_refused": refused.load(Ordering::Relaxed),
    }))
}
