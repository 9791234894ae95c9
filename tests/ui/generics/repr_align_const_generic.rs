use psyne::PsyneMessage;

// `align(16)` rounds the size of `Aligned<1>` (4 bytes of data) up to 16.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C, align(16))]
struct Aligned<const N: usize> {
    data: [f32; N],
}

fn main() {}
