use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Mask {
    bits: [[bool; 8]; 4],
}

fn main() {}
