//! A small real HTTP/1.1 webhook receiver for tests of the push notifier
//! (and any other webhook): it records every request and answers with a
//! scripted status.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_projections::push::{Push, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use chorus_schema::{ChatId, UserId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Got {
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
    /// What the receiver answered.
    pub status: u16,
}

impl Got {
    pub fn push(&self) -> Push {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A small real HTTP/1.1 server: records every request and answers with
/// the next scripted status (200 once the script is empty).
#[derive(Clone, Default)]
pub struct Receiver {
    pub got: Arc<Mutex<Vec<Got>>>,
    pub script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    pub async fn start() -> (Receiver, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/push", listener.local_addr().unwrap());
        let r = Receiver::default();
        let server = r.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let r = server.clone();
                tokio::spawn(async move { r.serve(conn).await });
            }
        });
        (r, url)
    }

    async fn serve(&self, mut conn: tokio::net::TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            // Headers.
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)))
                    .map(|(_, v)| v.trim().to_owned())
                    .unwrap_or_default()
            };
            let len: usize = header("content-length").parse().unwrap_or(0);
            while buf.len() < head_end + len {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = buf[head_end..head_end + len].to_vec();
            buf.drain(..head_end + len);
            let status = self.script.lock().unwrap().pop_front().unwrap_or(200);
            self.got.lock().unwrap().push(Got {
                timestamp: header(TIMESTAMP_HEADER),
                signature: header(SIGNATURE_HEADER),
                body,
                status,
            });
            let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
            if conn.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    /// The requests about `user`'s pushes in `chat`.
    pub fn for_chat(&self, user: UserId, chat: ChatId) -> Vec<Got> {
        let chat = chat.to_string();
        self.got.lock().unwrap().iter().filter(|g| g.push().user == user && g.push().chat == chat).cloned().collect()
    }

    pub fn for_user(&self, user: UserId) -> Vec<Got> {
        self.got.lock().unwrap().iter().filter(|g| g.push().user == user).cloned().collect()
    }

    /// Waits until `n` requests about `(user, chat)` arrived (up to 20 s).
    pub async fn wait_for(&self, user: UserId, chat: ChatId, n: usize) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.for_chat(user, chat);
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
