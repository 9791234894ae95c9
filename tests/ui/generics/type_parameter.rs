use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Generic<T: Copy> {
    x: [T; 4],
}

fn main() {}
