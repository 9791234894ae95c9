//! NUMA topology, memory binding and thread pinning through hwloc (feature `numa`).
//!
//! This module owns one cached hwloc topology (discovered once per process, on first use) and the
//! calls that read it: [`topology`] lists nodes and cores, [`pin_thread_to_node`] and
//! [`pin_thread_to_core`] bind the *calling thread*. Slabs use it to bind their pages to a node
//! ([`SlabBuilder::numa_node`](super::SlabBuilder::numa_node)) and to read back where the pages
//! are ([`Placement::numa_nodes`](super::Placement::numa_nodes)). It never moves other threads
//! or other processes' memory.
//!
//! Node numbers are the operating system's (`/sys/devices/system/node/nodeN`); CPU numbers are
//! the operating system's processor numbers (as in `taskset`); core numbers are hwloc's logical
//! indices (0.. in topology order).

use core::cell::UnsafeCell;
use std::fmt;
use std::sync::OnceLock;

use hwlocality::cpu::binding::CpuBindingFlags;
use hwlocality::memory::binding::{MemoryBindingFlags, MemoryBindingPolicy};
use hwlocality::object::TopologyObject;
use hwlocality::object::types::ObjectType;
use hwlocality::{
    Topology as HwTopology, bitmap::BitmapIndex, cpu::cpuset::CpuSet, memory::nodeset::NodeSet,
};

use super::SlabError;

/// One NUMA node: the memory attached to a group of CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    /// OS index of the node.
    pub os_index: u32,
    /// OS indices of the processing units (hardware threads) local to this node.
    pub cpus: Vec<u32>,
    /// Memory local to this node in bytes (0 if hwloc does not know).
    pub local_memory: u64,
}

/// One physical CPU core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuCore {
    /// Logical index (0.. in topology order): the argument of [`pin_thread_to_core`].
    pub index: u32,
    /// OS indices of its processing units (hardware threads).
    pub cpus: Vec<u32>,
    /// The NUMA nodes whose CPUs include this core (usually one).
    pub nodes: Vec<u32>,
}

/// The machine as hwloc sees it: NUMA nodes and cores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// NUMA nodes, in OS index order.
    pub nodes: Vec<NumaNode>,
    /// Cores, in logical order.
    pub cores: Vec<CpuCore>,
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} NUMA node(s), {} core(s)",
            self.nodes.len(),
            self.cores.len()
        )?;
        for n in &self.nodes {
            writeln!(
                f,
                "  node {}: {} local, CPUs {:?}",
                n.os_index,
                super::error::human(n.local_memory),
                n.cpus
            )?;
        }
        for c in &self.cores {
            writeln!(
                f,
                "  core {}: CPUs {:?}, node(s) {:?}",
                c.index, c.cpus, c.nodes
            )?;
        }
        Ok(())
    }
}

/// The process-wide hwloc topology, discovered on first use.
fn hw() -> Result<&'static HwTopology, SlabError> {
    static TOPOLOGY: OnceLock<Result<HwTopology, String>> = OnceLock::new();
    TOPOLOGY
        .get_or_init(|| HwTopology::new().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|reason| SlabError::Topology {
            reason: reason.clone(),
        })
}

fn indices<'a>(set: impl Iterator<Item = BitmapIndex> + 'a) -> Vec<u32> {
    set.map(|i| usize::from(i) as u32).collect()
}

fn node_objects(topo: &HwTopology) -> impl Iterator<Item = &TopologyObject> {
    topo.objects_with_type(ObjectType::NUMANode)
}

/// Reads the topology: NUMA nodes (with their CPUs and memory) and cores.
///
/// # Errors
/// [`SlabError::Topology`] if hwloc cannot discover the machine.
pub fn topology() -> Result<Topology, SlabError> {
    let topo = hw()?;
    let mut nodes: Vec<NumaNode> = node_objects(topo)
        .filter_map(|n| {
            Some(NumaNode {
                os_index: n.os_index()? as u32,
                cpus: n
                    .cpuset()
                    .map(|s| indices(s.iter_set()))
                    .unwrap_or_default(),
                local_memory: n.total_memory(),
            })
        })
        .collect();
    nodes.sort_by_key(|n| n.os_index);
    let cores = topo
        .objects_with_type(ObjectType::Core)
        .enumerate()
        .map(|(i, c)| {
            let cpus: Vec<u32> = c
                .cpuset()
                .map(|s| indices(s.iter_set()))
                .unwrap_or_default();
            let nodes = nodes
                .iter()
                .filter(|n| n.cpus.iter().any(|cpu| cpus.contains(cpu)))
                .map(|n| n.os_index)
                .collect();
            CpuCore {
                index: i as u32,
                cpus,
                nodes,
            }
        })
        .collect();
    Ok(Topology { nodes, cores })
}

