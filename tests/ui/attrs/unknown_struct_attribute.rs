use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
#[psyne(id = 7)]
struct Msg {
    x: f32,
}

fn main() {}
