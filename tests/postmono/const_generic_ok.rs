use psyne::{Message, PsyneMessage};

// Control case: the same shapes as the failing cases, instantiated correctly, must build.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Bytes<const N: usize> {
    bytes: [u8; N],
    len: u32,
}

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Block<const N: usize> {
    #[psyne(matrix(rows = 2, cols = 2))]
    w: [f32; N],
}

fn main() {
    let _ = Bytes::<4>::TYPE_ID;
    let _ = Bytes::<8>::FINGERPRINT;
    let _ = Block::<4>::FINGERPRINT;
}
