use psyne::PsyneMessage;

// Messages are copied as bytes, so they must be `Copy` (derive `Clone, Copy` too).
#[derive(PsyneMessage)]
#[repr(C)]
struct NotCopy {
    data: [f32; 4],
}

fn main() {}
