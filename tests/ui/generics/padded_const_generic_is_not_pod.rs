#![forbid(unsafe_code)]
// Issue 11, item 4: `Padded<1>` has 3 bytes of padding after `a`; it used to be `Pod` anyway,
// so `bytes_of` below read uninitialised memory in safe code.
use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Padded<const N: usize> {
    a: [u8; N],
    b: u32,
}

fn main() {
    let bytes = psyne::bytemuck::bytes_of(&Padded::<1> { a: [1], b: 2 });
    println!("{bytes:?}");
}
