use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Msg {
    #[psyne(matrix(rows = 2))]
    x: [f32; 4],
}

fn main() {}
