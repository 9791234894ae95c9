use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
#[psyne(type_id = "seven")]
struct Msg {
    x: f32,
}

fn main() {}
