use psyne::{Message, PsyneMessage};

// Fine for N = 4, padded for N = 1: the check runs when an instantiation is used.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Bytes<const N: usize> {
    bytes: [u8; N],
    len: u32,
}

fn main() {
    let _ok = Bytes::<4>::TYPE_ID;
    let _bad = Bytes::<1>::TYPE_ID;
}
