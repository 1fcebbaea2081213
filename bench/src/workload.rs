//! What each request is: the workload mix, the popularity distribution, and the
//! expected answer that verification checks.

use crate::dataset::{object_bytes, Dataset};
use ron_codec::frame::{Flags, Frame, FrameMeta, APP_OBJECTS, MAX_FRAME_BYTES};
use ron_codec::messages::{DataHeader, InclusiveRange, ObjectRequest};
use ron_codec::Address;

/// A small, fast, seedable generator (xorshift64*); one per connection.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Which object a read picks.
#[derive(Debug, Clone)]
pub enum Popularity {
    Uniform,
    /// Zipf with exponent `s` over the dataset, by cumulative distribution.
    Zipf {
        cdf: Vec<f64>,
    },
}

impl Popularity {
    pub fn zipf(count: usize, s: f64) -> Popularity {
        let weights: Vec<f64> = (1..=count).map(|k| 1.0 / (k as f64).powf(s)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cdf = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Popularity::Zipf { cdf }
    }

    pub fn pick(&self, rng: &mut Rng, count: usize) -> usize {
        match self {
            Popularity::Uniform => rng.below(count as u64) as usize,
            Popularity::Zipf { cdf } => {
                let u = rng.unit();
                cdf.partition_point(|&c| c < u).min(count - 1)
            }
        }
    }
}

/// The request kinds a run mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// GET a whole object.
    Get,
    /// GET `range_len` bytes at a random offset.
    Range { range_len: u64 },
    /// PUT a new, unique object of `size` bytes.
    Put { size: usize },
}

/// One request to send and what its answer must be.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The request head (and body for PUT).
    pub wire: Vec<u8>,
    pub expect: Expect,
}

#[derive(Debug, Clone)]
pub enum Expect {
    /// 200 and a body equal to this object.
    Object { index: usize },
    /// 206 and these bytes of the object.
    Slice {
        index: usize,
        first: usize,
        last: usize,
    },
    /// 201/200 naming this address.
    Stored { addr: Address },
}

/// The protocol requests are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http,
    Oap,
}

/// The workload: a mix of kinds by weight, over a dataset.
#[derive(Debug, Clone)]
pub struct Workload {
    pub proto: Proto,
    pub mix: Vec<(Kind, u32)>,
    pub popularity: Popularity,
    pub host: String,
    pub put_path: String,
    pub token: Option<String>,
}

impl Workload {
    fn kind(&self, rng: &mut Rng) -> Kind {
        let total: u32 = self.mix.iter().map(|(_, w)| w).sum();
        let mut roll = rng.below(u64::from(total.max(1))) as u32;
        for (kind, weight) in &self.mix {
            if roll < *weight {
                return *kind;
            }
            roll -= weight;
        }
        self.mix[0].0
    }

    /// The next request. `verify` decides whether a PUT's address is computed locally;
    /// `corr_id` tags an OAP request.
    pub fn next(
        &self,
        rng: &mut Rng,
        data: &Dataset,
        put_seq: &mut u64,
        verify: bool,
        corr_id: u64,
    ) -> Planned {
        let request = self.pick(rng, data, put_seq, verify);
        let expect = request.expect();
        let wire = match self.proto {
            Proto::Http => self.http_wire(&request, data, *put_seq),
            Proto::Oap => self.oap_wire(&request, data, corr_id),
        };
        Planned { wire, expect }
    }

    /// What to ask for, whatever the protocol.
    fn pick(&self, rng: &mut Rng, data: &Dataset, put_seq: &mut u64, verify: bool) -> Request {
        let count = data.objects.len();
        match self.kind(rng) {
            Kind::Get => Request::Get {
                index: self.popularity.pick(rng, count),
            },
            Kind::Range { range_len } => {
                let index = self.popularity.pick(rng, count);
                let len = data.objects[index].bytes.len() as u64;
                let span = range_len.min(len).max(1);
                let first = rng.below(len.saturating_sub(span) + 1);
                Request::Range {
                    index,
                    first,
                    last: first + span - 1,
                }
            }
            Kind::Put { size } => {
                *put_seq += 1;
                let body = object_bytes(rng.next_u64() ^ *put_seq, size);
                let addr = verify.then(|| Address::of(&body));
                Request::Put { body, addr }
            }
        }
    }

