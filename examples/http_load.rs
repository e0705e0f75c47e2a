//! A bounded HTTP load generator for `bench/serve.py`: a fixed number of
//! POST requests of one body from a fixed number of clients (threads, each
//! on one keep-alive connection), against 127.0.0.1 only. Prints one JSON
//! line: requests, errors, seconds, requests/s, p50 and p99 latency (ms).
//!
//!     cargo run --release --example http_load -- PORT PATH BODY_FILE REQUESTS CLIENTS

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: http_load PORT PATH BODY_FILE REQUESTS CLIENTS");
        std::process::exit(2);
    }
    let port: u16 = args[1].parse().expect("PORT is a number");
    let path = args[2].clone();
    let body = std::fs::read(&args[3]).expect("BODY_FILE is readable");
    let (requests, clients): (usize, usize) = (args[4].parse().expect("REQUESTS"), args[5].parse().expect("CLIENTS"));
    let start = Instant::now();
    let results: Vec<(Vec<f64>, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (path, body) = (&path, &body);
                let share = requests / clients + usize::from(c < requests % clients);
                scope.spawn(move || client(port, path, body, share))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("client thread")).collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut latencies: Vec<f64> = results.iter().flat_map(|(l, _)| l.iter().copied()).collect();
    let errors: usize = results.iter().map(|(_, e)| e).sum();
    latencies.sort_by(f64::total_cmp);
    let at =
        |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1))).copied();
    println!(
        "{{\"requests\": {requests}, \"errors\": {errors}, \"seconds\": {seconds:.4}, \"requests_per_s\": {:.1}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}}}",
        (requests - errors) as f64 / seconds,
        at(0.5).unwrap_or(f64::NAN) * 1e3,
        at(0.99).unwrap_or(f64::NAN) * 1e3
    );
}

/// `n` requests on one keep-alive connection (reconnecting if the server closes it):
/// each successful one's latency, and the count of failures.
fn client(port: u16, path: &str, body: &[u8], n: usize) -> (Vec<f64>, usize) {
    let mut latencies = Vec::with_capacity(n);
    let mut errors = 0;
    let mut connection: Option<BufReader<TcpStream>> = None;
    for _ in 0..n {
        let start = Instant::now();
        let stream = match connection.take() {
            Some(c) => c,
            None => match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => {
                    s.set_nodelay(true).ok();
                    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
                    BufReader::new(s)
                }
                Err(_) => {
                    errors += 1;
                    continue;
                }
            },
        };
        match exchange(stream, port, path, body) {
            Some((status, reader)) => {
                if status == 200 {
                    latencies.push(start.elapsed().as_secs_f64());
                } else {
                    errors += 1;
                }
                connection = reader;
            }
            None => errors += 1,
        }
    }
    (latencies, errors)
}

/// One request and its answer; the connection back when it stays open.
fn exchange(
    mut reader: BufReader<TcpStream>,
    port: u16,
    path: &str,
    body: &[u8],
) -> Option<(u16, Option<BufReader<TcpStream>>)> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let stream = reader.get_mut();
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
    let (mut length, mut close) = (None, false);
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let header = line.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(v) = header.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        }
        if header == "connection: close" {
            close = true;
        }
    }
    let mut answer = vec![0u8; length?];
    reader.read_exact(&mut answer).ok()?;
    Some((status, if close { None } else { Some(reader) }))
}
