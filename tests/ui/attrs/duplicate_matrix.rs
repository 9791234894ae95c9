use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Msg {
    #[psyne(matrix(rows = 2, cols = 2), matrix(rows = 4, cols = 1))]
    x: [f32; 4],
}

fn main() {}
