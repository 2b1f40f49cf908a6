//! A Rust HTTP client for fi's tests (hyper, the client most Rust services use).
//!
//!   fi-http-probe METHOD URL [TIMEOUT_MS] [NAME=VALUE...]
//!   fi-http-probe --repeat N METHOD URL [TIMEOUT_MS]
//!
//! Prints the status, or `ERROR reset|refused|timeout|other <detail>` (exit 2), so a test
//! can assert what the client saw. With `--repeat`, makes N requests one after the other
//! on one client and prints, for each, `STATUS MICROSECONDS START_UNIX_NS` or
//! `ERROR kind MICROSECONDS START_UNIX_NS` (for the benchmarks).

use std::{io, process::ExitCode, time::Duration};

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

fn kind(err: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => "reset",
                io::ErrorKind::ConnectionRefused => "refused",
                io::ErrorKind::TimedOut => "timeout",
                _ => "other",
            };
        }
        source = e.source();
    }
    let text = err.to_string();
    if text.contains("connection closed before message completed") || text.contains("reset") {
        "reset"
    } else {
        "other"
    }
}

async fn repeat(n: usize, method: &str, url: &str, timeout: Duration) -> ExitCode {
    let client = Client::builder(TokioExecutor::new()).build_http();
    for _ in 0..n {
        let Ok(request) = hyper::Request::builder()
            .method(method)
            .uri(url)
            .body(Empty::<Bytes>::new())
        else {
            println!("ERROR other bad request 0");
            return ExitCode::from(2);
        };
        let start = std::time::Instant::now();
        let start_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let outcome = tokio::time::timeout(timeout, async {
            let response = client.request(request).await?;
            let status = response.status().as_u16();
            response.into_body().collect().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(status)
        })
        .await;
        let micros = start.elapsed().as_micros();
        match outcome {
            Ok(Ok(status)) => println!("{status} {micros} {start_ns}"),
            Ok(Err(err)) => println!("ERROR {} {micros} {start_ns}", kind(err.as_ref())),
            Err(_) => println!("ERROR timeout {micros} {start_ns}"),
        }
    }
    ExitCode::SUCCESS
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--repeat") {
        let n = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1);
        let (Some(method), Some(url)) = (args.get(2), args.get(3)) else {
            eprintln!("usage: fi-http-probe --repeat N METHOD URL [TIMEOUT_MS]");
            return ExitCode::from(64);
        };
        let timeout =
            Duration::from_millis(args.get(4).and_then(|t| t.parse().ok()).unwrap_or(5000));
        return repeat(n, method, url, timeout).await;
    }
    let (Some(method), Some(url)) = (args.first(), args.get(1)) else {
        eprintln!("usage: fi-http-probe METHOD URL [TIMEOUT_MS] [NAME=VALUE...]");
        return ExitCode::from(64);
    };
    let timeout = Duration::from_millis(args.get(2).and_then(|t| t.parse().ok()).unwrap_or(3000));
    let mut request = hyper::Request::builder()
        .method(method.as_str())
        .uri(url.as_str());
    for header in args.iter().skip(3) {
        if let Some((name, value)) = header.split_once('=') {
            request = request.header(name, value);
        }
    }
    let Ok(request) = request.body(Empty::<Bytes>::new()) else {
        println!("ERROR other bad request");
        return ExitCode::from(2);
    };
    let client = Client::builder(TokioExecutor::new()).build_http();
    let outcome = tokio::time::timeout(timeout, async {
        let response = client.request(request).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(status)
    })
    .await;
    match outcome {
        Ok(Ok(status)) => {
            println!("{status}");
            ExitCode::SUCCESS
        }
        Ok(Err(err)) => {
            println!("ERROR {} {err}", kind(err.as_ref()));
            ExitCode::from(2)
        }
        Err(_) => {
            println!("ERROR timeout after {timeout:?}");
            ExitCode::from(2)
        }
    }
}
