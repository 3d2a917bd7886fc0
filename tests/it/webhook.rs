//! The token webhook (`client::webhook`): a POST of JSON to the provider's app server, over
//! IPv4 and IPv6 loopback literals, with the `Host` header taken from the URL, and a deadline
//! when the app server never answers.

use std::net::SocketAddr;

use apns_sim::client::webhook::{self, WebhookError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common::TIMEOUT;

/// One HTTP/1.1 request as the app server read it.
#[derive(Debug)]
struct Received {
    /// `POST /path HTTP/1.1`.
    request_line: String,
    /// Header names lower-cased, in order.
    headers: Vec<(String, String)>,
    /// The body, `content-length` bytes of it.
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request from `listener` (head, then `content-length` bytes of body), answers
/// `answer`, and returns what it read.
async fn serve_one(listener: TcpListener, answer: &'static [u8]) -> Received {
    let (mut sock, _) = listener.accept().await.unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = sock.read(&mut buf).await.unwrap();
        assert!(n > 0, "request ended inside its head");
        bytes.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8(bytes[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap().to_owned();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .expect("content-length")
        .1
        .parse()
        .unwrap();
    let mut body = bytes[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut buf).await.unwrap();
        assert!(n > 0, "request ended inside its body");
        body.extend_from_slice(&buf[..n]);
    }
    sock.write_all(answer).await.unwrap();
    Received {
        request_line,
        headers,
        body,
    }
}

/// POSTs a token to `http://{authority}{path}` served on `listener` and checks what arrived.
async fn posts_json_with_host(listener: TcpListener, authority: String, path: &str) {
    let server = tokio::spawn(serve_one(
        listener,
        b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
    ));
    let body = serde_json::json!({
        "token": "00ff",
        "app": "com.example.app",
        "environment": "sandbox",
        "serial": "HOOK-6",
    });
    let url = format!("http://{authority}{path}");
    let status = tokio::time::timeout(TIMEOUT, webhook::post_json(&url, &body))
        .await
        .expect("posted in time")
        .expect("posted");
    assert_eq!(status, 201);
    let got = tokio::time::timeout(TIMEOUT, server)
        .await
        .expect("served in time")
        .unwrap();
    assert_eq!(got.request_line, format!("POST {path} HTTP/1.1"));
    assert_eq!(got.header("host"), Some(authority.as_str()), "{got:?}");
    assert_eq!(got.header("content-type"), Some("application/json"));
    let posted: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(posted, body);
}

#[tokio::test]
async fn posts_to_an_ipv6_literal() {
    let listener = TcpListener::bind("[::1]:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    posts_json_with_host(listener, format!("[::1]:{port}"), "/register?app=1").await;
}

#[tokio::test]
async fn posts_to_an_ipv4_literal() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    posts_json_with_host(listener, addr.to_string(), "/").await;
}

/// An app server that reads the request and never answers: the POST gives up after
/// `WEBHOOK_TIMEOUT` (time is paused, so the test does not wait ten real seconds).
#[tokio::test(start_paused = true)]
async fn a_silent_app_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/register", listener.local_addr().unwrap());
    let _server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut sink = Vec::new();
        let _ = sock.read_to_end(&mut sink).await;
    });
    let err = webhook::post_json(&url, &serde_json::json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, WebhookError::Timeout(u) if *u == url),
        "{err}"
    );
    assert_eq!(err.to_string(), format!("POST {url} timed out"));
}

/// An app server that hangs up without answering: the error says the POST failed and why.
#[tokio::test]
async fn a_hang_up_is_reported_with_its_cause() {
    let listener = TcpListener::bind("[::1]:0").await.unwrap();
    let url = format!("http://{}/register", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        drop(sock);
    });
    let err = tokio::time::timeout(TIMEOUT, webhook::post_json(&url, &serde_json::json!({})))
        .await
        .expect("answered in time")
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, WebhookError::Failed { .. }), "{text}");
    assert!(text.starts_with(&format!("POST {url} failed: ")), "{text}");
    assert!(text.contains("closed"), "the cause is named: {text}");
    server.await.unwrap();
}