    fn http_wire(&self, request: &Request, data: &Dataset, put_seq: u64) -> Vec<u8> {
        match request {
            Request::Get { index } => format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
                data.objects[*index].path, self.host
            )
            .into_bytes(),
            Request::Range { index, first, last } => format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nRange: bytes={first}-{last}\r\n\r\n",
                data.objects[*index].path, self.host
            )
            .into_bytes(),
            Request::Put { body, .. } => {
                let auth = self
                    .token
                    .as_ref()
                    .map(|t| format!("Authorization: Bearer {t}\r\n"))
                    .unwrap_or_default();
                // `{n}` in the path makes every PUT's path unique (servers that store by
                // path, like nginx's dav module, would otherwise collide).
                let path = self.put_path.replace("{n}", &put_seq.to_string());
                let mut wire = format!(
                    "PUT {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n{auth}\r\n",
                    self.host,
                    body.len()
                )
                .into_bytes();
                wire.extend_from_slice(body);
                wire
            }
        }
    }

    /// The same requests as OAP/1 frames (plain reads: no proofs).
    fn oap_wire(&self, request: &Request, data: &Dataset, corr_id: u64) -> Vec<u8> {
        let get = |index: usize, range| {
            let request = ObjectRequest::Get {
                addr: data.objects[index].addr,
                range,
                proof: false,
                local: false,
                kept: false,
                node: None,
            };
            let frame = request
                .frame(corr_id, 0, bytes::Bytes::new())
                .expect("a GET frame is small");
            frame.to_bytes().to_vec()
        };
        match request {
            Request::Get { index } => get(*index, None),
            Request::Range { index, first, last } => get(
                *index,
                Some(InclusiveRange {
                    first: *first,
                    last: *last,
                }),
            ),
            Request::Put { body, addr } => {
                let size = body.len() as u64;
                let token = bytes::Bytes::from(self.token.clone().unwrap_or_default());
                let start = ObjectRequest::Put {
                    len: size,
                    addr: *addr,
                    copies: None,
                }
                .frame(corr_id, 0, token)
                .expect("a PUT start frame is small");
                let mut wire = start.to_bytes().to_vec();
                for (i, chunk) in body.chunks(PUT_DATA_BYTES).enumerate() {
                    let offset = (i * PUT_DATA_BYTES) as u64;
                    let end = offset + chunk.len() as u64 == size;
                    let meta = FrameMeta {
                        flags: if end {
                            Flags::REQ | Flags::END
                        } else {
                            Flags::REQ
                        },
                        code: 0,
                        app_proto_id: APP_OBJECTS,
                        tenant_id: 0,
                        corr_id,
                    };
                    let header = DataHeader {
                        obj: *addr,
                        offset,
                        total_len: size,
                    };
                    let frame = Frame::new(
                        meta,
                        bytes::Bytes::new(),
                        header.payload(chunk),
                        MAX_FRAME_BYTES,
                    )
                    .expect("256 KiB of data fits in a frame");
                    wire.extend_from_slice(&frame.to_bytes());
                }
                wire
            }
        }
    }
}

/// One request, before it is written in a protocol.
enum Request {
    Get {
        index: usize,
    },
    Range {
        index: usize,
        first: u64,
        last: u64,
    },
    /// `addr` is computed only when verifying.
    Put {
        body: Vec<u8>,
        addr: Option<Address>,
    },
}

impl Request {
    fn expect(&self) -> Expect {
        match self {
            Request::Get { index } => Expect::Object { index: *index },
            Request::Range { index, first, last } => Expect::Slice {
                index: *index,
                first: *first as usize,
                last: *last as usize,
            },
            Request::Put { addr, .. } => Expect::Stored {
                addr: addr.unwrap_or(Address::from_bytes([0; 32])),
            },
        }
    }
}

