//! The handshake (see `PROTOCOL.md`): greeting, proofs, identities, verdicts. Both sides run
//! the same code; every read has a deadline and a fixed size.

use super::wire::{self, Greeting, Identity, Role, Verdict};
use super::{NetError, NetOptions};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// What the handshake needs of a connection: a TCP stream, or the fuzz target's bytes.
pub(crate) trait Conn: Read + Write {
    /// Bounds the next reads (`None`: no bound); a read past it fails with `WouldBlock` or
    /// `TimedOut`.
    fn read_timeout(&mut self, t: Option<Duration>) -> io::Result<()>;
    /// Bounds the next writes likewise.
    fn write_timeout(&mut self, t: Option<Duration>) -> io::Result<()>;
}

impl Conn for TcpStream {
    fn read_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)
    }
    fn write_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        self.set_write_timeout(t)
    }
}

/// What this side is: its role and channel identity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Local {
    /// Sender or receiver.
    pub role: Role,
    /// The channel identity this side announces.
    pub identity: Identity,
}

/// Reads exactly `buf.len()` bytes before `deadline`.
fn read_by(stream: &mut impl Conn, buf: &mut [u8], deadline: Instant) -> Result<(), NetError> {
    let mut off = 0;
    while off < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NetError::Timeout { what: "handshake" });
        }
        stream.read_timeout(Some(left))?;
        match stream.read(&mut buf[off..]) {
            Ok(0) => {
                return Err(NetError::Handshake {
                    what: "the peer closed the connection during the handshake",
                });
            }
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(NetError::Timeout { what: "handshake" });
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes all of `buf` before `deadline`.
fn write_by(stream: &mut impl Conn, buf: &[u8], deadline: Instant) -> Result<(), NetError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(NetError::Timeout { what: "handshake" });
    }
    stream.write_timeout(Some(left))?;
    stream.write_all(buf).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            NetError::Timeout { what: "handshake" }
        }
        _ => NetError::Io(e),
    })
}

/// Sends a refusal (best effort: the peer may already be gone) and returns `err`.
fn refuse(
    stream: &mut impl Conn,
    code: u16,
    detail: u64,
    deadline: Instant,
    err: NetError,
) -> NetError {
    let _ = write_by(stream, &Verdict { code, detail }.encode(), deadline);
    err
}

/// 32 bytes from the kernel's random source.
fn nonce() -> Result<[u8; wire::NONCE_LEN], NetError> {
    let mut n = [0u8; wire::NONCE_LEN];
    let mut off = 0;
    while off < n.len() {
        // SAFETY: the pointer and length describe the unwritten tail of `n`.
        let r = unsafe { libc::getrandom(n[off..].as_mut_ptr().cast(), n.len() - off, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e.into());
            }
        } else {
            off += r as usize;
        }
    }
    Ok(n)
}

/// HMAC-SHA256 proving the key, by `prover` (its role and greeting) to the verifier.
fn proof_mac(
    key: &[u8],
    prover: Role,
    prover_greeting: &[u8; wire::GREETING_LEN],
    verifier_greeting: &[u8; wire::GREETING_LEN],
) -> Result<Hmac<Sha256>, NetError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| NetError::AuthFailed {
        why: "the key cannot be used for HMAC",
    })?;
    mac.update(b"psyne-net-proof-v1");
    mac.update(&[prover as u8]);
    mac.update(prover_greeting);
    mac.update(verifier_greeting);
    Ok(mac)
}

/// Reads a 4-byte tag; a verdict in its place is the peer's refusal.
fn read_tag(
    stream: &mut impl Conn,
    expected: [u8; 4],
    deadline: Instant,
) -> Result<Result<[u8; 4], Verdict>, NetError> {
    let mut tag = [0u8; 4];
    read_by(stream, &mut tag, deadline)?;
    if tag == expected {
        return Ok(Ok(tag));
    }
    if tag == wire::TAG_VERDICT {
        let mut b = [0u8; wire::VERDICT_LEN];
        b[..4].copy_from_slice(&tag);
        read_by(stream, &mut b[4..], deadline)?;
        return Ok(Err(Verdict::decode(&b)?));
    }
    Err(NetError::Handshake {
        what: "the peer sent an unexpected handshake message",
    })
}

