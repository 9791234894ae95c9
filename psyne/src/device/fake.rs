//! A host-memory model of a GPU for the CPU tests of device channels (not a public API).
//!
//! "Device memory" is a shared slab (so another process can open it from its handle, as CUDA
//! IPC opens device memory), a device address is the slab's address in this process, and an
//! event is two counters in a shared slab: `recorded` (incremented when a record is enqueued)
//! and `completed` (raised when the stream reaches that record). A stream is a queue of
//! operations run in order as far as they can go: a wait on an event stops the queue until the
//! event's `completed` reaches the `recorded` value the wait saw when it was enqueued, which is
//! CUDA's rule (a wait is for the most recent record at the time of the call). A stream can be
//! held, to model a GPU that has not yet run the work: operations then queue up until
//! [`FakeStream::resume`]. So a test can tell "read after the write" from "read before it".

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::DeviceError;
use super::api::{Device, DevicePtr, GpuUuid, IpcHandle};
use crate::slab::{Slab, SlabError};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// How long [`Device::synchronize`] waits for a blocked fake stream.
const SYNC_PATIENCE: Duration = Duration::from_secs(10);

/// A fake GPU (see the module docs). Cheap to clone.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct FakeDevice {
    inner: Arc<Settings>,
}

#[derive(Debug)]
struct Settings {
    uuid: GpuUuid,
    /// GPUs "visible" to this one, and whether it has peer access to each.
    visible: Vec<(GpuUuid, bool)>,
    ipc: bool,
}

impl FakeDevice {
    /// A fake GPU with this UUID, IPC supported, no other GPU visible.
    pub fn new(uuid: GpuUuid) -> Self {
        FakeDevice {
            inner: Arc::new(Settings {
                uuid,
                visible: Vec::new(),
                ipc: true,
            }),
        }
    }

    /// Makes `other` visible to this GPU, with peer access or without.
    pub fn with_visible(self, other: GpuUuid, peer_access: bool) -> Self {
        let mut s = Settings {
            uuid: self.inner.uuid,
            visible: self.inner.visible.clone(),
            ipc: self.inner.ipc,
        };
        s.visible.push((other, peer_access));
        FakeDevice { inner: Arc::new(s) }
    }

    /// A GPU whose driver refuses IPC (as CUDA does under some virtualisation and on WSL).
    pub fn without_ipc(self) -> Self {
        FakeDevice {
            inner: Arc::new(Settings {
                uuid: self.inner.uuid,
                visible: self.inner.visible.clone(),
                ipc: false,
            }),
        }
    }
}

/// Fake device memory: a shared slab.
#[doc(hidden)]
#[derive(Debug)]
pub struct FakeMemory {
    slab: Slab,
}

/// A fake event: two counters in a shared slab (see the module docs).
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct FakeEvent {
    cells: Arc<Slab>,
}

impl FakeEvent {
    fn recorded(&self) -> &AtomicU64 {
        // SAFETY: the slab is at least a page, page-aligned and alive as long as `cells`; its
        // first word is only ever accessed atomically.
        unsafe { &*self.cells.as_ptr().as_ptr().cast::<AtomicU64>() }
    }
    fn completed(&self) -> &AtomicU64 {
        // SAFETY: as above, for the word at byte 64.
        unsafe { &*self.cells.as_ptr().as_ptr().add(64).cast::<AtomicU64>() }
    }
}

enum Op {
    Memset { dst: u64, value: u32, words: usize },
    Copy { dst: u64, src: u64, bytes: usize },
    Complete { event: FakeEvent, value: u64 },
    Wait { event: FakeEvent, value: u64 },
}

/// A fake stream: a queue of operations (see the module docs).
#[doc(hidden)]
#[derive(Default)]
pub struct FakeStream {
    queue: Mutex<VecDeque<Op>>,
    /// 1 while held.
    held: AtomicU32,
}

impl std::fmt::Debug for FakeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeStream")
            .field("pending", &self.pending())
            .finish()
    }
}

impl FakeStream {
    /// An empty stream that runs work as soon as it can.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops running work: later operations queue up until [`resume`](Self::resume).
    pub fn hold(&self) {
        self.held.store(1, Ordering::SeqCst);
    }

