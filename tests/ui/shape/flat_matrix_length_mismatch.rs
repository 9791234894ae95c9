use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Weights {
    #[psyne(matrix(rows = 3, cols = 4))]
    w: [f32; 10],
}

fn main() {}
