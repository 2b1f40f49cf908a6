//! Real HTTP clients run inside a container, and what each one saw.

use std::time::{Duration, Instant};

use crate::{Container, fixture, process::bin_path};

/// What a client observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Status(u16),
    Reset,
    Refused,
    Timeout,
    Other(String),
}

/// The clients of the fault matrix: ordinary users' tools and libraries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Curl,
    PythonRequests,
    RustHyper,
}

impl Client {
    pub const ALL: [Client; 3] = [Client::Curl, Client::PythonRequests, Client::RustHyper];

    pub fn name(self) -> &'static str {
        match self {
            Client::Curl => "curl",
            Client::PythonRequests => "python-requests",
            Client::RustHyper => "rust-hyper",
        }
    }

    /// One GET of `url` from `from`, giving up after `timeout`; what the client saw and
    /// how long it took.
    pub fn get(self, from: &Container, url: &str, timeout: Duration) -> (Seen, Duration) {
        let start = Instant::now();
        let seen = match self {
            Client::Curl => {
                let secs = format!("{:.3}", timeout.as_secs_f64());
                let out = from.run(
                    "curl",
                    &[
                        "-sS",
                        "-g",
                        "-m",
                        &secs,
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        url,
                    ],
                );
                let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
                match out.status.code() {
                    Some(0) => parse_status(&String::from_utf8_lossy(&out.stdout)),
                    Some(28) => Seen::Timeout,
                    Some(7)
                        if stderr.contains("refused") || stderr.contains("couldn't connect") =>
                    {
                        Seen::Refused
                    }
                    _ if stderr.contains("reset") => Seen::Reset,
                    _ => Seen::Other(stderr),
                }
            }
            Client::PythonRequests => {
                let script = fixture("py_client.py");
                let secs = format!("{:.3}", timeout.as_secs_f64());
                let out = from.run(
                    "python3",
                    &[script.to_str().expect("UTF-8 path"), "get", url, &secs],
                );
                parse_line(&String::from_utf8_lossy(&out.stdout))
            }
            Client::RustHyper => {
                let probe = bin_path("fi-http-probe");
                let ms = timeout.as_millis().to_string();
                let out = from.run(probe.to_str().expect("UTF-8 path"), &["GET", url, &ms]);
                parse_line(&String::from_utf8_lossy(&out.stdout))
            }
        };
        (seen, start.elapsed())
    }
}

/// A GET with curl that must get a response: its status, as text ("200").
pub fn curl_status(from: &Container, url: &str) -> String {
    match Client::Curl.get(from, url, Duration::from_secs(5)).0 {
        Seen::Status(code) => code.to_string(),
        other => panic!("curl {url} from {}: {other:?}", from.name),
    }
}

fn parse_status(text: &str) -> Seen {
    text.trim()
        .parse()
        .map_or_else(|_| Seen::Other(text.to_owned()), Seen::Status)
}

/// `NNN` or `ERROR kind detail` (py_client.py and fi-http-probe).
fn parse_line(text: &str) -> Seen {
    let text = text.trim();
    match text.strip_prefix("ERROR ") {
        Some(rest) => match rest.split_whitespace().next() {
            Some("reset") => Seen::Reset,
            Some("refused") => Seen::Refused,
            Some("timeout") => Seen::Timeout,
            _ => Seen::Other(rest.to_owned()),
        },
        None => parse_status(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_lines_parse() {
        assert_eq!(parse_line("503\n"), Seen::Status(503));
        assert_eq!(
            parse_line("ERROR reset Connection reset by peer"),
            Seen::Reset
        );
        assert_eq!(parse_line("ERROR timeout after 2s"), Seen::Timeout);
        assert!(matches!(parse_line("ERROR other boom"), Seen::Other(_)));
    }
}
