//! `fetch` against real HTTP servers on 127.0.0.1: found, not found, a
//! stalling server, an oversized body, a redirect loop, concurrent `get_many`.
//!
//! Every server here binds port 0 on loopback and runs in threads that end by
//! themselves: on the test's drop of the server handle, or at a hard deadline.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tiny_http::{Header, Response, Server};
use totogate::fetch::{self, FetchError, FetchLimits};

/// No server thread lives longer than this, whatever the test does.
const HARD_DEADLINE: Duration = Duration::from_secs(30);

/// A tiny_http server; each request is handled on its own thread.
struct TestServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    server: Arc<Server>,
    accept: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start<F>(handler: F) -> TestServer
    where
        F: Fn(tiny_http::Request, Arc<AtomicBool>) + Send + Sync + 'static,
    {
        let server = Arc::new(Server::http("127.0.0.1:0").expect("bind loopback"));
        let addr = server.server_addr().to_ip().expect("an IP address");
        assert!(addr.ip().is_loopback());
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let accept = {
            let (server, stop) = (server.clone(), stop.clone());
            thread::spawn(move || {
                let start = Instant::now();
                let mut workers = Vec::new();
                while !stop.load(Ordering::SeqCst) && start.elapsed() < HARD_DEADLINE {
                    match server.recv_timeout(Duration::from_millis(50)) {
                        Ok(Some(req)) => {
                            let (handler, stop) = (handler.clone(), stop.clone());
                            workers.push(thread::spawn(move || handler(req, stop)));
                        }
                        Ok(None) => {}
                        Err(_) => break,
                    }
                }
                stop.store(true, Ordering::SeqCst);
                for w in workers {
                    let _ = w.join();
                }
            })
        };
        TestServer {
            addr,
            stop,
            server,
            accept: Some(accept),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn limits() -> FetchLimits {
    FetchLimits {
        connect_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(5),
        max_bytes: 1024,
        max_redirects: 5,
    }
}

fn respond<R: Read>(req: tiny_http::Request, resp: Response<R>) {
    let _ = req.respond(resp);
}

/// Serves a few fixed paths.
fn file_server() -> TestServer {
    TestServer::start(|req, _| {
        let url = req.url().to_string();
        match url.as_str() {
            "/hello/1.0/root.layout" => respond(req, Response::from_string("{\"signed\": {}}")),
            "/gone" => respond(req, Response::empty(410)),
            "/boom" => respond(req, Response::empty(500)),
            "/big" => respond(req, Response::from_data(vec![b'x'; 10 * 1024])),
            "/big-chunked" => respond(
                req,
                // Unknown length: sent chunked, so only the reader can stop it.
                Response::new(
                    200.into(),
                    vec![],
                    io::repeat(b'x').take(10 * 1024),
                    None,
                    None,
                ),
            ),
            "/a" | "/b" => {
                let to = if url == "/a" { "/b" } else { "/a" };
                let loc = Header::from_bytes("Location", to).unwrap();
                respond(req, Response::empty(302).with_header(loc))
            }
            "/hop" => {
                let loc = Header::from_bytes("Location", "/hello/1.0/root.layout").unwrap();
                respond(req, Response::empty(301).with_header(loc))
            }
            _ => respond(req, Response::empty(404)),
        }
    })
}

#[test]
fn found_and_not_found() {
    let s = file_server();
    let got = fetch::get(&s.url("/hello/1.0/root.layout"), &limits()).unwrap();
    assert_eq!(got.as_deref(), Some(&b"{\"signed\": {}}"[..]));
    // A redirect within the cap is followed.
    let got = fetch::get(&s.url("/hop"), &limits()).unwrap();
    assert_eq!(got.as_deref(), Some(&b"{\"signed\": {}}"[..]));

    // A link nobody published: not an error, the threshold check decides.
    assert!(
        fetch::get(&s.url("/hello/1.0/build.0123abcd.link"), &limits())
            .unwrap()
            .is_none()
    );
    assert!(fetch::get(&s.url("/gone"), &limits()).unwrap().is_none());

    let url = s.url("/boom");
    let e = fetch::get(&url, &limits()).unwrap_err();
    assert!(matches!(e, FetchError::Status { status: 500, .. }), "{e}");
    assert!(e.to_string().contains(&url), "{e}");
}

#[test]
fn oversized_body_is_an_error() {
    let s = file_server();
    for path in ["/big", "/big-chunked"] {
        let url = s.url(path);
        let e = fetch::get(&url, &limits()).unwrap_err();
        assert!(
            matches!(e, FetchError::TooLarge { limit: 1024, .. }),
            "{path}: {e}"
        );
        assert!(e.to_string().contains(&url), "{e}");
    }
    // At the cap exactly is fine.
    let ok = FetchLimits {
        max_bytes: 10 * 1024,
        ..limits()
    };
    assert_eq!(
        fetch::get(&s.url("/big"), &ok).unwrap().unwrap().len(),
        10 * 1024
    );
}

#[test]
fn redirect_loop_is_an_error() {
    let s = file_server();
    let url = s.url("/a");
    let e = fetch::get(&url, &limits()).unwrap_err();
    assert!(
        matches!(e, FetchError::TooManyRedirects { max: 5, .. }),
        "{e}"
    );
    assert!(e.to_string().contains(&url), "{e}");
}

#[test]
fn stalling_server_times_out() {
    // Accepts connections and never answers (does not even read).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut held = Vec::new();
            let start = Instant::now();
            while !stop.load(Ordering::SeqCst) && start.elapsed() < HARD_DEADLINE {
                if let Ok((conn, _)) = listener.accept() {
                    held.push(conn);
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let lim = FetchLimits {
        total_timeout: Duration::from_secs(1),
        ..limits()
    };
    let url = format!("http://{addr}/hello/1.0/root.layout");
    let start = Instant::now();
    let e = fetch::get(&url, &lim).unwrap_err();
    let took = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();

    assert!(matches!(e, FetchError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains(&url), "{e}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "took {took:?}"
    );
}

/// Sends the headers, then one byte every 100 ms: the total timeout covers
/// the body too.
#[test]
fn trickling_body_times_out() {
    struct Trickle(Arc<AtomicBool>, Instant);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.load(Ordering::SeqCst) || self.1.elapsed() > HARD_DEADLINE {
                return Ok(0);
            }
            thread::sleep(Duration::from_millis(100));
            buf[0] = b'x';
            Ok(1)
        }
    }
    let s = TestServer::start(|req, stop| {
        // Ends when the client hangs up (write error), on stop, or at the deadline.
        let reader = Trickle(stop, Instant::now());
        respond(
            req,
            Response::new(200.into(), vec![], reader, Some(1000), None),
        );
    });
    let lim = FetchLimits {
        total_timeout: Duration::from_secs(1),
        max_bytes: 1 << 20,
        ..limits()
    };
    let url = s.url("/slow.link");
    let start = Instant::now();
    let e = fetch::get(&url, &lim).unwrap_err();
    let took = start.elapsed();
    assert!(matches!(e, FetchError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains(&url), "{e}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

#[test]
fn get_many_is_concurrent_and_ordered() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let s = {
        let (in_flight, peak) = (in_flight.clone(), peak.clone());
        TestServer::start(move |req, _| {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(300));
            in_flight.fetch_sub(1, Ordering::SeqCst);
            let path = req.url().to_string();
            if path.ends_with("/13.link") {
                respond(req, Response::empty(404))
            } else {
                respond(req, Response::from_string(path))
            }
        })
    };
    let items: Vec<String> = (0..20)
        .map(|i| s.url(&format!("/links/{i}.link")))
        .collect();
    let start = Instant::now();
    let got = fetch::get_many(&items, &limits(), 8);
    let took = start.elapsed();

    // Sequential would be 20 × 300 ms = 6 s; 8 at a time is 3 rounds (~0.9 s).
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let peak = peak.load(Ordering::SeqCst);
    assert!((2..=8).contains(&peak), "peak concurrency {peak}");
    assert_eq!(got.len(), 20);
    for (i, (item, r)) in got.into_iter().enumerate() {
        assert_eq!(item, items[i]);
        let body = r.unwrap();
        if i == 13 {
            assert!(body.is_none());
        } else {
            assert_eq!(body.unwrap(), format!("/links/{i}.link").into_bytes());
        }
    }
}
