//! `zkfill`: creates `--count` persistent znodes of `--size` bytes under `--parent` (created if missing) on any
//! ZooKeeper-protocol server, `--in-flight` requests at a time on one session, and keeps them (zkload deletes
//! what it made; a scale benchmark needs the tree to stay). Prints one `key=value` line: `created=`, `secs=`,
//! `ops_per_s=`.
//!
//!     zkfill --connect 127.0.0.1:2181 --parent /scale --count 1000000 --size 100 --in-flight 1000

use std::time::{Duration, Instant};

use ensemble_tests::client::{connect_with, PERSISTENT};
use futures_util::StreamExt;

struct Args {
    connect: String,
    parent: String,
    count: usize,
    size: usize,
    in_flight: usize,
}

fn args() -> Result<Args, String> {
    let mut args = Args { connect: String::new(), parent: "/scale".into(), count: 0, size: 100, in_flight: 1000 };
    let mut it = std::env::args().skip(1);
    while let Some(key) = it.next() {
        let value = it.next().ok_or_else(|| format!("{key} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{key} {value}: {e}"));
        match key.as_str() {
            "--connect" => args.connect = value.clone(),
            "--parent" => args.parent = value.clone(),
            "--count" => args.count = number()?,
            "--size" => args.size = number()?,
            "--in-flight" => args.in_flight = number()?.max(1),
            _ => return Err(format!("unknown argument {key}")),
        }
    }
    if args.connect.is_empty() {
        return Err("--connect is required".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() {
    let args = args().unwrap_or_else(|e| {
        eprintln!("zkfill: {e}\nusage: zkfill --connect HOST:PORT[,...] [--parent /scale] --count N [--size 100] [--in-flight 1000]");
        std::process::exit(2);
    });
    let client = connect_with(&args.connect, Duration::from_secs(30)).await;
    match client.create(&args.parent, b"", PERSISTENT).await {
        Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
        Err(e) => panic!("create {}: {e}", args.parent),
    }
    let data = vec![b'x'; args.size];
    let started = Instant::now();
    let (client, data, parent) = (&client, &data, &args.parent);
    let mut created = 0usize;
    let mut results = futures_util::stream::iter(0..args.count)
        .map(|i| async move { client.create(&format!("{parent}/n{i:08}"), data, PERSISTENT).await.map(|_| ()) })
        .buffer_unordered(args.in_flight);
    while let Some(result) = results.next().await {
        match result {
            Ok(()) | Err(zookeeper_client::Error::NodeExists) => created += 1,
            Err(e) => panic!("create under {parent}: {e}"),
        }
        if created.is_multiple_of(100_000) {
            eprintln!("zkfill: {created} of {}", args.count);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("created={created} secs={secs:.1} ops_per_s={:.0}", created as f64 / secs);
}
