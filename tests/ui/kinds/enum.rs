use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
enum Choice {
    A,
    B,
}

fn main() {}
