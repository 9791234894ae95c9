use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(transparent)]
struct Wrapper {
    data: [f32; 4],
}

fn main() {}
