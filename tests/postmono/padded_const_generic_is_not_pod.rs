#![forbid(unsafe_code)]
// Regression (issue 11, item 4): a const-generic message whose instantiation `Padded<1>` has 3
// bytes of padding after `a` used to be `Pod` anyway, so this safe program read uninitialised
// padding through `bytemuck::bytes_of` without ever evaluating a psyne constant. The derive now
// rejects the struct itself: `[u8; N]` followed by a `u32` has padding for some `N`.
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