/// The error a refusal by the peer stands for, when this side found nothing wrong.
fn refused(v: Verdict, local: &Local, remote: Option<&Identity>) -> NetError {
    let names = || {
        (
            local.identity.name().to_owned(),
            remote.map_or_else(|| "?".to_owned(), |r| r.name().to_owned()),
        )
    };
    match v.code {
        wire::V_VERSION => NetError::VersionMismatch {
            local: wire::VERSION,
            remote: u16::try_from(v.detail).unwrap_or(u16::MAX),
        },
        wire::V_AUTH => NetError::AuthFailed {
            why: "the peer refused our proof (a different key?)",
        },
        wire::V_TYPE => {
            let (local, remote) = names();
            NetError::IncompatibleType { local, remote }
        }
        wire::V_LAYOUT => {
            let (l, r) = names();
            NetError::IncompatibleLayout {
                local: l,
                remote: r,
                local_fingerprint: local.identity.fingerprint,
                remote_fingerprint: remote.map_or(0, |r| r.fingerprint),
            }
        }
        wire::V_TOO_LARGE => NetError::MessageTooLarge {
            sender_max: local.identity.max_message,
            receiver_max: v.detail,
        },
        wire::V_CODEC => NetError::CompressionUnavailable {
            codec: codec_name(local.identity.codec),
        },
        wire::V_ROLE => NetError::Handshake {
            what: "both sides have the same role (two senders or two receivers)",
        },
        _ => NetError::Handshake {
            what: "the peer refused the channel (malformed handshake or unknown reason)",
        },
    }
}

fn codec_name(codec: u8) -> &'static str {
    match codec {
        wire::CODEC_LZ4 => "lz4",
        wire::CODEC_ZSTD => "zstd",
        _ => "an unknown codec",
    }
}

/// Whether a sender `s` may feed a receiver `r`: the verdict code, its detail and the error.
pub(crate) fn compatible(local: &Local, remote: &Identity) -> Result<(), (u16, u64, NetError)> {
    let (s, r) = match local.role {
        Role::Sender => (&local.identity, remote),
        Role::Receiver => (remote, &local.identity),
    };
    let names = || (local.identity.name().to_owned(), remote.name().to_owned());
    if r.typed {
        if !s.typed || s.type_id != r.type_id {
            let (local, remote) = names();
            return Err((
                wire::V_TYPE,
                0,
                NetError::IncompatibleType { local, remote },
            ));
        }
        if s.fingerprint != r.fingerprint || s.size != r.size || s.align != r.align {
            let (l, rn) = names();
            return Err((
                wire::V_LAYOUT,
                0,
                NetError::IncompatibleLayout {
                    local: l,
                    remote: rn,
                    local_fingerprint: local.identity.fingerprint,
                    remote_fingerprint: remote.fingerprint,
                },
            ));
        }
    }
    if s.max_message > r.max_message {
        return Err((
            wire::V_TOO_LARGE,
            r.max_message,
            NetError::MessageTooLarge {
                sender_max: s.max_message,
                receiver_max: r.max_message,
            },
        ));
    }
    if s.codec >= 8 || r.codec & (1 << s.codec) == 0 {
        return Err((
            wire::V_CODEC,
            0,
            NetError::CompressionUnavailable {
                codec: codec_name(s.codec),
            },
        ));
    }
    Ok(())
}

