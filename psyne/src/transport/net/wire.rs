//! Byte layouts of every message on the wire (see `PROTOCOL.md`): encoders that write into fixed
//! arrays and decoders that check every field of untrusted bytes. Nothing here does I/O,
//! allocates or panics on any input.

use super::NetError;

/// First 8 bytes of every connection, in both directions.
pub(crate) const MAGIC: [u8; 8] = *b"PSYNENET";
/// The protocol version this implementation speaks.
pub(crate) const VERSION: u16 = 1;
/// Length of the greeting, the first message in each direction.
pub(crate) const GREETING_LEN: usize = 64;
/// Length of the nonce in a greeting.
pub(crate) const NONCE_LEN: usize = 32;
/// Tag of a proof message.
pub(crate) const TAG_PROOF: [u8; 4] = *b"PSYP";
/// Tag of an identity message.
pub(crate) const TAG_IDENTITY: [u8; 4] = *b"PSYI";
/// Tag of a verdict message.
pub(crate) const TAG_VERDICT: [u8; 4] = *b"PSYV";
/// Length of a proof message (tag, 4 reserved bytes, HMAC-SHA256).
pub(crate) const PROOF_LEN: usize = 40;
/// Length of an identity message before the type name.
pub(crate) const IDENTITY_FIXED: usize = 48;
/// The longest type name an identity carries, in bytes.
pub(crate) const MAX_NAME: usize = 255;
/// Length of a verdict message.
pub(crate) const VERDICT_LEN: usize = 16;
/// Length of a frame header.
pub(crate) const FRAME_HEADER: usize = 32;
/// Length of the prefix of a compressed payload.
pub(crate) const COMPRESSED_PREFIX: usize = 8;
/// Frame flag: the payload is compressed (same bit as `MessageHeader::FLAG_COMPRESSED`).
pub(crate) const FLAG_COMPRESSED: u32 = crate::message::MessageHeader::FLAG_COMPRESSED;

/// Which way messages flow from the speaker of a greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Holds the user's producer; writes frames.
    Sender = 1,
    /// Holds the user's consumer; reads frames.
    Receiver = 2,
}

/// Codec ids (identity byte 33, compressed-prefix byte 4).
pub(crate) const CODEC_NONE: u8 = 0;
/// LZ4 block format (`lz4_flex::block`).
pub(crate) const CODEC_LZ4: u8 = 1;
/// Zstandard frame format.
pub(crate) const CODEC_ZSTD: u8 = 2;

/// The first message: who is speaking and, for authentication, a fresh nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Greeting {
    /// Protocol version of the speaker.
    pub version: u16,
    /// The speaker's role byte (checked by [`Greeting::role`]).
    pub role: u8,
    /// Whether the speaker holds an authentication key.
    pub auth: bool,
    /// 32 random bytes.
    pub nonce: [u8; NONCE_LEN],
}

impl Greeting {
    /// The 64 bytes of this greeting.
    pub(crate) fn encode(&self) -> [u8; GREETING_LEN] {
        let mut b = [0u8; GREETING_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10] = self.role;
        b[11] = u8::from(self.auth);
        b[16..48].copy_from_slice(&self.nonce);
        b
    }

    /// Decodes a greeting whose magic was already checked ([`check_magic`]). The version is
    /// returned as sent (the caller compares it); the other fields are checked only for version
    /// 1.
    pub(crate) fn decode(b: &[u8; GREETING_LEN]) -> Result<Greeting, NetError> {
        check_magic(&b[0..8])?;
        let version = u16::from_le_bytes([b[8], b[9]]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&b[16..48]);
        let g = Greeting {
            version,
            role: b[10],
            auth: b[11] != 0,
            nonce,
        };
        if version == VERSION && (b[11] > 1 || b[12..16] != [0; 4] || b[48..64] != [0; 16]) {
            return Err(NetError::Handshake {
                what: "the greeting's flags or reserved bytes are not zero",
            });
        }
        Ok(g)
    }

    /// The speaker's role, if the byte names one.
    pub(crate) fn role(&self) -> Result<Role, NetError> {
        match self.role {
            1 => Ok(Role::Sender),
            2 => Ok(Role::Receiver),
            _ => Err(NetError::Handshake {
                what: "the greeting's role is neither sender (1) nor receiver (2)",
            }),
        }
    }
}

