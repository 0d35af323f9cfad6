//! The events collector's load generator, for bench/events_http.py: posts NDJSON batches of
//! ~1 KB events at a fixed offered rate for a while, open loop (each request is due at its
//! time whether or not the earlier ones were answered, and its latency counts from when it
//! was due, so a slow server cannot hide its queue), and prints one JSON line:
//! `{"offered": events/s, "acked": events/s, "mb_s": MB/s acknowledged, "p50_ms", "p99_ms",
//! "refused": requests answered 429/503, "failed": other answers}`.
//!
//! Usage: events_load URL RATE SECS [BATCH=500] [IN_FLIGHT=64]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One event of about 1 KB: an id, a time, a nested user and page, and properties.
fn event(n: u64) -> String {
    format!(
        concat!(
            r#"{{"id":"ev-{n:012}","ts":"2026-12-06T10:{m:02}:{s:02}Z","type":"page_view","#,
            r#""user":{{"id":{u},"country":"NO","device":{{"os":"linux","browser":"firefox","version":"133.0"}}}},"#,
            r#""page":{{"url":"https://shop.example.com/products/{p}","referrer":"https://search.example.com/?q=item+{p}","title":"Product {p} – a title with ünïcode"}},"#,
            r#""props":{{"price":{price},"currency":"EUR","items":[{p},{q},{r}],"campaign":"winter-{c}","pad":"{pad}"}}}}"#
        ),
        n = n,
        m = (n / 60) % 60,
        s = n % 60,
        u = n % 100_000,
        p = n % 5_000,
        q = (n * 7) % 5_000,
        r = (n * 13) % 5_000,
        price = (n % 10_000) as f64 / 100.0,
        c = n % 12,
        pad = "x".repeat(560),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: events_load URL RATE SECS [BATCH=500] [IN_FLIGHT=64]");
        std::process::exit(2);
    }
    let url = args[1].clone();
    let rate: f64 = args[2].parse()?;
    let secs: f64 = args[3].parse()?;
    let batch: u64 = args.get(4).map(|b| b.parse()).transpose()?.unwrap_or(500);
    let in_flight: usize = args.get(5).map(|b| b.parse()).transpose()?.unwrap_or(64);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(in_flight)
        .timeout(Duration::from_secs(120))
        .build()?;
    let requests = ((rate * secs) / batch as f64).ceil() as u64;
    let every = Duration::from_secs_f64(batch as f64 / rate);
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let (acked, bytes, refused, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(requests as usize)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..requests {
        let due = started + every * k as u32;
        tokio::time::sleep_until(due.into()).await;
        let body: String = (k * batch..(k + 1) * batch)
            .map(|n| event(n) + "\n")
            .collect();
        let slot = slots.clone().acquire_owned().await?;
        let (client, url) = (client.clone(), url.clone());
        let (acked, bytes, refused, failed, latencies) = (
            acked.clone(),
            bytes.clone(),
            refused.clone(),
            failed.clone(),
            latencies.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let len = body.len() as u64;
            let answer = client.post(&url).body(body).send().await;
            match answer.map(|r| r.status().as_u16()) {
                Ok(200) => {
                    acked.fetch_add(batch, Ordering::Relaxed);
                    bytes.fetch_add(len, Ordering::Relaxed);
                    latencies.lock().unwrap().push(due.elapsed());
                }
                Ok(429 | 503) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(slot);
        }));
    }
    for t in tasks {
        t.await?;
    }
    let took = started.elapsed().as_secs_f64();
    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    println!(
        "{{\"offered\": {:.0}, \"acked\": {:.0}, \"mb_s\": {:.1}, \"p50_ms\": {:.0}, \"p99_ms\": {:.0}, \"refused\": {}, \"failed\": {}, \"secs\": {:.1}}}",
        rate,
        acked.load(Ordering::Relaxed) as f64 / took,
        bytes.load(Ordering::Relaxed) as f64 / took / 1e6,
        pct(0.5),
        pct(0.99),
        refused.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        took,
    );
    Ok(())
}
