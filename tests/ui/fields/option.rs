use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Bad {
    data: [f32; 4],
    maybe: Option<u32>,
}

fn main() {}
