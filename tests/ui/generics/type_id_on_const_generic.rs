use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
#[psyne(type_id = 42)]
struct Vector<const N: usize> {
    x: [f32; N],
}

fn main() {}
