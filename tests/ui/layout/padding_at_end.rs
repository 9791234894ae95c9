use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Tail {
    data: [f64; 2],
    layer: u32,
}

fn main() {}
