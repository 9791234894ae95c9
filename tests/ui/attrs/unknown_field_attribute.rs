use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Msg {
    #[psyne(vector)]
    x: [f32; 4],
}

fn main() {}
