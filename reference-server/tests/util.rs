//! Helpers shared by the integration tests: raw HTTP exchanges, polling with a generous
//! deadline, and a guard that runs `catwar-server up` and stops it on drop.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use catwar_server::compose::topology::Topology;

/// How long any condition may take before a test fails. Generous on purpose: the tests
/// wait for events, they never assert how fast those happen.
pub const WAIT_S_MAX: u64 = 30;

/// A parsed response read off a raw connection.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Opens a connection with a read timeout so a test never hangs.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(WAIT_S_MAX)))
        .unwrap();
    stream
}

/// Reads one response from `stream`, leaving any bytes after it in `pending`.
pub fn read_response<S: Read>(stream: &mut S, pending: &mut Vec<u8>) -> Option<Raw> {
    let mut chunk = [0u8; 65536];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head_len)) = resp.parse(pending) {
            let headers: Vec<(String, String)> = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let status = resp.code.unwrap();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            while pending.len() < head_len + len {
                let n = stream.read(&mut chunk).expect("read body");
                assert!(n > 0, "closed mid-body");
                pending.extend_from_slice(&chunk[..n]);
            }
            let body = pending[head_len..head_len + len].to_vec();
            pending.drain(..head_len + len);
            return Some(Raw {
                status,
                headers,
                body,
            });
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Sends raw bytes on a new connection and reads one response.
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> (Raw, TcpStream) {
    let mut stream = connect(addr);
    stream.write_all(bytes).unwrap();
    let raw = read_response(&mut stream, &mut Vec::new()).expect("a response");
    (raw, stream)
}

/// `GET path` on a new connection.
pub fn get(addr: SocketAddr, path: &str) -> Raw {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    )
    .0
}

/// True once the server has closed `stream` (EOF), waiting at most [`WAIT_S_MAX`].
pub fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    matches!(stream.read(&mut buf), Ok(0)) || matches!(stream.read(&mut buf), Ok(0))
}

/// Polls `cond` until it holds; panics with `what` after [`WAIT_S_MAX`].
pub fn wait_for<T>(what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(WAIT_S_MAX);
    loop {
        if let Some(value) = cond() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `catwar-server up` in a temporary folder, stopped with SIGTERM on drop.
pub struct Up {
    pub child: Child,
    pub dir: tempfile::TempDir,
}

impl Up {
    pub fn start(extra: &[&str]) -> Up {
        Up::start_in(tempfile::tempdir().unwrap(), extra)
    }

    /// `up` on a folder that may hold files of an earlier `up`; waits for a topology file
    /// whose every process is a child of this `up`, so a stale file never passes.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Up {
        let child = Command::new(env!("CARGO_BIN_EXE_catwar-server"))
            .args(["up", "--data"])
            .arg(dir.path())
            .args(["--base-port", "0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn up");
        let up = Up { child, dir };
        wait_for("topology.json", || {
            let topology = Topology::read(up.dir.path()).ok()?;
            let ours = topology
                .services
                .iter()
                .all(|s| parent_pid(s.pid) == Some(up.child.id()));
            ours.then_some(())
        });
        up
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    pub fn topology(&self) -> Topology {
        Topology::read(self.data()).expect("topology.json")
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        self.topology().service(name).unwrap().addr
    }

    /// SIGTERM, then wait for `up` to exit.
    pub fn stop(&mut self) {
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// The server binary, for tests that run `kill`.
pub fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_catwar-server"))
}

/// Runs `catwar-server ARGS` that should exit by itself, with stdout and stderr in a file
/// so no pipe can fill up; returns its status and stderr. Kills it and fails the test if
/// it still runs after [`WAIT_S_MAX`].
pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let mut log = tempfile::tempfile().unwrap();
    let mut child = Command::new(server_bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(log.try_clone().unwrap())
        .spawn()
        .expect("spawn catwar-server");
    let deadline = Instant::now() + Duration::from_secs(WAIT_S_MAX);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Seek::rewind(&mut log).unwrap();
    log.read_to_string(&mut stderr).unwrap();
    let status =
        status.unwrap_or_else(|| panic!("{args:?} still ran after {WAIT_S_MAX} s: {stderr}"));
    (status, stderr)
}

/// The parent's pid of a running process.
pub fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name: state, then the parent's pid.
    stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()
}

/// Every live process whose command line mentions `path`, such as the children of an
/// `up` on that data folder.
pub fn processes_mentioning(path: &Path) -> Vec<u32> {
    let needle = path.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.windows(needle.len()).any(|w| w == needle) && process_alive(pid)
        })
        .collect()
}

/// True while a process with this pid exists (zombies count as gone: `up` reaps them).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .split(") ")
            .nth(1)
            .is_some_and(|rest| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// A TLS client that trusts exactly the certificate at `cert` (profile's own).
pub fn tls_connector(cert: &Path) -> native_tls::TlsConnector {
    let cert = native_tls::Certificate::from_pem(&std::fs::read(cert).unwrap()).unwrap();
    native_tls::TlsConnector::builder()
        .add_root_certificate(cert)
        .disable_built_in_roots(true)
        .build()
        .unwrap()
}

/// One request over a new TLS connection that trusts exactly the certificate at `cert`.
pub fn tls_request(
    addr: SocketAddr,
    cert: &Path,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> Raw {
    let connector = tls_connector(cert);
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(crate::util::WAIT_S_MAX)))
        .unwrap();
    let mut stream = connector
        .connect("localhost", tcp)
        .expect("TLS handshake with a verified certificate");
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    read_response(&mut stream, &mut Vec::new()).expect("a response")
}

/// A client connection from a chosen loopback source address, such as 127.0.0.2.
pub fn connect_from(from: IpAddr, addr: SocketAddr) -> TcpStream {
    // std has no bind-then-connect, so libc does it; every 127.x address is loopback.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let IpAddr::V4(ip) = from else {
            panic!("IPv4 only")
        };
        let local = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        assert_eq!(
            libc::bind(fd, &local as *const _ as *const libc::sockaddr, len),
            0,
            "bind {ip}"
        );
        let SocketAddr::V4(remote) = addr else {
            panic!("IPv4 only")
        };
        let remote = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: remote.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*remote.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        assert_eq!(
            libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len),
            0,
            "connect"
        );
        let stream = <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd);
        stream
            .set_read_timeout(Some(Duration::from_secs(WAIT_S_MAX)))
            .unwrap();
        stream
    }
}
