//! The one place that knows the wire format of frames. Swap bincode here and nowhere else.
//!
//! A frame on the wire is `varint(protocol version) ++ bincode(payload)`. The version comes first
//! and is decoded on its own, so a peer speaking another protocol version gets a clear
//! [`CodecError::Version`] instead of a garbled payload.

use serde::{de::DeserializeOwned, Serialize};

/// The protocol version this build of Kiln speaks on `/ws/slave` and `/ws/console`.
pub const PROTOCOL_VERSION: u16 = 6;

/// No frame may be larger than this; the WebSocket layers are configured with the same limit.
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_BYTES>()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("peer speaks protocol version {got}, this side speaks {want}")]
    Version { got: u16, want: u16 },
    #[error("corrupt frame: {0}")]
    Corrupt(String),
    #[error("frame has {0} trailing bytes after its payload")]
    Trailing(usize),
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

/// Encodes a payload with the version prefix.
pub fn encode<T: Serialize>(payload: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = bincode::serde::encode_to_vec(PROTOCOL_VERSION, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    let body = bincode::serde::encode_to_vec(payload, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    out.extend_from_slice(&body);
    if out.len() > MAX_FRAME_BYTES {
        return Err(CodecError::TooLarge {
            size: out.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    Ok(out)
}

/// Reads only the version prefix of a frame.
pub fn peek_version(bytes: &[u8]) -> Result<(u16, usize), CodecError> {
    bincode::serde::decode_from_slice::<u16, _>(bytes, config())
        .map_err(|e| CodecError::Corrupt(format!("unreadable version prefix: {e}")))
}

/// Decodes a frame, checking its size, its version and that nothing trails the payload.
/// Never panics, whatever the bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    let (version, used) = peek_version(bytes)?;
    if version != PROTOCOL_VERSION {
        return Err(CodecError::Version {
            got: version,
            want: PROTOCOL_VERSION,
        });
    }
    let rest = &bytes[used..];
    let (value, read) = bincode::serde::decode_from_slice::<T, _>(rest, config())
        .map_err(|e| CodecError::Corrupt(e.to_string()))?;
    if read != rest.len() {
        return Err(CodecError::Trailing(rest.len() - read));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{MasterFrame, SlaveFrame};

    #[test]
    fn round_trip() {
        let f = MasterFrame::Cancel {
            build: crate::BuildId(7),
            reason: "asked".into(),
        };
        let bytes = encode(&f).unwrap();
        assert_eq!(decode::<MasterFrame>(&bytes).unwrap(), f);
    }

    #[test]
    fn wrong_version_is_named() {
        let mut bytes = encode(&SlaveFrame::Heartbeat { builds: vec![] }).unwrap();
        bytes[0] = 9;
        assert_eq!(
            decode::<SlaveFrame>(&bytes),
            Err(CodecError::Version {
                got: 9,
                want: PROTOCOL_VERSION
            })
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        // Every prefix of a valid frame, and some noise, must decode to an error or a value.
        let bytes = encode(&SlaveFrame::Log {
            build: crate::BuildId(1),
            first_seq: 0,
            lines: vec!["hello".into(); 3],
        })
        .unwrap();
        for n in 0..bytes.len() {
            assert!(
                decode::<SlaveFrame>(&bytes[..n]).is_err(),
                "prefix {n} decoded"
            );
        }
        let mut x: u32 = 12345;
        for len in 0..300 {
            let noise: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x & 0xff) as u8
                })
                .collect();
            let _ = decode::<SlaveFrame>(&noise);
            let _ = decode::<MasterFrame>(&noise);
        }
    }

    #[test]
    fn oversized_is_refused_before_decoding() {
        let big = vec![1u8; MAX_FRAME_BYTES + 1];
        assert!(matches!(
            decode::<SlaveFrame>(&big),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        // version 1, variant Log (index varies) — a length claiming 2^60 strings must not OOM.
        let mut bytes = encode(&SlaveFrame::Log {
            build: crate::BuildId(1),
            first_seq: 0,
            lines: vec![],
        })
        .unwrap();
        bytes.pop(); // drop the empty vec length
        bytes.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0x10]);
        assert!(decode::<SlaveFrame>(&bytes).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&SlaveFrame::Heartbeat { builds: vec![] }).unwrap();
        bytes.push(0);
        assert_eq!(decode::<SlaveFrame>(&bytes), Err(CodecError::Trailing(1)));
    }
}
