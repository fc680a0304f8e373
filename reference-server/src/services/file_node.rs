//! File-transfer node: serves resource files from memory with `ETag` and `Range`.
//!
//! Routes: `GET /v1/files/{version}/{path}` and `GET /healthz`. The whole catalog is
//! loaded at start, so a request never touches the disk and the event loop never blocks.

use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use serde::Serialize;

use crate::domain::resources::{valid_version, Catalog};
use crate::runtime::event_loop::{Ctx, Handler, Limits, Reply, Server, ServerHandle};
use crate::runtime::http::{self, percent_decode, Body, Request, Response};

/// Longest file path accepted in a request, in bytes.
const FILE_PATH_BYTES_MAX: usize = 1024;

/// The file node's request handler.
#[derive(Debug)]
pub struct FileNode {
    catalog: Arc<Catalog>,
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    active_conns: usize,
}

impl FileNode {
    /// A handler serving `catalog`.
    pub fn new(catalog: Arc<Catalog>) -> FileNode {
        FileNode { catalog }
    }

    fn file(&self, req: &Request, rest: &str) -> Response {
        let (version, path) = match split_file_target(rest) {
            Ok(parts) => parts,
            Err(why) => return Response::error(400, "bad_request", &why),
        };
        let Some(file) = self.catalog.file(&version, &path) else {
            return Response::error(
                404,
                "not_found",
                &format!("no file {path} in version {version}"),
            );
        };
        let etag = format!("\"{}\"", file.entry.sha256);
        if req.header("if-none-match") == Some(etag.as_str()) {
            return Response::empty(304).with_header("ETag", etag);
        }
        let len = file.bytes.len();
        let response = match req.header("range").map(|r| parse_range(r, len)) {
            None | Some(RangeSpec::Ignore) => Response {
                status: 200,
                headers: Vec::new(),
                body: Body::Shared(Arc::clone(&file.bytes), 0..len),
                close: false,
            },
            Some(RangeSpec::Unsatisfiable) => {
                return Response::error(
                    416,
                    "range_not_satisfiable",
                    &format!("header range: file has {len} bytes"),
                )
                .with_header("Content-Range", format!("bytes */{len}"))
            }
            Some(RangeSpec::Bytes(start, end)) => Response {
                status: 206,
                headers: vec![("Content-Range", format!("bytes {start}-{end}/{len}"))],
                body: Body::Shared(Arc::clone(&file.bytes), start..end + 1),
                close: false,
            },
        };
        response
            .with_header("Content-Type", "application/octet-stream")
            .with_header("ETag", etag)
            .with_header("Accept-Ranges", "bytes")
    }
}

impl Handler for FileNode {
    fn routes(&self) -> &'static [&'static str] {
        &["/v1/files/{version}/{path}", "/healthz"]
    }

    fn handle(&mut self, req: Request, ctx: &mut Ctx<'_>) -> Reply {
        let files = req.path.strip_prefix("/v1/files/");
        let response = if files.is_none() && req.path != "/healthz" {
            http::not_found(&req)
        } else if req.method != "GET" {
            // Both routes answer GET only; SPEC §3 holds `/healthz` to the same rule.
            http::method_not_allowed(&req, &["GET"])
        } else if let Some(rest) = files {
            self.file(&req, rest)
        } else {
            Response::json(
                200,
                &Health {
                    status: "ok",
                    active_conns: ctx.open_conns(),
                },
            )
        };
        Reply::Now(response)
    }
}

/// Splits `{version}/{path}` and rejects anything that could name a file outside the
/// version folder: `..` or `.` segments, empty segments, absolute paths, backslashes and
/// NUL, whether written plainly or percent-encoded.
fn split_file_target(rest: &str) -> Result<(String, String), String> {
    if rest.len() > FILE_PATH_BYTES_MAX {
        return Err(format!("path: longer than {FILE_PATH_BYTES_MAX} bytes"));
    }
    let decoded = percent_decode(rest).ok_or("path: broken percent-encoding")?;
    let (version, path) = decoded
        .split_once('/')
        .ok_or("path: expected /v1/files/{version}/{path}")?;
    if !valid_version(version) {
        return Err(format!("path: {version:?} is not a version name"));
    }
    for segment in path.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err("path: empty, '.' or '..' segments are not allowed".into());
        }
        if segment.contains(['\\', '\0']) {
            return Err("path: backslash or NUL not allowed".into());
        }
        // A '%' left after decoding is a second layer of encoding (`%252e%252e` is
        // `..` to whoever decodes twice), so resource names must not hold one.
        if segment.contains('%') {
            return Err("path: percent-encoding inside percent-encoding".into());
        }
    }
    Ok((version.to_string(), path.to_string()))
}

#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// Serve the whole file: the header is malformed or asks for several ranges, which
    /// RFC 9110 lets a server ignore.
    Ignore,
    Unsatisfiable,
    /// Inclusive first and last byte.
    Bytes(usize, usize),
}

fn parse_range(value: &str, len: usize) -> RangeSpec {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeSpec::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = match (a.parse::<usize>(), b.parse::<usize>()) {
        (Ok(start), Ok(end)) if start <= end => (start, end.min(len.saturating_sub(1))),
        (Ok(start), Err(_)) if b.is_empty() => (start, len.saturating_sub(1)),
        (Err(_), Ok(suffix)) if a.is_empty() => {
            if suffix == 0 {
                return RangeSpec::Unsatisfiable;
            }
            (len.saturating_sub(suffix), len.saturating_sub(1))
        }
        _ => return RangeSpec::Ignore,
    };
    if start >= len {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Bytes(start, end)
}

/// Starts a file node on `listener`.
pub fn start(
    listener: TcpListener,
    catalog: Arc<Catalog>,
    limits: Limits,
) -> io::Result<ServerHandle> {
    Server::new(listener, FileNode::new(catalog), limits)?.spawn("file-node")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeSpec::Bytes(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeSpec::Bytes(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeSpec::Bytes(90, 99));
        assert_eq!(parse_range("bytes=50-500", 100), RangeSpec::Bytes(50, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=9-1", 100), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeSpec::Ignore);
        assert_eq!(parse_range("items=0-1", 100), RangeSpec::Ignore);
    }

    #[test]
    fn traversal_is_rejected_plain_and_encoded() {
        for bad in [
            "1.1.0/../current",
            "1.1.0/%2e%2e/current",
            "1.1.0/%2E%2E%2Fcurrent",
            "../1.1.0/x",
            "1.1.0//etc/passwd",
            "1.1.0/a\\..\\b",
            "1.1.0/%00",
            "1.1.0/%zz",
            "1.1.0/%252e%252e/current",
            "1.1.0/%c0%ae%c0%ae/current",
            "1.1.0",
        ] {
            assert!(split_file_target(bad).is_err(), "{bad}");
        }
        assert_eq!(
            split_file_target("1.1.0/maps/arena.map").unwrap(),
            ("1.1.0".to_string(), "maps/arena.map".to_string())
        );
    }
}
