use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Weights {
    // 2 columns of 3 rows: rows = 3, cols = 2.
    #[psyne(matrix(rows = 2, cols = 3))]
    w: [[f32; 3]; 2],
}

fn main() {}
