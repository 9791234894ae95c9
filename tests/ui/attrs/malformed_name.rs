use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
#[psyne(name = 5)]
struct Msg {
    x: f32,
}

fn main() {}
