use psyne::PsyneMessage;

// Three independent mistakes: all three are reported in one compile.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
#[psyne(nmae = "Typo")]
struct Many {
    ready: bool,
    #[psyne(matrix(rows = 2, cols = 2))]
    w: [f32; 5],
}

fn main() {}
