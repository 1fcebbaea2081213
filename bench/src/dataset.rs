//! A deterministic dataset: object `i` is `object_bytes(seed + i, size)`, so the bench can
//! compute every address and expected byte itself — no manifest to ship, and the same
//! files can be written for another server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use ron_codec::Address;

/// One object of the dataset.
#[derive(Debug, Clone)]
pub struct Object {
    pub addr: Address,
    pub bytes: Vec<u8>,
    /// `/o/b3:<hex>`, formatted once.
    pub path: String,
}

/// Every object, held in memory so bodies can be verified byte for byte.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub objects: Vec<Object>,
}

/// Deterministic bytes that do not compress (xorshift64*).
pub fn object_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

impl Dataset {
    pub fn generate(seed: u64, count: usize, size: usize) -> Dataset {
        let objects = (0..count as u64)
            .map(|i| {
                let bytes = object_bytes(seed.wrapping_add(i), size);
                let addr = Address::of(&bytes);
                Object {
                    path: format!("/o/{addr}"),
                    addr,
                    bytes,
                }
            })
            .collect();
        Dataset { objects }
    }

    /// Writes each object as `<dir>/o/b3:<hex>`, the URL layout nginx serves as files.
    pub fn write_dir(&self, dir: &Path) -> std::io::Result<()> {
        let objects = dir.join("o");
        std::fs::create_dir_all(&objects)?;
        for o in &self.objects {
            std::fs::write(objects.join(o.addr.to_string()), &o.bytes)?;
        }
        Ok(())
    }

    /// Every object's URL path, one a line, in dataset order (line `i` is object `i`,
    /// the Zipf rank `i` of [`crate::workload::Popularity::zipf`]): what other load
    /// generators (wrk scripts) pick from, so they ask for exactly the same URLs.
    pub fn path_list(&self) -> String {
        let mut out = String::with_capacity(self.objects.len() * 72);
        for o in &self.objects {
            out.push_str(&o.path);
            out.push('\n');
        }
        out
    }

    /// Uploads every object to a ron node (`PUT /o/b3:<hex>`); returns how many were new.
    pub fn load_into(&self, http: SocketAddr, token: Option<&str>) -> std::io::Result<usize> {
        let mut created = 0;
        for o in &self.objects {
            match put(http, &o.path, &o.bytes, token)? {
                201 => created += 1,
                200 => {}
                status => {
                    return Err(std::io::Error::other(format!(
                        "loading {}: server answered {status}",
                        o.addr
                    )))
                }
            }
        }
        Ok(created)
    }
}

/// One blocking PUT; returns the status.
fn put(http: SocketAddr, path: &str, body: &[u8], token: Option<&str>) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&http, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {}\r\n{auth}Connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    use ron_codec::http::head::HEAD_LEN_MAX_DEFAULT;
    use ron_codec::http::reply::{parse_response_head, ReplyParse};
    match parse_response_head(&reply, HEAD_LEN_MAX_DEFAULT).map_err(std::io::Error::other)? {
        ReplyParse::Complete(reply) => Ok(reply.status),
        ReplyParse::Partial => Err(std::io::Error::other("no whole response head")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_distinct() {
        let a = Dataset::generate(7, 3, 1000);
        let b = Dataset::generate(7, 3, 1000);
        assert_eq!(a.objects[2].addr, b.objects[2].addr);
        assert_ne!(a.objects[0].addr, a.objects[1].addr);
        assert_eq!(a.objects[0].bytes.len(), 1000);
        assert_eq!(a.objects[1].path, format!("/o/{}", a.objects[1].addr));
    }

    #[test]
    fn path_list_is_in_dataset_order() {
        let a = Dataset::generate(7, 3, 100);
        let list = a.path_list();
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines.len(), 3);
        for (line, o) in lines.iter().zip(&a.objects) {
            assert_eq!(*line, o.path);
        }
        assert!(list.ends_with('\n'));
    }
}
