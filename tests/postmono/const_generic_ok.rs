use psyne::{Message, PsyneMessage};

// Control case: the same shapes as the failing cases, written or instantiated correctly, must
// build. `[[u8; 4]; N]` keeps every length a multiple of `len`'s 4-byte alignment.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Bytes<const N: usize> {
    len: u32,
    bytes: [[u8; 4]; N],
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
    let b = Bytes::<1> {
        len: 1,
        bytes: [[7, 0, 0, 0]],
    };
    assert_eq!(psyne::bytemuck::bytes_of(&b), &[1, 0, 0, 0, 7, 0, 0, 0]);
}
