use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Bad {
    data: [f32; 4],
    pair: (f32, f32),
}

fn main() {}
