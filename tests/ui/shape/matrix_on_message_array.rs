use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Inner {
    x: f32,
}

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Outer {
    #[psyne(matrix(rows = 2, cols = 2))]
    items: [Inner; 4],
}

fn main() {}
