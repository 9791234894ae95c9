use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
#[psyne(name = "A")]
#[psyne(name = "B")]
struct Msg {
    x: f32,
}

fn main() {}
