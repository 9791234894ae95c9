//! The pieces of `psyne_bench`: payloads and the work done on them, the channels compared
//! (behind one [`links::Link`] trait), the measurement loops, the floors of this machine, and
//! the reports (table, JSON, SVG).

#[cfg(feature = "iceoryx2")]
pub mod ice;
pub mod ipc;
pub mod links;
pub mod payload;
pub mod plot;
pub mod report;
pub mod run;
