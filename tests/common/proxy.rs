//! A recording forward proxy on loopback.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{parse_head, read_head};

const TICK: Duration = Duration::from_millis(20);

/// One request the proxy saw.
#[derive(Clone, Debug)]
pub struct ProxyReq {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

/// A small forward proxy on 127.0.0.1 that records every request and sends
/// it to `upstream`, whatever host the request names (so a request for a
/// host that is not listening can only succeed through the proxy). Plain
/// requests in absolute form are rewritten to origin form; `CONNECT` is
/// tunnelled.
pub struct Proxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<ProxyReq>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let acceptor = thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let (seen3, stop3) = (seen2.clone(), stop2.clone());
                thread::spawn(move || proxy_conn(client, upstream, &seen3, &stop3));
            }
        });
        Proxy {
            addr,
            seen,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    pub fn requests(&self) -> Vec<ProxyReq> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = from.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

fn proxy_conn(
    mut client: TcpStream,
    upstream: SocketAddr,
    seen: &Mutex<Vec<ProxyReq>>,
    stop: &AtomicBool,
) {
    let _ = client.set_read_timeout(Some(TICK));
    let Some(head) = read_head(&mut client, stop) else {
        return;
    };
    let (method, target, headers) = parse_head(&head);
    seen.lock().unwrap().push(ProxyReq {
        method: method.clone(),
        target: target.clone(),
        headers: headers.clone(),
    });
    let _ = client.set_read_timeout(None);
    let Ok(mut up) = TcpStream::connect(upstream) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    if method.eq_ignore_ascii_case("CONNECT") {
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .is_err()
        {
            return;
        }
    } else {
        // http://host:port/path -> /path
        let path = target
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
            .unwrap_or_else(|| target.clone());
        let mut out = format!("{method} {path} HTTP/1.1\r\n");
        for (k, v) in &headers {
            if !k.eq_ignore_ascii_case("proxy-connection") && !k.eq_ignore_ascii_case("connection")
            {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        out.push_str("Via: 1.1 sdr-proxy\r\nConnection: close\r\n\r\n");
        if up.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
    let (c2, u2) = (client.try_clone().unwrap(), up.try_clone().unwrap());
    let t = thread::spawn(move || pump(c2, u2));
    pump(up, client);
    let _ = t.join();
}