/// Runs the whole handshake on `stream`; on success returns the peer's identity and leaves the
/// stream in blocking mode with no timeouts.
pub(crate) fn handshake(
    stream: &mut impl Conn,
    local: &Local,
    opts: &NetOptions,
) -> Result<Identity, NetError> {
    let deadline = Instant::now() + opts.handshake_timeout;
    if matches!(opts.auth_key.as_deref(), Some([])) {
        return Err(NetError::AuthFailed {
            why: "the key is empty",
        });
    }
    let ours = Greeting {
        version: wire::VERSION,
        role: local.role as u8,
        auth: opts.auth_key.is_some(),
        nonce: nonce()?,
    }
    .encode();
    write_by(stream, &ours, deadline)?;

    // Greeting: the magic is checked as soon as its 8 bytes are in, so an HTTP request (or any
    // other protocol) fails at once rather than at the deadline.
    let mut theirs = [0u8; wire::GREETING_LEN];
    read_by(stream, &mut theirs[..8], deadline)?;
    wire::check_magic(&theirs[..8])?;
    read_by(stream, &mut theirs[8..], deadline)?;
    let greeting = match Greeting::decode(&theirs) {
        Ok(g) => g,
        Err(e) => return Err(refuse(stream, wire::V_MALFORMED, 0, deadline, e)),
    };
    if greeting.version != wire::VERSION {
        let e = NetError::VersionMismatch {
            local: wire::VERSION,
            remote: greeting.version,
        };
        return Err(refuse(
            stream,
            wire::V_VERSION,
            u64::from(wire::VERSION),
            deadline,
            e,
        ));
    }
    let role = match greeting.role() {
        Ok(r) => r,
        Err(e) => return Err(refuse(stream, wire::V_MALFORMED, 0, deadline, e)),
    };
    if role == local.role {
        let e = NetError::Handshake {
            what: "both sides have the same role (two senders or two receivers)",
        };
        return Err(refuse(stream, wire::V_ROLE, 0, deadline, e));
    }
    if greeting.auth != opts.auth_key.is_some() {
        let e = NetError::AuthFailed {
            why: "only one side has an authentication key",
        };
        return Err(refuse(stream, wire::V_AUTH, 0, deadline, e));
    }

    // Proofs: each side proves the key over both greetings (both nonces, both roles).
    if let Some(key) = opts.auth_key.as_deref() {
        let mine = proof_mac(key, local.role, &ours, &theirs)?
            .finalize()
            .into_bytes();
        let mut mac = [0u8; 32];
        mac.copy_from_slice(&mine);
        write_by(stream, &wire::encode_proof(&mac), deadline)?;
        match read_tag(stream, wire::TAG_PROOF, deadline)? {
            Ok(_) => {}
            Err(v) => return Err(refused(v, local, None)),
        }
        let mut rest = [0u8; wire::PROOF_LEN - 4];
        read_by(stream, &mut rest, deadline)?;
        let check = proof_mac(key, role, &theirs, &ours)?;
        if rest[..4] != [0; 4] || check.verify_slice(&rest[4..]).is_err() {
            let e = NetError::AuthFailed {
                why: "the peer's proof is wrong (a different key?)",
            };
            return Err(refuse(stream, wire::V_AUTH, 0, deadline, e));
        }
    }

    // Identities.
    let mut buf = [0u8; wire::IDENTITY_FIXED + wire::MAX_NAME];
    let n = local.identity.encode(&mut buf);
    write_by(stream, &buf[..n], deadline)?;
    let mut fixed = [0u8; wire::IDENTITY_FIXED];
    match read_tag(stream, wire::TAG_IDENTITY, deadline)? {
        Ok(tag) => fixed[..4].copy_from_slice(&tag),
        Err(v) => return Err(refused(v, local, None)),
    }
    read_by(stream, &mut fixed[4..], deadline)?;
    let mut remote = match Identity::decode_fixed(&fixed) {
        Ok(id) => id,
        Err(e) => return Err(refuse(stream, wire::V_MALFORMED, 0, deadline, e)),
    };
    let mut name = [0u8; wire::MAX_NAME];
    let name = &mut name[..usize::from(remote.name_len)];
    read_by(stream, name, deadline)?;
    if let Err(e) = remote.set_name(name) {
        return Err(refuse(stream, wire::V_MALFORMED, 0, deadline, e));
    }

    // Verdicts: both sides decide and both answer.
    let verdict = compatible(local, &remote);
    let (code, detail) = match &verdict {
        Ok(()) => (wire::V_ACCEPT, 0),
        Err((c, d, _)) => (*c, *d),
    };
    write_by(stream, &Verdict { code, detail }.encode(), deadline)?;
    if let Err((_, _, e)) = verdict {
        return Err(e);
    }
    let mut vb = [0u8; wire::VERDICT_LEN];
    read_by(stream, &mut vb, deadline)?;
    let peer = Verdict::decode(&vb)?;
    if peer.code != wire::V_ACCEPT {
        return Err(refused(peer, local, Some(&remote)));
    }
    stream.read_timeout(None)?;
    stream.write_timeout(None)?;
    Ok(remote)
}
