//! The shop's functional test in Rust, with the `fi-testing` helpers: one checkout. When
//! fi injected a fault into this test's own request, an error is the expected outcome and
//! the test passes; it asks fi once, right after the error (no polling).
//!
//! Usage: fi-shop-test FRONTEND_ADDR   (ip:port)

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

/// The status of `POST path` to `addr`, or the error that ended it.
fn post(addr: &str, path: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {answer:?}"))
}

fn main() {
    let frontend = std::env::args()
        .nth(1)
        .expect("usage: fi-shop-test FRONTEND_ADDR");
    let order = format!(
        "rs-{}-{}-{}",
        std::env::var("FI_EXPLORATION_ID").unwrap_or_default(),
        std::env::var("FI_EXECUTION").unwrap_or_default(),
        std::process::id()
    );
    match post(&frontend, &format!("/checkout?order={order}")) {
        Ok(200) => println!("PASS: checkout {order}"),
        outcome => {
            if fi_testing::was_fault_injected_on(&frontend) {
                println!(
                    "fi injected a fault on my request to {frontend}: {outcome:?} is expected"
                );
                return;
            }
            eprintln!("FAIL: checkout {order}: {outcome:?}");
            std::process::exit(1);
        }
    }
}
