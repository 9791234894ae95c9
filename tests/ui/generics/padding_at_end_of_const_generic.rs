use psyne::PsyneMessage;

// 4 bytes at the end for every `N`.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Series<const N: usize> {
    data: [f64; N],
    layer: u32,
}

fn main() {}
