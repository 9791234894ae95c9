use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Scalar {
    #[psyne(matrix(rows = 1, cols = 1))]
    value: f32,
}

fn main() {}