/// Checks the first 8 bytes of a connection.
pub(crate) fn check_magic(b: &[u8]) -> Result<(), NetError> {
    if b != MAGIC {
        return Err(NetError::Handshake {
            what: "the peer is not a psyne endpoint (bad magic: not \"PSYNENET\")",
        });
    }
    Ok(())
}

/// A proof message: tag, 4 zero bytes, the HMAC.
pub(crate) fn encode_proof(mac: &[u8; 32]) -> [u8; PROOF_LEN] {
    let mut b = [0u8; PROOF_LEN];
    b[0..4].copy_from_slice(&TAG_PROOF);
    b[8..40].copy_from_slice(mac);
    b
}

/// What a channel end is: sent by both sides after the greeting (and proofs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    /// `Message::TYPE_ID` (typed), 0 (raw).
    pub type_id: u64,
    /// `Message::FINGERPRINT` (typed), 0 (raw).
    pub fingerprint: u64,
    /// Sender: the largest payload it will send. Receiver: the largest payload it accepts.
    pub max_message: u64,
    /// `size_of::<T>()` (typed), 0 (raw).
    pub size: u32,
    /// `align_of::<T>()` (typed), 0 (raw).
    pub align: u32,
    /// Whether the end carries one message type.
    pub typed: bool,
    /// Sender: the codec it will use. Receiver: bit set of codecs it decodes (bit `1 << id`).
    pub codec: u8,
    /// Sender: the codec level (zstd), else 0.
    pub level: i8,
    /// Length of the type name in `name`.
    pub name_len: u8,
    /// The type name (UTF-8), `name_len` bytes used.
    pub name: [u8; MAX_NAME],
}

impl Identity {
    /// An identity with `name` truncated to [`MAX_NAME`] bytes at a character boundary.
    #[allow(clippy::too_many_arguments)] // one argument per wire field; built in two places
    pub(crate) fn new(
        type_id: u64,
        fingerprint: u64,
        max_message: u64,
        size: u32,
        align: u32,
        typed: bool,
        codec: u8,
        level: i8,
        name: &str,
    ) -> Identity {
        let mut cut = name.len().min(MAX_NAME);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut buf = [0u8; MAX_NAME];
        buf[..cut].copy_from_slice(&name.as_bytes()[..cut]);
        Identity {
            type_id,
            fingerprint,
            max_message,
            size,
            align,
            typed,
            codec,
            level,
            name_len: cut as u8,
            name: buf,
        }
    }

    /// The type name.
    pub(crate) fn name(&self) -> &str {
        // Decoded names were checked to be UTF-8; encoded ones were cut at a char boundary.
        core::str::from_utf8(&self.name[..usize::from(self.name_len)]).unwrap_or("<not UTF-8>")
    }

    /// Encodes into `out` (at least `IDENTITY_FIXED + MAX_NAME` bytes); returns the length.
    pub(crate) fn encode(&self, out: &mut [u8; IDENTITY_FIXED + MAX_NAME]) -> usize {
        out.fill(0);
        out[0..4].copy_from_slice(&TAG_IDENTITY);
        out[4] = u8::from(self.typed);
        out[5] = self.codec;
        out[6] = self.level as u8;
        out[7] = self.name_len;
        out[8..16].copy_from_slice(&self.type_id.to_le_bytes());
        out[16..24].copy_from_slice(&self.fingerprint.to_le_bytes());
        out[24..32].copy_from_slice(&self.max_message.to_le_bytes());
        out[32..36].copy_from_slice(&self.size.to_le_bytes());
        out[36..40].copy_from_slice(&self.align.to_le_bytes());
        let n = usize::from(self.name_len);
        out[IDENTITY_FIXED..IDENTITY_FIXED + n].copy_from_slice(&self.name[..n]);
        IDENTITY_FIXED + n
    }

    /// Decodes the fixed part (tag already checked); the name is filled in by
    /// [`Identity::set_name`] after `name_len` more bytes were read.
    pub(crate) fn decode_fixed(b: &[u8; IDENTITY_FIXED]) -> Result<Identity, NetError> {
        if b[0..4] != TAG_IDENTITY {
            return Err(NetError::Handshake {
                what: "expected an identity message",
            });
        }
        if b[4] > 1 || b[40..48] != [0; 8] {
            return Err(NetError::Handshake {
                what: "the identity's kind or reserved bytes are invalid",
            });
        }
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        Ok(Identity {
            typed: b[4] == 1,
            codec: b[5],
            level: b[6] as i8,
            name_len: b[7],
            type_id: u64_at(8),
            fingerprint: u64_at(16),
            max_message: u64_at(24),
            size: u32_at(32),
            align: u32_at(36),
            name: [0; MAX_NAME],
        })
    }

