//! The raw limit of a MongoDB snapshot, for bench/mongodb_docs.py: one `find` over a
//! collection with the same driver and batch size sluice reads with, every document decoded,
//! nothing else done. Prints `{"docs": N, "secs": S}`.
//!
//! Usage: mongo_find URL COLLECTION   (the database is the URL's path)

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, collection] = args.as_slice() else {
        eprintln!("usage: mongo_find URL COLLECTION");
        std::process::exit(2);
    };
    let client = mongodb::Client::with_uri_str(url).await?;
    let db = client
        .default_database()
        .ok_or("the url names no database")?;
    let started = std::time::Instant::now();
    let mut cursor = db
        .collection::<Document>(collection)
        .find(doc! {})
        .batch_size(2_000)
        .await?;
    let mut docs = 0u64;
    while let Some(d) = cursor.try_next().await? {
        docs += 1;
        std::hint::black_box(d);
    }
    println!(
        "{{\"docs\": {docs}, \"secs\": {:.3}}}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
