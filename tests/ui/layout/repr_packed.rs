use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C, packed)]
struct Packed {
    a: u8,
    data: [f32; 4],
}

fn main() {}