    /// Sets the name from the `name_len` bytes that followed the fixed part.
    pub(crate) fn set_name(&mut self, bytes: &[u8]) -> Result<(), NetError> {
        if bytes.len() != usize::from(self.name_len) || core::str::from_utf8(bytes).is_err() {
            return Err(NetError::Handshake {
                what: "the identity's type name is not UTF-8",
            });
        }
        self.name[..bytes.len()].copy_from_slice(bytes);
        Ok(())
    }
}

/// The answer of each side: accept (code 0) or a refusal code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// One of the `V_*` codes.
    pub code: u16,
    /// A number the code explains (a version, a size), else 0.
    pub detail: u64,
}

/// Accept: messages may flow.
pub(crate) const V_ACCEPT: u16 = 0;
/// The protocol versions differ (detail: the refuser's version).
pub(crate) const V_VERSION: u16 = 1;
/// Both sides have the same role.
pub(crate) const V_ROLE: u16 = 2;
/// Authentication failed, or only one side has a key.
pub(crate) const V_AUTH: u16 = 3;
/// The message types differ.
pub(crate) const V_TYPE: u16 = 4;
/// Same type id, different layout.
pub(crate) const V_LAYOUT: u16 = 5;
/// The sender's largest message exceeds the receiver's ring (detail: receiver's largest).
pub(crate) const V_TOO_LARGE: u16 = 6;
/// The receiver cannot decode the sender's codec.
pub(crate) const V_CODEC: u16 = 7;
/// A handshake message was malformed.
pub(crate) const V_MALFORMED: u16 = 8;

impl Verdict {
    /// The 16 bytes of this verdict.
    pub(crate) fn encode(&self) -> [u8; VERDICT_LEN] {
        let mut b = [0u8; VERDICT_LEN];
        b[0..4].copy_from_slice(&TAG_VERDICT);
        b[4..6].copy_from_slice(&self.code.to_le_bytes());
        b[8..16].copy_from_slice(&self.detail.to_le_bytes());
        b
    }

    /// Decodes a verdict (tag included).
    pub(crate) fn decode(b: &[u8; VERDICT_LEN]) -> Result<Verdict, NetError> {
        if b[0..4] != TAG_VERDICT || b[6..8] != [0; 2] {
            return Err(NetError::Handshake {
                what: "malformed verdict message",
            });
        }
        let mut d = [0u8; 8];
        d.copy_from_slice(&b[8..16]);
        Ok(Verdict {
            code: u16::from_le_bytes([b[4], b[5]]),
            detail: u64::from_le_bytes(d),
        })
    }
}

/// A frame header: the ring's record header in little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    /// Bytes of payload that follow on the wire.
    pub len: u32,
    /// 0 or [`FLAG_COMPRESSED`].
    pub flags: u32,
    /// The message's type id.
    pub type_id: u64,
    /// 0 for the first frame of a connection, then +1 per frame.
    pub sequence: u64,
    /// The sender's send time (its monotonic clock), or 0.
    pub timestamp_ns: u64,
}

impl FrameHeader {
    /// The 32 bytes of this header.
    pub(crate) fn encode(&self) -> [u8; FRAME_HEADER] {
        let mut b = [0u8; FRAME_HEADER];
        b[0..4].copy_from_slice(&self.len.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..16].copy_from_slice(&self.type_id.to_le_bytes());
        b[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        b[24..32].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        b
    }

    /// Decodes and checks a header: no flag but `FLAG_COMPRESSED`, the sequence number
    /// `expected_seq`, a payload of at most `max_payload` bytes (compressed: the prefix and at
    /// most `max_payload` bytes more).
    pub(crate) fn decode(
        b: &[u8; FRAME_HEADER],
        max_payload: usize,
        expected_seq: u64,
    ) -> Result<FrameHeader, NetError> {
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        let h = FrameHeader {
            len: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            flags: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            type_id: u64_at(8),
            sequence: u64_at(16),
            timestamp_ns: u64_at(24),
        };
        if h.flags & !FLAG_COMPRESSED != 0 {
            return Err(NetError::Corrupted {
                what: "a frame carries an unknown or ring-only flag",
            });
        }
        if h.sequence != expected_seq {
            return Err(NetError::Corrupted {
                what: "a frame's sequence number is not the next one",
            });
        }
        let len = h.len as usize;
        if h.flags & FLAG_COMPRESSED != 0 {
            if len < COMPRESSED_PREFIX || len - COMPRESSED_PREFIX >= max_payload {
                return Err(NetError::Corrupted {
                    what: "a compressed frame's length is out of bounds",
                });
            }
        } else if len > max_payload {
            return Err(NetError::Corrupted {
                what: "a frame announces a payload larger than the receiving ring takes",
            });
        }
        Ok(h)
    }
}

/// The 8 bytes before a compressed payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CompressedPrefix {
    /// Length of the payload after decompression and unshuffling.
    pub original_len: u32,
    /// `CODEC_LZ4` or `CODEC_ZSTD`.
    pub codec: u8,
    /// Byte-shuffle width: 1 (none), 2, 4 or 8.
    pub shuffle: u8,
}

