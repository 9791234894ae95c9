use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Gap {
    flag: u8,
    data: [f32; 4],
}

fn main() {}