/// Raw bytes per DATA frame of an OAP PUT.
const PUT_DATA_BYTES: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_prefers_the_head_and_covers_the_range() {
        let pop = Popularity::zipf(100, 1.0);
        let mut rng = Rng::new(1);
        let mut hits = [0u32; 100];
        for _ in 0..100_000 {
            hits[pop.pick(&mut rng, 100)] += 1;
        }
        assert!(hits[0] > hits[1] && hits[1] > hits[10] && hits[10] > hits[99]);
        // Rank 1 of a Zipf(1) over 100 items is ~19 % of draws.
        assert!((17_000..21_500).contains(&hits[0]), "{}", hits[0]);
    }

    /// Property: over many object counts, exponents and seeds, the Zipf sampler picks
    /// only objects of the dataset, and rank 0 is picked most often.
    #[test]
    fn zipf_stays_in_range_and_rank_0_is_the_most_frequent() {
        let mut params = Rng::new(99);
        for case in 0..200 {
            let count = 1 + params.below(300) as usize;
            let s = 0.5 + 2.0 * params.unit();
            let pop = Popularity::zipf(count, s);
            let mut rng = Rng::new(case);
            let mut hits = vec![0u32; count];
            for _ in 0..20_000 {
                let i = pop.pick(&mut rng, count);
                assert!(i < count, "count {count}, s {s}: picked {i}");
                hits[i] += 1;
            }
            let top = *hits.iter().max().unwrap();
            assert_eq!(
                hits[0],
                top,
                "count {count}, s {s}: {:?}",
                &hits[..count.min(5)]
            );
        }
    }

    #[test]
    fn zipf_cdf_ends_at_one_and_rises() {
        for (count, s) in [(1, 1.0), (2, 0.0), (2_000, 1.0), (200, 1.2)] {
            let Popularity::Zipf { cdf } = Popularity::zipf(count, s) else {
                panic!()
            };
            assert_eq!(cdf.len(), count);
            assert!(cdf.windows(2).all(|w| w[0] <= w[1]));
            assert!((cdf[count - 1] - 1.0).abs() < 1e-9);
        }
    }

    /// Property: uniform picks cover the dataset evenly, whatever its size.
    #[test]
    fn uniform_covers_every_object_evenly() {
        for (count, seed) in [(1, 1), (2, 2), (200, 3), (2_000, 4)] {
            let mut rng = Rng::new(seed);
            let mut hits = vec![0u32; count];
            let draws = 200 * count as u32;
            for _ in 0..draws {
                hits[Popularity::Uniform.pick(&mut rng, count)] += 1;
            }
            // 200 expected per object: a 5-sigma band is about 130..270.
            assert!(
                hits.iter().all(|&h| (130..=270).contains(&h)),
                "count {count}: min {:?} max {:?}",
                hits.iter().min(),
                hits.iter().max()
            );
        }
    }

    /// Ranges are unaligned, uniform over the whole object, and over every object.
    #[test]
    fn ranges_are_unaligned_and_uniform_over_objects_and_offsets() {
        let len = 1usize << 20;
        let span = 65_536;
        let data = Dataset::generate(2, 2, len);
        let w = Workload {
            proto: Proto::Http,
            mix: vec![(
                Kind::Range {
                    range_len: span as u64,
                },
                1,
            )],
            popularity: Popularity::Uniform,
            host: "h".into(),
            put_path: "/o".into(),
            token: None,
        };
        let mut rng = Rng::new(5);
        let (mut per_object, mut aligned, mut sum) = ([0u32; 2], 0u32, 0f64);
        let (mut lowest, mut highest) = (usize::MAX, 0);
        let n = 20_000;
        for _ in 0..n {
            let plan = w.next(&mut rng, &data, &mut 0, true, 1);
            let Expect::Slice { index, first, last } = plan.expect else {
                panic!()
            };
            assert_eq!(last - first + 1, span);
            assert!(last < len);
            let head = String::from_utf8(plan.wire).unwrap();
            assert!(head.contains(&format!("Range: bytes={first}-{last}\r\n")));
            assert!(head.starts_with(&format!("GET {} ", data.objects[index].path)));
            per_object[index] += 1;
            aligned += u32::from(first % 512 == 0);
            sum += first as f64;
            lowest = lowest.min(first);
            highest = highest.max(first);
        }
        let top = (len - span) as f64;
        assert!(per_object.iter().all(|&k| (9_500..=10_500).contains(&k)));
        assert!(
            aligned < 200,
            "{aligned} of {n} ranges start on a 512-byte boundary"
        );
        assert!(((sum / n as f64) / top - 0.5).abs() < 0.02);
        assert!((lowest as f64) < 0.01 * top && (highest as f64) > 0.99 * top);
    }

    #[test]
    fn ranges_stay_inside_the_object() {
        let data = Dataset::generate(1, 2, 100_000);
        let w = Workload {
            proto: Proto::Http,
            mix: vec![(Kind::Range { range_len: 65_536 }, 1)],
            popularity: Popularity::Uniform,
            host: "h".into(),
            put_path: "/o".into(),
            token: None,
        };
        let mut rng = Rng::new(3);
        for _ in 0..1000 {
            let Expect::Slice { first, last, .. } = w.next(&mut rng, &data, &mut 0, true, 1).expect
            else {
                panic!()
            };
            assert!(first <= last && last < 100_000 && last - first + 1 == 65_536);
        }
    }
}