/// The OS indices of the NUMA nodes that exist.
pub fn node_ids() -> Result<Vec<u32>, SlabError> {
    let mut ids: Vec<u32> = node_objects(hw()?)
        .filter_map(|n| n.os_index().map(|i| i as u32))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Fails with [`SlabError::NumaNodeNotFound`] unless `node` exists.
pub(crate) fn check_node(node: u32) -> Result<(), SlabError> {
    let available = node_ids()?;
    if available.contains(&node) {
        Ok(())
    } else {
        Err(SlabError::NumaNodeNotFound { node, available })
    }
}

/// A reference to `len` bytes at `ptr` that hwloc can take (it only reads the address and size).
///
/// # Safety
/// `ptr..ptr+len` must be a live mapping for the duration of the borrow. `UnsafeCell` makes the
/// reference compatible with concurrent writes by others.
unsafe fn area<'a>(ptr: *const u8, len: usize) -> &'a [UnsafeCell<u8>] {
    // SAFETY: the caller guarantees the range is mapped; UnsafeCell<u8> has the layout of u8.
    unsafe { core::slice::from_raw_parts(ptr.cast::<UnsafeCell<u8>>(), len) }
}

/// Binds `ptr..ptr+len` to `node` (strict: fails rather than binding elsewhere). Pages already
/// faulted in are not moved.
///
/// # Safety
/// `ptr..ptr+len` must be a live mapping owned by the caller.
pub(crate) unsafe fn bind_area(ptr: *const u8, len: usize, node: u32) -> Result<(), SlabError> {
    check_node(node)?;
    let topo = hw()?;
    let mut set = NodeSet::new();
    set.set(node as usize);
    // SAFETY: forwarded from the caller.
    let target = unsafe { area(ptr, len) };
    topo.bind_memory_area(
        target,
        &set,
        MemoryBindingPolicy::Bind,
        // hwloc accepts no MIGRATE for areas; slabs bind before their first page is faulted in.
        MemoryBindingFlags::STRICT,
    )
    .map_err(|e| SlabError::NumaBind {
        node,
        reason: e.to_string(),
    })
}

/// The nodes holding the resident pages of `ptr..ptr+len` (empty if none is resident).
///
/// # Safety
/// `ptr..ptr+len` must be a live mapping.
pub(crate) unsafe fn area_nodes(ptr: *const u8, len: usize) -> Result<Vec<u32>, SlabError> {
    let topo = hw()?;
    // SAFETY: forwarded from the caller.
    let target = unsafe { area(ptr, len) };
    let set: NodeSet = topo
        .area_memory_location(target, MemoryBindingFlags::empty())
        .map_err(|e| SlabError::NumaBind {
            node: u32::MAX,
            reason: e.to_string(),
        })?;
    Ok(indices(set.iter_set()))
}

fn bind_thread(cpus: &CpuSet) -> Result<(), SlabError> {
    hw()?
        .bind_cpu(cpus, CpuBindingFlags::THREAD)
        .map_err(|e| SlabError::CpuBind {
            reason: e.to_string(),
        })
}

/// Pins the calling thread to the CPUs of NUMA node `node`.
///
/// # Errors
/// [`SlabError::NumaNodeNotFound`] for a node that does not exist (or has no CPUs),
/// [`SlabError::CpuBind`] if the OS refuses.
pub fn pin_thread_to_node(node: u32) -> Result<(), SlabError> {
    let topo = hw()?;
    let cpus = node_objects(topo)
        .find(|n| n.os_index() == Some(node as usize))
        .and_then(|n| n.cpuset().map(|s| s.clone_target()))
        .filter(|s| !s.is_empty());
    match cpus {
        Some(cpus) => bind_thread(&cpus),
        None => Err(SlabError::NumaNodeNotFound {
            node,
            available: node_ids()?,
        }),
    }
}

/// Pins the calling thread to the processing units of core `core` (logical index, see
/// [`CpuCore::index`]).
///
/// # Errors
/// [`SlabError::CoreNotFound`] for a core that does not exist, [`SlabError::CpuBind`] if the OS
/// refuses.
pub fn pin_thread_to_core(core: u32) -> Result<(), SlabError> {
    let topo = hw()?;
    let cores = topo.objects_with_type(ObjectType::Core);
    let available = cores.len() as u32;
    let cpus = topo
        .objects_with_type(ObjectType::Core)
        .nth(core as usize)
        .and_then(|c| c.cpuset().map(|s| s.clone_target()));
    match cpus {
        Some(cpus) => bind_thread(&cpus),
        None => Err(SlabError::CoreNotFound { core, available }),
    }
}
