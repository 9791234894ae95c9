use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Borrowed<'a> {
    x: &'a [f32; 4],
}

fn main() {}
