use psyne::PsyneMessage;

// 3 bytes after `flag` for every `N`: the message says so exactly.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Tagged<const N: usize> {
    flag: u8,
    data: [f32; N],
}

fn main() {}