    /// Runs work again, as far as it can go now.
    pub fn resume(&self) {
        self.held.store(0, Ordering::SeqCst);
        self.run();
    }

    /// Operations not run yet.
    pub fn pending(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Op>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, op: Op) {
        self.lock().push_back(op);
        self.run();
    }

    /// Runs queued work in order until the queue is empty, held, or waits on an event that is
    /// not complete; returns the operations left.
    pub fn run(&self) -> usize {
        let mut q = self.lock();
        while self.held.load(Ordering::SeqCst) == 0 {
            let Some(op) = q.front() else { break };
            match op {
                Op::Wait { event, value } => {
                    if event.completed().load(Ordering::Acquire) < *value {
                        break;
                    }
                }
                Op::Complete { event, value } => {
                    event.completed().fetch_max(*value, Ordering::AcqRel);
                }
                &Op::Memset { dst, value, words } => {
                    // SAFETY: the caller of `memset_d32` promised a live, ordered range.
                    unsafe {
                        let p = dst as usize as *mut u32;
                        for i in 0..words {
                            p.add(i).write_unaligned(value);
                        }
                    }
                }
                &Op::Copy { dst, src, bytes } => {
                    // SAFETY: the caller of `copy`/`copy_to_host` promised live, ordered,
                    // non-overlapping ranges.
                    unsafe {
                        core::ptr::copy_nonoverlapping(
                            src as usize as *const u8,
                            dst as usize as *mut u8,
                            bytes,
                        )
                    }
                }
            }
            q.pop_front();
        }
        q.len()
    }
}

/// A shared-memory name for a fake allocation or event, unused so far.
fn fresh_slab(bytes: usize) -> Result<Slab, DeviceError> {
    static N: AtomicU64 = AtomicU64::new(0);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for _ in 0..8 {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("psyne-fakegpu-{}-{stamp:x}-{n}", std::process::id());
        match Slab::create_shared(&name, Slab::builder(bytes.max(1))) {
            Ok(slab) => return Ok(slab),
            Err(SlabError::AlreadyExists { .. }) => continue,
            Err(e) => {
                return Err(DeviceError::Driver {
                    call: "fake alloc",
                    reason: e.to_string(),
                });
            }
        }
    }
    Err(DeviceError::Driver {
        call: "fake alloc",
        reason: "no free shared-memory name".into(),
    })
}

/// The handle of a fake object: its kind, then its shared-memory name.
fn handle_of(kind: u8, slab: &Slab) -> Result<IpcHandle, DeviceError> {
    let name = slab.shared_name().unwrap_or("").as_bytes();
    if name.is_empty() || name.len() > 62 {
        return Err(DeviceError::IpcUnsupported {
            reason: "fake object without a short shared name".into(),
        });
    }
    let mut h = [0u8; 64];
    h[0] = kind;
    h[1] = name.len() as u8;
    h[2..2 + name.len()].copy_from_slice(name);
    Ok(IpcHandle(h))
}

fn open_handle(kind: u8, h: &IpcHandle, min: usize) -> Result<Slab, DeviceError> {
    let bad = |reason: String| DeviceError::IpcUnsupported { reason };
    let len = h.0[1] as usize;
    if h.0[0] != kind || len == 0 || len > 62 {
        return Err(bad("not a fake handle of this kind".into()));
    }
    let name = core::str::from_utf8(&h.0[2..2 + len]).map_err(|e| bad(e.to_string()))?;
    let slab = Slab::open_shared(name).map_err(|e| bad(e.to_string()))?;
    if slab.len() < min {
        return Err(bad(format!(
            "fake object {name} is smaller than {min} bytes"
        )));
    }
    Ok(slab)
}

impl FakeDevice {
    fn ipc_allowed(&self) -> Result<(), DeviceError> {
        if self.inner.ipc {
            Ok(())
        } else {
            Err(DeviceError::IpcUnsupported {
                reason: "the (fake) driver does not support IPC".into(),
            })
        }
    }
}

impl Device for FakeDevice {
    type Stream = FakeStream;
    type Memory = FakeMemory;
    type Event = FakeEvent;

