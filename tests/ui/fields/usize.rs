use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Bad {
    data: [f32; 4],
    count: usize,
}

fn main() {}