impl CompressedPrefix {
    /// The 8 bytes of this prefix.
    pub(crate) fn encode(&self) -> [u8; COMPRESSED_PREFIX] {
        let mut b = [0u8; COMPRESSED_PREFIX];
        b[0..4].copy_from_slice(&self.original_len.to_le_bytes());
        b[4] = self.codec;
        b[5] = self.shuffle;
        b
    }

    /// Decodes and checks a prefix: the negotiated codec, a valid shuffle width, an original
    /// length of at most `max_payload` and larger than the compressed bytes (`wire_len`).
    pub(crate) fn decode(
        b: &[u8; COMPRESSED_PREFIX],
        codec: u8,
        max_payload: usize,
        wire_len: usize,
    ) -> Result<CompressedPrefix, NetError> {
        let p = CompressedPrefix {
            original_len: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            codec: b[4],
            shuffle: b[5],
        };
        if p.codec != codec || codec == CODEC_NONE {
            return Err(NetError::Corrupted {
                what: "a compressed frame names a codec that was not negotiated",
            });
        }
        if !matches!(p.shuffle, 1 | 2 | 4 | 8) || b[6..8] != [0; 2] {
            return Err(NetError::Corrupted {
                what: "a compressed frame's shuffle width or reserved bytes are invalid",
            });
        }
        let orig = p.original_len as usize;
        if orig > max_payload || orig <= wire_len - COMPRESSED_PREFIX.min(wire_len) {
            return Err(NetError::Corrupted {
                what: "a compressed frame's original length is out of bounds",
            });
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_header_round_trips_and_bounds() {
        let h = FrameHeader {
            len: 100,
            flags: 0,
            type_id: 7,
            sequence: 3,
            timestamp_ns: 9,
        };
        assert_eq!(FrameHeader::decode(&h.encode(), 100, 3).ok(), Some(h));
        assert!(matches!(
            FrameHeader::decode(&h.encode(), 99, 3),
            Err(NetError::Corrupted { .. })
        ));
        assert!(FrameHeader::decode(&h.encode(), 100, 4).is_err());
        let wrap = FrameHeader { flags: 1, ..h };
        assert!(FrameHeader::decode(&wrap.encode(), 100, 3).is_err());
    }

    #[test]
    fn greeting_and_verdict_round_trip() {
        let g = Greeting {
            version: VERSION,
            role: 1,
            auth: true,
            nonce: [5; 32],
        };
        assert_eq!(Greeting::decode(&g.encode()).ok(), Some(g));
        let v = Verdict {
            code: V_TOO_LARGE,
            detail: 1 << 40,
        };
        assert_eq!(Verdict::decode(&v.encode()).ok(), Some(v));
    }

    #[test]
    fn identity_round_trips_with_a_cut_name() {
        let long = "é".repeat(200); // 400 bytes: cut to 254 at a char boundary
        let id = Identity::new(1, 2, 3, 4, 8, true, CODEC_LZ4, 0, &long);
        assert_eq!(id.name_len, 254);
        let mut out = [0u8; IDENTITY_FIXED + MAX_NAME];
        let n = id.encode(&mut out);
        let mut fixed = [0u8; IDENTITY_FIXED];
        fixed.copy_from_slice(&out[..IDENTITY_FIXED]);
        let mut back = Identity::decode_fixed(&fixed).unwrap();
        back.set_name(&out[IDENTITY_FIXED..n]).unwrap();
        assert_eq!(back, id);
        assert_eq!(back.name(), &long[..254]);
    }
}