    fn uuid(&self) -> GpuUuid {
        self.inner.uuid
    }

    fn check_peer(&self, peer: GpuUuid) -> Result<(), DeviceError> {
        if peer == self.inner.uuid {
            return Ok(());
        }
        match self.inner.visible.iter().find(|(u, _)| *u == peer) {
            Some((_, true)) => Ok(()),
            Some((_, false)) => Err(DeviceError::NoPeerAccess {
                ours: self.inner.uuid,
                theirs: peer,
            }),
            None => Err(DeviceError::DifferentGpu {
                ours: self.inner.uuid,
                theirs: peer,
            }),
        }
    }

    fn alloc(&self, bytes: usize) -> Result<FakeMemory, DeviceError> {
        Ok(FakeMemory {
            slab: fresh_slab(bytes)?,
        })
    }

    fn memory_ptr(memory: &FakeMemory) -> DevicePtr {
        memory.slab.as_ptr().as_ptr() as usize as u64
    }

    fn event(&self, _interprocess: bool) -> Result<FakeEvent, DeviceError> {
        Ok(FakeEvent {
            cells: Arc::new(fresh_slab(4096)?),
        })
    }

    fn record(&self, event: &FakeEvent, stream: &FakeStream) -> Result<(), DeviceError> {
        let value = event.recorded().fetch_add(1, Ordering::AcqRel) + 1;
        stream.push(Op::Complete {
            event: event.clone(),
            value,
        });
        Ok(())
    }

    fn wait(&self, stream: &FakeStream, event: &FakeEvent) -> Result<(), DeviceError> {
        let value = event.recorded().load(Ordering::Acquire);
        stream.push(Op::Wait {
            event: event.clone(),
            value,
        });
        Ok(())
    }

    fn query(&self, event: &FakeEvent) -> Result<bool, DeviceError> {
        Ok(event.completed().load(Ordering::Acquire) >= event.recorded().load(Ordering::Acquire))
    }

    fn synchronize(&self, stream: &FakeStream) -> Result<(), DeviceError> {
        let deadline = Instant::now() + SYNC_PATIENCE;
        while stream.run() > 0 {
            if Instant::now() >= deadline {
                return Err(DeviceError::Driver {
                    call: "fake synchronize",
                    reason: format!("the stream was blocked for {SYNC_PATIENCE:?}"),
                });
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        Ok(())
    }

    fn export_memory(&self, memory: &FakeMemory) -> Result<IpcHandle, DeviceError> {
        self.ipc_allowed()?;
        handle_of(1, &memory.slab)
    }

    fn open_memory(&self, handle: &IpcHandle, bytes: usize) -> Result<FakeMemory, DeviceError> {
        self.ipc_allowed()?;
        Ok(FakeMemory {
            slab: open_handle(1, handle, bytes)?,
        })
    }

    fn export_event(&self, event: &FakeEvent) -> Result<IpcHandle, DeviceError> {
        self.ipc_allowed()?;
        handle_of(2, &event.cells)
    }

    fn open_event(&self, handle: &IpcHandle) -> Result<FakeEvent, DeviceError> {
        self.ipc_allowed()?;
        Ok(FakeEvent {
            cells: Arc::new(open_handle(2, handle, 128)?),
        })
    }

    unsafe fn memset_d32(
        &self,
        dst: DevicePtr,
        value: u32,
        words: usize,
        stream: &FakeStream,
    ) -> Result<(), DeviceError> {
        stream.push(Op::Memset { dst, value, words });
        Ok(())
    }

    unsafe fn copy(
        &self,
        dst: DevicePtr,
        src: DevicePtr,
        bytes: usize,
        stream: &FakeStream,
    ) -> Result<(), DeviceError> {
        stream.push(Op::Copy { dst, src, bytes });
        Ok(())
    }

    unsafe fn copy_to_host(
        &self,
        dst: *mut u8,
        src: DevicePtr,
        bytes: usize,
        stream: &FakeStream,
    ) -> Result<(), DeviceError> {
        stream.push(Op::Copy {
            dst: dst as usize as u64,
            src,
            bytes,
        });
        Ok(())
    }
}
