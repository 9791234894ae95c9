use psyne::{Message, PsyneMessage};

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Block<const N: usize> {
    #[psyne(matrix(rows = 2, cols = 2))]
    w: [f32; N],
}

fn main() {
    let _bad = Block::<3>::FINGERPRINT;
}
