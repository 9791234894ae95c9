use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
#[psyne(matrix(rows = 2, cols = 2))]
struct Msg {
    x: [f32; 4],
}

fn main() {}
